//! The access logs of the listeners: Kong's `proxy_access_log`, `admin_access_log` and
//! `status_access_log`, one line per request in nginx's formats.
//!
//! - The proxy listeners log in Kong's `kong_log_format` unless the setting names a format:
//!   `$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent
//!   "$http_referer" "$http_user_agent" kong_request_id: "$kong_request_id"`.
//! - The admin and status listeners log in nginx's `combined` format, the same without the
//!   request id.
//!
//! Values are escaped as nginx's default `escape` does (`"`, `\`, control bytes and bytes
//! past ASCII as `\xHH`), and an empty value is `-`. `$remote_addr` is the address after
//! `trusted_ips`/`real_ip_header` on the proxy listeners (nginx's `realip` module runs in
//! Kong's proxy server only). `$time_local` is written in UTC. A request is logged when
//! its answer ends: with a streamed body once the body is sent, an upgraded connection once
//! its tunnel closes, a request whose client left before its answer as `499`.
//!
//! The request path never writes a file: [`Sink::append`] copies the line into a buffer
//! under a short lock, and a thread of the sink's own writes the buffer out at most
//! [`FLUSH_INTERVAL`] later (at once after an idle spell). If that thread falls behind (a
//! pipe nobody reads, a full disk) by more than [`MAX_PENDING`] bytes, further lines are
//! dropped and counted, and the count is logged once the thread gets through again: the
//! proxy keeps serving.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use http::HeaderMap;
use http::header;

/// How long the writer thread waits between writes while lines keep coming.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// Bytes a sink holds for its writer at most; lines past that are dropped.
pub const MAX_PENDING: usize = 8 << 20;

/// Which of nginx's formats a log writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Kong's `kong_log_format`: `combined` and the request id.
    Kong,
    /// nginx's `combined`.
    Combined,
}

impl LogFormat {
    /// The format of nginx's name for it.
    fn named(name: &str) -> Option<LogFormat> {
        match name {
            "kong_log_format" => Some(LogFormat::Kong),
            "combined" => Some(LogFormat::Combined),
            _ => None,
        }
    }
}

/// Where a listener kind's access log goes and in which format: one of Kong's
/// `*_access_log` settings, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogSpec {
    /// The file. `/dev/stdout` and `/dev/stderr` are the process's own streams; a relative
    /// path is under the prefix when there is one (as Kong resolves it), else the working
    /// directory.
    pub path: PathBuf,
    /// The format.
    pub format: LogFormat,
}

impl AccessLogSpec {
    /// Parses a Kong `*_access_log` value: `off`, or nginx's `access_log` arguments, `PATH
    /// [FORMAT [buffer=SIZE] [flush=TIME]]`, where `FORMAT` is `kong_log_format` or
    /// `combined` and `PATH` alone takes `default`. `buffer=` and `flush=` are accepted and
    /// have no effect (lines are always buffered, for at most [`FLUSH_INTERVAL`]); `gzip`,
    /// `if=` and `syslog:` targets are refused, as is any other format name (nginx's own
    /// `unknown log format`).
    pub fn parse(value: &str, default: LogFormat) -> Result<Option<AccessLogSpec>, String> {
        let mut words = value.split_ascii_whitespace();
        let Some(path) = words.next() else {
            return Err("no file given (use off to turn the log off)".into());
        };
        if path == "off" {
            return match words.next() {
                None => Ok(None),
                Some(w) => Err(format!("unexpected '{w}' after off")),
            };
        }
        if path.starts_with("syslog:") {
            return Err("syslog targets are not supported: name a file".into());
        }
        let format = match words.next() {
            None => default,
            Some(name) => LogFormat::named(name).ok_or_else(|| {
                format!("unknown log format '{name}' (known: kong_log_format, combined)")
            })?,
        };
        for w in words {
            let (key, v) = w.split_once('=').unwrap_or((w, ""));
            match key {
                "buffer" | "flush" if !v.is_empty() => {}
                "gzip" | "if" => return Err(format!("'{w}' is not supported")),
                _ => return Err(format!("unexpected parameter '{w}'")),
            }
        }
        Ok(Some(AccessLogSpec {
            path: PathBuf::from(path),
            format,
        }))
    }

