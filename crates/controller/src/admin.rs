//! A small client for a data plane's admin API: `POST /config`, `GET /status`, over plain HTTP
//! or TLS (custom CA, client certificate, server name, or no verification), with an optional
//! token header, every request bounded by a timeout.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls_pki_types::pem::PemObject as _;
use serde_json::Value;
use silverback_config::FlattenedError;

use crate::target::PushError;

/// TLS and authentication settings for admin API connections.
#[derive(Debug, Clone, Default)]
pub struct AdminTls {
    /// PEM CA bundle to verify the data plane with (else the system's roots).
    pub ca_pem: Option<String>,
    /// PEM client certificate chain and key (mTLS).
    pub client_cert_pem: Option<(String, String)>,
    /// Name to verify the certificate against (else the URL's host).
    pub server_name: Option<String>,
    /// Skip certificate verification (testing only).
    pub skip_verify: bool,
}

/// Admin API client settings.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// TLS.
    pub tls: AdminTls,
    /// Value of the `Kong-Admin-Token` header.
    pub token: Option<String>,
    /// Extra headers (`name:value`).
    pub headers: Vec<(String, String)>,
    /// Timeout of one request, connection included.
    pub timeout: Duration,
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            tls: AdminTls::default(),
            token: None,
            headers: Vec::new(),
            timeout: Duration::from_secs(30),
        }
    }
}

/// Builds rustls client configurations from [`AdminTls`].
pub fn tls_config(tls: &AdminTls) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = if tls.skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        match &tls.ca_pem {
            Some(pem) => {
                for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                    roots.add(c.map_err(|e| anyhow::anyhow!("CA certificate: {e}"))?)?;
                }
                anyhow::ensure!(!roots.is_empty(), "the CA bundle holds no certificate");
            }
            None => {
                for c in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(c);
                }
            }
        }
        builder.with_root_certificates(roots)
    };
    let config = match &tls.client_cert_pem {
        Some((cert, key)) => {
            // (the shared PEM readers: their errors never quote the text, a key least of all)
            let chain = silverback_config::pki::parse_certs(cert)
                .map_err(|e| anyhow::anyhow!("client certificate: {e}"))?;
            let key = silverback_config::pki::parse_key(key)
                .map_err(|e| anyhow::anyhow!("client key: {e}"))?;
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
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
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
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

/// A client for one data plane's admin API.
#[derive(Clone)]
pub struct AdminClient {
    base: String,
    host: String,
    port: u16,
    path_prefix: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    server_name: Option<String>,
    settings: AdminSettings,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl AdminClient {
    /// A client for `url` (`http://host:port[/prefix]` or `https://...`). `tls` is the shared
    /// client configuration for `https` URLs (see [`tls_config`]).
    pub fn new(
        url: &str,
        settings: AdminSettings,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> anyhow::Result<AdminClient> {
        let uri: Uri = url
            .trim_end_matches('/')
            .parse()
            .map_err(|e| anyhow::anyhow!("admin URL {url:?}: {e}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => anyhow::bail!("admin URL {url:?}: the scheme must be http or https"),
        };
        let host = uri
            .host()
            .ok_or_else(|| anyhow::anyhow!("admin URL {url:?}: no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            Some(match tls {
                Some(t) => t,
                None => tls_config(&settings.tls)?,
            })
        } else {
            None
        };
        Ok(AdminClient {
            base: url.trim_end_matches('/').to_string(),
            host,
            port,
            path_prefix: uri.path().trim_end_matches('/').to_string(),
            tls,
            server_name: settings.tls.server_name.clone(),
            settings,
        })
    }

    /// The URL it talks to.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Sends one request and returns status and body.
    pub async fn request(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes), String> {
        tokio::time::timeout(
            self.settings.timeout,
            self.request_inner(method, path_and_query, body),
        )
        .await
        .map_err(|_| format!("network: {} timed out", self.base))?
    }

    async fn request_inner(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes), String> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("network: connecting to {}: {e}", self.base))?;
        let _ = tcp.set_nodelay(true);
        let host_header = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.path_prefix, path_and_query))
            .header(http::header::HOST, host_header)
            .header(http::header::USER_AGENT, "silverback-controller");
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        if let Some(t) = &self.settings.token {
            req = req.header("kong-admin-token", t);
        }
        for (k, v) in &self.settings.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| format!("building the request: {e}"))?;
        match &self.tls {
            None => send(TokioIo::new(tcp), req).await,
            Some(cfg) => {
                let name = self
                    .server_name
                    .clone()
                    .unwrap_or_else(|| self.host.clone());
                let name =
                    ServerName::try_from(name).map_err(|e| format!("TLS server name: {e}"))?;
                let stream = tokio_rustls::TlsConnector::from(cfg.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("network: TLS handshake with {}: {e}", self.base))?;
                send(TokioIo::new(stream), req).await
            }
        }
    }

    /// `POST /config?check_hash=1&flatten_errors=1`.
    pub async fn post_config(&self, document: &[u8]) -> Result<(), PushError> {
        let (status, body) = self
            .request(
                Method::POST,
                "/config?check_hash=1&flatten_errors=1",
                Some(Bytes::copy_from_slice(document)),
            )
            .await
            .map_err(PushError::Failed)?;
        match status {
            StatusCode::CREATED | StatusCode::OK | StatusCode::NOT_MODIFIED => Ok(()),
            StatusCode::BAD_REQUEST => {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let message = v
                    .get("message")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(500).collect());
                // entry by entry: one the model cannot read (a Lua encoder writes an empty
                // tag list as `{}`) does not lose the others
                let flattened: Vec<FlattenedError> = v
                    .get("flattened_errors")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|e| serde_json::from_value(e.clone()).ok())
                            .collect()
                    })
                    .unwrap_or_default();
                Err(PushError::Rejected { message, flattened })
            }
            s => Err(PushError::Failed(format!(
                "{}{} answered {s}: {}",
                if s == StatusCode::CONFLICT {
                    "conflict: "
                } else {
                    ""
                },
                self.base,
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(300)
                    .collect::<String>()
            ))),
        }
    }

    /// `GET /status` → `configuration_hash`.
    pub async fn config_hash(&self) -> Result<String, String> {
        let (status, body) = self.request(Method::GET, "/status", None).await?;
        if status != StatusCode::OK {
            return Err(format!("{}/status answered {status}", self.base));
        }
        let v: Value =
            serde_json::from_slice(&body).map_err(|e| format!("{}/status: {e}", self.base))?;
        v.get("configuration_hash")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("{}/status has no configuration_hash", self.base))
    }
}

async fn send<I>(io: I, req: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("network: HTTP handshake: {e}"))?;
    let conn = tokio::spawn(conn);
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("network: {e}"))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("network: reading the answer: {e}"))?
        .to_bytes();
    conn.abort();
    Ok((status, body))
}
