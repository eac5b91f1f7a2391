//! Starting and stopping etcd + kube-apiserver.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::config::Kubeconfig;
use kube::{Client, ResourceExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::assets::{Assets, GatewayApiChannel};
use crate::certs::Pki;
use crate::crds;
use crate::process::{self, Supervised};

/// Prefix of the control planes' temporary directories (in `std::env::temp_dir()`).
const TEMP_PREFIX: &str = "silverback-envtest-";
/// etcd's client and peer URLs: unix sockets `etcd.sock:1` and `peer.sock:2` in the control
/// plane's directory (the working directory of etcd and kube-apiserver).
const ETCD_CLIENT_URL: &str = "unix://etcd.sock:1";
const ETCD_CLIENT_SOCKET: &str = "etcd.sock:1";
const ETCD_PEER_URL: &str = "unix://peer.sock:2";
/// Setting this environment variable keeps the temporary directory (logs, kubeconfigs, etcd
/// data) after the control plane is dropped; its path is printed to stderr.
pub const ENV_KEEP: &str = "SILVERBACK_ENVTEST_KEEP";

/// Configures and starts a [`ControlPlane`]; see [`ControlPlane::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until .start() is awaited"]
pub struct ControlPlaneBuilder {
    crds: Vec<PathBuf>,
    gateway_api: Option<GatewayApiChannel>,
    start_timeout: Duration,
    apiserver_args: Vec<String>,
}

impl Default for ControlPlaneBuilder {
    fn default() -> Self {
        Self {
            crds: Vec::new(),
            gateway_api: None,
            start_timeout: Duration::from_secs(60),
            apiserver_args: Vec::new(),
        }
    }
}

impl ControlPlaneBuilder {
    /// Installs the CustomResourceDefinitions in `path` (a YAML file or a directory of them,
    /// see [`crate::read_crds`]) before [`start`](Self::start) returns. May be repeated.
    pub fn crds(mut self, path: impl Into<PathBuf>) -> Self {
        self.crds.push(path.into());
        self
    }

    /// Installs the pinned Gateway API release's CRDs of `channel` (from the Go module cache,
    /// linked by `test/envtest/build.sh`).
    pub fn gateway_api_crds(mut self, channel: GatewayApiChannel) -> Self {
        self.gateway_api = Some(channel);
        self
    }

    /// How long starting may take in all (processes, readiness, CRDs). Default 60 s: the
    /// machines have 2 cores and other builds may be running.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// An extra `kube-apiserver` flag, e.g. `--feature-gates=...`; later flags win.
    pub fn apiserver_arg(mut self, arg: impl Into<String>) -> Self {
        self.apiserver_args.push(arg.into());
        self
    }

    /// Starts etcd and kube-apiserver, waits until the API server is ready and installs the
    /// CRDs.
    ///
    /// # Panics
    ///
    /// When the binaries are not built, with a message telling to run `test/envtest/build.sh`:
    /// that is a broken test setup, not a test failure.
    pub async fn start(self) -> anyhow::Result<ControlPlane> {
        let assets = match Assets::locate() {
            Ok(assets) => assets,
            Err(e) => panic!("{e:#}"),
        };
        let deadline = Instant::now() + self.start_timeout;
        // Ports are picked free, then released; a concurrent process may grab one before the
        // server binds it. Such a start fails fast and is retried with new ports.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_start(&assets, deadline).await {
                Ok(cp) => return Ok(cp),
                Err(StartError::PortRace(e)) if attempt < 3 && Instant::now() < deadline => {
                    eprintln!("silverback-envtest: retrying the start after: {e:#}");
                }
                Err(StartError::PortRace(e) | StartError::Other(e)) => return Err(e),
            }
        }
    }

    async fn try_start(
        &self,
        assets: &Assets,
        deadline: Instant,
    ) -> Result<ControlPlane, StartError> {
        sweep_stale_temp_dirs();
        let dir = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempdir()
            .context("creating the control plane's temporary directory")?;
        std::fs::write(dir.path().join("owner"), process::owner_token())
            .context("writing the owner file")?;
        let path = |name: &str| dir.path().join(name);

        let pki = Pki::generate()?;
        for (name, contents) in [
            ("serving-ca.crt", pki.serving_ca_pem.as_str()),
            ("apiserver.crt", pki.serving.cert_pem.as_str()),
            ("apiserver.key", pki.serving.key_pem.as_str()),
            ("sa-signer.key", pki.service_account_key_pem.as_str()),
            ("sa-signer.pub", pki.service_account_pub_pem.as_str()),
        ] {
            write_file(&path(name), contents)?;
        }
        write_file(&path("client-ca.crt"), &pki.client_ca_pem())?;

        // etcd listens on unix sockets in the directory (relative names: etcd wants
        // `unix://<host>:<port>`), so it needs no TCP port and a test can never reach the etcd
        // of another.
        let mut cmd = process::command_dying_with_parent(&assets.etcd());
        cmd.current_dir(dir.path())
            .arg(format!("--data-dir={}", path("etcd").display()))
            .arg(format!("--listen-client-urls={ETCD_CLIENT_URL}"))
            .arg(format!("--advertise-client-urls={ETCD_CLIENT_URL}"))
            .arg(format!("--listen-peer-urls={ETCD_PEER_URL}"))
            .arg(format!("--initial-advertise-peer-urls={ETCD_PEER_URL}"))
            .arg(format!("--initial-cluster=default={ETCD_PEER_URL}"))
            .arg("--unsafe-no-fsync=true")
            .arg("--log-level=warn");
        let etcd = Supervised::spawn("etcd", cmd, Some(&path("etcd.log")))?;
        wait_for_etcd(&etcd, &path(ETCD_CLIENT_SOCKET), deadline).await?;

        // kube-apiserver
        let apiserver_port = process::free_port()?;
        let server = format!("https://127.0.0.1:{apiserver_port}");
        let spec = ApiserverSpec {
            binary: assets.kube_apiserver(),
            dir: dir.path().to_path_buf(),
            port: apiserver_port,
            extra_args: self.apiserver_args.clone(),
        };
        let apiserver = spec.spawn()?;

        let admin_cert = pki.client_cert("silverback-envtest-admin", &["system:masters"])?;
        let admin_kc = kubeconfig(
            &server,
            &pki.serving_ca_pem,
            "silverback-envtest-admin",
            &UserAuth::Cert {
                cert_pem: &admin_cert.cert_pem,
                key_pem: &admin_cert.key_pem,
            },
            "default",
        )?;
        let admin = Identity::write(
            "silverback-envtest-admin",
            admin_kc,
            path("admin.kubeconfig"),
            None,
        )?;
        crate::install_crypto_provider();
        let client = admin.client()?;
        wait_for_readyz(&client, &apiserver, &etcd, deadline).await?;

        let mut crd_paths = self.crds.clone();
        if let Some(channel) = self.gateway_api {
            crd_paths.insert(0, assets.gateway_api_crds(channel)?);
        }
        if !crd_paths.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            crds::install_crds(&client, &crd_paths, left)
                .await
                .map_err(|e| e.context(apiserver.log_tail(20)))?;
        }

        Ok(ControlPlane {
            admin,
            server,
            pki,
            apiserver,
            apiserver_spec: spec,
            etcd,
            identities: AtomicU64::new(0),
            dir: Some(dir),
        })
    }
}