    /// The file, relative paths taken under `prefix`.
    pub fn resolved(&self, prefix: Option<&Path>) -> PathBuf {
        match prefix {
            Some(p) if self.path.is_relative() => p.join(&self.path),
            _ => self.path.clone(),
        }
    }
}

/// The buffer a sink's writer thread drains.
#[derive(Debug, Default)]
struct Pending {
    buf: Vec<u8>,
    /// The writer waits for a line (rather than sleeping between writes): the next one
    /// wakes it.
    parked: bool,
    /// Lines dropped since the writer last reported.
    dropped: u64,
    /// No more lines come: the writer writes what is left and ends.
    closed: bool,
}

/// One log file, written by a thread of its own.
#[derive(Debug)]
pub struct Sink {
    path: PathBuf,
    pending: Mutex<Pending>,
    wake: Condvar,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Sink {
    /// Opens `path` for appending (created if missing, with its directory when under
    /// `prefix`; `/dev/stdout` and `/dev/stderr` are the process's streams) and starts its
    /// writer thread.
    pub fn open(path: &Path, create_dir: bool) -> std::io::Result<Arc<Sink>> {
        let file = open_file(path, create_dir)?;
        let sink = Arc::new(Sink {
            path: path.to_path_buf(),
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            writer: Mutex::new(None),
        });
        let s = Arc::downgrade(&sink);
        let handle = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(&s, file))?;
        *lock(&sink.writer) = Some(handle);
        Ok(sink)
    }

    /// Appends one line (`fill` writes it, without its newline) for the writer thread;
    /// dropped (and counted) when the writer is [`MAX_PENDING`] bytes behind.
    pub fn append(&self, fill: impl FnOnce(&mut Vec<u8>)) {
        let mut p = lock(&self.pending);
        if p.closed {
            return;
        }
        let at = p.buf.len();
        if at >= MAX_PENDING {
            p.dropped += 1;
            return;
        }
        fill(&mut p.buf);
        p.buf.push(b'\n');
        if p.buf.len() > MAX_PENDING {
            p.buf.truncate(at);
            p.dropped += 1;
            return;
        }
        if p.parked {
            p.parked = false;
            drop(p);
            self.wake.notify_one();
        }
    }

    /// Writes out every line appended so far and stops the writer thread (at the
    /// gateway's end); lines appended after are dropped.
    pub fn close(&self) {
        lock(&self.pending).closed = true;
        self.wake.notify_one();
        if let Some(h) = lock(&self.writer).take() {
            let _ = h.join();
        }
    }
}

/// A poisoned lock's data is whole: nothing panics while holding these.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn open_file(path: &Path, create_dir: bool) -> std::io::Result<std::fs::File> {
    use std::os::fd::AsFd;
    if path == Path::new("/dev/stdout") {
        return Ok(std::io::stdout().as_fd().try_clone_to_owned()?.into());
    }
    if path == Path::new("/dev/stderr") {
        return Ok(std::io::stderr().as_fd().try_clone_to_owned()?.into());
    }
    if create_dir && let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
}

