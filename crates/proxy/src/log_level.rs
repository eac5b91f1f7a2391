//! The node's log level as Kong's admin API shows and changes it: `GET
//! /debug/node/log-level` and `PUT /debug/node/log-level/{log_level}[?timeout=N]`.
//!
//! Levels are Kong's (nginx's) names, `debug` to `emerg`; each maps to a `tracing` filter
//! ([`filter_of`]). A change lasts `timeout` seconds (60 by default, as in Kong), then the
//! level configured at start returns. The program that owns the logging (the binary, with a
//! `tracing_subscriber` reload handle) supplies the function that applies a filter.
//!
//! One difference from Kong: Kong refuses a change of log level in DB-less mode (405); a
//! Silverback node changes its own (its logging is the process's), and only the cluster-wide
//! form is refused.

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Kong's log level names, most verbose first.
pub const KONG_LEVELS: [&str; 8] = [
    "debug", "info", "notice", "warn", "error", "crit", "alert", "emerg",
];

/// How long a change lasts when the request gives no `timeout` (Kong's default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The `tracing` filter for a Kong level name (`notice` is `info`; `crit`, `alert` and
/// `emerg` are `error`), or `None` for a name Kong does not know.
pub fn filter_of(kong: &str) -> Option<&'static str> {
    Some(match kong {
        "debug" => "debug",
        "info" | "notice" => "info",
        "warn" => "warn",
        "error" | "crit" | "alert" | "emerg" => "error",
        _ => return None,
    })
}

/// Applies a `tracing` filter to the process's logging; an error says why it could not.
pub type Apply = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Why a level was not set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    /// Not one of [`KONG_LEVELS`].
    #[error("unknown log level: {0}")]
    Unknown(String),
    /// The filter could not be applied.
    #[error("failed setting log level: {0}")]
    Failed(String),
    /// The program running the gateway keeps its logging to itself ([`LogLevel::fixed`]).
    #[error("cannot change log level: it is fixed by the program running the gateway")]
    Fixed,
}

/// What a successful [`LogLevel::set`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Set {
    /// The level was already that one: nothing changed (and no timeout was started).
    Already,
    /// The level changed; the configured one returns after the timeout.
    Changed,
}

struct State {
    /// The Kong name shown now.
    current: String,
    /// The filter applied now (the configured one may be finer than the name shown).
    filter: String,
    /// Counts changes, so that a timeout only reverts the change that started it.
    generation: u64,
    /// The task that reverts the last change, cancelled by the next.
    revert: Option<tokio::task::AbortHandle>,
}

/// The node's log level; see the [module documentation](self).
pub struct LogLevel {
    /// The Kong name of the level configured at start.
    configured: String,
    /// The filter configured at start (which may be finer than a level: `silverback=debug`).
    configured_filter: String,
    /// `None`: the level is fixed.
    apply: Option<Apply>,
    state: Mutex<State>,
}

impl std::fmt::Debug for LogLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogLevel")
            .field("configured", &self.configured)
            .field("current", &self.current())
            .finish_non_exhaustive()
    }
}

impl LogLevel {
    /// The level configured at start, shown as `configured` (a Kong name) and applied as
    /// `configured_filter`; `apply` applies a filter to the process's logging.
    pub fn new(configured: &str, configured_filter: &str, apply: Apply) -> LogLevel {
        LogLevel::with(configured, configured_filter, Some(apply))
    }

    /// A level that cannot be changed: the embedding program keeps its logging to itself.
    /// Shows Kong's default, `notice`.
    pub fn fixed() -> LogLevel {
        LogLevel::with("notice", "info", None)
    }

    fn with(configured: &str, configured_filter: &str, apply: Option<Apply>) -> LogLevel {
        LogLevel {
            configured: configured.to_string(),
            configured_filter: configured_filter.to_string(),
            apply,
            state: Mutex::new(State {
                current: configured.to_string(),
                filter: configured_filter.to_string(),
                generation: 0,
                revert: None,
            }),
        }
    }

