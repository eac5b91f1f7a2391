//! Test helpers: backend servers that can be made slow, failing or dead on command, a tiny
//! DNS server, configuration loading.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};

/// Loads a declarative YAML document.
pub fn config(yaml: &str) -> silverback_config::Config {
    let plugins = silverback_config::PluginRegistry::new();
    let opts = silverback_config::LoadOptions {
        router_flavor: silverback_config::RouterFlavor::TraditionalCompatible,
        plugins: &plugins,
        now_unix: None,
    };
    silverback_config::load_bytes(yaml.as_bytes(), &opts)
        .unwrap_or_else(|e| panic!("config: {e:?}"))
}

#[derive(Default)]
struct State {
    status: AtomicU16,
    delay_ms: AtomicU64,
    hits: AtomicUsize,
    probes: AtomicUsize,
}

/// An HTTP/1.1 backend on a loopback address. Requests to `/health` count as probes,
/// others as hits.
pub struct Backend {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Backend {
    /// Starts a backend on `ip` (any 127.x.y.z) and a free port.
    pub async fn start(ip: &str) -> Backend {
        let listener = TcpListener::bind((ip.parse::<IpAddr>().expect("ip"), 0))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State {
            status: AtomicU16::new(200),
            ..Default::default()
        });
        let task = tokio::spawn(serve(listener, Arc::clone(&state)));
        Backend {
            addr,
            state,
            task: Mutex::new(Some(task)),
        }
    }

    /// Starts a TLS backend (HTTP/1.1 inside) with this server configuration.
    pub async fn start_tls(ip: &str, tls: Arc<rustls::ServerConfig>) -> Backend {
        let listener = TcpListener::bind((ip.parse::<IpAddr>().expect("ip"), 0))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State {
            status: AtomicU16::new(200),
            ..Default::default()
        });
        let st = Arc::clone(&state);
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let (st, acceptor) = (Arc::clone(&st), acceptor.clone());
                conns.spawn(async move {
                    if let Ok(Ok(tls)) =
                        tokio::time::timeout(Duration::from_secs(5), acceptor.accept(sock)).await
                    {
                        handle(tls, st).await;
                    }
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Backend {
            addr,
            state,
            task: Mutex::new(Some(task)),
        }
    }

    /// The status every response gets from now on.
    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    /// A delay before every response.
    pub fn set_delay(&self, d: Duration) {
        self.state
            .delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Non-probe requests served.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// Probe requests served.
    pub fn probes(&self) -> usize {
        self.state.probes.load(Ordering::SeqCst)
    }

    /// Closes the listener and every connection: connects are refused from now on.
    pub fn kill(&self) {
        if let Some(t) = self.task.lock().expect("lock").take() {
            t.abort();
        }
    }

    /// Listens again on the same address.
    pub async fn revive(&self) {
        self.kill();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("rebind {}: {e}", self.addr),
            }
        };
        *self.task.lock().expect("lock") =
            Some(tokio::spawn(serve(listener, Arc::clone(&self.state))));
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn serve(listener: TcpListener, state: Arc<State>) {
    let mut conns = JoinSet::new();
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            continue;
        };
        let state = Arc::clone(&state);
        conns.spawn(handle(sock, state));
        while conns.try_join_next().is_some() {}
    }
}

async fn handle<S: AsyncRead + AsyncWrite + Unpin>(mut sock: S, state: Arc<State>) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let head = loop {
        let n = match tokio::time::timeout(Duration::from_secs(5), sock.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return,
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break String::from_utf8_lossy(&buf[..p]).into_owned();
        }
        if buf.len() > 16 * 1024 {
            return;
        }
    };
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    if path == "/health" {
        state.probes.fetch_add(1, Ordering::SeqCst);
    } else {
        state.hits.fetch_add(1, Ordering::SeqCst);
    }
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let status = state.status.load(Ordering::SeqCst);
    let resp = format!("HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
    let _ = sock.write_all(resp.as_bytes()).await;
    let _ = sock.shutdown().await;
}

