//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's elector does:
//!
//! - a candidate creates the Lease if it does not exist, or takes it over once the holder has
//!   not renewed it for `lease_duration` (measured on the candidate's own clock from the
//!   moment it last saw the Lease change, so clock skew between replicas does not matter);
//! - the leader renews every `retry_period`, and steps down if it cannot renew within
//!   `renew_deadline` — also when the API server does not answer at all (a hung server or a
//!   partition): a renewal gets only the time left until the deadline, so the leader stops
//!   before its Lease can expire and another replica take over;
//! - every write carries the `resourceVersion` read, so two candidates never both win;
//! - on shutdown the leader releases the Lease (empty holder) so another takes over at once.
//!
//! A new leader is in place at most `lease_duration + retry_period` after the old one died.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

/// Settings of the elector.
#[derive(Debug, Clone)]
pub struct ElectionOptions {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease (`--election-id`).
    pub name: String,
    /// This candidate's identity (the Pod name, or host name plus a random suffix).
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before stepping down.
    pub renew_deadline: Duration,
    /// How often candidates retry and the leader renews.
    pub retry_period: Duration,
}

impl ElectionOptions {
    /// Options with the default timings (lease 10 s, renew deadline 7 s, retry 2 s): a new
    /// leader within 12 s of the old one dying.
    pub fn new(namespace: &str, name: &str, identity: &str) -> ElectionOptions {
        ElectionOptions {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(10),
            renew_deadline: Duration::from_secs(7),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// A leader elector; see the [module documentation](self).
#[derive(Debug)]
pub struct Elector {
    api: Api<Lease>,
    opts: ElectionOptions,
    /// (resourceVersion, holder) last seen, and when (local clock).
    observed: Option<(String, Instant)>,
    leading: watch::Sender<bool>,
    last_renew: Option<Instant>,
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

impl Elector {
    /// An elector for `opts`.
    pub fn new(client: Client, opts: ElectionOptions) -> Elector {
        Elector {
            api: Api::namespaced(client, &opts.namespace),
            opts,
            observed: None,
            leading: watch::Sender::new(false),
            last_renew: None,
        }
    }

    /// Whether this candidate leads, now and from now on.
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }

    fn spec(&self, transitions: i32, acquire: bool, prev: Option<&LeaseSpec>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.opts.identity.clone()),
            lease_duration_seconds: Some(self.opts.lease_duration.as_secs().max(1) as i32),
            acquire_time: if acquire {
                Some(now())
            } else {
                prev.and_then(|p| p.acquire_time.clone())
            },
            renew_time: Some(now()),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One attempt to acquire or renew. Returns whether this candidate leads afterwards.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let existing = self.api.get_opt(&self.opts.name).await?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.opts.name.clone()),
                    namespace: Some(self.opts.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(0, true, None)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let rv = lease.metadata.resource_version.clone().unwrap_or_default();
        let duration = spec
            .lease_duration_seconds
            .map_or(self.opts.lease_duration, |s| {
                Duration::from_secs(s.max(0) as u64)
            });
        match &self.observed {
            Some((seen, _)) if *seen == rv => {}
            _ => self.observed = Some((rv.clone(), Instant::now())),
        }
        let observed_at = self.observed.as_ref().map_or_else(Instant::now, |o| o.1);
        let mine = holder == self.opts.identity;
        let expired = holder.is_empty() || observed_at.elapsed() > duration;
        if !mine && !expired {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
        lease.spec = Some(self.spec(transitions, !mine, Some(&spec)));
        match self
            .api
            .replace(&self.opts.name, &PostParams::default(), &lease)
            .await
        {
            Ok(l) => {
                self.observed = l.metadata.resource_version.map(|rv| (rv, Instant::now()));
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up if this candidate holds it.
    async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.opts.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.opts.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        match self
            .api
            .replace(&self.opts.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(lease = %self.opts.name, "leadership released"),
            Err(e) => tracing::warn!(error = %e, "cannot release the lease"),
        }
    }

    /// Campaigns until `shutdown`, then releases the Lease if held.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let leading = *self.leading.borrow();
            // A leader's renewal may take only what is left until its renew deadline; a
            // candidate's attempt, a renew deadline.
            let budget = match (leading, self.last_renew) {
                (true, Some(t)) => self
                    .opts
                    .renew_deadline
                    .saturating_sub(t.elapsed())
                    .max(Duration::from_millis(100)),
                _ => self.opts.renew_deadline,
            };
            let attempt = tokio::time::timeout(budget, self.try_acquire_or_renew());
            let result = match attempt.await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!("the API server did not answer within {budget:?}")),
            };
            match result {
                Ok(true) => {
                    self.last_renew = Some(Instant::now());
                    if !leading {
                        tracing::info!(identity = %self.opts.identity, lease = %self.opts.name, "became the leader");
                        self.leading.send_replace(true);
                    }
                }
                Ok(false) => {
                    if leading {
                        tracing::warn!(identity = %self.opts.identity, "lost the lease");
                        self.leading.send_replace(false);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lease request failed");
                    let stale = self
                        .last_renew
                        .is_none_or(|t| t.elapsed() >= self.opts.renew_deadline);
                    if leading && stale {
                        tracing::warn!(identity = %self.opts.identity, "could not renew in time: stepping down");
                        self.leading.send_replace(false);
                    }
                }
            }
            tokio::select! {
                _ = crate::stopped(&mut shutdown) => break,
                _ = tokio::time::sleep(self.opts.retry_period) => {}
            }
        }
        if *self.leading.borrow() {
            self.leading.send_replace(false);
            self.release().await;
        }
    }
}
