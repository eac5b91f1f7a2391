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
//! let timer = registry.register("healthcheck:billing", Site::new("checker", "run"));
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

use serde::{Serialize, Serializer};

/// Where a job was started: its module and function (Kong shows the Lua file, line and
/// function that created the timer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
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

    /// The site as one folded stack (`module;function`), as flame graphs take it.
    fn folded(&self) -> String {
        format!("{};{}", self.module, self.function)
    }
}

/// The registry of live jobs. [`global`] is the process's; tests may make their own.
#[derive(Debug, Default)]
pub struct Registry {
    state: Mutex<State>,
    next_id: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    jobs: BTreeMap<u64, Job>,
    /// Runs ended, by every job, including jobs since dropped.
    runs: u64,
    /// Seconds spent in finished runs, by site, including jobs since dropped.
    elapsed_by_site: BTreeMap<Site, f64>,
}

#[derive(Debug)]
struct Job {
    name: String,
    site: Site,
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

/// How a run ended.
#[derive(Debug)]
enum Outcome {
    Finished,
    Failed(String),
    /// Stopped before its work was done (its job was being shut down): neither finished nor
    /// failed.
    Abandoned,
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

    fn lock(&self) -> MutexGuard<'_, State> {
        // (a panic while it was held leaves counts, not broken invariants)
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a job under `name`. The job is listed until the [`Timer`] is dropped.
    /// (Kong's timer names are unique per worker; two live jobs of one name, an old and a
    /// new configuration's during a swap, are both counted in `sys` and shown once, the
    /// later one.)
    pub fn register(self: &Arc<Self>, name: impl Into<String>, site: Site) -> Timer {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().jobs.insert(
            id,
            Job {
                name: name.into(),
                site,
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
        let st = self.lock();
        let running = st.jobs.values().filter(|j| j.running > 0).count() as u64;
        let total = st.jobs.len() as u64;
        let mut timers = BTreeMap::new();
        let mut running_by_site: BTreeMap<Site, u64> = BTreeMap::new();
        for j in st.jobs.values() {
            if j.running > 0 {
                *running_by_site.entry(j.site).or_default() += 1;
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
                    is_running: j.running > 0,
                    meta: Meta {
                        name: format!("{}::{}", j.site.module, j.site.function),
                        callstack: j.site.folded(),
                    },
                    stats: JobStats {
                        elapsed_time,
                        runs: j.runs,
                        finish: j.finish,
                        last_err_msg: j.last_err_msg.clone(),
                    },
                },
            );
        }
        let running_lines = running_by_site
            .iter()
            .map(|(site, n)| format!("{} {n}\n", site.folded()))
            .collect();
        let elapsed_lines = st
            .elapsed_by_site
            .iter()
            .map(|(site, secs)| (site, (secs * 1000.0) as u64))
            .filter(|(_, ms)| *ms > 0)
            .map(|(site, ms)| format!("{} {ms}\n", site.folded()))
            .collect();
        TimerStats {
            sys: Sys {
                runs: st.runs,
                total,
                running,
                pending: 0,
                waiting: total - running,
            },
            timers,
            flamegraph: Flamegraph {
                running: running_lines,
                pending: String::new(),
                elapsed_time: elapsed_lines,
            },
        }
    }

    /// `(running, pending)`: `timers` in `GET /`.
    pub fn counts(&self) -> (u64, u64) {
        let running = self.lock().jobs.values().filter(|j| j.running > 0).count() as u64;
        (running, 0)
    }

    fn end(&self, id: u64, took: f64, outcome: Outcome) {
        let mut st = self.lock();
        st.runs += 1;
        let Some(j) = st.jobs.get_mut(&id) else {
            return;
        };
        j.running = j.running.saturating_sub(1);
        match outcome {
            Outcome::Failed(e) => j.last_err_msg = e,
            Outcome::Abandoned => {}
            Outcome::Finished => {
                j.finish += 1;
                j.min = j.min.min(took);
                j.max = j.max.max(took);
                let delta = took - j.mean;
                j.mean += delta / j.finish as f64;
                j.m2 += delta * (took - j.mean);
                let site = j.site;
                *st.elapsed_by_site.entry(site).or_default() += took;
            }
        }
    }
}

/// A registered job. Dropping it removes the job from the list.
pub struct Timer {
    id: u64,
    registry: Arc<Registry>,
}

impl std::fmt::Debug for Timer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timer")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Timer {
    /// Starts one run; it is counted when the [`Run`] is dropped (as finished, or as failed
    /// when its thread is panicking), failed or abandoned.
    pub fn run(&self) -> Run<'_> {
        if let Some(j) = self.registry.lock().jobs.get_mut(&self.id) {
            j.running += 1;
            j.runs += 1;
        }
        Run {
            timer: self,
            started: Instant::now(),
            outcome: Some(Outcome::Finished),
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.registry.lock().jobs.remove(&self.id);
    }
}

/// One run of a job, timed from [`Timer::run`] to its end.
#[derive(Debug)]
pub struct Run<'a> {
    timer: &'a Timer,
    started: Instant,
    outcome: Option<Outcome>,
}

