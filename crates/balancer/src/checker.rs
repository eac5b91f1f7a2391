//! Active health checks: one task per balancer probes its healthy addresses every
//! `healthy.interval` and its unhealthy ones every `unhealthy.interval`, at most
//! `concurrency` probes at a time, each bounded by `timeout`.
//!
//! Probes: `tcp` connects; `http` / `https` send lua-resty-healthcheck's request,
//! `GET <http_path> HTTP/1.0`, the configured `headers`, then `Host` (the upstream's
//! `host_header`, else the target's name, without a port) and nothing else, and read only
//! the status line (TLS for https, SNI from `https_sni` or that name, certificate verified
//! unless `https_verify_certificate` is false, the upstream's client certificate
//! presented); `grpc` / `grpcs` send a GET of the same path and headers over HTTP/2 (prior
//! knowledge / ALPN h2), with that host as the authority.
//! A status in `healthy.http_statuses` is a success, one in `unhealthy.http_statuses` an
//! HTTP failure; a refused or broken connection is a TCP failure; running out of time is
//! a timeout. Kong turns `tcp` checks off for HTTP upstreams; we run them.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::balancer::{Balancer, log_transition};
use crate::health::{ActivePolicy, ProbeKind, Report};
use crate::ring::Endpoint;

pub(crate) async fn run(weak: Weak<Balancer>, mut stop: watch::Receiver<bool>) {
    let Some(b) = weak.upgrade() else { return };
    let policy = b.policy().active.clone();
    let tls = match policy.kind {
        ProbeKind::Https | ProbeKind::Grpcs => match tls_config(&b, &policy) {
            Ok(c) => Some(Arc::new(c)),
            Err(e) => {
                tracing::error!(upstream = b.name(), error = %e, "active health checks disabled: bad TLS settings");
                return;
            }
        },
        _ => None,
    };
    // (listed in `GET /timers` while the checker runs; a round is one run)
    let timer = silverback_timers::global().register(
        format!("healthcheck:{}", b.name()),
        silverback_timers::Site::new(module_path!(), "run"),
    );
    drop(b);
    let mk = |d: Option<Duration>| {
        d.map(|d| {
            tokio::time::interval_at(
                tokio::time::Instant::now() + d,
                d.max(Duration::from_millis(10)),
            )
        })
    };
    let mut healthy_tick = mk(policy.healthy_interval);
    let mut unhealthy_tick = mk(policy.unhealthy_interval);
    for t in [&mut healthy_tick, &mut unhealthy_tick]
        .into_iter()
        .flatten()
    {
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    loop {
        let probe_healthy = tokio::select! {
            _ = async { match &mut healthy_tick { Some(t) => { t.tick().await; } None => std::future::pending().await } } => true,
            _ = async { match &mut unhealthy_tick { Some(t) => { t.tick().await; } None => std::future::pending().await } } => false,
            _ = stop.changed() => return,
        };
        let run = timer.run();
        tokio::select! {
            keep = round(&weak, &policy, tls.as_ref(), probe_healthy) => if !keep {
                run.abandon();
                return;
            },
            _ = stop.changed() => {
                run.abandon();
                return;
            }
        }
        drop(run);
    }
}

/// Probes every address currently in the given state. Returns false once the balancer is
/// gone.
async fn round(
    weak: &Weak<Balancer>,
    policy: &ActivePolicy,
    tls: Option<&Arc<ClientConfig>>,
    healthy: bool,
) -> bool {
    let Some(b) = weak.upgrade() else {
        return false;
    };
    let ring = b.current_ring();
    let host_header = b.host_header().cloned();
    let upstream = b.name().to_string();
    drop(b);
    let mut seen = std::collections::HashSet::new();
    let sem = Arc::new(Semaphore::new(policy.concurrency));
    let mut set = JoinSet::new();
    for e in ring.entries.iter() {
        if e.weight == 0
            || e.ep.health.is_healthy() != healthy
            || !seen.insert(Arc::as_ptr(&e.ep) as usize)
        {
            continue;
        }
        let ep = Arc::clone(&e.ep);
        let sem = Arc::clone(&sem);
        let policy = policy.clone();
        let tls = tls.cloned();
        let host = host_header
            .clone()
            .unwrap_or_else(|| Arc::clone(&ep.hostname));
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let r = probe(&ep, &policy, tls, &host).await;
            (ep, r)
        });
    }
    while let Some(res) = set.join_next().await {
        let Ok((ep, report)) = res else { continue };
        if let Some(r) = report
            && let Some(now) = ep.health.record(r, &policy.limits)
        {
            let target = ring
                .entries
                .iter()
                .find(|e| Arc::ptr_eq(&e.ep, &ep))
                .map(|e| e.target)
                .and_then(|t| {
                    weak.upgrade()
                        .map(|b| b.targets()[t as usize].target.to_string())
                })
                .unwrap_or_default();
            log_transition(&upstream, &target, ep.addr, now, "active");
        }
    }
    true
}