/// How kube-apiserver is started: kept so that it can be restarted identically (same port,
/// certificates, flags and etcd).
#[derive(Debug, Clone)]
struct ApiserverSpec {
    binary: PathBuf,
    dir: PathBuf,
    port: u16,
    extra_args: Vec<String>,
}

impl ApiserverSpec {
    fn server(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Spawns kube-apiserver; its output is appended to `kube-apiserver.log`.
    fn spawn(&self) -> anyhow::Result<Supervised> {
        let path = |name: &str| self.dir.join(name);
        let mut cmd = process::command_dying_with_parent(&self.binary);
        cmd.current_dir(&self.dir)
            .arg(format!("--etcd-servers={ETCD_CLIENT_URL}"))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            .arg(format!("--secure-port={}", self.port))
            .arg(format!(
                "--tls-cert-file={}",
                path("apiserver.crt").display()
            ))
            .arg(format!(
                "--tls-private-key-file={}",
                path("apiserver.key").display()
            ))
            .arg(format!(
                "--client-ca-file={}",
                path("client-ca.crt").display()
            ))
            .arg(format!("--service-account-issuer={}", self.server()))
            .arg(format!(
                "--service-account-key-file={}",
                path("sa-signer.pub").display()
            ))
            .arg(format!(
                "--service-account-signing-key-file={}",
                path("sa-signer.key").display()
            ))
            .arg("--service-cluster-ip-range=10.0.0.0/24")
            .arg("--authorization-mode=RBAC")
            // No controller manager creates the `default` ServiceAccount of namespaces.
            .arg("--disable-admission-plugins=ServiceAccount")
            .arg("--allow-privileged=true")
            .arg(format!("--cert-dir={}", path("certs").display()))
            .arg("--profiling=false")
            .args(&self.extra_args);
        Supervised::spawn("kube-apiserver", cmd, Some(&path("kube-apiserver.log")))
    }
}

/// Why a start attempt failed.
enum StartError {
    /// A server exited during start-up because its port was taken: retry with new ports.
    PortRace(anyhow::Error),
    Other(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for StartError {
    fn from(e: E) -> Self {
        Self::Other(e.into())
    }
}

/// An error for a process that exited during start-up.
fn exited(p: &Supervised, what: &str) -> StartError {
    let tail = p.log_tail(30);
    let e = anyhow::anyhow!("{what} exited during start-up\n{tail}");
    if tail.contains("address already in use") {
        StartError::PortRace(e)
    } else {
        StartError::Other(e)
    }
}

async fn wait_for_etcd(
    etcd: &Supervised,
    socket: &Path,
    deadline: Instant,
) -> Result<(), StartError> {
    loop {
        if etcd.exit_status().is_some() {
            return Err(exited(etcd, "etcd"));
        }
        let probe = async {
            let mut s = tokio::net::UnixStream::connect(socket).await?;
            s.write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
                .await?;
            let mut body = String::new();
            s.read_to_string(&mut body).await?;
            std::io::Result::Ok(body.contains("\"health\":\"true\""))
        };
        if let Ok(Ok(true)) = tokio::time::timeout(Duration::from_secs(1), probe).await {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(StartError::Other(anyhow::anyhow!(
                "etcd not healthy in time\n{}",
                etcd.log_tail(30)
            )));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn wait_for_readyz(
    client: &Client,
    apiserver: &Supervised,
    etcd: &Supervised,
    deadline: Instant,
) -> Result<(), StartError> {
    loop {
        if apiserver.exit_status().is_some() {
            return Err(exited(apiserver, "kube-apiserver"));
        }
        if etcd.exit_status().is_some() {
            return Err(exited(etcd, "etcd"));
        }
        let req = http::Request::get("/readyz")
            .body(Vec::new())
            .context("building /readyz request")?;
        let last =
            match tokio::time::timeout(Duration::from_secs(2), client.request_text(req)).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "timed out".to_owned(),
            };
        if Instant::now() > deadline {
            return Err(StartError::Other(anyhow::anyhow!(
                "kube-apiserver not ready in time (last /readyz: {last})\n{}",
                apiserver.log_tail(30)
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Removes temporary directories of control planes whose test process is gone (one that was
/// killed or aborted, so it could not clean up).
fn sweep_stale_temp_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(TEMP_PREFIX) {
            continue;
        }
        let path = entry.path();
        match std::fs::read_to_string(path.join("owner")) {
            // An empty file is one being written by a starting control plane: not stale.
            Ok(owner) if !owner.trim().is_empty() && !process::owner_alive(&owner) => {
                let _ = std::fs::remove_dir_all(&path);
            }
            // No owner file yet (being created) or a live owner: leave it.
            _ => {}
        }
    }
}

fn write_file(path: &Path, contents: &str) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

enum UserAuth<'a> {
    Cert { cert_pem: &'a str, key_pem: &'a str },
    Token(&'a str),
}

/// A kubeconfig for one user, whose context's default namespace is `namespace`.
fn kubeconfig(
    server: &str,
    ca_pem: &str,
    user: &str,
    auth: &UserAuth<'_>,
    namespace: &str,
) -> anyhow::Result<Kubeconfig> {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let user_entry = match auth {
        UserAuth::Cert { cert_pem, key_pem } => serde_json::json!({
            "client-certificate-data": b64(cert_pem),
            "client-key-data": b64(key_pem),
        }),
        UserAuth::Token(token) => serde_json::json!({ "token": token }),
    };
    let value = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "envtest",
            "cluster": { "server": server, "certificate-authority-data": b64(ca_pem) },
        }],
        "users": [{ "name": user, "user": user_entry }],
        "contexts": [{
            "name": "envtest",
            "context": { "cluster": "envtest", "user": user, "namespace": namespace },
        }],
        "current-context": "envtest",
    });
    serde_json::from_value(value).context("building a kubeconfig")
}

/// A running etcd + kube-apiserver pair; see the [crate documentation](crate).
///
/// Dropping it kills both processes and removes the temporary directory (unless
/// `SILVERBACK_ENVTEST_KEEP` is set).
pub struct ControlPlane {
    admin: Identity,
    server: String,
    pki: Pki,
    apiserver: Supervised,
    apiserver_spec: ApiserverSpec,
    etcd: Supervised,
    identities: AtomicU64,
    dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("server", &self.server)
            .field("dir", &self.dir())
            .field("apiserver_pid", &self.apiserver.pid())
            .field("etcd_pid", &self.etcd.pid())
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// A builder; `ControlPlane::builder().start().await` starts a bare control plane.
    pub fn builder() -> ControlPlaneBuilder {
        ControlPlaneBuilder::default()
    }

    /// Starts a control plane without CRDs (same as `builder().start()`).
    ///
    /// # Panics
    ///
    /// When the binaries are not built; see [`ControlPlaneBuilder::start`].
    pub async fn start() -> anyhow::Result<Self> {
        Self::builder().start().await
    }

    /// A control plane shared by every test of the test binary that calls this, started on the
    /// first call with the standard Gateway API CRDs. Give each test its own namespace
    /// ([`create_namespace`](Self::create_namespace)).
    ///
    /// It is never dropped: its processes are killed when the test process exits (they are
    /// spawned with a parent-death signal), and its temporary directory is removed by the next
    /// control plane started on the machine.
    ///
    /// # Panics
    ///
    /// When the binaries are not built; see [`ControlPlaneBuilder::start`].
    pub async fn shared() -> anyhow::Result<&'static ControlPlane> {
        static SHARED: tokio::sync::OnceCell<ControlPlane> = tokio::sync::OnceCell::const_new();
        SHARED
            .get_or_try_init(|| {
                ControlPlane::builder()
                    .gateway_api_crds(GatewayApiChannel::Standard)
                    .start()
            })
            .await
    }

    /// A new client with the admin identity (group `system:masters`: RBAC allows everything).
    ///
    /// Each call builds a fresh client on the current tokio runtime, so a control plane shared
    /// by tests with different runtimes (see [`ControlPlane::shared`]) hands each a working
    /// client. (A `kube::Client` keeps tasks on the runtime that made it.)
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn client(&self) -> Client {
        self.admin
            .client()
            .expect("the admin kubeconfig built a client when the control plane started")
    }

    /// The admin identity.
    pub fn admin(&self) -> &Identity {
        &self.admin
    }

    /// Path of the admin kubeconfig file (for a process under test, or `kubectl`).
    pub fn kubeconfig_path(&self) -> &Path {
        self.admin.kubeconfig_path()
    }

    /// The API server's URL, `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> &str {
        &self.server
    }

    /// PEM of the CA that signed the API server's serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.pki.serving_ca_pem
    }

    /// The temporary directory with certificates, kubeconfigs, logs (`etcd.log`,
    /// `kube-apiserver.log`) and etcd's data.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new(""), |d| d.path())
    }

    /// Process id of kube-apiserver.
    pub fn apiserver_pid(&self) -> u32 {
        self.apiserver.pid()
    }

    /// Process id of etcd.
    pub fn etcd_pid(&self) -> u32 {
        self.etcd.pid()
    }

    /// Path of the kube-apiserver log.
    pub fn apiserver_log(&self) -> PathBuf {
        self.dir().join("kube-apiserver.log")
    }

    /// Whether kube-apiserver is running (not stopped by [`stop_apiserver`](Self::stop_apiserver)
    /// and not exited).
    pub fn apiserver_running(&self) -> bool {
        self.apiserver.is_running()
    }

    /// Stops kube-apiserver (SIGKILL, as a crash; waits until it is gone) and leaves etcd
    /// running. Clients get connection errors until [`start_apiserver`](Self::start_apiserver):
    /// open watches end, new requests are refused. Does nothing when it is already stopped.
    pub fn stop_apiserver(&mut self) {
        self.apiserver.kill();
    }

    /// Starts kube-apiserver again after [`stop_apiserver`](Self::stop_apiserver): the same
    /// binary, flags, port, certificates and etcd (so every object survives and existing
    /// clients and kubeconfigs reconnect), and waits until it is ready (at most `timeout`). Its
    /// watch cache starts empty at etcd's current revision, as after a real restart. Output is
    /// appended to the same log.
    ///
    /// Another process may have taken the port meanwhile (rare: it is released only while the
    /// API server is down); the start is retried until `timeout`.
    pub async fn start_apiserver(&mut self, timeout: Duration) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.apiserver.is_running(),
            "kube-apiserver is running; stop it first"
        );
        let deadline = Instant::now() + timeout;
        let client = self.client();
        loop {
            self.apiserver = self.apiserver_spec.spawn()?;
            match wait_for_readyz(&client, &self.apiserver, &self.etcd, deadline).await {
                Ok(()) => return Ok(()),
                Err(StartError::PortRace(e)) if Instant::now() < deadline => {
                    eprintln!("silverback-envtest: retrying the API server start after: {e:#}");
                    self.apiserver.kill();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(StartError::PortRace(e) | StartError::Other(e)) => {
                    self.apiserver.kill();
                    return Err(e.context("restarting kube-apiserver"));
                }
            }
        }
    }

