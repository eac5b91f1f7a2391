//! Named background jobs and how their runs went: the gateway's side of Kong's timer
//! statistics (`GET /timers`, and `timers` in `GET /`).
//!
//! Kong does its background work (active health checks, DNS refreshes, log-level reverts)
//! on lua-resty-timer-ng timers and reports, per timer, how often it ran, how often it
//! finished without an error, the last error and the time each run took. The gateway does
//! the same work on tokio tasks; each registers a [`Timer`] here for as long as it lives and
//! wraps every run in a [`Run`]:
//!
//! ```
//! use silverback_timers::{Registry, Site};
//!
//! let registry = Registry::new();
//! let timer = registry.register("healthcheck:billing", Site::new("checker", "run"), false);
//! {
//!     let _run = timer.run(); // counted when dropped
//! }
//! timer.run().fail("probe target vanished");
//! let stats = registry.stats();
//! let job = &stats.timers["healthcheck:billing"];
//! assert_eq!((job.stats.runs, job.stats.finish), (2, 1));
//! assert_eq!(job.stats.last_err_msg, "probe target vanished");
//! assert_eq!(stats.sys.total, 1);
//! drop(timer); // the job is gone; its runs stay in `sys.runs`
//! assert_eq!((registry.stats().sys.total, registry.stats().sys.runs), (0, 2));
//! ```
//!
//! A job is never "pending" here: timer-ng queues an expired timer until one of its threads
//! is free, while a tokio task runs as soon as it is polled, so `sys.pending` is 0 and
//! `waiting` is every job not running.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::Instant;

use serde::Serialize;

/// Where a job was started: its module and function (Kong shows the Lua file, line and
/// function that created the timer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Site {
    /// The module, e.g. `silverback_balancer::checker`.
    pub module: &'static str,
    /// The function.
    pub function: &'static str,
}

impl Site {
    /// A site.
    pub const fn new(module: &'static str, function: &'static str) -> Site {
        Site { module, function }
    }
}

/// The registry of live jobs. [`global`] is the process's; tests may make their own.
#[derive(Debug, Default)]
pub struct Registry {
    jobs: Mutex<BTreeMap<u64, Job>>,
    next_id: AtomicU64,
    /// Runs completed, by every job, including jobs since dropped.
    runs: AtomicU64,
}

#[derive(Debug)]
struct Job {
    name: String,
    site: Site,
    once: bool,
    running: u32,
    runs: u64,
    finish: u64,
    last_err_msg: String,
    /// Seconds: least, most, mean, and the sum of squared differences from the mean
    /// (Welford's method) over the finished runs.
    min: f64,
    max: f64,
    mean: f64,
    m2: f64,
}

static GLOBAL: LazyLock<Arc<Registry>> = LazyLock::new(|| Arc::new(Registry::default()));