/// One probe. `None` when the status is in neither list.
async fn probe(
    ep: &Endpoint,
    policy: &ActivePolicy,
    tls: Option<Arc<ClientConfig>>,
    host: &str,
) -> Option<Report> {
    match tokio::time::timeout(policy.timeout, probe_inner(ep, policy, tls, host)).await {
        Ok(r) => r,
        Err(_) => Some(Report::Timeout),
    }
}

async fn probe_inner(
    ep: &Endpoint,
    policy: &ActivePolicy,
    tls: Option<Arc<ClientConfig>>,
    host: &str,
) -> Option<Report> {
    let tcp = match TcpStream::connect(ep.addr).await {
        Ok(s) => s,
        Err(_) => return Some(Report::TcpFailure),
    };
    let _ = tcp.set_nodelay(true);
    let h2 = matches!(policy.kind, ProbeKind::Grpc | ProbeKind::Grpcs);
    let status = match (policy.kind, tls) {
        (ProbeKind::Tcp, _) => return Some(Report::Success),
        (ProbeKind::Https | ProbeKind::Grpcs, Some(cfg)) => {
            let sni = policy.https_sni.as_deref().unwrap_or(host);
            let sni = sni
                .rsplit_once(':')
                .filter(|(_, p)| p.bytes().all(|c| c.is_ascii_digit()))
                .map_or(sni, |(h, _)| h);
            let name = match ServerName::try_from(sni.to_string()) {
                Ok(n) => n,
                Err(_) => ServerName::IpAddress(ep.addr.ip().into()),
            };
            let stream = match tokio_rustls::TlsConnector::from(cfg)
                .connect(name, tcp)
                .await
            {
                Ok(s) => s,
                Err(_) => return Some(Report::TcpFailure),
            };
            http_status(stream, h2, policy, host).await
        }
        _ => http_status(tcp, h2, policy, host).await,
    };
    match status {
        // (no status read from the status line: lua-resty-healthcheck's `nil`, an HTTP
        // failure)
        Ok(0) => Some(Report::HttpFailure),
        Ok(st) => policy.classify(st),
        Err(()) => Some(Report::TcpFailure),
    }
}

async fn http_status<S>(io: S, h2: bool, policy: &ActivePolicy, host: &str) -> Result<u16, ()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // lua-resty-healthcheck's Host: the upstream's `host_header`, else the target's name
    // (the IP for an IP target), without a port.
    let host = if host.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    if !h2 {
        return http10_status(io, policy, &host).await;
    }
    let scheme = if policy.kind == ProbeKind::Grpcs {
        "https"
    } else {
        "http"
    };
    let mut req = http::Request::builder()
        .method("GET")
        .uri(format!("{scheme}://{host}{}", policy.http_path));
    for (k, v) in &policy.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req.body(Empty::<Bytes>::new()).map_err(|_| ())?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .map_err(|_| ())?;
    let task = tokio::spawn(conn);
    let res = sender
        .send_request(req)
        .await
        .map(|r| r.status().as_u16())
        .map_err(|_| ());
    task.abort();
    res
}

