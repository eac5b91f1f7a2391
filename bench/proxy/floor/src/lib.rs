//! What the two floor proxies share: the end of an HTTP/1.1 message in a buffer.

/// The length of the message at the start of `buf` (its head and a `Content-Length` body), or
/// `None` while the head is incomplete. A floor proxy forwards GETs and `Content-Length`
/// answers only: the benchmark sends nothing else.
pub fn message_end(buf: &[u8]) -> Option<usize> {
    let head = memchr::memmem::find(buf, b"\r\n\r\n")? + 4;
    let mut body = 0;
    for line in buf[..head].split(|&b| b == b'\n') {
        if line.len() > 15 && line[..15].eq_ignore_ascii_case(b"content-length:") {
            body = std::str::from_utf8(&line[15..]).ok()?.trim().parse().ok()?;
        }
    }
    Some(head + body)
}

/// The listen and upstream addresses from the command line.
pub fn addresses() -> std::io::Result<(String, String)> {
    let mut args = std::env::args().skip(1);
    match (args.next(), args.next()) {
        (Some(listen), Some(upstream)) => Ok((listen, upstream)),
        _ => Err(std::io::Error::other(
            "usage: <floor proxy> LISTEN_ADDR UPSTREAM_ADDR",
        )),
    }
}
