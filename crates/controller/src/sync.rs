//! The sync loop: debounce changes, re-translate everything, push to every data plane when
//! the configuration changed, recover from rejections, and report the outcome.
//!
//! One sync:
//! 1. translates the whole store, serializes and hashes the JSON document (all off the async
//!    threads);
//! 2. pushes it in parallel to every target whose last accepted document has another hash;
//! 3. when a data plane rejects it with Kong's `flattened_errors`, maps the errors to objects
//!    through the `k8s-*` tags, leaves those objects out (and, through the translator, what
//!    depends on them), re-translates and pushes again (fallback, at most
//!    [`FALLBACK_ROUNDS`] rounds);
//! 4. if nothing is accepted, the last good document stays where it is (data planes swap
//!    atomically, so they keep serving it);
//! 5. publishes a [`SyncOutcome`] for the status and Event writers.
//!
//! Between syncs a periodic check asks every data plane for its configuration hash: one that
//! restarted (Kong's empty hash) or did not accept the newest document (network error, not
//! answering yet, newly discovered) gets the newest document at once. The newest document is
//! the one the last sync settled on: its translation (or fallback) that no data plane
//! rejected, accepted or not yet, else the last good one. So a push that failed on every
//! data plane is retried on each check until one accepts it, without any object change, as
//! KIC retries every tick until a push succeeds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use md5::Digest as _;
use silverback_config::EMPTY_HASH;
use silverback_translator::{
    Kind, ObjectRef, Objects, Problem, TranslateOptions, TypedTranslation,
};
use tokio::sync::watch;

use crate::metrics::{self, Metrics};
use crate::store::Store;
use crate::target::{DataPlaneTarget, PushError};

/// Fallback rounds after a rejection before giving up (keeping the last good document).
pub const FALLBACK_ROUNDS: usize = 3;

/// The shared list of data planes (static, or kept up to date by gateway discovery).
pub type Targets = watch::Receiver<Vec<Arc<dyn DataPlaneTarget>>>;

/// Settings of the sync loop.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Translator settings.
    pub translate: TranslateOptions,
    /// Quiet time after a change before syncing (more changes within it are batched).
    pub debounce: Duration,
    /// Longest wait from the first change to the sync, however busy the changes.
    pub max_delay: Duration,
    /// Leave objects a data plane rejects out and push the rest.
    pub fallback: bool,
    /// In a fallback, put back the last valid version of each rejected object (its version in
    /// the objects of the last accepted configuration) instead of leaving it out; an object
    /// without one, or whose last valid version is rejected too, is left out. KIC's
    /// `--use-last-valid-config-for-fallback`.
    pub use_last_valid: bool,
    /// How often data planes are asked for their configuration hash (restart detection,
    /// retries after failed pushes).
    pub check_interval: Duration,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            translate: TranslateOptions::default(),
            debounce: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            fallback: true,
            use_last_valid: false,
            check_interval: Duration::from_secs(3),
        }
    }
}

/// A translated document.
#[derive(Debug, Clone)]
pub struct Document {
    /// JSON bytes, as pushed.
    pub body: Bytes,
    /// md5 of `body` (hex): what decides whether a data plane needs a push.
    pub hash: String,
    /// Whether it holds no entity.
    pub empty: bool,
    /// The Ingresses it configures.
    pub configured: Vec<ObjectRef>,
    /// Whether it is a fallback configuration (objects a data plane rejected left out or
    /// put back in their last valid version).
    pub fallback: bool,
}

impl Document {
    fn from_translation(t: &TypedTranslation) -> Document {
        let body = Bytes::from(t.to_json());
        let hash = hex::encode(md5::Md5::digest(&body));
        Document {
            body,
            hash,
            empty: t.document.is_empty(),
            configured: t.configured.clone(),
            fallback: false,
        }
    }
}

/// A translation serialized for pushing, with its problems.
struct Translated {
    doc: Document,
    problems: Vec<Problem>,
    /// The objects translated, when kept for `use_last_valid`.
    objects: Option<Arc<Objects>>,
    /// Rejected objects put back in their last valid version.
    backfilled: BTreeSet<Obj>,
}

