//! Network namespaces for test backends.
//!
//! The API server rejects loopback addresses in EndpointSlices, so a backend that a test wants
//! to reach through a Service must listen on another address. [`NetNs::create`] makes a network
//! namespace joined to the host by a veth pair on a private /30:
//!
//! ```text
//!  host: sbth<N>  10.213.X.Y+1/30  <== veth ==>  netns sbt-<N>: sbtn<N>  10.213.X.Y+2/30 (+ lo)
//! ```
//!
//! The host reaches [`NetNs::addr`] through the on-link route of the veth. A backend runs in the
//! namespace either as a process ([`NetNs::command`] / [`NetNs::spawn`]) or in the test process
//! itself: a socket keeps the namespace it was created in, so [`NetNs::bind_tcp`] binds a
//! listener inside the namespace that the test then serves from its own runtime (for example
//! with [`NetNs::spawn_echo`]).
//!
//! Everything is removed on drop. Namespaces left by a test process that died without
//! unwinding are removed by the next [`NetNs::create`]. Needs root (`ip netns`, `setns`).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let ns = silverback_envtest::netns::NetNs::create()?;
//! let echo = ns.spawn_echo(8080, "backend-a")?; // serves http://<ns.addr()>:8080/
//! // ... an EndpointSlice pointing at ns.addr():8080 ...
//! # drop(echo); Ok(()) }
//! ```

use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context as _, bail};

use crate::echo::EchoServer;
use crate::process::{self, Supervised};

/// Where the claims on namespace indexes live (one file per index, holding the owner).
const CLAIM_DIR: &str = "/run/silverback-envtest/netns";
/// Indexes are 0..SLOTS: /30 subnets of 10.213.0.0/16.
const SLOTS: u32 = 16384;

/// A network namespace joined to the host by a veth pair; removed on drop.
#[derive(Debug)]
pub struct NetNs {
    index: u32,
    name: String,
    host_if: String,
    ns_if: String,
    claim: PathBuf,
}

fn run_ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running `ip` (iproute2)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn names(index: u32) -> (String, String, String) {
    (
        format!("sbt-{index}"),
        format!("sbth{index}"),
        format!("sbtn{index}"),
    )
}

/// Best-effort removal of the namespace and veth of `index`.
fn remove(index: u32) {
    let (name, host_if, _) = names(index);
    // Deleting either end of a veth pair deletes both.
    let _ = run_ip(&["link", "del", &host_if]);
    let _ = run_ip(&["netns", "del", &name]);
}