    /// The Kong name of the level now.
    pub fn current(&self) -> String {
        self.lock().current.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // (a panic while holding the lock leaves the state whole: every write is one field)
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets the level `level` (a Kong name) for `timeout`, after which the configured level
    /// returns. Needs a Tokio runtime (the timeout is a task): without one it fails, changing
    /// nothing.
    pub fn set(self: &Arc<Self>, level: &str, timeout: Duration) -> Result<Set, SetError> {
        let filter = filter_of(level).ok_or_else(|| SetError::Unknown(level.to_string()))?;
        let apply = self.apply.as_ref().ok_or(SetError::Fixed)?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| SetError::Failed("no runtime for its timeout".into()))?;
        let mut st = self.lock();
        if st.current == level && st.filter == filter {
            return Ok(Set::Already);
        }
        // (said before the change, so that a change to a quieter level is seen too)
        tracing::info!(
            log_level = level,
            timeout_s = timeout.as_secs(),
            "log level changed"
        );
        apply(filter).map_err(SetError::Failed)?;
        st.current = level.to_string();
        st.filter = filter.to_string();
        st.generation += 1;
        let generation = st.generation;
        let this = Arc::clone(self);
        // (listed in `GET /timers` until it has run or a later change replaced it)
        let timer = silverback_timers::global().register(
            "log-level-revert",
            silverback_timers::Site::new(module_path!(), "set"),
        );
        let revert = runtime.spawn(async move {
            tokio::time::sleep(timeout).await;
            let run = timer.run();
            if let Err(e) = this.revert(generation) {
                run.fail(e);
            }
        });
        if let Some(earlier) = st.revert.replace(revert.abort_handle()) {
            earlier.abort();
        }
        Ok(Set::Changed)
    }

    /// Back to the configured level, unless the change of `generation` was followed by
    /// another. Fails with the logger's message when the level cannot be restored.
    fn revert(&self, generation: u64) -> Result<(), String> {
        let Some(apply) = self.apply.as_ref() else {
            return Ok(());
        };
        let mut st = self.lock();
        if st.generation != generation {
            return Ok(());
        }
        match apply(&self.configured_filter) {
            Ok(()) => {
                st.current.clone_from(&self.configured);
                st.filter.clone_from(&self.configured_filter);
                st.generation += 1;
                st.revert = None;
                drop(st);
                tracing::info!(log_level = %self.configured, "log level timeout: back to the configured level");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot restore the configured log level");
                Err(format!("cannot restore the configured log level: {e}"))
            }
        }
    }
}

/// Kong's reading of the `timeout` query parameter: a number rounded up (anything that is
/// not a number gives the default, as Lua's `tonumber` returning nil does); a negative one
/// is refused with Kong's message.
pub fn parse_timeout(param: Option<&str>) -> Result<Duration, &'static str> {
    let Some(n) = param.and_then(lua_number).filter(|n| !n.is_nan()) else {
        return Ok(DEFAULT_TIMEOUT);
    };
    let n = n.ceil();
    if n < 0.0 {
        return Err("timeout must be greater than or equal to 0");
    }
    // (`as` saturates: an enormous timeout is "until changed again")
    Ok(Duration::from_secs(n as u64))
}