impl Translated {
    fn new(t: TypedTranslation) -> Translated {
        Translated {
            doc: Document::from_translation(&t),
            problems: t.problems,
            objects: None,
            backfilled: BTreeSet::new(),
        }
    }
}

/// An object as (kind, namespace, name).
type Obj = (String, String, String);

/// How a fallback translation treats the rejected objects.
#[derive(Default)]
struct Exclusions {
    /// Rejected objects: left out, or put back in their last valid version.
    rejected: BTreeSet<Obj>,
    /// The objects of the last accepted configuration, to take last valid versions from
    /// (`use_last_valid`).
    last_valid: Option<Arc<Objects>>,
    /// Rejected objects whose last valid version was rejected too: always left out.
    no_backfill: BTreeSet<Obj>,
}

/// Puts the version of `kind/ns/name` that `from` holds into `objects` (replacing the
/// current one); whether `from` held one.
fn backfill(objects: &mut Objects, from: &Objects, kind: Kind, ns: &str, name: &str) -> bool {
    let k = (ns.to_string(), name.to_string());
    match kind {
        Kind::Ingress => from
            .ingresses
            .get(&k)
            .cloned()
            .map(|o| objects.insert_ingress(o)),
        Kind::IngressClass => from
            .ingress_classes
            .get(name)
            .cloned()
            .map(|o| objects.insert_ingress_class(o)),
        Kind::Service => from
            .services
            .get(&k)
            .cloned()
            .map(|o| objects.insert_service(o)),
        Kind::Secret => from
            .secrets
            .get(&k)
            .cloned()
            .map(|o| objects.insert_secret(o)),
        Kind::EndpointSlice => from
            .endpoint_slices
            .get(&k)
            .cloned()
            .map(|o| objects.insert_endpoint_slice(o)),
        Kind::IngressClassParameters => from
            .ingress_class_parameters
            .get(&k)
            .cloned()
            .map(|o| objects.insert_ingress_class_parameters(o)),
    }
    .is_some()
}

/// What one sync did, for status and Event writers.
#[derive(Debug, Clone, Default)]
pub struct SyncOutcome {
    /// Store generation translated.
    pub generation: u64,
    /// Problems of the translation: objects (or parts of them) the translator left out, and
    /// values it ignored while keeping the object (an invalid annotation value, for example).
    pub translation_problems: Vec<Problem>,
    /// Objects data planes rejected (left out by the fallback, or blocking the push).
    pub apply_problems: Vec<Problem>,
    /// `Some(message)` when no data plane accepted the new configuration.
    pub failure: Option<String>,
    /// Whether a new configuration was accepted by a data plane in this sync.
    pub pushed: bool,
    /// How many syncs so far had a new configuration accepted (`pushed`), this one included.
    /// Outcomes are published on a `watch` channel, which keeps only the latest: a reader that
    /// was busy while two syncs happened sees only the second. Counting lets it notice a push
    /// it did not see (the `KongConfigurationSucceeded` Event must not get lost).
    pub pushes: u64,
    /// How many syncs so far ended with `failure` (same reason as `pushes`).
    pub failures: u64,
    /// The Ingresses configured on the data planes (from the last good document).
    pub configured: Vec<ObjectRef>,
    /// Number of data planes.
    pub targets: usize,
}

/// What the sync loop keeps for the controller's endpoints: the documents of the diagnostics
/// endpoint (`/debug/config/*`) and whether anything was configured yet (`/readyz`).
#[derive(Debug, Default)]
pub struct Diagnostics {
    /// Whether a data plane accepted a configuration at least once (KIC's synchronizer
    /// `IsReady` in DB-less mode).
    pub configured: std::sync::atomic::AtomicBool,
    /// Last document accepted by the data planes.
    pub successful: Mutex<Option<Bytes>>,
    /// Last document rejected, with the error.
    pub failed: Mutex<Option<(Bytes, String)>>,
    /// Objects left out by the last fallback.
    pub fallback: Mutex<Vec<ObjectRef>>,
    /// Objects the last fallback put back in their last valid version (`use_last_valid`).
    pub backfilled: Mutex<Vec<ObjectRef>>,
}

