//! The process's open-file limit (Kong's `nginx_main_worker_rlimit_nofile`, nginx's
//! `worker_rlimit_nofile`).
//!
//! Every client connection, upstream connection and listener takes a file descriptor, so
//! the limit bounds how many connections the data plane can hold. A shell's usual soft
//! limit (1024) is far below what a gateway needs, while the hard limit is typically much
//! higher.
//!
//! - `auto` (the default) raises the soft limit to the hard limit, as Go's runtime does for
//!   its programs. Kong's `auto` sizes nginx's limit from `ulimit -n`, held between 1024 and
//!   16384 per worker process; the gateway runs its workers as threads of one process, so
//!   it takes all the hard limit allows. As Kong does, it warns when the result is below
//!   4096.
//! - A number sets both limits to it, as nginx's `worker_rlimit_nofile` does. When the
//!   system refuses (raising the hard limit takes privilege), the gateway warns and keeps
//!   the limits it has, as nginx logs the failure and goes on.

use anyhow::bail;
use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit, rlim_t, setrlimit};

/// Below this many descriptors, Kong warns at start ("for better performance set it to at
/// least 4096").
const KONG_ADVISED: rlim_t = 4096;

/// What `nginx_main_worker_rlimit_nofile` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nofile {
    /// The soft limit raised to the hard limit.
    Auto,
    /// Both limits set to this.
    Exactly(rlim_t),
}

impl Nofile {
    /// Parses the setting: `auto` or a positive number.
    pub fn parse(v: &str) -> anyhow::Result<Nofile> {
        Ok(auto_or_positive("nginx_main_worker_rlimit_nofile", v)?
            .map_or(Nofile::Auto, Nofile::Exactly))
    }

    /// The (soft, hard) limits to ask for, given the current ones.
    /// (An unlimited hard limit counts as `nr_open()`, the kernel's ceiling for the setting,
    /// read only then.)
    fn wanted(
        self,
        (soft, hard): (rlim_t, rlim_t),
        nr_open: impl FnOnce() -> rlim_t,
    ) -> (rlim_t, rlim_t) {
        match self {
            Nofile::Auto if hard == RLIM_INFINITY => (soft.max(nr_open()), hard),
            Nofile::Auto => (soft.max(hard), hard),
            Nofile::Exactly(n) => (n, n),
        }
    }
}

/// A setting that is `auto` (`None`) or a positive number; an error names `setting`.
fn auto_or_positive<N>(setting: &str, v: &str) -> anyhow::Result<Option<N>>
where
    N: std::str::FromStr + PartialOrd + Default,
{
    match v.trim() {
        "auto" => Ok(None),
        n => match n.parse::<N>() {
            Ok(n) if n > N::default() => Ok(Some(n)),
            _ => bail!("invalid {setting} '{v}': expected a positive number or auto"),
        },
    }
}

/// Applies the setting to this process and logs the outcome; returns the soft limit now in
/// effect (`None` when it cannot be read). A refusal by the system is a warning, not an
/// error: the gateway starts with the limits it had.
pub fn apply(setting: Nofile) -> Option<rlim_t> {
    let current = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit");
            return None;
        }
    };
    let (soft, hard) = setting.wanted(current, nr_open);
    let now = if (soft, hard) == current {
        current.0
    } else {
        match setrlimit(Resource::RLIMIT_NOFILE, soft, hard) {
            Ok(()) => {
                tracing::debug!(
                    from = current.0,
                    to = soft,
                    hard,
                    "open-file limit set (nginx_main_worker_rlimit_nofile)"
                );
                soft
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    wanted = soft,
                    soft = current.0,
                    hard = current.1,
                    "cannot set the open-file limit (nginx_main_worker_rlimit_nofile), keeping it"
                );
                current.0
            }
        }
    };
    if now < KONG_ADVISED {
        tracing::warn!(
            limit = now,
            "the open-file limit is low: each connection takes a file descriptor; for better \
             performance allow at least 4096 (ulimit -n)"
        );
    }
    Some(now)
}

/// What `nginx_events_worker_connections` asks for: the most connections per worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerConnections {
    /// Kong's `auto`: the open-file limit, held between 1024 and 16384.
    Auto,
    /// This many.
    Exactly(usize),
}

impl WorkerConnections {
    /// Parses the setting: `auto` or a positive number.
    pub fn parse(v: &str) -> anyhow::Result<WorkerConnections> {
        Ok(auto_or_positive("nginx_events_worker_connections", v)?
            .map_or(WorkerConnections::Auto, WorkerConnections::Exactly))
    }

    /// The most client connections of `workers` workers together, under the open-file
    /// limit `nofile` (the soft one in effect; `None`: unknown).
    pub fn total(self, nofile: Option<rlim_t>, workers: usize) -> usize {
        let per_worker = match self {
            WorkerConnections::Auto => {
                let n = nofile.unwrap_or(16_384).clamp(1024, 16_384);
                usize::try_from(n).unwrap_or(16_384)
            }
            WorkerConnections::Exactly(n) => n,
        };
        per_worker.saturating_mul(workers.max(1))
    }
}

/// The kernel's ceiling for the open-file limit (Linux's `fs.nr_open`; 1048576 by default,
/// assumed where it cannot be read).
fn nr_open() -> rlim_t {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_connections_are_kongs_auto_or_a_number_per_worker() {
        let auto = WorkerConnections::parse("auto").unwrap();
        assert_eq!(auto.total(Some(1 << 20), 2), 2 * 16_384);
        assert_eq!(auto.total(Some(256), 1), 1024);
        assert_eq!(auto.total(Some(4096), 3), 3 * 4096);
        assert_eq!(auto.total(None, 1), 16_384);
        let n = WorkerConnections::parse("100").unwrap();
        assert_eq!(n.total(Some(1 << 20), 4), 400);
        for bad in ["0", "-5", "many", ""] {
            let e = WorkerConnections::parse(bad).unwrap_err().to_string();
            assert!(
                e.starts_with("invalid nginx_events_worker_connections"),
                "{e}"
            );
        }
    }

    #[test]
    fn the_setting_is_auto_or_a_positive_number() {
        assert_eq!(Nofile::parse("auto").unwrap(), Nofile::Auto);
        assert_eq!(Nofile::parse("65536").unwrap(), Nofile::Exactly(65536));
        for bad in ["0", "-1", "lots", "", "16k"] {
            let e = Nofile::parse(bad).unwrap_err().to_string();
            assert!(
                e.starts_with("invalid nginx_main_worker_rlimit_nofile"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn auto_raises_the_soft_limit_to_the_hard_one_and_a_number_sets_both() {
        let nr_open = || 1 << 20;
        assert_eq!(
            Nofile::Auto.wanted((1024, 524_288), nr_open),
            (524_288, 524_288)
        );
        assert_eq!(Nofile::Auto.wanted((4096, 4096), nr_open), (4096, 4096));
        // An unlimited hard limit: as far as the kernel lets the setting go.
        assert_eq!(
            Nofile::Auto.wanted((1024, RLIM_INFINITY), nr_open),
            (1 << 20, RLIM_INFINITY)
        );
        assert_eq!(
            Nofile::Exactly(2048).wanted((1024, 524_288), nr_open),
            (2048, 2048)
        );
    }
}
