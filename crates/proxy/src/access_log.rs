//! The access logs of the listeners: Kong's `proxy_access_log`, `admin_access_log` and
//! `status_access_log`, one line per request in nginx's formats ([`crate::log_format`]).
//!
//! - The proxy listeners log in Kong's `kong_log_format` unless the setting names a format:
//!   `$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent
//!   "$http_referer" "$http_user_agent" kong_request_id: "$kong_request_id"`.
//! - The admin and status listeners log in nginx's `combined` format, the same without the
//!   request id.
//! - A setting may name one of those, or the format of Kong's `nginx_http_log_format`.
//!
//! `$remote_addr` is the address after `trusted_ips`/`real_ip_header` on the proxy listeners
//! (nginx's `realip` module runs in Kong's proxy server only). A request is logged when its
//! answer ends: with a streamed body once the body is sent, an upgraded connection once its
//! tunnel closes, a request whose client left before its answer as `499`.
//!
//! The request path never writes a file: [`Sink::append`] copies the line into a buffer
//! under a short lock, and a thread of the sink's own writes the buffer out at most
//! [`FLUSH_INTERVAL`] later (at once after an idle spell). If that thread falls behind (a
//! pipe nobody reads, a full disk) by more than [`MAX_PENDING`] bytes, further lines are
//! dropped and counted, and the count is logged once the thread gets through again: the
//! proxy keeps serving. [`Sink::reopen`] has the thread open its file again (log rotation).

use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

pub use crate::log_format::Try;
use crate::log_format::{End, Holes};
pub use crate::log_format::{Line, LogFormat, Request};

/// How long the writer thread waits between writes while lines keep coming.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// How long [`Sink::close`] waits for the last lines to be written.
pub const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Bytes a sink holds for its writer at most; lines past that are dropped.
pub const MAX_PENDING: usize = 8 << 20;

/// Where a listener kind's access log goes and in which format: one of Kong's
/// `*_access_log` settings, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogSpec {
    /// The file. `/dev/stdout` and `/dev/stderr` are the process's own streams; a relative
    /// path is under the prefix when there is one (as Kong resolves it), else the working
    /// directory.
    pub path: PathBuf,
    /// The format.
    pub format: Arc<LogFormat>,
}