/// A number as Lua's `tonumber` reads a string: decimal (with a fraction or exponent), or
/// hexadecimal after `0x`, with an optional sign, blanks around it. (Not `inf` or `nan`.)
fn lua_number(s: &str) -> Option<f64> {
    let s = s.trim();
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if !digits.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return None;
    }
    let n = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        // (an integer: Lua's hexadecimal fractions are too rare to matter here)
        Some(h) => u64::from_str_radix(h, 16).ok()? as f64,
        None => digits.parse::<f64>().ok()?,
    };
    Some(if negative { -n } else { n })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recording() -> (Arc<LogLevel>, Arc<Mutex<Vec<String>>>) {
        let applied = Arc::new(Mutex::new(Vec::new()));
        let a = Arc::clone(&applied);
        let level = LogLevel::new(
            "notice",
            "info",
            Box::new(move |f| {
                a.lock().unwrap().push(f.to_string());
                Ok(())
            }),
        );
        (Arc::new(level), applied)
    }

    #[test]
    fn kong_names_map_to_filters() {
        for name in KONG_LEVELS {
            assert!(filter_of(name).is_some(), "{name}");
        }
        assert_eq!(filter_of("notice"), Some("info"));
        assert_eq!(filter_of("crit"), Some("error"));
        assert_eq!(filter_of("trace"), None);
        assert_eq!(filter_of("DEBUG"), None);
    }

    #[test]
    fn timeouts_are_read_as_kong_reads_them() {
        assert_eq!(parse_timeout(None), Ok(DEFAULT_TIMEOUT));
        assert_eq!(parse_timeout(Some("abc")), Ok(DEFAULT_TIMEOUT));
        assert_eq!(parse_timeout(Some("1.2")), Ok(Duration::from_secs(2)));
        assert_eq!(parse_timeout(Some("0")), Ok(Duration::ZERO));
        assert_eq!(
            parse_timeout(Some("-1")),
            Err("timeout must be greater than or equal to 0")
        );
        assert_eq!(
            parse_timeout(Some("1e300")),
            Ok(Duration::from_secs(u64::MAX))
        );
        assert_eq!(parse_timeout(Some(" 0x10 ")), Ok(Duration::from_secs(16)));
        assert_eq!(parse_timeout(Some("inf")), Ok(DEFAULT_TIMEOUT));
        assert_eq!(parse_timeout(Some("--1")), Ok(DEFAULT_TIMEOUT));
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test]
    async fn a_change_lasts_its_timeout_then_the_configured_level_returns() {
        let (level, applied) = recording();
        assert_eq!(level.current(), "notice");
        assert_eq!(level.set("notice", DEFAULT_TIMEOUT), Ok(Set::Already));
        assert_eq!(
            level.set("verbose", DEFAULT_TIMEOUT),
            Err(SetError::Unknown("verbose".into()))
        );
        assert!(applied.lock().unwrap().is_empty());
        assert_eq!(level.set("debug", ms(500)), Ok(Set::Changed));
        assert_eq!(level.current(), "debug");
        assert_eq!(*applied.lock().unwrap(), ["debug"]);
        tokio::time::sleep(ms(100)).await;
        assert_eq!(level.current(), "debug");
        tokio::time::sleep(ms(800)).await;
        assert_eq!(level.current(), "notice");
        assert_eq!(*applied.lock().unwrap(), ["debug", "info"]);
    }

    #[tokio::test]
    async fn only_the_latest_change_is_reverted_by_its_own_timeout() {
        let (level, applied) = recording();
        assert_eq!(level.set("debug", ms(400)), Ok(Set::Changed));
        tokio::time::sleep(ms(100)).await;
        assert_eq!(level.set("warn", ms(1200)), Ok(Set::Changed));
        // the first change's timeout passes: the second change stays
        tokio::time::sleep(ms(600)).await;
        assert_eq!(level.current(), "warn");
        tokio::time::sleep(ms(1000)).await;
        assert_eq!(level.current(), "notice");
        assert_eq!(*applied.lock().unwrap(), ["debug", "warn", "info"]);
    }

    #[test]
    fn a_fixed_level_refuses_changes_and_none_is_made_without_a_runtime() {
        let level = Arc::new(LogLevel::fixed());
        assert_eq!(level.current(), "notice");
        assert_eq!(level.set("debug", DEFAULT_TIMEOUT), Err(SetError::Fixed));
        assert_eq!(level.current(), "notice");
        let (level, applied) = recording();
        assert!(matches!(
            level.set("debug", DEFAULT_TIMEOUT),
            Err(SetError::Failed(_))
        ));
        assert_eq!(level.current(), "notice");
        assert!(applied.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_configured_filter_finer_than_its_name_can_be_set_to_that_name() {
        // configured `silverback=debug,info`, shown as `info`: setting `info` applies the
        // plain level, and is not "already" in place
        let applied = Arc::new(Mutex::new(Vec::new()));
        let a = Arc::clone(&applied);
        let level = Arc::new(LogLevel::new(
            "info",
            "silverback=debug,info",
            Box::new(move |f| {
                a.lock().unwrap().push(f.to_string());
                Ok(())
            }),
        ));
        assert_eq!(level.set("info", DEFAULT_TIMEOUT), Ok(Set::Changed));
        assert_eq!(*applied.lock().unwrap(), ["info"]);
        assert_eq!(level.set("info", DEFAULT_TIMEOUT), Ok(Set::Already));
    }
}