    /// Freezes kube-apiserver (SIGSTOP): connections stay open but nothing answers, like a
    /// hung server or a network partition (requests do not fail, they hang). Undo with
    /// [`resume_apiserver`](Self::resume_apiserver); dropping the control plane kills it either
    /// way.
    pub fn pause_apiserver(&self) -> anyhow::Result<()> {
        self.signal_apiserver("STOP")
    }

    /// Lets a kube-apiserver frozen by [`pause_apiserver`](Self::pause_apiserver) run again
    /// (SIGCONT).
    pub fn resume_apiserver(&self) -> anyhow::Result<()> {
        self.signal_apiserver("CONT")
    }

    fn signal_apiserver(&self, signal: &str) -> anyhow::Result<()> {
        anyhow::ensure!(self.apiserver.is_running(), "kube-apiserver is not running");
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.apiserver.pid().to_string())
            .status()
            .context("running kill")?;
        anyhow::ensure!(status.success(), "kill -{signal} failed: {status}");
        Ok(())
    }

    /// [`stop_apiserver`](Self::stop_apiserver) then [`start_apiserver`](Self::start_apiserver).
    pub async fn restart_apiserver(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.stop_apiserver();
        self.start_apiserver(timeout).await
    }

    /// A request to etcd's JSON gateway (`POST /v3/...`, e.g. `/v3/kv/range`), on its unix
    /// socket; returns the JSON answer. Keys and values are base64 in etcd's JSON API. Works
    /// while the API server is stopped: tests use it to change or compact storage behind the
    /// API server's back, as other API servers of a real cluster would.
    pub async fn etcd_post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let socket = self.dir().join(ETCD_CLIENT_SOCKET);
        let body = serde_json::to_vec(body)?;
        let request = async {
            let mut s = tokio::net::UnixStream::connect(&socket).await?;
            let head = format!(
                "POST {path} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            s.write_all(head.as_bytes()).await?;
            s.write_all(&body).await?;
            let mut response = Vec::new();
            s.read_to_end(&mut response).await?;
            std::io::Result::Ok(response)
        };
        let response = tokio::time::timeout(Duration::from_secs(10), request)
            .await
            .context("etcd did not answer in 10 s")?
            .with_context(|| format!("etcd request {path}"))?;
        let text = String::from_utf8_lossy(&response);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .with_context(|| format!("a malformed HTTP answer from etcd: {text}"))?;
        anyhow::ensure!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "etcd {path}: {head}\n{body}"
        );
        serde_json::from_str(body).with_context(|| format!("etcd {path} answered {body}"))
    }

    /// etcd's current revision (what the API server calls the resource version).
    pub async fn etcd_revision(&self) -> anyhow::Result<i64> {
        use base64::Engine as _;
        let key = base64::engine::general_purpose::STANDARD.encode("/registry/");
        let r = self
            .etcd_post(
                "/v3/kv/range",
                &serde_json::json!({"key": key, "count_only": true}),
            )
            .await?;
        r["header"]["revision"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("no revision in {r}"))
    }

    /// Compacts etcd at its current revision and returns it: watches and lists from an older
    /// resource version then fail with `410 Gone` ("too old resource version"), the way watches
    /// expire in a long-running cluster.
    pub async fn compact_etcd(&self) -> anyhow::Result<i64> {
        let revision = self.etcd_revision().await?;
        self.etcd_post(
            "/v3/kv/compaction",
            &serde_json::json!({"revision": revision.to_string(), "physical": true}),
        )
        .await?;
        Ok(revision)
    }

    /// Deletes `key` (e.g. `/registry/ingress/<namespace>/<name>`) from etcd directly, behind
    /// the API server's back; returns how many keys were deleted.
    pub async fn etcd_delete(&self, key: &str) -> anyhow::Result<u64> {
        use base64::Engine as _;
        let key = base64::engine::general_purpose::STANDARD.encode(key);
        let r = self
            .etcd_post("/v3/kv/deleterange", &serde_json::json!({"key": key}))
            .await?;
        Ok(r["deleted"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0))
    }

    /// Installs the CustomResourceDefinitions in `path` (see [`crate::read_crds`]) and waits
    /// until they are established (at most 30 s). Returns their names.
    pub async fn install_crds(&self, path: impl AsRef<Path>) -> anyhow::Result<Vec<String>> {
        crds::install_crds(
            &self.client(),
            &[path.as_ref().to_path_buf()],
            Duration::from_secs(30),
        )
        .await
    }

    /// Creates a namespace named `<prefix>-<random suffix>` and returns its name. Use one per
    /// test when tests share a control plane. (No namespace controller runs, so a deleted
    /// namespace stays `Terminating`; nothing needs to delete it.)
    pub async fn create_namespace(&self, prefix: &str) -> anyhow::Result<String> {
        let api: Api<Namespace> = Api::all(self.client());
        let ns = Namespace {
            metadata: ObjectMeta {
                generate_name: Some(format!("{prefix}-")),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        let created = api
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating a namespace {prefix}-*"))?;
        Ok(created.name_any())
    }

    fn next_kubeconfig_path(&self, label: &str) -> PathBuf {
        let n = self.identities.fetch_add(1, Ordering::Relaxed);
        let safe: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir().join(format!("{n}-{safe}.kubeconfig"))
    }

    /// An identity authenticated by a client certificate (signed by the client CA) for user
    /// `user` in `groups` (at most two; `system:authenticated` is added by the API server).
    /// Its kubeconfig's default namespace is `default`.
    pub fn user_identity(&self, user: &str, groups: &[&str]) -> anyhow::Result<Identity> {
        self.cert_identity(user, groups, "default")
    }

    fn cert_identity(
        &self,
        user: &str,
        groups: &[&str],
        namespace: &str,
    ) -> anyhow::Result<Identity> {
        let cert = self.pki.client_cert(user, groups)?;
        let kc = kubeconfig(
            &self.server,
            &self.pki.serving_ca_pem,
            user,
            &UserAuth::Cert {
                cert_pem: &cert.cert_pem,
                key_pem: &cert.key_pem,
            },
            namespace,
        )?;
        Identity::write(user, kc, self.next_kubeconfig_path(user), None)
    }

    /// An identity for ServiceAccount `namespace/name` that authenticates with a client
    /// certificate: user `system:serviceaccount:<namespace>:<name>`, groups
    /// `system:serviceaccounts` and `system:serviceaccounts:<namespace>`. RBAC treats it
    /// exactly like the ServiceAccount (subjects of kind ServiceAccount match the user name).
    /// The ServiceAccount object need not exist. The kubeconfig's default namespace is
    /// `namespace`, as for a Pod.
    pub fn service_account_cert_identity(
        &self,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<Identity> {
        let user = format!("system:serviceaccount:{namespace}:{name}");
        let ns_group = format!("system:serviceaccounts:{namespace}");
        self.cert_identity(&user, &["system:serviceaccounts", &ns_group], namespace)
    }

    /// An identity for ServiceAccount `namespace/name` that authenticates with a bound token
    /// from the TokenRequest API (valid for a day), as a Pod's projected token would. Creates
    /// the ServiceAccount if it does not exist (the token is only valid while it does). The
    /// kubeconfig's default namespace is `namespace`, as for a Pod.
    pub async fn service_account_identity(
        &self,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<Identity> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client(), namespace);
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        match api.create(&PostParams::default(), &sa).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("creating ServiceAccount {namespace}/{name}"));
            }
        }
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: Vec::new(),
                expiration_seconds: Some(24 * 3600),
                ..TokenRequestSpec::default()
            },
            ..TokenRequest::default()
        };
        let response: TokenRequest = api
            .create_subresource("token", name, &PostParams::default(), &request)
            .await
            .with_context(|| format!("requesting a token for ServiceAccount {namespace}/{name}"))?;
        let token = response
            .status
            .map(|s| s.token)
            .filter(|t| !t.is_empty())
            .context("the TokenRequest returned no token")?;
        let user = format!("system:serviceaccount:{namespace}:{name}");
        let kc = kubeconfig(
            &self.server,
            &self.pki.serving_ca_pem,
            &user,
            &UserAuth::Token(&token),
            namespace,
        )?;
        Identity::write(&user, kc, self.next_kubeconfig_path(&user), Some(token))
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.apiserver.kill();
        self.etcd.kill();
        if std::env::var_os(ENV_KEEP).is_some()
            && let Some(dir) = self.dir.take()
        {
            let kept = dir.keep();
            eprintln!("silverback-envtest: kept {}", kept.display());
        }
        // `dir` (a TempDir) is removed when the fields drop, after the processes are gone.
    }
}