/// Sends `GET path` to `addr` and returns the status (connection errors as `Err`).
pub async fn get(addr: SocketAddr, path: &str) -> Result<u16, String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad response {text:?}"))
}

/// Polls `f` every 20 ms until it is true or `timeout` passes.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A DNS server on 127.0.0.1 (UDP) answering A queries for the names in its table, with
/// the given TTL; other names get NXDOMAIN (SERVFAIL for `servfail.*`, no answer at all for
/// `silent.*` and `*.silent.*`), other types an empty answer.
/// Name -> SRV records (priority, weight, port, target).
pub type SrvTable = Arc<Mutex<Vec<(String, Vec<(u16, u16, u16, String)>)>>>;

/// Name -> IPv4 addresses.
pub type DnsTable = Arc<Mutex<Vec<(String, Vec<std::net::Ipv4Addr>)>>>;

/// Name -> IPv6 addresses (AAAA answers).
pub type DnsTable6 = Arc<Mutex<Vec<(String, Vec<std::net::Ipv6Addr>)>>>;

pub struct DnsServer {
    pub addr: SocketAddr,
    pub records: DnsTable,
    /// Name -> SRV records (weight, port, target).
    pub srv: SrvTable,
    /// Name -> IPv6 addresses, answered to AAAA queries.
    pub records6: DnsTable6,
    pub queries: Arc<AtomicUsize>,
    /// AAAA queries received.
    pub aaaa_queries: Arc<AtomicUsize>,
    task: JoinHandle<()>,
    tcp_task: JoinHandle<()>,
}