#[derive(Debug, Default, Clone)]
struct TargetState {
    /// Hash of the last document this target accepted.
    accepted: Option<String>,
}

/// The sync loop; see the [module documentation](self).
pub struct Syncer {
    store: Arc<Store>,
    opts: SyncOptions,
    targets: Targets,
    leader: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    diagnostics: Arc<Diagnostics>,
    outcome: watch::Sender<Option<Arc<SyncOutcome>>>,
    state: HashMap<String, TargetState>,
    last_good: Option<Arc<Document>>,
    /// The objects translated into `last_good` (kept with `use_last_valid` only).
    last_valid_objects: Option<Arc<Objects>>,
    /// The document the last sync settled on (not rejected; maybe not accepted by any data
    /// plane yet), which the periodic check pushes to the data planes behind.
    newest: Option<Arc<Document>>,
    /// The objects translated into `newest` (kept with `use_last_valid` only).
    newest_objects: Option<Arc<Objects>>,
    synced_generation: Option<u64>,
    pushes: u64,
    failures: u64,
}

impl std::fmt::Debug for Syncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncer").finish_non_exhaustive()
    }
}

fn kind_of(r: &ObjectRef) -> Option<Kind> {
    [
        Kind::Ingress,
        Kind::IngressClass,
        Kind::Service,
        Kind::Secret,
        Kind::EndpointSlice,
        Kind::IngressClassParameters,
    ]
    .into_iter()
    .find(|k| k.as_str() == r.kind)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Objects named by problems (distinct kind/namespace/name).
fn objects_of(problems: &[Problem]) -> BTreeSet<Obj> {
    problems
        .iter()
        .map(|p| {
            (
                p.object.kind.clone(),
                p.object.namespace.clone(),
                p.object.name.clone(),
            )
        })
        .collect()
}

impl Syncer {
    /// A sync loop over `store`, pushing to `targets` while `leader` is true.
    pub fn new(
        store: Arc<Store>,
        opts: SyncOptions,
        targets: Targets,
        leader: watch::Receiver<bool>,
        metrics: Arc<Metrics>,
        diagnostics: Arc<Diagnostics>,
    ) -> Syncer {
        Syncer {
            store,
            opts,
            targets,
            leader,
            metrics,
            diagnostics,
            outcome: watch::Sender::new(None),
            state: HashMap::new(),
            last_good: None,
            last_valid_objects: None,
            newest: None,
            newest_objects: None,
            synced_generation: None,
            pushes: 0,
            failures: 0,
        }
    }

    /// A receiver of every sync's outcome.
    pub fn outcomes(&self) -> watch::Receiver<Option<Arc<SyncOutcome>>> {
        self.outcome.subscribe()
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        tokio::select! {
            _ = self.store.wait_ready() => {}
            _ = crate::stopped(&mut shutdown) => return,
        }
        let mut generation = self.store.subscribe();
        generation.mark_changed();
        // The first sync reads the current targets: a list set before the loop started (the
        // in-process gateway is set right after the channel is made) is no change to sync
        // for again. (That second sync at start-up replaced the first's outcome before the
        // Event writer saw it, which lost the success Event under load.)
        self.targets.borrow_and_update();
        let mut check = tokio::time::interval(self.opts.check_interval);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = crate::stopped(&mut shutdown) => return,
                r = generation.changed() => {
                    if r.is_err() {
                        return;
                    }
                    self.debounce(&mut generation).await;
                    // Not when this generation was synced already (by the periodic check,
                    // whose first tick comes at once, together with the initial change).
                    if *self.leader.borrow()
                        && self.synced_generation != Some(self.store.generation())
                    {
                        self.sync(false).await;
                    }
                }
                r = self.targets.changed() => {
                    if r.is_err() {
                        return;
                    }
                    if *self.leader.borrow() {
                        self.sync(false).await;
                    }
                }
                r = self.leader.changed() => {
                    if r.is_err() {
                        return;
                    }
                    if *self.leader.borrow_and_update() {
                        tracing::info!("leading: pushing the configuration");
                        self.sync(true).await;
                    }
                }
                _ = check.tick() => {
                    if *self.leader.borrow() {
                        if self.synced_generation != Some(self.store.generation()) {
                            self.sync(false).await;
                        }
                        self.check_targets().await;
                    }
                }
            }
        }
    }

    /// Waits for a quiet `debounce`, at most `max_delay` in all.
    async fn debounce(&self, generation: &mut watch::Receiver<u64>) {
        let start = Instant::now();
        loop {
            let left = self.opts.max_delay.saturating_sub(start.elapsed());
            if left.is_zero() {
                return;
            }
            tokio::select! {
                r = generation.changed() => {
                    if r.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep(self.opts.debounce.min(left)) => return,
            }
        }
    }

    fn targets(&self) -> Vec<Arc<dyn DataPlaneTarget>> {
        self.targets.borrow().clone()
    }

    async fn translate(&self, exclusions: &Exclusions) -> Translated {
        let store = self.store.clone();
        let opts = self.opts.translate.clone();
        let excluded_count = exclusions.rejected.len();
        let exclude = exclusions.rejected.clone();
        let last_valid = exclusions.last_valid.clone();
        let no_backfill = exclusions.no_backfill.clone();
        let keep_objects = self.opts.use_last_valid;
        let t0 = Instant::now();
        let fallback = excluded_count > 0;
        let result = tokio::task::spawn_blocking(move || {
            if exclude.is_empty() && !keep_objects {
                return Translated::new(
                    store.read(|o| silverback_translator::translate_typed(o, &opts)),
                );
            }
            let mut objects: Objects = store.read(Objects::clone);
            let mut backfilled = BTreeSet::new();
            for obj in &exclude {
                let (kind, ns, name) = obj;
                let r = ObjectRef {
                    kind: kind.clone(),
                    ..ObjectRef::default()
                };
                let Some(k) = kind_of(&r) else { continue };
                objects.remove(k, ns, name);
                if let Some(from) = &last_valid
                    && !no_backfill.contains(obj)
                    && backfill(&mut objects, from, k, ns, name)
                {
                    backfilled.insert(obj.clone());
                }
            }
            let mut t = Translated::new(silverback_translator::translate_typed(&objects, &opts));
            t.backfilled = backfilled;
            if keep_objects {
                t.objects = Some(Arc::new(objects));
            }
            t
        })
        .await;
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        match result {
            Ok(t) => {
                // (values ignored while their object was translated, as KIC ignores them,
                // are reported but fail nothing, as in KIC's metrics)
                let failed: Vec<Problem> =
                    t.problems.iter().filter(|p| !p.ignored).cloned().collect();
                let success = if failed.is_empty() { "true" } else { "false" };
                let broken = objects_of(&failed).len() as f64;
                if fallback {
                    self.metrics
                        .inc(metrics::FALLBACK_TRANSLATION_COUNT, &[("success", success)]);
                    self.metrics.set(
                        metrics::FALLBACK_TRANSLATION_BROKEN,
                        &[],
                        excluded_count as f64,
                    );
                } else {
                    self.metrics
                        .inc(metrics::TRANSLATION_COUNT, &[("success", success)]);
                    self.metrics.observe(
                        metrics::TRANSLATION_DURATION,
                        &[("success", success)],
                        ms,
                    );
                    self.metrics.set(metrics::TRANSLATION_BROKEN, &[], broken);
                }
                t
            }
            Err(e) => {
                tracing::error!(error = %e, "translation panicked");
                self.metrics
                    .inc(metrics::TRANSLATION_COUNT, &[("success", "false")]);
                Translated::new(TypedTranslation {
                    document: Default::default(),
                    problems: vec![],
                    plugins: vec![],
                    configured: vec![],
                })
            }
        }
    }

    /// Pushes `doc` to the targets that have not accepted it (all with `force`), in
    /// parallel. Returns each pushed target's result.
    async fn push(
        &mut self,
        targets: &[Arc<dyn DataPlaneTarget>],
        doc: &Arc<Document>,
        force: bool,
        fallback: bool,
    ) -> Vec<(String, Result<(), PushError>)> {
        let todo: Vec<_> = targets
            .iter()
            .filter(|t| {
                force
                    || self.state.get(t.name()).and_then(|s| s.accepted.as_deref())
                        != Some(doc.hash.as_str())
            })
            .cloned()
            .collect();
        let pushes = todo.iter().map(|t| {
            let doc = doc.clone();
            let t = t.clone();
            async move {
                let t0 = Instant::now();
                let r = t.push(&doc.body).await;
                (t.name().to_string(), r, t0.elapsed())
            }
        });
        let results = futures::future::join_all(pushes).await;
        let mut out = Vec::with_capacity(results.len());
        for (name, r, elapsed) in results {
            let success = if r.is_ok() { "true" } else { "false" };
            let reason = r.as_ref().err().map_or("", PushError::reason);
            let ms = elapsed.as_secs_f64() * 1000.0;
            let (count, duration, broken) = if fallback {
                (
                    metrics::FALLBACK_PUSH_COUNT,
                    metrics::FALLBACK_PUSH_DURATION,
                    metrics::FALLBACK_PUSH_BROKEN,
                )
            } else {
                (
                    metrics::PUSH_COUNT,
                    metrics::PUSH_DURATION,
                    metrics::PUSH_BROKEN,
                )
            };
            let l = [
                ("success", success),
                ("protocol", "db-less"),
                ("failure_reason", reason),
                ("dataplane", name.as_str()),
            ];
            self.metrics.inc(count, &l);
            self.metrics.observe(
                duration,
                &[
                    ("success", success),
                    ("protocol", "db-less"),
                    ("dataplane", name.as_str()),
                ],
                ms,
            );
            let rejected = match &r {
                Err(PushError::Rejected { flattened, .. }) => {
                    let (p, _) = silverback_translator::problems_from_flattened(flattened);
                    objects_of(&p).len()
                }
                _ => 0,
            };
            self.metrics
                .set(broken, &[("dataplane", name.as_str())], rejected as f64);
            match &r {
                Ok(()) => {
                    // As KIC: a fallback push is reported under the fallback metrics only.
                    let (size, last) = if fallback {
                        (metrics::FALLBACK_PUSH_SIZE, metrics::FALLBACK_PUSH_LAST)
                    } else {
                        (metrics::PUSH_SIZE, metrics::PUSH_LAST_SUCCESSFUL)
                    };
                    self.metrics.set(
                        size,
                        &[("protocol", "db-less"), ("dataplane", name.as_str())],
                        doc.body.len() as f64,
                    );
                    self.metrics
                        .set(last, &[("dataplane", name.as_str())], unix_now());
                    self.state.entry(name.clone()).or_default().accepted = Some(doc.hash.clone());
                    tracing::debug!(dataplane = %name, hash = %doc.hash, ms, "configuration pushed");
                }
                Err(e) => {
                    tracing::warn!(dataplane = %name, error = %e, "push failed");
                }
            }
            out.push((name, r));
        }
        out
    }

    /// Translates and pushes; see the [module documentation](self).
    pub async fn sync(&mut self, force: bool) {
        let generation = self.store.generation();
        let targets = self.targets();
        let names: BTreeSet<&str> = targets.iter().map(|t| t.name()).collect();
        self.state.retain(|n, _| names.contains(n.as_str()));

        let translation = self.translate(&Exclusions::default()).await;
        for p in &translation.problems {
            tracing::warn!(problem = %p, "translation problem");
        }
        let mut doc = Arc::new(translation.doc);
        let mut doc_objects = translation.objects;
        let mut backfilled: BTreeSet<Obj> = BTreeSet::new();
        let mut outcome = SyncOutcome {
            generation,
            translation_problems: translation.problems,
            targets: targets.len(),
            ..SyncOutcome::default()
        };
        self.synced_generation = Some(generation);

        let mut ex = Exclusions {
            last_valid: self
                .opts
                .use_last_valid
                .then(|| self.last_valid_objects.clone())
                .flatten(),
            ..Exclusions::default()
        };
        let mut apply_problems: Vec<Problem> = Vec::new();
        let mut round = 0;
        let mut fallback = false;
        loop {
            let results = self
                .push(&targets, &doc, force && round == 0, fallback)
                .await;
            let mut rejections = Vec::new();
            let mut accepted = 0;
            let mut failures = Vec::new();
            for (name, r) in &results {
                match r {
                    Ok(()) => accepted += 1,
                    Err(PushError::Rejected { message, flattened }) => {
                        rejections.push((name.clone(), message.clone(), flattened.clone()));
                    }
                    Err(e) => failures.push(format!("{name}: {e}")),
                }
            }
            if rejections.is_empty() {
                // Not rejected: the newest document, retried by the periodic check on the
                // data planes that did not accept it.
                self.newest = Some(doc.clone());
                self.newest_objects = doc_objects.clone();
                if results.is_empty() || accepted > 0 || targets.is_empty() {
                    // Accepted (or nothing needed pushing / nowhere to push yet).
                    let changed = self.last_good.as_ref().map(|d| &d.hash) != Some(&doc.hash);
                    if accepted > 0 || (results.is_empty() && !targets.is_empty()) {
                        outcome.pushed = accepted > 0 && changed;
                        self.settle_good(&doc, doc_objects.take());
                    }
                }
                if accepted == 0 && !failures.is_empty() {
                    outcome.failure = Some(failures.join("; "));
                }
                break;
            }
            // Rejected: map the errors to objects.
            let mut new_problems = Vec::new();
            let mut messages = Vec::new();
            for (name, message, flattened) in &rejections {
                let (p, unmapped) = silverback_translator::problems_from_flattened(flattened);
                for u in unmapped {
                    tracing::warn!(dataplane = %name, entity_type = %u.entity_type, entity = ?u.entity_name, id = ?u.entity_id, errors = ?u.errors, "rejected entity without k8s tags");
                }
                messages.push(format!("{name}: {message}"));
                new_problems.extend(p);
            }
            new_problems.sort();
            new_problems.dedup();
            let before = (ex.rejected.len(), ex.no_backfill.len());
            for o in objects_of(&new_problems) {
                // Its last valid version was rejected too: leave it out from now on.
                if backfilled.contains(&o) {
                    ex.no_backfill.insert(o.clone());
                }
                ex.rejected.insert(o);
            }
            apply_problems.extend(new_problems);
            *self
                .diagnostics
                .failed
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some((doc.body.clone(), messages.join("; ")));
            round += 1;
            let progress = (ex.rejected.len(), ex.no_backfill.len()) != before;
            if !self.opts.fallback || !progress || round > FALLBACK_ROUNDS {
                outcome.failure = Some(messages.join("; "));
                // Given up: the data planes keep (or get) the last good document.
                self.newest = self.last_good.clone();
                self.newest_objects = self.last_valid_objects.clone();
                tracing::error!(error = %messages.join("; "), "configuration rejected; the last good configuration stays");
                break;
            }
            fallback = true;
            let t = self.translate(&ex).await;
            let mut d = t.doc;
            d.fallback = true;
            doc = Arc::new(d);
            doc_objects = t.objects;
            backfilled = t.backfilled;
            if backfilled.is_empty() {
                tracing::warn!(excluded = ?ex.rejected, "configuration rejected; pushing without the broken objects");
            } else {
                tracing::warn!(excluded = ?ex.rejected, backfilled = ?backfilled, "configuration rejected; pushing the last valid version of the broken objects that have one, without the others");
            }
        }
        apply_problems.sort();
        apply_problems.dedup();
        outcome.apply_problems = apply_problems;
        let refs = |set: &BTreeSet<Obj>| -> Vec<ObjectRef> {
            set.iter()
                .map(|(k, ns, n)| ObjectRef {
                    kind: k.clone(),
                    namespace: ns.clone(),
                    name: n.clone(),
                    ..ObjectRef::default()
                })
                .collect()
        };
        let left_out: BTreeSet<Obj> = ex.rejected.difference(&backfilled).cloned().collect();
        *self
            .diagnostics
            .fallback
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = refs(&left_out);
        *self
            .diagnostics
            .backfilled
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = refs(&backfilled);
        outcome.configured = self
            .last_good
            .as_ref()
            .map(|d| d.configured.clone())
            .unwrap_or_default();
        if outcome.pushed {
            self.pushes += 1;
        }
        if outcome.failure.is_some() {
            self.failures += 1;
        }
        outcome.pushes = self.pushes;
        outcome.failures = self.failures;
        self.outcome.send_replace(Some(Arc::new(outcome)));
    }

    /// `doc`, accepted by a data plane, is the last good document (served by
    /// `/debug/config/successful`, `/readyz` ready); `objects`, when kept, are its objects'
    /// last valid versions.
    fn settle_good(&mut self, doc: &Arc<Document>, objects: Option<Arc<Objects>>) {
        *self
            .diagnostics
            .successful
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(doc.body.clone());
        self.last_good = Some(doc.clone());
        self.diagnostics
            .configured
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if objects.is_some() {
            self.last_valid_objects = objects;
        }
    }

    /// Asks every target for its hash; pushes the newest document (see the
    /// [module documentation](self)) to those that lost their configuration (restarted
    /// empty) or did not accept it (failed push, not answering until now, newly discovered).
    pub async fn check_targets(&mut self) {
        let Some(newest) = self.newest.clone().or_else(|| self.last_good.clone()) else {
            return;
        };
        let targets = self.targets();
        let checks = targets.iter().map(|t| async move { t.config_hash().await });
        let hashes = futures::future::join_all(checks).await;
        let mut todo = Vec::new();
        for (t, h) in targets.iter().zip(hashes) {
            let accepted = self.state.get(t.name()).and_then(|s| s.accepted.as_deref())
                == Some(newest.hash.as_str());
            match h {
                Ok(h) if h == EMPTY_HASH && !newest.empty => {
                    tracing::info!(dataplane = %t.name(), "data plane has no configuration: pushing");
                    self.state.remove(t.name());
                    todo.push(t.clone());
                }
                Ok(_) if !accepted => {
                    tracing::info!(dataplane = %t.name(), "data plane is behind: pushing the newest configuration");
                    todo.push(t.clone());
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(dataplane = %t.name(), error = %e, "status check failed"),
            }
        }
        if todo.is_empty() {
            return;
        }
        let results = self.push(&todo, &newest, true, newest.fallback).await;
        // A document no data plane had checked (every push failed, say, before the data
        // plane listened) that one now rejects: the next tick translates and pushes again
        // through `sync`, which handles a rejection (the fallback, Events, the failed
        // dump); until then the last good document is what lagging data planes get.
        if results
            .iter()
            .any(|(_, r)| matches!(r, Err(PushError::Rejected { .. })))
        {
            tracing::info!("a data plane rejected the newest configuration: translating again");
            self.synced_generation = None;
            self.newest = self.last_good.clone();
        }
        if !results.iter().any(|(_, r)| r.is_ok()) {
            return;
        }
        // Accepted somewhere: it is the last good document now.
        let new = self.last_good.as_ref().map(|d| &d.hash) != Some(&newest.hash);
        if new {
            self.settle_good(&newest, self.newest_objects.clone());
            self.pushes += 1;
        }
        let mut o = self
            .outcome
            .borrow()
            .as_deref()
            .cloned()
            .unwrap_or_default();
        o.pushed = new;
        o.pushes = self.pushes;
        if new {
            o.failure = None;
        }
        o.configured = newest.configured.clone();
        self.outcome.send_replace(Some(Arc::new(o)));
    }

    /// Hashes of what each target accepted last.
    pub fn accepted(&self) -> BTreeMap<String, Option<String>> {
        self.state
            .iter()
            .map(|(k, v)| (k.clone(), v.accepted.clone()))
            .collect()
    }
}