/// A user identity of a [`ControlPlane`]: a kubeconfig (written to a file in the control plane's
/// directory) and the clients made from it.
#[derive(Debug, Clone)]
pub struct Identity {
    username: String,
    kubeconfig: Kubeconfig,
    kubeconfig_path: PathBuf,
    token: Option<String>,
}

impl Identity {
    fn write(
        username: &str,
        kubeconfig: Kubeconfig,
        path: PathBuf,
        token: Option<String>,
    ) -> anyhow::Result<Self> {
        let text = serde_json::to_string_pretty(&kubeconfig)?;
        write_file(&path, &text)?;
        Ok(Self {
            username: username.to_owned(),
            kubeconfig,
            kubeconfig_path: path,
            token,
        })
    }

    /// The user name the API server sees, e.g. `system:serviceaccount:ns:name`.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The kubeconfig.
    pub fn kubeconfig(&self) -> &Kubeconfig {
        &self.kubeconfig
    }

    /// Path of the kubeconfig file (JSON, which every kubeconfig reader accepts), e.g. for
    /// `--kubeconfig` or `KUBECONFIG` of a process under test.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// The bearer token, for identities made by [`ControlPlane::service_account_identity`].
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// A new client authenticating as this identity.
    pub fn client(&self) -> anyhow::Result<Client> {
        crate::install_crypto_provider();
        let config = kube::Config::try_from(self.kubeconfig.clone())
            .context("a client config from the kubeconfig")?;
        Client::try_from(config).context("building a client")
    }
}