impl DnsServer {
    pub async fn start(ttl: u32) -> DnsServer {
        use hickory_proto::op::{Message, MessageType, ResponseCode};
        use hickory_proto::rr::{
            Name, RData, Record, RecordType, rdata::A, rdata::AAAA, rdata::SRV,
        };
        // TCP on the same port takes connections and never answers, so that a name left
        // unanswered over UDP (`silent.*`) times out rather than being refused over TCP.
        // (a port free for UDP may be taken for TCP: another pair is tried)
        let mut tries = 0;
        let (sock, addr, tcp) = loop {
            let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
            let addr = sock.local_addr().expect("addr");
            match TcpListener::bind(addr).await {
                Ok(tcp) => break (sock, addr, tcp),
                Err(e) => {
                    tries += 1;
                    assert!(tries < 50, "no port free for both UDP and TCP: {e}");
                }
            }
        };
        let tcp_task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = tcp.accept().await {
                held.push(s);
            }
        });
        let records: DnsTable = Arc::default();
        let queries = Arc::new(AtomicUsize::new(0));
        let srv: SrvTable = Arc::default();
        let records6: DnsTable6 = Arc::default();
        let aaaa_queries = Arc::new(AtomicUsize::new(0));
        let (r, q, sv) = (Arc::clone(&records), Arc::clone(&queries), Arc::clone(&srv));
        let (r6, q6) = (Arc::clone(&records6), Arc::clone(&aaaa_queries));
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                    continue;
                };
                let Ok(req) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut resp = Message::new();
                resp.set_id(req.id());
                resp.set_message_type(MessageType::Response);
                resp.set_op_code(req.op_code());
                resp.set_recursion_desired(req.recursion_desired());
                resp.set_recursion_available(true);
                resp.set_authoritative(true);
                let Some(query) = req.queries().first().cloned() else {
                    continue;
                };
                let qname = query
                    .name()
                    .to_utf8()
                    .trim_end_matches('.')
                    .to_ascii_lowercase();
                let known = r
                    .lock()
                    .expect("lock")
                    .iter()
                    .find(|(n, _)| *n == qname)
                    .map(|(_, ips)| ips.clone());
                if query.query_type() == RecordType::A {
                    q.fetch_add(1, Ordering::SeqCst);
                }
                if query.query_type() == RecordType::AAAA {
                    q6.fetch_add(1, Ordering::SeqCst);
                }
                let known6 = r6
                    .lock()
                    .expect("lock")
                    .iter()
                    .find(|(n, _)| *n == qname)
                    .map(|(_, ips)| ips.clone());
                let srv_known = sv
                    .lock()
                    .expect("lock")
                    .iter()
                    .find(|(n, _)| *n == qname)
                    .map(|(_, s)| s.clone());
                if query.query_type() == RecordType::SRV
                    && let Some(list) = srv_known
                {
                    resp.set_response_code(ResponseCode::NoError);
                    for (priority, weight, port, target) in list {
                        let target = Name::from_ascii(format!("{target}.")).expect("name");
                        resp.add_answer(Record::from_rdata(
                            query.name().clone(),
                            ttl,
                            RData::SRV(SRV::new(priority, weight, port, target)),
                        ));
                    }
                    resp.add_query(query);
                    if let Ok(bytes) = resp.to_vec() {
                        let _ = sock.send_to(&bytes, peer).await;
                    }
                    continue;
                }
                if qname.starts_with("silent.") || qname.contains(".silent.") {
                    // (never answered: the resolver times out)
                    continue;
                }
                // (a name with IPv6 addresses only exists: no A records, no error)
                let known = known.or_else(|| known6.as_ref().map(|_| Vec::new()));
                match known {
                    None if qname.starts_with("servfail.") => {
                        resp.set_response_code(ResponseCode::ServFail);
                    }
                    None => {
                        resp.set_response_code(ResponseCode::NXDomain);
                    }
                    Some(ips) => {
                        resp.set_response_code(ResponseCode::NoError);
                        if query.query_type() == RecordType::A {
                            for ip in ips {
                                resp.add_answer(Record::from_rdata(
                                    query.name().clone(),
                                    ttl,
                                    RData::A(A(ip)),
                                ));
                            }
                        }
                        if query.query_type() == RecordType::AAAA {
                            for ip in known6.unwrap_or_default() {
                                resp.add_answer(Record::from_rdata(
                                    query.name().clone(),
                                    ttl,
                                    RData::AAAA(AAAA(ip)),
                                ));
                            }
                        }
                    }
                }
                resp.add_query(query);
                if let Ok(bytes) = resp.to_vec() {
                    let _ = sock.send_to(&bytes, peer).await;
                }
            }
        });
        DnsServer {
            addr,
            records,
            srv,
            records6,
            queries,
            aaaa_queries,
            task,
            tcp_task,
        }
    }

    pub fn set(&self, name: &str, ips: &[&str]) {
        let ips = ips.iter().map(|s| s.parse().expect("ipv4")).collect();
        let mut r = self.records.lock().expect("lock");
        r.retain(|(n, _)| n != name);
        r.push((name.to_string(), ips));
    }
}

impl DnsServer {
    /// IPv6 addresses of `name` (answered to AAAA queries; A queries get `set`'s).
    pub fn set6(&self, name: &str, ips: &[&str]) {
        let ips = ips.iter().map(|s| s.parse().expect("ipv6")).collect();
        let mut r = self.records6.lock().expect("lock");
        r.retain(|(n, _)| n != name);
        r.push((name.to_string(), ips));
    }

    /// SRV records of `name`, of priority 0: (weight, port, target).
    pub fn set_srv(&self, name: &str, records: &[(u16, u16, &str)]) {
        let records: Vec<_> = records.iter().map(|(w, p, t)| (0, *w, *p, *t)).collect();
        self.set_srv_prio(name, &records);
    }

    /// SRV records of `name`: (priority, weight, port, target).
    pub fn set_srv_prio(&self, name: &str, records: &[(u16, u16, u16, &str)]) {
        self.set(name, &[]);
        let mut s = self.srv.lock().expect("lock");
        s.retain(|(n, _)| n != name);
        s.push((
            name.to_string(),
            records
                .iter()
                .map(|(pr, w, p, t)| (*pr, *w, *p, t.to_string()))
                .collect(),
        ));
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
        self.tcp_task.abort();
    }
}