/// The process's registry.
pub fn global() -> &'static Arc<Registry> {
    &GLOBAL
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry::default())
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Job>> {
        // (a panic while it was held leaves counts, not broken invariants)
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a job under `name` (Kong's timer names are unique per worker; two live jobs
    /// of one name are shown once, the later one). `once`: a one-shot job (a delayed
    /// action), not a recurring one. The job is listed until the [`Timer`] is dropped.
    pub fn register(self: &Arc<Self>, name: impl Into<String>, site: Site, once: bool) -> Timer {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            id,
            Job {
                name: name.into(),
                site,
                once,
                running: 0,
                runs: 0,
                finish: 0,
                last_err_msg: String::new(),
                min: f64::INFINITY,
                max: f64::NEG_INFINITY,
                mean: 0.0,
                m2: 0.0,
            },
        );
        Timer {
            id,
            registry: Arc::clone(self),
        }
    }

    /// The statistics, in the shape of Kong's `GET /timers` `stats`.
    pub fn stats(&self) -> TimerStats {
        let jobs = self.lock();
        let running = jobs.values().filter(|j| j.running > 0).count() as u64;
        let total = jobs.len() as u64;
        let mut timers = BTreeMap::new();
        let mut running_by_site: BTreeMap<String, u64> = BTreeMap::new();
        let mut elapsed_by_site: BTreeMap<String, f64> = BTreeMap::new();
        for j in jobs.values() {
            let stack = j.site.folded();
            if j.running > 0 {
                *running_by_site.entry(stack.clone()).or_default() += 1;
            }
            if j.finish > 0 {
                *elapsed_by_site.entry(stack.clone()).or_default() += j.mean * j.finish as f64;
            }
            let elapsed_time = if j.finish == 0 {
                // timer-ng's initial figures, before a run has finished
                ElapsedTime {
                    min: 9_999_999.0,
                    max: -1.0,
                    avg: 0.0,
                    variance: 0.0,
                }
            } else {
                ElapsedTime {
                    min: j.min,
                    max: j.max,
                    avg: j.mean,
                    variance: j.m2 / j.finish as f64,
                }
            };
            timers.insert(
                j.name.clone(),
                TimerEntry {
                    name: j.name.clone(),
                    meta: Meta {
                        name: format!("{}::{}", j.site.module, j.site.function),
                        callstack: stack,
                    },
                    once: j.once,
                    stats: JobStats {
                        elapsed_time,
                        runs: j.runs,
                        finish: j.finish,
                        last_err_msg: j.last_err_msg.clone(),
                    },
                },
            );
        }
        let folded = |m: BTreeMap<String, u64>| {
            m.into_iter()
                .map(|(s, n)| format!("{s} {n}\n"))
                .collect::<String>()
        };
        let elapsed = elapsed_by_site
            .into_iter()
            .map(|(s, secs)| (s, (secs * 1000.0) as u64))
            .filter(|(_, ms)| *ms > 0)
            .collect();
        TimerStats {
            sys: Sys {
                runs: self.runs.load(Ordering::Relaxed),
                total,
                running,
                pending: 0,
                waiting: total - running,
            },
            timers,
            flamegraph: Flamegraph {
                running: folded(running_by_site),
                pending: String::new(),
                elapsed_time: folded(elapsed),
            },
        }
    }

    /// `(running, pending)`: `timers` in `GET /`.
    pub fn counts(&self) -> (u64, u64) {
        let running = self.lock().values().filter(|j| j.running > 0).count() as u64;
        (running, 0)
    }

    fn finish(&self, id: u64, took: f64, err: Option<String>) {
        self.runs.fetch_add(1, Ordering::Relaxed);
        let mut jobs = self.lock();
        let Some(j) = jobs.get_mut(&id) else { return };
        j.running = j.running.saturating_sub(1);
        match err {
            Some(e) => j.last_err_msg = e,
            None => {
                j.finish += 1;
                j.min = j.min.min(took);
                j.max = j.max.max(took);
                let delta = took - j.mean;
                j.mean += delta / j.finish as f64;
                j.m2 += delta * (took - j.mean);
            }
        }
    }
}

impl Site {
    /// The site as one folded stack frame list (`module;function`), as flame graphs take it.
    fn folded(&self) -> String {
        format!("{};{}", self.module, self.function)
    }
}

/// A registered job. Dropping it removes the job from the list.
#[derive(Debug)]
pub struct Timer {
    id: u64,
    registry: Arc<Registry>,
}

impl Timer {
    /// Starts one run; it is counted when the [`Run`] is dropped (or failed).
    pub fn run(&self) -> Run<'_> {
        self.registry.lock().entry(self.id).and_modify(|j| {
            j.running += 1;
            j.runs += 1;
        });
        Run {
            timer: self,
            started: Instant::now(),
            err: None,
            done: false,
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

/// One run of a job, timed from [`Timer::run`] to its drop.
#[derive(Debug)]
pub struct Run<'a> {
    timer: &'a Timer,
    started: Instant,
    err: Option<String>,
    done: bool,
}

impl Run<'_> {
    /// Ends the run as failed with `msg` (Kong's `last_err_msg`; a failed run does not count
    /// as finished).
    pub fn fail(mut self, msg: impl Into<String>) {
        self.err = Some(msg.into());
    }

    fn end(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        let took = self.started.elapsed().as_secs_f64();
        self.timer
            .registry
            .finish(self.timer.id, took, self.err.take());
    }
}

impl Drop for Run<'_> {
    fn drop(&mut self) {
        self.end();
    }
}

/// Kong's `GET /timers` `stats`.
#[derive(Debug, Clone, Serialize)]
pub struct TimerStats {
    /// Totals.
    pub sys: Sys,
    /// The live jobs by name.
    pub timers: BTreeMap<String, TimerEntry>,
    /// Folded stacks (`frames count` lines) for flame graphs.
    pub flamegraph: Flamegraph,
}

/// Totals over the jobs.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sys {
    /// Runs completed, by every job (dropped ones included).
    pub runs: u64,
    /// Live jobs.
    pub total: u64,
    /// Jobs in a run now.
    pub running: u64,
    /// Jobs due but not started (always 0 here: see the crate's notes).
    pub pending: u64,
    /// Jobs waiting for their next run.
    pub waiting: u64,
}

