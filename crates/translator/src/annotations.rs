//! The annotations the translator honours, parsed and checked as KIC reads them. A value KIC
//! ignores (one that does not parse, a status code Kong does not offer, ...) keeps the
//! default and is reported as ignored; a value KIC passes on and Kong would reject is an
//! error naming the annotation (the object is left out).

use std::collections::BTreeMap;

use silverback_config::RouterFlavor;
use silverback_config::typedefs as t;

/// `konghq.com/` prefix.
pub const PREFIX: &str = "konghq.com/";
/// `kubernetes.io/ingress.class`
pub const INGRESS_CLASS: &str = "kubernetes.io/ingress.class";
/// `ingress.kubernetes.io/force-ssl-redirect`
pub const FORCE_SSL_REDIRECT: &str = "ingress.kubernetes.io/force-ssl-redirect";
/// `ingress.kubernetes.io/service-upstream`
pub const SERVICE_UPSTREAM: &str = "ingress.kubernetes.io/service-upstream";
/// `konghq.com/plugins`
pub const PLUGINS: &str = "konghq.com/plugins";
/// Default regex prefix of Ingress paths (`konghq.com/regex-prefix` overrides it).
pub const DEFAULT_REGEX_PREFIX: &str = "/~";

/// The field name of an annotation in problem reports.
pub fn field(key: &str) -> String {
    format!("metadata.annotations[{key}]")
}

/// Read access to an object's annotations.
#[derive(Clone, Copy)]
pub struct Annotations<'a>(pub Option<&'a BTreeMap<String, String>>);

/// Errors as `(field, reason)`.
pub type Errs = Vec<(String, String)>;

impl<'a> Annotations<'a> {
    /// The trimmed value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.raw(key).map(|s| s.trim())
    }
    /// The value of `key` as written, if set.
    pub fn raw(&self, key: &str) -> Option<&'a str> {
        self.0.and_then(|m| m.get(key)).map(String::as_str)
    }
    /// The trimmed value of `konghq.com/<name>` and the annotation's key.
    fn kong(&self, name: &str) -> Option<(&'a str, &'a str)> {
        let m = self.0?;
        // most objects carry few annotations: look for the prefix before building the key
        if !m.keys().any(|k| k.starts_with(PREFIX)) {
            return None;
        }
        // the key on the stack: this runs for every annotation the translator knows
        let mut buf = [0u8; 64];
        let len = PREFIX.len() + name.len();
        let found = match buf.get_mut(..len) {
            Some(b) => {
                b[..PREFIX.len()].copy_from_slice(PREFIX.as_bytes());
                b[PREFIX.len()..].copy_from_slice(name.as_bytes());
                // prefix and name are both UTF-8
                m.get_key_value(std::str::from_utf8(b).ok()?)
            }
            None => m.get_key_value(&format!("{PREFIX}{name}")),
        };
        found.map(|(k, v)| (v.trim(), k.as_str()))
    }
    /// All `konghq.com/headers.<name>` annotations, by header name.
    fn headers(&self) -> Vec<(String, &'a str)> {
        let prefix = format!("{PREFIX}headers.");
        self.0
            .into_iter()
            .flat_map(|m| m.range(prefix.clone()..))
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, v)| (k[prefix.len()..].to_string(), v.trim()))
            .collect()
    }
}

/// Go's `strconv.ParseBool`, as KIC reads boolean annotations.
pub fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("invalid boolean '{v}': expected true or false")),
    }
}

/// A comma-separated list, items trimmed, empty items dropped.
pub fn list(v: &str) -> Vec<String> {
    split(v, ",")
}

