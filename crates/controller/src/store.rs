//! The object store: the Kubernetes objects the translator reads, shared by the sources that
//! fill it (API watches, manifest files) and the sync loop that translates it.
//!
//! Every change bumps a generation number that the sync loop watches. The store also knows
//! which sources have not finished their initial listing yet: nothing is pushed before every
//! source has listed once, so a restarted controller never pushes a partial configuration.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use silverback_translator::Objects;
use tokio::sync::watch;

/// Shared objects plus change and readiness signals.
#[derive(Debug)]
pub struct Store {
    objects: Mutex<Objects>,
    generation: watch::Sender<u64>,
    pending: Mutex<BTreeSet<String>>,
    ready: watch::Sender<bool>,
    relists: AtomicU64,
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

impl Store {
    /// An empty store, ready (no source registered).
    pub fn new() -> Store {
        Store {
            objects: Mutex::new(Objects::new()),
            generation: watch::Sender::new(0),
            pending: Mutex::new(BTreeSet::new()),
            ready: watch::Sender::new(true),
            relists: AtomicU64::new(0),
        }
    }

    /// Registers a source that must finish its initial listing before the store is ready.
    pub fn register_source(&self, name: &str) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.insert(name.to_string());
        self.ready.send_replace(false);
    }

    /// Marks a source's listing as done: its initial one, or a re-list (after an expired
    /// watch or an API server restart), which is counted in [`relists`](Self::relists).
    pub fn source_synced(&self, name: &str) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if p.remove(name) {
            tracing::debug!(source = name, left = p.len(), "source listed");
        } else {
            self.relists.fetch_add(1, Ordering::Relaxed);
            tracing::info!(source = name, "source re-listed");
        }
        if p.is_empty() {
            self.ready.send_replace(true);
        }
    }

    /// How many listings completed after a source's first one (watches that expired or broke
    /// and were re-established with a full list).
    pub fn relists(&self) -> u64 {
        self.relists.load(Ordering::Relaxed)
    }

    /// Sources still listing.
    pub fn pending_sources(&self) -> Vec<String> {
        let p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.iter().cloned().collect()
    }

    /// Whether every registered source has listed once.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits until every registered source has listed once.
    pub async fn wait_ready(&self) {
        let mut rx = self.ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Changes the objects and signals the change.
    pub fn update<R>(&self, f: impl FnOnce(&mut Objects) -> R) -> R {
        let r = {
            let mut o = self.objects.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut o)
        };
        self.generation.send_modify(|g| *g += 1);
        r
    }

    /// Replaces every object.
    pub fn replace(&self, objects: Objects) {
        self.update(|o| *o = objects);
    }

    /// Reads the objects (the sources wait meanwhile: keep it short).
    pub fn read<R>(&self, f: impl FnOnce(&Objects) -> R) -> R {
        let o = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        f(&o)
    }

    /// The current generation (bumped by every change).
    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    /// A receiver that sees every generation change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}
