//! The files source: a directory (or file) of Kubernetes YAML, watched for changes.
//!
//! Every change re-reads the whole directory into a fresh object set that replaces the
//! store's. A file that does not parse (for example while an editor is writing it) is
//! reported and the previous objects stay: bad input loses nothing. Changes are noticed
//! through inotify (the `notify` crate), with a slow poll as a safety net on file systems
//! that do not report changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use md5::Digest as _;
use notify::Watcher as _;
use silverback_translator::Objects;
use silverback_translator::manifests::read_manifests;
use tokio::sync::{mpsc, watch};

use crate::store::Store;

/// How long to wait for more file events before reading (editors write in several steps).
const SETTLE: Duration = Duration::from_millis(5);

/// Reads `path` into a new object set.
pub fn read_dir(path: &Path) -> anyhow::Result<Objects> {
    let mut objects = Objects::new();
    read_manifests(path, &mut objects)?;
    Ok(objects)
}

/// A digest of every manifest's path, length and modification time, for the poll.
fn fingerprint(path: &Path) -> String {
    fn walk(p: &Path, out: &mut Vec<String>) {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => {
                if let Ok(rd) = std::fs::read_dir(p) {
                    let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
                    entries.sort();
                    for e in entries {
                        walk(&e, out);
                    }
                }
            }
            Ok(m) => out.push(format!(
                "{}:{}:{:?}",
                p.display(),
                m.len(),
                m.modified().ok()
            )),
            Err(_) => {}
        }
    }
    let mut v = Vec::new();
    walk(path, &mut v);
    hex::encode(md5::Md5::digest(v.join("\n").as_bytes()))
}

/// Loads `path` into `store` once (registering and completing the source `files`), then
/// keeps it up to date until `shutdown`. `poll` is the safety-net poll interval.
///
/// Returns an error only if the first read fails.
pub async fn watch_dir(
    path: PathBuf,
    store: Arc<Store>,
    poll: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    store.register_source("files");
    let objects = read_dir(&path)?;
    tracing::info!(path = %path.display(), objects = objects.len(), "manifests read");
    store.replace(objects);
    store.source_synced("files");

    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let watcher = {
        let tx = tx.clone();
        let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res
                && !matches!(ev.kind, notify::EventKind::Access(_))
            {
                let _ = tx.send(());
            }
        })?;
        match w.watch(&path, notify::RecursiveMode::Recursive) {
            Ok(()) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the manifests; polling them");
                None
            }
        }
    };
    let task = tokio::spawn(async move {
        let _watcher = watcher;
        let mut last = fingerprint(&path);
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = crate::stopped(&mut shutdown) => return,
                ev = rx.recv() => {
                    if ev.is_none() {
                        return;
                    }
                    // Let a burst of events settle, then read once.
                    tokio::time::sleep(SETTLE).await;
                    while rx.try_recv().is_ok() {}
                }
                _ = tick.tick() => {
                    let f = fingerprint(&path);
                    if f == last {
                        continue;
                    }
                }
            }
            last = fingerprint(&path);
            let p = path.clone();
            match tokio::task::spawn_blocking(move || read_dir(&p)).await {
                Ok(Ok(objects)) => {
                    tracing::debug!(objects = objects.len(), "manifests re-read");
                    store.replace(objects);
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %format!("{e:#}"), "manifests not re-read; the previous objects stay");
                }
                Err(e) => tracing::error!(error = %e, "reading manifests panicked"),
            }
        }
    });
    Ok(task)
}