/// Longest status line read; a longer first line is read as a bad one.
const MAX_STATUS_LINE: usize = 8 * 1024;

/// lua-resty-healthcheck's HTTP probe (`run_single_check`): `GET <http_path> HTTP/1.0`, the
/// configured headers, then `Host`, nothing else; only the status line is read (the answer
/// needs no `Content-Length` or end), and the connection is closed. A status line that is
/// not `HTTP/<d>.<d> <status>` is status 0, which counts as an HTTP failure; a connection
/// closed before a whole line is a TCP failure (`Err`).
async fn http10_status<S>(mut io: S, policy: &ActivePolicy, host: &str) -> Result<u16, ()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut req = format!("GET {} HTTP/1.0\r\n", policy.http_path);
    for (k, v) in &policy.headers {
        req.push_str(k);
        req.push_str(": ");
        req.push_str(v);
        req.push_str("\r\n");
    }
    req.push_str("Host: ");
    req.push_str(host);
    req.push_str("\r\n\r\n");
    io.write_all(req.as_bytes()).await.map_err(|_| ())?;
    io.flush().await.map_err(|_| ())?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    let line = loop {
        if let Some(end) = buf.iter().position(|&b| b == b'\n') {
            break &buf[..end];
        }
        if buf.len() >= MAX_STATUS_LINE {
            break &buf[..];
        }
        let n = io.read(&mut chunk).await.map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    Ok(status_of(line).unwrap_or(0))
}

/// The status of a status line, as `^HTTP/\d+\.\d+\s+(\d+)` (case-insensitive) finds it.
fn status_of(line: &[u8]) -> Option<u16> {
    let rest = line
        .get(..5)?
        .eq_ignore_ascii_case(b"HTTP/")
        .then(|| &line[5..])?;
    let digits = |s: &[u8]| s.iter().take_while(|b| b.is_ascii_digit()).count();
    let n = digits(rest);
    let rest = rest.get(n..).filter(|_| n > 0)?.strip_prefix(b".")?;
    let n = digits(rest);
    let rest = rest.get(n..).filter(|_| n > 0)?;
    let ws = rest
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'\x0b' | b'\x0c'))
        .count();
    let rest = rest.get(ws..).filter(|_| ws > 0)?;
    let n = digits(rest);
    if n == 0 {
        return None;
    }
    // (more digits than a u16 holds: no status in either list)
    Some(
        std::str::from_utf8(&rest[..n])
            .ok()
            .and_then(|d| d.parse().ok())
            .unwrap_or(u16::MAX),
    )
}

fn tls_config(b: &Balancer, policy: &ActivePolicy) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if policy.verify_certificate {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for c in b.probe_roots() {
            roots
                .add(c.clone())
                .map_err(|e| format!("probe root: {e}"))?;
        }
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    };
    let mut cfg = match b.client_cert() {
        Some((cert, key)) => {
            let certs = silverback_config::pki::parse_certs(cert)?;
            let key = silverback_config::pki::parse_key(key)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| e.to_string())?
        }
        None => builder.with_no_client_auth(),
    };
    if policy.kind == ProbeKind::Grpcs {
        cfg.alpn_protocols = vec![b"h2".to_vec()];
    }
    Ok(cfg)
}

/// `https_verify_certificate: false`.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::status_of;

    #[test]
    fn status_lines() {
        assert_eq!(status_of(b"HTTP/1.1 200 OK\r"), Some(200));
        assert_eq!(status_of(b"http/1.0  503"), Some(503));
        assert_eq!(status_of(b"HTTP/2.0\t404 Not Found"), Some(404));
        assert_eq!(status_of(b"HTTP/1.1 99999 x"), Some(u16::MAX));
        assert_eq!(status_of(b"HTTP/1 200 OK"), None);
        assert_eq!(status_of(b"HTTP/1.1200 OK"), None);
        assert_eq!(status_of(b"ICY 200 OK"), None);
        assert_eq!(status_of(b""), None);
    }
}
