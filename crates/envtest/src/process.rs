//! Child processes that die with the test: killed on drop, and (through `setpriv --pdeathsig`)
//! when the test process itself dies without unwinding.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;

/// Whether `setpriv --pdeathsig` (util-linux) is available.
fn have_setpriv_pdeathsig() -> bool {
    static HAVE: OnceLock<bool> = OnceLock::new();
    *HAVE.get_or_init(|| {
        Command::new("setpriv")
            .arg("--help")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("--pdeathsig"))
            .unwrap_or(false)
    })
}

/// Builds a command for `program` that receives SIGKILL when the thread that spawned it exits.
///
/// [`Supervised`] spawns from a thread that lives exactly as long as the child is wanted, so the
/// child also dies when the test process is killed, aborts, or exits without dropping it (for
/// example a control plane kept in a `static`).
pub(crate) fn command_dying_with_parent(program: &Path) -> Command {
    if have_setpriv_pdeathsig() {
        let mut cmd = Command::new("setpriv");
        cmd.arg("--pdeathsig").arg("KILL").arg("--").arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

/// A child process owned by a supervising thread; dropping it kills the child (SIGKILL) and
/// reaps it.
pub(crate) struct Supervised {
    name: String,
    pid: u32,
    log: Option<PathBuf>,
    exit: Arc<Mutex<Option<ExitStatus>>>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Supervised {
    /// Spawns `cmd`. With `log`, stdout and stderr are appended to that file (created if
    /// missing; a restarted process adds to its predecessor's log); otherwise they are
    /// discarded. Stdin is closed.
    pub fn spawn(name: &str, mut cmd: Command, log: Option<&Path>) -> anyhow::Result<Self> {
        cmd.stdin(Stdio::null());
        match log {
            Some(path) => {
                let out = File::options()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("creating log file {}", path.display()))?;
                let err = out.try_clone()?;
                cmd.stdout(out).stderr(err);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let exit = Arc::new(Mutex::new(None));
        let (started_tx, started_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let exit_in_thread = Arc::clone(&exit);
        let thread = std::thread::Builder::new()
            .name(format!("envtest-{name}"))
            .spawn(move || {
                let mut child = match cmd.spawn() {
                    Ok(child) => child,
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                        return;
                    }
                };
                let _ = started_tx.send(Ok(child.id()));
                loop {
                    match stop_rx.recv_timeout(Duration::from_millis(100)) {
                        Err(RecvTimeoutError::Timeout) => {
                            if let Ok(Some(status)) = child.try_wait() {
                                *exit_in_thread.lock().unwrap_or_else(|p| p.into_inner()) =
                                    Some(status);
                                // Stay alive until told to stop: this thread's exit is what
                                // the pdeathsig of later children would key on.
                                let _ = stop_rx.recv();
                                return;
                            }
                        }
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                            let _ = child.kill();
                            let _ = child.wait();
                            return;
                        }
                    }
                }
            })
            .context("spawning a supervisor thread")?;
        let pid = match started_rx.recv() {
            Ok(Ok(pid)) => pid,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e).with_context(|| format!("starting {name}"));
            }
            Err(_) => anyhow::bail!("the supervisor thread of {name} died"),
        };
        Ok(Self {
            name: name.to_owned(),
            pid,
            log: log.map(Path::to_path_buf),
            exit,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The process id (of `setpriv`, which execs the program, so the same process).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit status, if the child has exited (noticed within 100 ms).
    pub fn exit_status(&self) -> Option<ExitStatus> {
        *self.exit.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the child runs: not killed through [`kill`](Self::kill) and not exited.
    pub fn is_running(&self) -> bool {
        self.thread.is_some() && self.exit_status().is_none()
    }

    /// The last `max_lines` lines of the log file, for error messages.
    pub fn log_tail(&self, max_lines: usize) -> String {
        let Some(path) = &self.log else {
            return String::new();
        };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(max_lines);
        format!(
            "--- last lines of {} ({}) ---\n{}",
            self.name,
            path.display(),
            lines[start..].join("\n")
        )
    }

    /// Kills the child and waits for it.
    pub fn kill(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A token naming this process instance (`<pid> <start time>`), written into resources we may
/// have to clean up after a crash; see [`owner_alive`].
pub(crate) fn owner_token() -> String {
    let pid = std::process::id();
    format!("{pid} {}", start_time(pid).unwrap_or_default())
}

/// Whether the process named by an [`owner_token`] still runs (a reused pid does not count).
pub(crate) fn owner_alive(token: &str) -> bool {
    let mut parts = token.split_whitespace();
    let (Some(pid), Some(start)) = (parts.next(), parts.next()) else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    start_time(pid).is_some_and(|s| s == start)
}

/// Field 22 of /proc/PID/stat: the start time in clock ticks since boot.
fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19).map(str::to_owned)
}

/// A free TCP port on 127.0.0.1 (bound and released; another process could take it meanwhile,
/// which the control plane survives by retrying).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).context("binding port 0")?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_token_identifies_this_process() {
        let token = owner_token();
        assert!(owner_alive(&token));
        let pid = std::process::id();
        assert!(!owner_alive(&format!("{pid} 1")));
        assert!(!owner_alive("garbage"));
    }

    #[test]
    fn drop_kills_the_child() {
        let mut cmd = command_dying_with_parent(Path::new("/bin/sleep"));
        cmd.arg("30");
        let child = Supervised::spawn("sleep", cmd, None).unwrap();
        let pid = child.pid();
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        assert!(child.exit_status().is_none());
        drop(child);
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn exit_is_noticed() {
        let child = Supervised::spawn("true", Command::new("/bin/true"), None).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while child.exit_status().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(child.exit_status().is_some_and(|s| s.success()));
    }
}