/// Removes the namespaces of test processes that died without cleaning up.
fn sweep_stale_claims() {
    let Ok(entries) = std::fs::read_dir(CLAIM_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(index) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let holder = std::fs::read_to_string(entry.path()).unwrap_or_default();
        // An empty file is being written right now by its creator: leave it.
        if !holder.is_empty() && !process::owner_alive(&holder) {
            remove(index);
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Claims a free index: a claim file created exclusively, holding this process's owner token.
/// Claims of dead processes are cleaned up and reused.
fn claim_index() -> anyhow::Result<(u32, PathBuf)> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    std::fs::create_dir_all(CLAIM_DIR).with_context(|| format!("creating {CLAIM_DIR}"))?;
    let owner = process::owner_token();
    // Spread processes over the range so concurrent test binaries rarely probe the same files.
    let start = std::process::id().wrapping_mul(61) % SLOTS;
    for _ in 0..SLOTS {
        let index = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % SLOTS;
        let claim = Path::new(CLAIM_DIR).join(index.to_string());
        match OpenOptions::new().write(true).create_new(true).open(&claim) {
            Ok(mut f) => {
                f.write_all(owner.as_bytes())?;
                return Ok((index, claim));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let holder = std::fs::read_to_string(&claim).unwrap_or_default();
                // An empty file is being written right now by its creator: skip it.
                if !holder.is_empty() && !process::owner_alive(&holder) {
                    remove(index);
                    let _ = std::fs::remove_file(&claim);
                }
            }
            Err(e) => return Err(e).with_context(|| format!("claiming {}", claim.display())),
        }
    }
    bail!("no free network namespace slot in {CLAIM_DIR}")
}

impl NetNs {
    /// Creates the namespace and the veth pair, addresses and links up, `lo` up inside.
    pub fn create() -> anyhow::Result<Self> {
        sweep_stale_claims();
        let (index, claim) = claim_index()?;
        let (name, host_if, ns_if) = names(index);
        let ns = Self {
            index,
            name,
            host_if,
            ns_if,
            claim,
        };
        // A leftover of a crashed run with this index would make `add` fail.
        remove(index);
        ns.set_up()
            .with_context(|| format!("setting up network namespace {}", ns.name))?;
        Ok(ns)
    }

    fn set_up(&self) -> anyhow::Result<()> {
        let host_cidr = format!("{}/30", self.host_addr());
        let ns_cidr = format!("{}/30", self.addr());
        let (name, host_if, ns_if) = (&*self.name, &*self.host_if, &*self.ns_if);
        run_ip(&["netns", "add", name])?;
        run_ip(&[
            "link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", name,
        ])?;
        run_ip(&["addr", "add", &host_cidr, "dev", host_if])?;
        run_ip(&["link", "set", host_if, "up"])?;
        run_ip(&["-n", name, "addr", "add", &ns_cidr, "dev", ns_if])?;
        run_ip(&["-n", name, "link", "set", ns_if, "up"])?;
        run_ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// The namespace's name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The first address of the /30: 10.213.0.0/16 split in 16384 subnets.
    fn base(&self) -> u32 {
        u32::from(Ipv4Addr::new(10, 213, 0, 0)) + self.index * 4
    }

    /// The host's address on the veth pair (`10.213.X.Y+1`); the namespace reaches the host
    /// there.
    pub fn host_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base() + 1)
    }

    /// The namespace's address (`10.213.X.Y+2`): where backends listen, and what an
    /// EndpointSlice points at.
    pub fn addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base() + 2)
    }

    /// Runs `f` on a thread that has entered the namespace. Sockets created by `f` stay in the
    /// namespace after it returns.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
        let path = Path::new("/run/netns").join(&self.name);
        let fd =
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        std::thread::scope(|s| {
            s.spawn(move || {
                nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
                    .context("setns into the network namespace")?;
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the closure run in {} panicked", self.name))?
        })
    }

    /// A TCP listener bound inside the namespace on [`addr`](Self::addr)`:port` (0 picks a
    /// port), non-blocking, ready for `tokio::net::TcpListener::from_std`.
    pub fn bind_tcp(&self, port: u16) -> anyhow::Result<std::net::TcpListener> {
        let addr = SocketAddr::from((self.addr(), port));
        let listener = self
            .run_in(|| std::net::TcpListener::bind(addr))?
            .with_context(|| format!("binding {addr} in {}", self.name))?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    }

    /// Starts an [`EchoServer`] named `name` on [`addr`](Self::addr)`:port` inside the
    /// namespace, served by the current tokio runtime. Stops when dropped.
    pub fn spawn_echo(&self, port: u16, name: &str) -> anyhow::Result<EchoServer> {
        EchoServer::start(self.bind_tcp(port)?, name)
    }

    /// A command running `program` inside the namespace (`ip netns exec`), set up to be killed
    /// when the test process dies.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = process::command_dying_with_parent(Path::new("ip"));
        cmd.arg("netns").arg("exec").arg(&self.name).arg(program);
        cmd
    }

    /// Spawns `cmd` (made by [`command`](Self::command)); its output goes to `log` if given.
    /// The process is killed when the returned handle is dropped.
    pub fn spawn(&self, cmd: Command, log: Option<&Path>) -> anyhow::Result<NsProcess> {
        Ok(NsProcess {
            inner: Supervised::spawn(&self.name, cmd, log)?,
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        remove(self.index);
        let _ = std::fs::remove_file(&self.claim);
    }
}

/// A process running in a [`NetNs`]; killed (SIGKILL) when dropped.
pub struct NsProcess {
    inner: Supervised,
}

impl std::fmt::Debug for NsProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NsProcess")
            .field("pid", &self.inner.pid())
            .finish_non_exhaustive()
    }
}

impl NsProcess {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.inner.pid()
    }

    /// The exit status once the process has exited.
    pub fn exit_status(&self) -> Option<std::process::ExitStatus> {
        self.inner.exit_status()
    }
}