/// One job.
#[derive(Debug, Clone, Serialize)]
pub struct TimerEntry {
    /// Its name.
    pub name: String,
    /// Where it was started.
    pub meta: Meta,
    /// Whether it runs once (a delayed action) rather than again and again.
    pub once: bool,
    /// How its runs went.
    pub stats: JobStats,
}

/// Where a job was started.
#[derive(Debug, Clone, Serialize)]
pub struct Meta {
    /// `module::function`.
    pub name: String,
    /// `module;function`.
    pub callstack: String,
}

/// How a job's runs went.
#[derive(Debug, Clone, Serialize)]
pub struct JobStats {
    /// Seconds per finished run.
    pub elapsed_time: ElapsedTime,
    /// Runs started.
    pub runs: u64,
    /// Runs finished without an error.
    pub finish: u64,
    /// The last run's error ("" when none failed yet).
    pub last_err_msg: String,
}

/// Seconds per finished run (timer-ng's figures before a run: min 9999999, max -1).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ElapsedTime {
    /// Shortest.
    pub min: f64,
    /// Longest.
    pub max: f64,
    /// Mean.
    pub avg: f64,
    /// Population variance.
    pub variance: f64,
}

/// Folded stacks: one `module;function count` line per site.
#[derive(Debug, Clone, Serialize)]
pub struct Flamegraph {
    /// Jobs running now, by site.
    pub running: String,
    /// Jobs due but not started (none here).
    pub pending: String,
    /// Milliseconds spent in finished runs of live jobs, by site.
    pub elapsed_time: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_timed_and_counted_and_jobs_leave_with_their_timer() {
        let r = Registry::new();
        let a = r.register("a", Site::new("m", "f"), false);
        let b = r.register("b", Site::new("m", "g"), true);
        let s = r.stats();
        assert_eq!(
            (s.sys.total, s.sys.running, s.sys.waiting, s.sys.runs),
            (2, 0, 2, 0)
        );
        let before = &s.timers["a"].stats.elapsed_time;
        assert_eq!(
            (before.min, before.max, before.avg),
            (9_999_999.0, -1.0, 0.0)
        );
        {
            let _run = a.run();
            let s = r.stats();
            assert_eq!((s.sys.running, s.sys.waiting), (1, 1));
            assert_eq!(s.flamegraph.running, "m;f 1\n");
            assert_eq!(r.counts(), (1, 0));
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        a.run().fail("boom");
        let s = r.stats();
        let job = &s.timers["a"];
        assert_eq!((job.stats.runs, job.stats.finish), (2, 1));
        assert_eq!(job.stats.last_err_msg, "boom");
        assert!(job.stats.elapsed_time.min >= 0.02, "{job:?}");
        assert_eq!(job.stats.elapsed_time.min, job.stats.elapsed_time.max);
        assert_eq!(job.stats.elapsed_time.variance, 0.0);
        assert_eq!(job.meta.name, "m::f");
        assert!(s.timers["b"].once);
        assert!(
            s.flamegraph.elapsed_time.starts_with("m;f "),
            "{:?}",
            s.flamegraph
        );
        assert_eq!(s.flamegraph.running, "");
        drop(b);
        let s = r.stats();
        assert_eq!((s.sys.total, s.sys.runs), (1, 2));
        assert!(!s.timers.contains_key("b"));
    }

    #[test]
    fn variance_is_the_population_variance_of_finished_runs() {
        let r = Registry::new();
        let t = r.register("t", Site::new("m", "f"), false);
        // (real runs are too short to give known durations: feed them)
        for took in [1.0, 2.0, 3.0, 4.0] {
            r.finish(t.id, took, None);
        }
        r.finish(t.id, 100.0, Some("failed runs are not timed".into()));
        let e = r.stats().timers["t"].stats.elapsed_time;
        assert_eq!((e.min, e.max), (1.0, 4.0));
        assert!((e.avg - 2.5).abs() < 1e-9, "{e:?}");
        assert!((e.variance - 1.25).abs() < 1e-9, "{e:?}");
    }

    #[test]
    fn stats_serialize_in_kongs_shape() {
        let r = Registry::new();
        let _t = r.register("x", Site::new("m", "f"), false);
        let v = serde_json::to_value(r.stats()).expect("json");
        for key in ["runs", "total", "running", "pending", "waiting"] {
            assert!(v["sys"][key].is_u64(), "{key}: {v}");
        }
        for key in ["running", "pending", "elapsed_time"] {
            assert!(v["flamegraph"][key].is_string(), "{key}: {v}");
        }
        assert_eq!(v["timers"]["x"]["stats"]["last_err_msg"], "");
        assert_eq!(v["timers"]["x"]["meta"]["callstack"], "m;f");
    }
}