impl AccessLogSpec {
    /// Parses a Kong `*_access_log` value: `off`, or nginx's `access_log` arguments, `PATH
    /// [FORMAT [buffer=SIZE] [flush=TIME]]`, where `FORMAT` is `kong_log_format`,
    /// `combined` or the name of `custom` (Kong's `nginx_http_log_format`), and `PATH` alone
    /// takes `default`. `buffer=` and `flush=` are accepted and
    /// have no effect (lines are always buffered, for at most [`FLUSH_INTERVAL`]); `gzip`,
    /// `if=` and `syslog:` targets are refused, as is any other format name (nginx's own
    /// `unknown log format`).
    pub fn parse(
        value: &str,
        default: &Arc<LogFormat>,
        custom: Option<&Arc<LogFormat>>,
    ) -> Result<Option<AccessLogSpec>, String> {
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
            None => default.clone(),
            Some("kong_log_format") => Arc::new(LogFormat::kong()),
            Some("combined") => Arc::new(LogFormat::combined()),
            Some(name) => match custom.filter(|c| c.name() == name) {
                Some(c) => c.clone(),
                None => {
                    let known = custom.map_or(String::new(), |c| format!(", {}", c.name()));
                    return Err(format!(
                        "unknown log format '{name}' (known: kong_log_format, combined{known})"
                    ));
                }
            },
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
    /// The file is to be opened again before the next write (it was moved away, nginx's
    /// `USR1`).
    reopen: bool,
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

    /// Has the writer open the file again (by its path) before its next write: after a log
    /// rotation moved it away, as nginx does on `USR1`. A file that cannot be opened is
    /// warned about, and the old one kept.
    pub fn reopen(&self) {
        lock(&self.pending).reopen = true;
        self.wake.notify_one();
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes out every line appended so far and stops the writer thread (at the
    /// gateway's end); lines appended after are dropped. Waits for the writer at most
    /// [`CLOSE_WAIT`]: a write that blocks (a pipe nobody reads) does not hold up the end.
    pub fn close(&self) {
        lock(&self.pending).closed = true;
        self.wake.notify_one();
        let Some(h) = lock(&self.writer).take() else {
            return;
        };
        let deadline = Instant::now() + CLOSE_WAIT;
        while !h.is_finished() {
            if Instant::now() >= deadline {
                tracing::warn!(path = %self.path.display(), "the access log's last lines could not be written in time");
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = h.join();
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
        let (chunk, dropped, closed, reopen) = {
            let mut p = lock(&s.pending);
            while p.buf.is_empty() && !p.closed && !p.reopen {
                p.parked = true;
                // (woken by `append`, `reopen` or `close`; a sink dropped without `close`
                // leaves this thread parked until the process ends, holding nothing but
                // the file)
                p = s.wake.wait(p).unwrap_or_else(PoisonError::into_inner);
            }
            p.parked = false;
            let dropped = std::mem::take(&mut p.dropped);
            let reopen = std::mem::take(&mut p.reopen);
            (
                std::mem::replace(&mut p.buf, spare),
                dropped,
                p.closed,
                reopen,
            )
        };
        if reopen {
            match open_file(&s.path, false) {
                Ok(f) => file = f,
                Err(e) => {
                    tracing::warn!(path = %s.path.display(), error = %e, "cannot open the access log again: writing on to the old file");
                }
            }
        }
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
        *slot = Some(Logger::new(sink, spec.format.clone()));
    }
    Ok(out)
}

/// A listener kind's log: its sink and format.
#[derive(Debug, Clone)]
pub struct Logger(Arc<(Arc<Sink>, Arc<LogFormat>)>);

impl Logger {
    /// A log of `format` written to `sink`.
    pub fn new(sink: Arc<Sink>, format: Arc<LogFormat>) -> Logger {
        Logger(Arc::new((sink, format)))
    }

    /// The line of a request as it begins: everything known from its head, with holes for
    /// what [`Entry::finish`] adds (the status, the body bytes, the times).
    pub fn begin(&self, r: &Request<'_>) -> Box<Entry> {
        let mut e = Box::new(Entry {
            log: self.clone(),
            text: Vec::with_capacity(192),
            holes: Holes::default(),
            start: Instant::now(),
            status: 0,
            tries: self.0.1.reads_tries().then(Vec::new),
        });
        let Entry { text, holes, .. } = &mut *e;
        self.0.1.begin(r, text, holes);
        e
    }

    /// Logs a head refused before it was parsed whole (its `raw` bytes as read): its first
    /// line is `$request`, as nginx logs what it read of a request line it refused; the
    /// headers are not known (`-`). `request_id`: the answer's, if it has one.
    pub fn refused(
        &self,
        (remote, hostname): (IpAddr, &str),
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
        let addr = remote.to_string();
        let mut e = self.begin(&Request {
            remote: addr.as_bytes(),
            line: Line::Raw(&line[..end]),
            headers: None,
            request_id,
            tls: None,
            hostname,
        });
        e.status = status;
        e.finish(body_bytes);
    }

    /// The sink.
    pub fn sink(&self) -> &Arc<Sink> {
        &self.0.0
    }
}

/// A request's log line, waiting for its answer to end.
#[derive(Debug)]
pub struct Entry {
    log: Logger,
    /// The line but for the end-time values, whose places are in `holes`.
    text: Vec<u8>,
    holes: Holes,
    /// When the request began (`$request_time`).
    start: Instant,
    /// The answer's status (`$status`).
    pub status: u16,
    /// The tries toward the upstream, when the format reads them (`$upstream_*`).
    tries: Option<Vec<Try>>,
}

impl Entry {
    /// Records a try toward the upstream (if the format reads them).
    pub fn tried(&mut self, t: Try) {
        if let Some(tries) = &mut self.tries {
            tries.push(t);
        }
    }

    /// Logs the request with `body_bytes` of answer body sent.
    pub fn finish(&self, body_bytes: u64) {
        let end = End {
            status: self.status,
            body_bytes,
            start: self.start,
            tries: self.tries.as_deref().unwrap_or_default(),
        };
        let (sink, format) = &*self.log.0;
        sink.append(|buf| format.finish(&self.text, &self.holes, &end, buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let kong = Arc::new(LogFormat::kong());
        let custom = Arc::new(LogFormat::parse("mine '$status'").unwrap());
        let p = |v| AccessLogSpec::parse(v, &kong, Some(&custom));
        let name = |v| p(v).map(|s| s.map(|s| s.format.name().to_string()));
        assert_eq!(p("off"), Ok(None));
        assert_eq!(
            p("/dev/stdout"),
            Ok(Some(AccessLogSpec {
                path: "/dev/stdout".into(),
                format: kong.clone()
            }))
        );
        let combined = Some("combined".to_string());
        assert_eq!(
            name("logs/a.log combined buffer=16k flush=5s"),
            Ok(combined)
        );
        assert_eq!(name("a.log mine"), Ok(Some("mine".to_string())));
        let err = p("/x.log buffer=16k").unwrap_err();
        assert!(err.contains("unknown log format 'buffer=16k'"), "{err}");
        let err = p("/x.log main").unwrap_err();
        assert!(
            err.contains("'main' (known: kong_log_format, combined, mine)"),
            "{err}"
        );
        assert!(p("/x.log combined gzip").unwrap_err().contains("gzip"));
        assert!(p("/x.log combined if=$loggable").is_err());
        assert!(p("syslog:server=1.2.3.4").is_err());
        assert!(p("").is_err());
        assert!(p("off now").is_err());
    }

    #[test]
    fn relative_paths_are_under_the_prefix() {
        let kong = Arc::new(LogFormat::kong());
        let spec = |v| AccessLogSpec::parse(v, &kong, None).unwrap().unwrap();
        let s = spec("logs/access.log");
        assert_eq!(
            s.resolved(Some(Path::new("/srv/kong"))),
            Path::new("/srv/kong/logs/access.log")
        );
        assert_eq!(s.resolved(None), Path::new("logs/access.log"));
        let abs = spec("/var/log/a");
        assert_eq!(
            abs.resolved(Some(Path::new("/srv"))),
            Path::new("/var/log/a")
        );
    }

    #[test]
    fn lines_are_written_in_order_and_a_refused_head_with_its_line_as_read() {
        let dir = std::env::temp_dir().join(format!("sb-access-{}", std::process::id()));
        let path = dir.join("logs/access.log");
        let _ = std::fs::remove_dir_all(&dir);
        let sink = Sink::open(&path, true).unwrap();
        let kong = Logger::new(sink.clone(), Arc::new(LogFormat::kong()));
        let combined = Logger::new(sink.clone(), Arc::new(LogFormat::combined()));
        let h2 = http::Request::post("https://h/x")
            .version(http::Version::HTTP_2)
            .body(())
            .unwrap();
        let mut e = combined.begin(&Request {
            remote: b"::1",
            line: Line::Parsed(h2.method(), h2.uri(), h2.version()),
            headers: Some(h2.headers()),
            request_id: b"",
            tls: Some(true),
            hostname: "h",
        });
        e.status = 404;
        e.finish(0);
        let raw = b"\r\nGET /\x01 HTTP/1.1\r\nHost: x\r\n";
        let peer = ("127.0.0.1".parse().unwrap(), "h");
        kong.refused(peer, raw, (400, 150), b"");
        let text = read_until(&path, 2);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let cut = |l: &str| {
            let (a, rest) = l.split_once(" [").unwrap();
            let (time, b) = rest.split_once("] ").unwrap();
            assert_eq!(time.len(), 26, "{l}");
            assert!(time.ends_with(" +0000"), "{l}");
            format!("{a} {b}")
        };
        assert_eq!(
            cut(lines[0]),
            "::1 - - \"POST /x HTTP/2.0\" 404 0 \"-\" \"-\""
        );
        assert_eq!(
            cut(lines[1]),
            "127.0.0.1 - - \"GET /\\x01 HTTP/1.1\" 400 150 \"-\" \"-\" kong_request_id: \"-\""
        );
        sink.close();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A writer blocked on a pipe nobody reads does not hold up the gateway's end.
    #[test]
    fn closing_does_not_wait_on_a_blocked_writer() {
        let dir = std::env::temp_dir().join(format!("sb-access-fifo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        // (a reader that opens the pipe and never reads, so that opening it for writing
        // does not block)
        let reader = std::fs::File::options()
            .read(true)
            .write(true)
            .open(&fifo)
            .unwrap();
        let sink = Sink::open(&fifo, false).unwrap();
        let line = vec![b'x'; 4096];
        // (past the pipe's buffer, 64 KiB: the writer blocks in `write`)
        for _ in 0..64 {
            sink.append(|b| b.extend_from_slice(&line));
        }
        std::thread::sleep(FLUSH_INTERVAL * 4);
        let t = Instant::now();
        sink.close();
        let took = t.elapsed();
        assert!(took >= CLOSE_WAIT && took < CLOSE_WAIT * 2, "{took:?}");
        drop(reader);
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
