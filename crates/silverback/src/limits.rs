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
        match v.trim() {
            "auto" => Ok(Nofile::Auto),
            n => match n.parse::<rlim_t>() {
                Ok(n) if n > 0 => Ok(Nofile::Exactly(n)),
                _ => bail!(
                    "invalid nginx_main_worker_rlimit_nofile '{v}': expected a positive number or auto"
                ),
            },
        }
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

/// Applies the setting to this process and logs the outcome.
/// A refusal by the system is a warning, not an error: the gateway starts with the limits
/// it had.
pub fn apply(setting: Nofile) {
    let current = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit");
            return;
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