impl Run<'_> {
    /// Ends the run as failed with `msg` (Kong's `last_err_msg`; a failed run does not count
    /// as finished).
    pub fn fail(mut self, msg: impl Into<String>) {
        self.outcome = Some(Outcome::Failed(msg.into()));
    }

    /// Ends the run unfinished, neither finished nor failed: its job was stopped midway.
    pub fn abandon(mut self) {
        self.outcome = Some(Outcome::Abandoned);
    }
}

impl Drop for Run<'_> {
    fn drop(&mut self) {
        let outcome = if std::thread::panicking() {
            Outcome::Failed("panicked".into())
        } else {
            self.outcome.take().unwrap_or(Outcome::Finished)
        };
        let took = self.started.elapsed().as_secs_f64();
        self.timer.registry.end(self.timer.id, took, outcome);
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
    /// Whether a run is under way.
    pub is_running: bool,
    /// Where it was started.
    pub meta: Meta,
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
/// Whole numbers are written as integers, as Lua's JSON encoder writes them.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ElapsedTime {
    /// Shortest.
    #[serde(serialize_with = "lua_number")]
    pub min: f64,
    /// Longest.
    #[serde(serialize_with = "lua_number")]
    pub max: f64,
    /// Mean.
    #[serde(serialize_with = "lua_number")]
    pub avg: f64,
    /// Population variance.
    #[serde(serialize_with = "lua_number")]
    pub variance: f64,
}

/// A number as Lua's JSON encoder writes it: whole numbers without a fraction.
fn lua_number<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        s.serialize_i64(*x as i64)
    } else {
        s.serialize_f64(*x)
    }
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
        let a = r.register("a", Site::new("m", "f"));
        let b = r.register("b", Site::new("m", "g"));
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
            assert!(s.timers["a"].is_running && !s.timers["b"].is_running);
            assert_eq!(s.flamegraph.running, "m;f 1\n");
            assert_eq!(r.counts(), (1, 0));
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        a.run().fail("boom");
        a.run().abandon();
        let s = r.stats();
        let job = &s.timers["a"];
        assert_eq!((job.stats.runs, job.stats.finish), (3, 1));
        assert_eq!(job.stats.last_err_msg, "boom");
        assert!(job.stats.elapsed_time.min >= 0.02, "{job:?}");
        assert_eq!(job.stats.elapsed_time.min, job.stats.elapsed_time.max);
        assert_eq!(job.stats.elapsed_time.variance, 0.0);
        assert_eq!(job.meta.name, "m::f");
        assert_eq!(s.flamegraph.running, "");
        // a one-shot job's time stays in the flame graph after it is gone
        {
            let _run = b.run();
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        drop(b);
        let s = r.stats();
        assert_eq!((s.sys.total, s.sys.runs), (1, 4));
        assert!(!s.timers.contains_key("b"));
        assert!(
            s.flamegraph.elapsed_time.contains("m;g "),
            "{:?}",
            s.flamegraph
        );
        assert!(
            s.flamegraph.elapsed_time.contains("m;f "),
            "{:?}",
            s.flamegraph
        );
    }

    #[test]
    fn a_run_that_panics_is_a_failed_run() {
        let r = Registry::new();
        let t = r.register("p", Site::new("m", "f"));
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _run = t.run();
            panic!("in the job");
        }));
        assert!(caught.is_err());
        let s = r.stats();
        let job = &s.timers["p"];
        assert_eq!((job.stats.runs, job.stats.finish), (1, 0));
        assert_eq!(job.stats.last_err_msg, "panicked");
        assert!(!job.is_running);
    }

    #[test]
    fn variance_is_the_population_variance_of_finished_runs() {
        let r = Registry::new();
        let t = r.register("t", Site::new("m", "f"));
        // (real runs are too short to give known durations: feed them)
        for took in [1.0, 2.0, 3.0, 4.0] {
            r.end(t.id, took, Outcome::Finished);
        }
        r.end(
            t.id,
            100.0,
            Outcome::Failed("failed runs are not timed".into()),
        );
        let e = r.stats().timers["t"].stats.elapsed_time;
        assert_eq!((e.min, e.max), (1.0, 4.0));
        assert!((e.avg - 2.5).abs() < 1e-9, "{e:?}");
        assert!((e.variance - 1.25).abs() < 1e-9, "{e:?}");
    }

    #[test]
    fn stats_serialize_in_kongs_shape() {
        let r = Registry::new();
        let _t = r.register("x", Site::new("m", "f"));
        let v = serde_json::to_value(r.stats()).expect("json");
        for key in ["runs", "total", "running", "pending", "waiting"] {
            assert!(v["sys"][key].is_u64(), "{key}: {v}");
        }
        for key in ["running", "pending", "elapsed_time"] {
            assert!(v["flamegraph"][key].is_string(), "{key}: {v}");
        }
        let x = &v["timers"]["x"];
        assert_eq!(x["name"], "x");
        assert_eq!(x["is_running"], false);
        assert_eq!(x["stats"]["last_err_msg"], "");
        assert_eq!(x["meta"]["callstack"], "m;f");
        // timer-ng's figures before a run, written as Lua writes whole numbers
        assert_eq!(
            x["stats"]["elapsed_time"],
            serde_json::json!({"min": 9999999, "max": -1, "avg": 0, "variance": 0})
        );
    }
}