/// The writer thread: takes the buffer whole, writes it, waits [`FLUSH_INTERVAL`] so that
/// lines gather, and parks when there are none. Ends when the sink is closed or gone.
fn write_loop(sink: &std::sync::Weak<Sink>, mut file: std::fs::File) {
    let mut spare = Vec::new();
    let mut failing = false;
    loop {
        let Some(s) = sink.upgrade() else { return };
        let (chunk, dropped, closed) = {
            let mut p = lock(&s.pending);
            while p.buf.is_empty() && !p.closed {
                p.parked = true;
                // (woken by `append`, or `close`; a sink dropped without `close` leaves
                // this thread parked until the process ends, holding nothing but the file)
                p = s.wake.wait(p).unwrap_or_else(PoisonError::into_inner);
            }
            let dropped = std::mem::take(&mut p.dropped);
            (std::mem::replace(&mut p.buf, spare), dropped, p.closed)
        };
        match file.write_all(&chunk) {
            Ok(()) if failing => {
                failing = false;
                tracing::info!(path = %s.path.display(), "access log writable again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(path = %s.path.display(), error = %e, "cannot write the access log");
            }
            Err(_) => {}
        }
        if dropped > 0 {
            tracing::warn!(path = %s.path.display(), lines = dropped, "access log lines dropped: the log's writer fell behind");
        }
        spare = chunk;
        spare.clear();
        if closed {
            return;
        }
        drop(s);
        std::thread::sleep(FLUSH_INTERVAL);
    }
}

/// Opens the logs of `specs` (each with the name of its setting, for errors): one sink
/// per file, shared by the kinds that name the same one, so that their lines never
/// interleave. A relative path is taken under `prefix`, whose directories are made as
/// Kong's `prefix` handling makes `logs/`.
pub fn open_all<const N: usize>(
    specs: [(&'static str, Option<&AccessLogSpec>); N],
    prefix: Option<&Path>,
) -> Result<[Option<Logger>; N], crate::ProxyError> {
    let mut open: Vec<(PathBuf, Arc<Sink>)> = vec![];
    let mut out = [const { None }; N];
    for (slot, (setting, spec)) in out.iter_mut().zip(specs) {
        let Some(spec) = spec else { continue };
        let path = spec.resolved(prefix);
        let sink = match open.iter().find(|(p, _)| *p == path) {
            Some((_, s)) => s.clone(),
            None => {
                let under_prefix = prefix.is_some() && spec.path.is_relative();
                let s = Sink::open(&path, under_prefix).map_err(|source| {
                    crate::ProxyError::AccessLog {
                        setting,
                        path: path.clone(),
                        source,
                    }
                })?;
                open.push((path, s.clone()));
                s
            }
        };
        *slot = Some(Logger::new(sink, spec.format));
    }
    Ok(out)
}

/// A listener kind's log: its sink and format.
#[derive(Debug, Clone)]
pub struct Logger {
    sink: Arc<Sink>,
    format: LogFormat,
}

impl Logger {
    /// A log of `format` written to `sink`.
    pub fn new(sink: Arc<Sink>, format: LogFormat) -> Logger {
        Logger { sink, format }
    }

    /// The line of a request as it begins: everything but the time, status and body bytes,
    /// which [`Entry::finish`] adds. `remote`: `$remote_addr`, as text; `request_id`:
    /// Kong's `$kong_request_id`.
    pub fn begin(
        &self,
        remote: &[u8],
        req: &http::request::Parts,
        request_id: &[u8],
    ) -> Box<Entry> {
        self.begin_with(
            remote,
            (&req.method, &req.uri, req.version),
            &req.headers,
            request_id,
        )
    }

    /// [`Logger::begin`] for a request not taken apart.
    pub fn begin_request<B>(
        &self,
        remote: &[u8],
        req: &http::Request<B>,
        request_id: &[u8],
    ) -> Box<Entry> {
        let line = (req.method(), req.uri(), req.version());
        self.begin_with(remote, line, req.headers(), request_id)
    }

    fn begin_with(
        &self,
        remote: &[u8],
        line: (&http::Method, &http::Uri, http::Version),
        headers: &HeaderMap,
        request_id: &[u8],
    ) -> Box<Entry> {
        let mut text = Vec::with_capacity(192);
        text.extend_from_slice(remote);
        text.extend_from_slice(b" - ");
        escaped(&mut text, remote_user(headers).as_deref().unwrap_or(b""));
        text.push(b' ');
        let mid = text.len();
        text.push(b'"');
        request_line(&mut text, line);
        text.extend_from_slice(b"\" ");
        let tail = text.len();
        text.extend_from_slice(b" \"");
        escaped(&mut text, header_bytes(headers, header::REFERER));
        text.extend_from_slice(b"\" \"");
        escaped(&mut text, header_bytes(headers, header::USER_AGENT));
        text.push(b'"');
        if self.format == LogFormat::Kong {
            text.extend_from_slice(b" kong_request_id: \"");
            escaped(&mut text, request_id);
            text.push(b'"');
        }
        Box::new(Entry {
            sink: self.sink.clone(),
            text,
            mid,
            tail,
            status: 0,
        })
    }

    /// Logs a head refused before it was parsed whole (its `raw` bytes as read): its first
    /// line is `$request`, as nginx logs what it read of a request line it refused; the
    /// headers are not read (`-`). `request_id`: the answer's, if it has one.
    pub fn refused(
        &self,
        remote: IpAddr,
        raw: &[u8],
        (status, body_bytes): (u16, u64),
        request_id: &[u8],
    ) {
        let start = raw
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .unwrap_or(raw.len());
        let line = &raw[start..];
        let end = memchr::memchr2(b'\r', b'\n', line).unwrap_or(line.len());
        let mut text = Vec::with_capacity(128);
        let _ = write!(Text(&mut text), "{remote} - - ");
        let mid = text.len();
        text.push(b'"');
        escaped(&mut text, &line[..end]);
        text.extend_from_slice(b"\" ");
        let tail = text.len();
        text.extend_from_slice(b" \"-\" \"-\"");
        if self.format == LogFormat::Kong {
            text.extend_from_slice(b" kong_request_id: \"");
            escaped(&mut text, request_id);
            text.push(b'"');
        }
        let e = Entry {
            sink: self.sink.clone(),
            text,
            mid,
            tail,
            status,
        };
        e.finish(body_bytes);
    }

    /// The sink.
    pub fn sink(&self) -> &Arc<Sink> {
        &self.sink
    }
}

/// A request's log line, waiting for its answer to end.
#[derive(Debug)]
pub struct Entry {
    sink: Arc<Sink>,
    /// The line but for the time (at `mid`) and the status and bytes (at `tail`).
    text: Vec<u8>,
    mid: usize,
    tail: usize,
    /// The answer's status (`$status`).
    pub status: u16,
}

impl Entry {
    /// Logs the request with `body_bytes` of answer body sent.
    pub fn finish(&self, body_bytes: u64) {
        let (text, mid, tail) = (&self.text, self.mid, self.tail);
        let (status, now) = (self.status, time_local());
        self.sink.append(|buf| {
            buf.extend_from_slice(&text[..mid]);
            buf.push(b'[');
            buf.extend_from_slice(&now);
            buf.extend_from_slice(b"] ");
            buf.extend_from_slice(&text[mid..tail]);
            let mut n = itoa::Buffer::new();
            buf.extend_from_slice(n.format(status).as_bytes());
            buf.push(b' ');
            buf.extend_from_slice(n.format(body_bytes).as_bytes());
            buf.extend_from_slice(&text[tail..]);
        });
    }
}

/// `fmt::Write` into a byte buffer.
struct Text<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Text<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// nginx's `$request`: the request line. An HTTP/1 target as it came (origin or absolute
/// form), an HTTP/2 request's `:path`, and the version as nginx names it.
fn request_line(
    out: &mut Vec<u8>,
    (method, uri, version): (&http::Method, &http::Uri, http::Version),
) {
    escaped(out, method.as_str().as_bytes());
    out.push(b' ');
    if uri.scheme().is_some() && version != http::Version::HTTP_2 {
        escaped(out, uri.to_string().as_bytes());
    } else {
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        escaped(out, target.as_bytes());
    }
    out.extend_from_slice(match version {
        http::Version::HTTP_09 => b" HTTP/0.9",
        http::Version::HTTP_10 => b" HTTP/1.0",
        http::Version::HTTP_2 => b" HTTP/2.0",
        http::Version::HTTP_3 => b" HTTP/3.0",
        _ => b" HTTP/1.1",
    });
}

fn header_bytes(h: &HeaderMap, name: header::HeaderName) -> &[u8] {
    h.get(name).map_or(&b""[..], |v| v.as_bytes())
}

/// nginx's `$remote_user`: the user of a `Basic` `Authorization` header (before the first
/// `:` of the decoded credentials; none without one).
fn remote_user(h: &HeaderMap) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let v = h.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = v.split_at(v.iter().position(|&b| b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim_ascii())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let mut user = decoded;
    user.truncate(colon);
    Some(user)
}

/// The bytes nginx's default log escaping leaves as they are.
static PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0x20;
    while b < 0x7f {
        t[b] = b != b'"' as usize && b != b'\\' as usize;
        b += 1;
    }
    t
};

/// Appends `v` as nginx's default log escaping writes a variable: `-` when empty; `"`, `\`,
/// control bytes and bytes past ASCII as `\xHH`.
fn escaped(out: &mut Vec<u8>, v: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let plain = |b: &u8| PLAIN[usize::from(*b)];
    if v.is_empty() {
        out.push(b'-');
        return;
    }
    // (most values need no escape: copied whole)
    let mut rest = v;
    while let Some(i) = rest.iter().position(|b| !plain(b)) {
        let b = rest[i];
        out.extend_from_slice(&rest[..i]);
        let hex = [HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]];
        out.extend_from_slice(&[b'\\', b'x', hex[0], hex[1]]);
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
}

/// nginx's `$time_local` (in UTC): `28/Nov/2026:02:52:32 +0000`, made once a second per
/// thread.
fn time_local() -> [u8; 26] {
    use std::cell::Cell;
    thread_local! {
        static NOW: Cell<(u64, [u8; 26])> = const { Cell::new((u64::MAX, [0; 26])) };
    }
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    NOW.with(|c| {
        let (at, text) = c.get();
        if at == secs {
            return text;
        }
        let text = format_time(secs);
        c.set((secs, text));
        text
    })
}

fn format_time(secs: u64) -> [u8; 26] {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let mut s = String::with_capacity(26);
    let _ = write!(
        s,
        "{:02}/{}/{:04}:{:02}:{:02}:{:02} +0000",
        t.day(),
        MONTHS[usize::from(u8::from(t.month())) - 1],
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let mut out = [b' '; 26];
    let n = s.len().min(26);
    out[..n].copy_from_slice(&s.as_bytes()[..n]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(req: http::Request<()>) -> http::request::Parts {
        req.into_parts().0
    }

    fn read_until(path: &Path, lines: usize) -> String {
        for _ in 0..200 {
            let s = std::fs::read_to_string(path).unwrap_or_default();
            if s.lines().count() >= lines {
                return s;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        std::fs::read_to_string(path).unwrap_or_default()
    }

    #[test]
    fn values_parse_as_nginx_reads_access_log() {
        let p = |v| AccessLogSpec::parse(v, LogFormat::Kong);
        assert_eq!(p("off"), Ok(None));
        assert_eq!(
            p("/dev/stdout"),
            Ok(Some(AccessLogSpec {
                path: "/dev/stdout".into(),
                format: LogFormat::Kong
            }))
        );
        assert_eq!(
            p("logs/a.log combined buffer=16k flush=5s").map(|s| s.map(|s| s.format)),
            Ok(Some(LogFormat::Combined))
        );
        assert_eq!(
            AccessLogSpec::parse("x.log", LogFormat::Combined).map(|s| s.map(|s| s.format)),
            Ok(Some(LogFormat::Combined))
        );
        let err = p("/x.log buffer=16k").unwrap_err();
        assert!(err.contains("unknown log format 'buffer=16k'"), "{err}");
        assert!(p("/x.log main").unwrap_err().contains("'main'"));
        assert!(p("/x.log combined gzip").unwrap_err().contains("gzip"));
        assert!(p("/x.log combined if=$loggable").is_err());
        assert!(p("syslog:server=1.2.3.4").is_err());
        assert!(p("").is_err());
        assert!(p("off now").is_err());
    }

    #[test]
    fn relative_paths_are_under_the_prefix() {
        let s = AccessLogSpec::parse("logs/access.log", LogFormat::Kong)
            .unwrap()
            .unwrap();
        assert_eq!(
            s.resolved(Some(Path::new("/srv/kong"))),
            Path::new("/srv/kong/logs/access.log")
        );
        assert_eq!(s.resolved(None), Path::new("logs/access.log"));
        let abs = AccessLogSpec::parse("/var/log/a", LogFormat::Kong)
            .unwrap()
            .unwrap();
        assert_eq!(
            abs.resolved(Some(Path::new("/srv"))),
            Path::new("/var/log/a")
        );
    }

    #[test]
    fn escaping_is_nginxs() {
        let mut out = vec![];
        escaped(&mut out, b"a\"b\\c\x01\x7f\xc3\xa9 d");
        assert_eq!(out, b"a\\x22b\\x5Cc\\x01\\x7F\\xC3\\xA9 d");
        out.clear();
        escaped(&mut out, b"");
        assert_eq!(out, b"-");
    }

    #[test]
    fn time_is_nginxs_time_local() {
        // 2026-11-28T02:52:32Z
        assert_eq!(&format_time(1_795_834_352), b"28/Nov/2026:02:52:32 +0000");
        assert_eq!(&format_time(0), b"01/Jan/1970:00:00:00 +0000");
    }

    #[test]
    fn lines_are_written_in_each_format() {
        let dir = std::env::temp_dir().join(format!("sb-access-{}", std::process::id()));
        let path = dir.join("logs/access.log");
        let _ = std::fs::remove_dir_all(&dir);
        let sink = Sink::open(&path, true).unwrap();
        let kong = Logger::new(sink.clone(), LogFormat::Kong);
        let combined = Logger::new(sink.clone(), LogFormat::Combined);
        let req = parts(
            http::Request::get("/a?b=1")
                .header("referer", "http://r/")
                .header("user-agent", "ua \"x\"")
                .header("authorization", "Basic YWxpY2U6c2VjcmV0") // alice:secret
                .body(())
                .unwrap(),
        );
        let mut e = kong.begin(b"10.1.2.3", &req, b"0123abcd");
        e.status = 200;
        e.finish(12);
        let h2 = parts(
            http::Request::post("https://h/x")
                .version(http::Version::HTTP_2)
                .body(())
                .unwrap(),
        );
        let mut e = combined.begin(b"::1", &h2, b"-");
        e.status = 404;
        e.finish(0);
        let raw = b"\r\nGET /\x01 HTTP/1.1\r\nHost: x\r\n";
        kong.refused("127.0.0.1".parse().unwrap(), raw, (400, 150), b"");
        let text = read_until(&path, 3);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        let cut = |l: &str| {
            let (a, rest) = l.split_once(" [").unwrap();
            let (time, b) = rest.split_once("] ").unwrap();
            assert_eq!(time.len(), 26, "{l}");
            assert!(time.ends_with(" +0000"), "{l}");
            format!("{a} {b}")
        };
        assert_eq!(
            cut(lines[0]),
            "10.1.2.3 - alice \"GET /a?b=1 HTTP/1.1\" 200 12 \"http://r/\" \"ua \\x22x\\x22\" kong_request_id: \"0123abcd\""
        );
        assert_eq!(
            cut(lines[1]),
            "::1 - - \"POST /x HTTP/2.0\" 404 0 \"-\" \"-\""
        );
        assert_eq!(
            cut(lines[2]),
            "127.0.0.1 - - \"GET /\\x01 HTTP/1.1\" 400 150 \"-\" \"-\" kong_request_id: \"-\""
        );
        sink.close();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn lines_past_the_cap_are_dropped_and_counted() {
        // (a sink without its writer thread: nothing drains the buffer)
        let sink = Sink {
            path: "unused".into(),
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            writer: Mutex::new(None),
        };
        lock(&sink.pending).buf.resize(MAX_PENDING - 2, b'x');
        sink.append(|b| b.extend_from_slice(&[b'y'; 64]));
        sink.append(|b| b.extend_from_slice(b"z"));
        sink.append(|b| b.extend_from_slice(b"w"));
        let p = lock(&sink.pending);
        assert_eq!(p.dropped, 2);
        assert_eq!(p.buf.len(), MAX_PENDING);
        assert!(p.buf.ends_with(b"xz\n"));
    }
}