fn split(v: &str, sep: &str) -> Vec<String> {
    v.split(sep)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn tags(a: &Annotations<'_>, errs: &mut Errs) -> Vec<String> {
    let Some((v, key)) = a.kong("tags") else {
        return vec![];
    };
    let tags = list(v);
    for tag in &tags {
        if let Err(e) = t::validate_tag(tag) {
            errs.push((field(key), e));
        }
    }
    tags
}

/// Route settings from an Ingress's annotations, with KIC's defaults.
#[derive(Debug, Clone)]
pub struct RouteOpts {
    /// `konghq.com/protocols`, else `[https]` with force-ssl-redirect; `None` leaves Kong's
    /// default.
    pub protocols: Option<Vec<String>>,
    /// `konghq.com/strip-path` (default false).
    pub strip_path: bool,
    /// `konghq.com/preserve-host` (default true).
    pub preserve_host: bool,
    /// `konghq.com/https-redirect-status-code` (default 426; 302 with force-ssl-redirect).
    pub https_redirect_status_code: i64,
    /// `konghq.com/regex-priority` (default 0).
    pub regex_priority: i64,
    /// `konghq.com/methods`, upper-cased.
    pub methods: Vec<String>,
    /// `konghq.com/snis`.
    pub snis: Vec<String>,
    /// `konghq.com/request-buffering` (default true).
    pub request_buffering: bool,
    /// `konghq.com/response-buffering` (default true).
    pub response_buffering: bool,
    /// `konghq.com/host-aliases`.
    pub host_aliases: Vec<String>,
    /// `konghq.com/headers.<name>`, split on `konghq.com/headers-separator` (default `,`).
    pub headers: Vec<(String, Vec<String>)>,
    /// `konghq.com/path-handling` (default v0).
    pub path_handling: String,
    /// `konghq.com/tags`.
    pub tags: Vec<String>,
    /// `konghq.com/regex-prefix` (default `/~`).
    pub regex_prefix: String,
    /// `konghq.com/rewrite`.
    pub rewrite: Option<String>,
    /// `konghq.com/plugins`.
    pub plugins: Vec<String>,
    /// Values KIC ignores (the default is kept), as `(field, reason)`: reported as problems,
    /// the Ingress is still translated.
    pub ignored: Errs,
}

const STREAM: &[&str] = &["tcp", "tls", "udp", "tls_passthrough"];
const GRPC: &[&str] = &["grpc", "grpcs"];

/// KIC's `strings.ToLower(v)` compared with `"true"` / `"false"` (strip-path, preserve-host).
fn true_or_false(v: &str) -> Option<bool> {
    if v.eq_ignore_ascii_case("true") {
        Some(true)
    } else if v.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// Go's `strconv.Atoi` on a 64-bit platform: an optional sign and decimal digits.
fn atoi(v: &str) -> Option<i64> {
    let digits = v.strip_prefix(['+', '-']).unwrap_or(v);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// An integer annotation as KIC reads it: a value `strconv.Atoi` refuses is ignored (the
/// default stays), a number out of `min..=max` is set and refused by Kong.
enum Int {
    Ignored(String),
    Refused(String),
    Ok(i64),
}

fn int(v: &str, min: i64, max: i64) -> Int {
    match atoi(v) {
        None => Int::Ignored(format!("'{v}' is not an integer; ignored")),
        Some(n) if n < min || n > max => Int::Refused(format!("{n} is out of range {min}..{max}")),
        Some(n) => Int::Ok(n),
    }
}

impl RouteOpts {
    /// Parses the annotations. The errors name the annotation at fault; they are values
    /// Kong would refuse (the Ingress cannot be served as written). Values KIC ignores are
    /// in [`RouteOpts::ignored`] instead.
    pub fn parse(a: &Annotations<'_>, flavor: RouterFlavor) -> (RouteOpts, Errs) {
        let mut errs = Errs::new();
        let mut ignored = Errs::new();
        let expressions = flavor == RouterFlavor::Expressions;
        let mut o = RouteOpts {
            protocols: None,
            strip_path: false,
            preserve_host: true,
            https_redirect_status_code: 426,
            regex_priority: 0,
            methods: vec![],
            snis: vec![],
            request_buffering: true,
            response_buffering: true,
            host_aliases: vec![],
            headers: vec![],
            path_handling: "v0".into(),
            tags: tags(a, &mut errs),
            regex_prefix: DEFAULT_REGEX_PREFIX.into(),
            rewrite: None,
            plugins: a.get(PLUGINS).map(list).unwrap_or_default(),
            ignored: vec![],
        };
        // KIC: strings.ToLower(v) == "true" / "false", anything else keeps the default
        for (name, target) in [
            ("strip-path", &mut o.strip_path),
            ("preserve-host", &mut o.preserve_host),
        ] {
            if let Some((v, key)) = a.kong(name) {
                match true_or_false(v) {
                    Some(b) => *target = b,
                    None => ignored.push((
                        field(key),
                        format!("invalid value '{v}': expected true or false; ignored"),
                    )),
                }
            }
        }
        // KIC: strconv.ParseBool(strings.ToLower(v))
        for (name, target) in [
            ("request-buffering", &mut o.request_buffering),
            ("response-buffering", &mut o.response_buffering),
        ] {
            if let Some((v, key)) = a.kong(name) {
                match parse_bool(&v.to_ascii_lowercase()) {
                    Ok(b) => *target = b,
                    Err(e) => ignored.push((field(key), format!("{e}; ignored"))),
                }
            }
        }

        // KIC: exactly "true"; it sets https (302) first, and a valid konghq.com/protocols
        // then replaces the protocols (the status code stays)
        if a.raw(FORCE_SSL_REDIRECT) == Some("true") {
            o.protocols = Some(vec!["https".into()]);
            o.https_redirect_status_code = 302;
        }
        if let Some((v, key)) = a.kong("protocols") {
            let ps = list(v);
            if let Some(b) = ps.iter().find(|p| !t::PROTOCOLS.contains(&p.as_str())) {
                ignored.push((
                    field(key),
                    format!(
                        "invalid protocol '{b}': expected one of {}; ignored",
                        t::PROTOCOLS.join(", ")
                    ),
                ));
            } else if ps.is_empty() {
                ignored.push((field(key), "no protocol given; ignored".into()));
            } else if let Some(s) = ps.iter().find(|p| STREAM.contains(&p.as_str())) {
                errs.push((
                    field(key),
                    format!("protocol '{s}' cannot carry Ingress hosts and paths"),
                ));
            } else if ps.iter().any(|p| GRPC.contains(&p.as_str()))
                && ps.iter().any(|p| !GRPC.contains(&p.as_str()))
            {
                // KIC's normalizeProtocols
                ignored.push((
                    field(key),
                    "grpc/grpcs cannot be mixed with http/https/ws/wss; http and https are used"
                        .into(),
                ));
                o.protocols = Some(vec!["http".into(), "https".into()]);
            } else {
                o.protocols = Some(ps);
            }
        }
        if let Some((v, key)) = a.kong("https-redirect-status-code") {
            match atoi(v) {
                Some(c) if [301, 302, 307, 308, 426].contains(&c) => {
                    o.https_redirect_status_code = c
                }
                _ => ignored.push((
                    field(key),
                    format!("'{v}' is not one of 301, 302, 307, 308, 426; ignored"),
                )),
            }
        }
        // KIC does not read these under the expressions router
        if let Some((v, key)) = a.kong("regex-priority").filter(|_| !expressions) {
            match int(v, -(1 << 31), (1 << 31) - 1) {
                Int::Ok(n) => o.regex_priority = n,
                Int::Ignored(e) => ignored.push((field(key), e)),
                Int::Refused(e) => errs.push((field(key), e)),
            }
        }
        if let Some((v, key)) = a.kong("methods") {
            // KIC: trimmed, upper-cased, each `\A[A-Z]+$`; one invalid method drops them all
            // from a traditional route, only itself from an expression
            let ms: Vec<String> = list(v)
                .into_iter()
                .map(|m| m.to_ascii_uppercase())
                .collect();
            let (good, bad): (Vec<String>, Vec<String>) = ms
                .into_iter()
                .partition(|m| m.bytes().all(|b| b.is_ascii_uppercase()));
            for m in &bad {
                ignored.push((field(key), format!("invalid method '{m}'; ignored")));
            }
            if bad.is_empty() || expressions {
                o.methods = dedup(good);
            }
        }
        if let Some((v, key)) = a.kong("snis") {
            // route `snis` elements: Kong 3.7+'s `sni` under the traditional router,
            // `wildcard_host` under the others
            let check = if flavor == RouterFlavor::Traditional {
                t::validate_sni
            } else {
                t::validate_wildcard_host
            };
            let mut all_good = true;
            let mut good = vec![];
            for s in list(v) {
                match check(&s) {
                    Ok(()) => good.push(s),
                    Err(e) => {
                        all_good = false;
                        ignored.push((field(key), format!("'{s}': {e}; ignored")));
                    }
                }
            }
            if all_good || expressions {
                o.snis = dedup(good);
            }
        }
        if let Some((v, key)) = a.kong("host-aliases") {
            let mut all_good = true;
            let mut good = vec![];
            for h in list(v) {
                match t::validate_route_host(&h) {
                    Ok(()) => good.push(h),
                    Err(e) => {
                        all_good = false;
                        ignored.push((field(key), format!("'{h}': {e}; ignored")));
                    }
                }
            }
            if all_good || expressions {
                o.host_aliases = good;
            }
        }
        let sep = a
            .kong("headers-separator")
            .map(|(v, _)| v)
            .filter(|v| !v.is_empty())
            .unwrap_or(",");
        for (name, v) in a.headers() {
            let key = field(&format!("{PREFIX}headers.{name}"));
            if let Err(e) = t::validate_header_name(&name) {
                errs.push((key, e));
            } else if name.eq_ignore_ascii_case("host") {
                ignored.push((
                    key,
                    "the Host header is matched with the Ingress host, not a header; ignored"
                        .into(),
                ));
            } else {
                let values = split(v, sep);
                // (a `~*` value is a regex the router compiles: one that does not compile
                // would fail the whole configuration where Kong refuses the route)
                let bad_regex = values.iter().find_map(|v| {
                    let re = v.strip_prefix("~*")?;
                    regex::Regex::new(re)
                        .err()
                        .map(|e| format!("invalid regex '{re}': {e}"))
                });
                if let Some(e) = bad_regex {
                    errs.push((key, e));
                } else if values.is_empty() {
                    ignored.push((key, "no header value given; ignored".into()));
                } else {
                    o.headers.push((name.to_ascii_lowercase(), values));
                }
            }
        }
        if let Some((v, key)) = a.kong("path-handling").filter(|_| !expressions) {
            // KIC sets any value matching `v\d` (Kong refuses all but v0 and v1)
            let versioned = v
                .as_bytes()
                .windows(2)
                .any(|w| w[0] == b'v' && w[1].is_ascii_digit());
            match v {
                "v0" => {}
                // (Kong takes v1 under every flavor but expressions, only warning that it
                // is deprecated; outside the traditional flavor it builds the path by v0)
                "v1" => o.path_handling = "v1".into(),
                other if versioned => errs.push((
                    field(key),
                    format!("invalid value '{other}': expected v0 or v1"),
                )),
                other => ignored.push((
                    field(key),
                    format!("invalid value '{other}': expected v0 or v1; ignored"),
                )),
            }
        }
        if let Some((v, key)) = a.kong("regex-prefix") {
            if v.is_empty() {
                ignored.push((field(key), "empty regex prefix; ignored".into()));
            } else {
                o.regex_prefix = v.to_string();
            }
        }
        if let Some((v, key)) = a.kong("rewrite") {
            match rewrite_template(v) {
                Ok(_) => o.rewrite = Some(v.to_string()),
                Err(e) => errs.push((field(key), e)),
            }
        }
        // combinations Kong refuses
        let protocols = o
            .protocols
            .clone()
            .unwrap_or_else(|| vec!["http".into(), "https".into()]);
        let grpc = protocols.iter().any(|p| GRPC.contains(&p.as_str()));
        if grpc && !o.methods.is_empty() && !expressions {
            errs.push((
                field("konghq.com/methods"),
                "methods cannot be matched on grpc routes".into(),
            ));
        }
        if grpc && o.strip_path {
            // KIC's normalizeProtocols unsets strip_path on grpc routes (Kong's default
            // there is false)
            ignored.push((
                field("konghq.com/strip-path"),
                "strip_path cannot be set on grpc routes; ignored".into(),
            ));
            o.strip_path = false;
        }
        if !o.snis.is_empty()
            && !expressions
            && !protocols
                .iter()
                .any(|p| matches!(p.as_str(), "https" | "grpcs" | "wss"))
        {
            errs.push((
                field("konghq.com/snis"),
                "snis need an https, grpcs or wss protocol".into(),
            ));
        }
        o.ignored = ignored;
        (o, errs)
    }
}

fn dedup(mut v: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    v.retain(|x| seen.insert(x.clone()));
    v
}

/// Turns a `konghq.com/rewrite` value into the request-transformer `replace.uri` template,
/// as KIC's `generateRewriteURIConfig`: `$N` becomes the N-th regex capture, `\$` a literal
/// dollar; a `\` before anything else is an error. An empty value is `/`.
pub fn rewrite_template(v: &str) -> Result<String, String> {
    if v.is_empty() {
        return Ok("/".into());
    }
    if !v.starts_with('/') {
        return Err(format!("rewrite '{v}' must start with /"));
    }
    let mut out = String::new();
    let mut chars = v.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('$') => out.push('$'),
                _ => {
                    return Err(format!(
                        "rewrite '{v}': '\\' must be followed by '$' (a literal dollar)"
                    ));
                }
            },
            '$' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    digits.push(d);
                    chars.next();
                }
                if digits.is_empty() {
                    return Err(format!(
                        "rewrite '{v}': '$' must be followed by a capture group number"
                    ));
                }
                out.push_str(&format!("$(uri_captures[{digits}])"));
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Kong Service and Upstream settings from a Kubernetes Service's annotations.
#[derive(Debug, Clone)]
pub struct ServiceOpts {
    /// `konghq.com/protocol` (default http).
    pub protocol: String,
    /// `konghq.com/path` (default `/`; none for non-HTTP protocols).
    pub path: Option<String>,
    /// `konghq.com/connect-timeout` (ms, default 60000).
    pub connect_timeout: i64,
    /// `konghq.com/read-timeout` (ms, default 60000).
    pub read_timeout: i64,
    /// `konghq.com/write-timeout` (ms, default 60000).
    pub write_timeout: i64,
    /// `konghq.com/retries` (default 5).
    pub retries: i64,
    /// `konghq.com/tls-verify`.
    pub tls_verify: Option<bool>,
    /// `konghq.com/tls-verify-depth`.
    pub tls_verify_depth: Option<i64>,
    /// `konghq.com/ca-certificates-secrets`: Secret names.
    pub ca_secrets: Vec<String>,
    /// `konghq.com/client-cert`: Secret name.
    pub client_cert: Option<String>,
    /// `konghq.com/host-header`.
    pub host_header: Option<String>,
    /// `ingress.kubernetes.io/service-upstream`.
    pub service_upstream: bool,
    /// `konghq.com/tags`.
    pub tags: Vec<String>,
    /// `konghq.com/plugins`.
    pub plugins: Vec<String>,
    /// Values KIC ignores (the default is kept), as `(field, reason)`: reported as problems,
    /// the Service is still translated.
    pub ignored: Errs,
}

impl ServiceOpts {
    /// Parses the annotations. The errors name the annotation at fault; they are values
    /// Kong would refuse. Values KIC ignores are in [`ServiceOpts::ignored`] instead.
    pub fn parse(a: &Annotations<'_>) -> (ServiceOpts, Errs) {
        let mut errs = Errs::new();
        let mut ignored = Errs::new();
        let mut o = ServiceOpts {
            protocol: "http".into(),
            path: None,
            connect_timeout: 60_000,
            read_timeout: 60_000,
            write_timeout: 60_000,
            retries: 5,
            tls_verify: None,
            tls_verify_depth: None,
            ca_secrets: vec![],
            client_cert: None,
            host_header: None,
            service_upstream: false,
            tags: tags(a, &mut errs),
            plugins: a.get(PLUGINS).map(list).unwrap_or_default(),
            ignored: vec![],
        };
        if let Some((v, key)) = a.kong("protocol") {
            if t::SERVICE_PROTOCOLS.contains(&v) {
                o.protocol = v.to_string();
            } else {
                ignored.push((
                    field(key),
                    format!(
                        "invalid protocol '{v}': expected one of {}; ignored",
                        t::SERVICE_PROTOCOLS.join(", ")
                    ),
                ));
            }
        }
        let http_like = matches!(o.protocol.as_str(), "http" | "https" | "ws" | "wss");
        if http_like {
            o.path = Some("/".into());
        }
        if let Some((v, key)) = a.kong("path") {
            if !v.starts_with('/') {
                // KIC: "kong errors if path doesn't start with `/`"
                ignored.push((field(key), format!("'{v}' does not start with /; ignored")));
            } else if matches!(o.protocol.as_str(), "grpc" | "grpcs") {
                // KIC unsets the path of grpc services
                ignored.push((
                    field(key),
                    "grpc services have no path; ignored".to_string(),
                ));
            } else if !http_like {
                errs.push((
                    field(key),
                    format!("a path cannot be set with protocol {}", o.protocol),
                ));
            } else if let Err(e) = t::validate_path(v) {
                errs.push((field(key), e));
            } else {
                o.path = Some(v.to_string());
            }
        }
        for (name, target) in [
            ("connect-timeout", &mut o.connect_timeout),
            ("read-timeout", &mut o.read_timeout),
            ("write-timeout", &mut o.write_timeout),
        ] {
            if let Some((v, key)) = a.kong(name) {
                match int(v, 1, 2_147_483_646) {
                    Int::Ok(n) => *target = n,
                    Int::Ignored(e) => ignored.push((field(key), e)),
                    Int::Refused(e) => errs.push((field(key), e)),
                }
            }
        }
        if let Some((v, key)) = a.kong("retries") {
            match int(v, 0, 32767) {
                Int::Ok(n) => o.retries = n,
                Int::Ignored(e) => ignored.push((field(key), e)),
                Int::Refused(e) => errs.push((field(key), e)),
            }
        }
        // Kong's service checks: `tls_verify` (and a client certificate) for https, tls and
        // wss services; `tls_verify_depth` and `ca_certificates` for https and tls only
        let protocol = o.protocol.as_str();
        let tls_ok = |wss: bool| matches!(protocol, "https" | "tls") || (wss && protocol == "wss");
        let not_tls = |wss: bool| {
            let which = if wss {
                "https, tls or wss"
            } else {
                "https or tls"
            };
            format!("only applies to {which} services, not {protocol}")
        };
        if let Some((v, key)) = a.kong("tls-verify") {
            match parse_bool(v) {
                Err(e) => ignored.push((field(key), format!("{e}; ignored"))),
                Ok(_) if !tls_ok(true) => errs.push((field(key), not_tls(true))),
                Ok(b) => o.tls_verify = Some(b),
            }
        }
        if let Some((v, key)) = a.kong("tls-verify-depth") {
            match int(v, 0, 64) {
                Int::Ignored(e) => ignored.push((field(key), e)),
                Int::Refused(e) => errs.push((field(key), e)),
                Int::Ok(_) if !tls_ok(false) => errs.push((field(key), not_tls(false))),
                Int::Ok(n) => o.tls_verify_depth = Some(n),
            }
        }
        // KIC reports these and leaves them out of a service of another protocol
        if let Some((v, key)) = a.kong("ca-certificates-secrets") {
            if tls_ok(false) {
                o.ca_secrets = list(v);
            } else {
                ignored.push((field(key), format!("{}; ignored", not_tls(false))));
            }
        }
        if let Some((v, key)) = a.kong("client-cert").filter(|(v, _)| !v.is_empty()) {
            if tls_ok(true) {
                o.client_cert = Some(v.to_string());
            } else {
                ignored.push((field(key), format!("{}; ignored", not_tls(true))));
            }
        }
        if let Some((v, key)) = a.kong("host-header") {
            match t::validate_host_with_optional_port(v) {
                Ok(()) => o.host_header = Some(v.to_string()),
                Err(e) => errs.push((field(key), e)),
            }
        }
        // KIC: exactly "true"
        if let Some(v) = a.raw(SERVICE_UPSTREAM) {
            match v {
                "true" => o.service_upstream = true,
                "false" => {}
                other => ignored.push((
                    field(SERVICE_UPSTREAM),
                    format!("'{other}' is not \"true\" or \"false\"; ignored"),
                )),
            }
        }
        o.ignored = ignored;
        (o, errs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn route_opts() {
        let m = ann(&[
            ("konghq.com/strip-path", "True"),
            ("konghq.com/methods", "get, post"),
            ("konghq.com/headers.x-a", "1|2"),
            ("konghq.com/headers-separator", "|"),
            ("konghq.com/tags", "a, b"),
            ("ingress.kubernetes.io/force-ssl-redirect", "true"),
            ("konghq.com/https-redirect-status-code", "308"),
        ]);
        let (o, errs) =
            RouteOpts::parse(&Annotations(Some(&m)), RouterFlavor::TraditionalCompatible);
        assert!(errs.is_empty(), "{errs:?}");
        assert!(o.strip_path);
        assert_eq!(o.methods, ["GET", "POST"]);
        assert_eq!(
            o.headers,
            [("x-a".to_string(), vec!["1".to_string(), "2".to_string()])]
        );
        assert_eq!(o.tags, ["a", "b"]);
        assert_eq!(o.protocols, Some(vec!["https".to_string()]));
        assert_eq!(o.https_redirect_status_code, 308);
    }

    fn parse(pairs: &[(&str, &str)], flavor: RouterFlavor) -> (RouteOpts, Errs) {
        let m = ann(pairs);
        RouteOpts::parse(&Annotations(Some(&m)), flavor)
    }

    /// force-ssl-redirect is on only for exactly "true", and konghq.com/protocols wins over it
    /// (the redirect status code stays 302).
    #[test]
    fn force_ssl_redirect() {
        let f = "ingress.kubernetes.io/force-ssl-redirect";
        let flavor = RouterFlavor::TraditionalCompatible;
        let (o, _) = parse(&[(f, "true")], flavor);
        assert_eq!(o.protocols, Some(vec!["https".to_string()]));
        assert_eq!(o.https_redirect_status_code, 302);
        let (o, _) = parse(
            &[(f, "true"), ("konghq.com/protocols", "http,https")],
            flavor,
        );
        assert_eq!(o.protocols, Some(vec!["http".to_string(), "https".into()]));
        assert_eq!(o.https_redirect_status_code, 302);
        // an invalid protocols annotation is ignored: force-ssl-redirect's https stays
        let (o, _) = parse(&[(f, "true"), ("konghq.com/protocols", "bogus")], flavor);
        assert_eq!(o.protocols, Some(vec!["https".to_string()]));
        for v in ["True", "1", " true", "yes"] {
            let (o, errs) = parse(&[(f, v)], flavor);
            assert!(errs.is_empty() && o.ignored.is_empty());
            assert_eq!(
                (o.protocols, o.https_redirect_status_code),
                (None, 426),
                "{v}"
            );
        }
    }

    /// Values Kong would refuse are errors (the Ingress is left out).
    #[test]
    fn route_opts_errors() {
        for (k, v) in [
            ("konghq.com/protocols", "tcp"),
            ("konghq.com/regex-priority", "4294967296"),
            ("konghq.com/headers.bad name", "a"),
            ("konghq.com/path-handling", "v2"),
            ("konghq.com/headers.x-v", "~*("),
            ("konghq.com/tags", "a/b"),
            ("konghq.com/rewrite", "/x/$"),
        ] {
            let (o, errs) = parse(&[(k, v)], RouterFlavor::TraditionalCompatible);
            assert_eq!(errs.len(), 1, "{k}={v}: {errs:?}");
            assert!(errs[0].0.contains(k), "{errs:?}");
            assert!(o.ignored.is_empty(), "{k}={v}: {:?}", o.ignored);
        }
        // v1: Kong only warns of it outside the traditional flavor
        for flavor in [
            RouterFlavor::Traditional,
            RouterFlavor::TraditionalCompatible,
        ] {
            let (o, errs) = parse(&[("konghq.com/path-handling", "v1")], flavor);
            assert!(errs.is_empty(), "{flavor:?}: {errs:?}");
            assert_eq!(o.path_handling, "v1");
        }
    }

    /// Values KIC ignores keep the default and are reported; the Ingress stays.
    #[test]
    fn route_opts_ignored() {
        for (k, v) in [
            ("konghq.com/strip-path", "yes"),
            ("konghq.com/strip-path", "1"),
            ("konghq.com/strip-path", "t"),
            ("konghq.com/preserve-host", "0"),
            ("konghq.com/request-buffering", "maybe"),
            ("konghq.com/protocols", "http,bogus"),
            ("konghq.com/protocols", ","),
            ("konghq.com/https-redirect-status-code", "200"),
            ("konghq.com/https-redirect-status-code", "303"),
            ("konghq.com/regex-priority", "high"),
            ("konghq.com/methods", "G3T"),
            ("konghq.com/headers.host", "a"),
            ("konghq.com/headers.x", ""),
            ("konghq.com/path-handling", "x"),
            ("konghq.com/regex-prefix", ""),
            ("konghq.com/host-aliases", "a..b"),
        ] {
            let (o, errs) = parse(&[(k, v)], RouterFlavor::TraditionalCompatible);
            assert!(errs.is_empty(), "{k}={v}: {errs:?}");
            assert_eq!(o.ignored.len(), 1, "{k}={v}: {:?}", o.ignored);
            assert!(o.ignored[0].0.contains(k), "{:?}", o.ignored);
            assert!(o.ignored[0].1.ends_with("ignored"), "{:?}", o.ignored);
            assert!(!o.strip_path && o.preserve_host && o.request_buffering);
            assert_eq!(o.protocols, None);
            assert_eq!((o.https_redirect_status_code, o.regex_priority), (426, 0));
            assert!(o.methods.is_empty() && o.headers.is_empty() && o.host_aliases.is_empty());
            assert_eq!(
                (o.path_handling.as_str(), o.regex_prefix.as_str()),
                ("v0", "/~")
            );
        }
        // KIC's case-insensitive "true" / "false"
        let (o, _) = parse(
            &[
                ("konghq.com/strip-path", "TRUE"),
                ("konghq.com/preserve-host", "False"),
            ],
            RouterFlavor::TraditionalCompatible,
        );
        assert!(o.strip_path && !o.preserve_host && o.ignored.is_empty());
        // grpc and http mixed: http and https (KIC's normalizeProtocols)
        let (o, errs) = parse(
            &[("konghq.com/protocols", "grpc,http")],
            RouterFlavor::TraditionalCompatible,
        );
        assert!(errs.is_empty());
        assert_eq!(o.protocols, Some(vec!["http".to_string(), "https".into()]));
        assert_eq!(o.ignored.len(), 1);
        // strip-path on grpc routes is unset
        let (o, errs) = parse(
            &[
                ("konghq.com/protocols", "grpc,grpcs"),
                ("konghq.com/strip-path", "true"),
            ],
            RouterFlavor::TraditionalCompatible,
        );
        assert!(errs.is_empty() && !o.strip_path);
        assert_eq!(o.ignored.len(), 1);
        // under the expressions router, KIC does not read regex-priority and path-handling
        let (o, errs) = parse(
            &[
                ("konghq.com/path-handling", "v1"),
                ("konghq.com/regex-priority", "high"),
            ],
            RouterFlavor::Expressions,
        );
        assert!(
            errs.is_empty() && o.ignored.is_empty(),
            "{errs:?} {:?}",
            o.ignored
        );
        // a bad method: none under the traditional routers, the others in expressions
        let bad = [("konghq.com/methods", "GET,G3T")];
        let (o, _) = parse(&bad, RouterFlavor::TraditionalCompatible);
        assert!(o.methods.is_empty());
        let (o, _) = parse(&bad, RouterFlavor::Expressions);
        assert_eq!(o.methods, ["GET"]);
    }

    /// `konghq.com/snis` elements are route `snis`: Kong 3.7+'s `wildcard_host` except under
    /// the traditional router, where they are `sni` (no wildcard). An invalid one is ignored.
    #[test]
    fn snis_follow_the_router_flavor() {
        let parse = |v: &str, flavor| {
            let (o, errs) = parse(
                &[("konghq.com/snis", v), ("konghq.com/protocols", "https")],
                flavor,
            );
            assert!(errs.is_empty(), "{errs:?}");
            o.ignored
        };
        for flavor in [
            RouterFlavor::TraditionalCompatible,
            RouterFlavor::Expressions,
        ] {
            for ok in [
                "a.example.com",
                "*.example.com",
                "*",
                "*foo.example.com",
                "example.*",
            ] {
                assert!(parse(ok, flavor).is_empty(), "{flavor:?} {ok}");
            }
            let errs = parse("a.*.example.com", flavor);
            assert_eq!(errs.len(), 1, "{errs:?}");
            assert_eq!(
                errs[0].1,
                "'a.*.example.com': wildcard must be leftmost or rightmost character; ignored"
            );
        }
        assert!(parse("a.example.com", RouterFlavor::Traditional).is_empty());
        for (bad, message) in [
            ("*.example.com", "invalid value: *.example.com"),
            ("10.0.0.1", "must not be an IP"),
            ("a.example.com:443", "must not have a port"),
        ] {
            let errs = parse(bad, RouterFlavor::Traditional);
            assert_eq!(errs.len(), 1, "{bad}: {errs:?}");
            assert_eq!(errs[0].1, format!("'{bad}': {message}; ignored"), "{bad}");
        }
    }

    #[test]
    fn service_opts() {
        let m = ann(&[("konghq.com/protocol", "grpc"), ("konghq.com/retries", "2")]);
        let (o, errs) = ServiceOpts::parse(&Annotations(Some(&m)));
        assert!(errs.is_empty());
        assert_eq!((o.protocol.as_str(), o.path, o.retries), ("grpc", None, 2));
        let m = ann(&[("konghq.com/tls-verify", "true")]);
        assert_eq!(ServiceOpts::parse(&Annotations(Some(&m))).1.len(), 1);
        let m = ann(&[
            ("konghq.com/protocol", "https"),
            ("konghq.com/tls-verify", "true"),
            ("konghq.com/read-timeout", "0"),
        ]);
        let (o, errs) = ServiceOpts::parse(&Annotations(Some(&m)));
        assert_eq!(o.tls_verify, Some(true));
        assert_eq!(errs.len(), 1);
    }

    /// Values KIC ignores keep the default and are reported; the Service stays.
    #[test]
    fn service_opts_ignored() {
        for (k, v) in [
            ("konghq.com/protocol", "smtp"),
            ("konghq.com/path", "api"),
            ("konghq.com/read-timeout", "30s"),
            ("konghq.com/connect-timeout", "1e3"),
            ("konghq.com/retries", "many"),
            ("konghq.com/tls-verify", "yes"),
            ("konghq.com/tls-verify-depth", "deep"),
            ("konghq.com/client-cert", "cert"),
            ("konghq.com/ca-certificates-secrets", "ca"),
            ("ingress.kubernetes.io/service-upstream", "yes"),
            ("ingress.kubernetes.io/service-upstream", "True"),
        ] {
            let m = ann(&[(k, v)]);
            let (o, errs) = ServiceOpts::parse(&Annotations(Some(&m)));
            assert!(errs.is_empty(), "{k}={v}: {errs:?}");
            assert_eq!(o.ignored.len(), 1, "{k}={v}: {:?}", o.ignored);
            assert!(o.ignored[0].0.contains(k), "{:?}", o.ignored);
            assert_eq!(
                (o.protocol.as_str(), o.path.as_deref()),
                ("http", Some("/"))
            );
            assert_eq!(
                (o.read_timeout, o.connect_timeout, o.retries),
                (60000, 60000, 5)
            );
            assert_eq!((o.tls_verify, o.tls_verify_depth), (None, None));
            assert!(o.client_cert.is_none() && o.ca_secrets.is_empty() && !o.service_upstream);
        }
        let m = ann(&[("konghq.com/protocol", "grpc"), ("konghq.com/path", "/x")]);
        let (o, errs) = ServiceOpts::parse(&Annotations(Some(&m)));
        assert!(errs.is_empty() && o.path.is_none() && o.ignored.len() == 1);
        let m = ann(&[("ingress.kubernetes.io/service-upstream", "true")]);
        assert!(
            ServiceOpts::parse(&Annotations(Some(&m)))
                .0
                .service_upstream
        );
    }

    #[test]
    fn rewrite() {
        assert_eq!(
            rewrite_template("/a/$1/b$12").unwrap(),
            "/a/$(uri_captures[1])/b$(uri_captures[12])"
        );
        // KIC writes an escaped dollar as a plain one
        assert_eq!(rewrite_template(r"/p\$x").unwrap(), "/p$x");
        assert_eq!(rewrite_template(r"/p\$").unwrap(), "/p$");
        assert_eq!(
            rewrite_template(r"/a$13\$x").unwrap(),
            "/a$(uri_captures[13])$x"
        );
        assert!(rewrite_template(r"/p\n").is_err());
        assert!(rewrite_template(r"/p\").is_err());
        assert_eq!(rewrite_template("").unwrap(), "/");
        assert!(rewrite_template("x").is_err());
    }
}
