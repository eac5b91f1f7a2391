//! The client's address behind trusted proxies, as nginx's `realip` module reads it (Kong's
//! `trusted_ips` are its `set_real_ip_from`, `real_ip_header` and `real_ip_recursive` its
//! own directives): `ngx_http_get_forwarded_addr`.
//!
//! A header value is a list of addresses separated by spaces or commas, read from its end:
//! while the address in hand (the peer's at first) is trusted, the last entry not read yet
//! becomes it, and without `real_ip_recursive` one entry is read at most. An entry is an
//! IPv4 or IPv6 address, or one with a port (`a.b.c.d:p`, `[v6]:p`), as `ngx_parse_addr_port`
//! reads it; an entry that is none of these ends the reading, keeping what was found (the
//! peer when nothing was). `X-Forwarded-For` (named exactly so, as nginx's directive
//! compares it) is read over all its lines, the last line first, each further one only while
//! recursion found every address trusted so far; any other header by its first line.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// How reading one header line ended (nginx's return codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// Nothing taken: the address in hand was not trusted, or the first entry was not an
    /// address (`NGX_DECLINED`).
    Declined,
    /// Entries taken, then one that was not trusted or not an address (`NGX_DONE`).
    Done,
    /// Every entry read was taken (`NGX_OK`).
    Ok,
}

/// The client's address for a request from `peer` whose `header` (the `real_ip_header`
/// name) has the lines `lines`, the proxies trusted by `trusted`.
pub(crate) fn client_addr<'a>(
    peer: SocketAddr,
    header: &str,
    mut lines: impl DoubleEndedIterator<Item = &'a [u8]>,
    recursive: bool,
    trusted: impl Fn(IpAddr) -> bool,
) -> SocketAddr {
    let mut addr = peer;
    if header != "X-Forwarded-For" {
        if let Some(v) = lines.next() {
            read_line(&mut addr, v, recursive, &trusted);
        }
        return addr;
    }
    for v in lines.rev() {
        let r = read_line(&mut addr, v, recursive, &trusted);
        // (nginx: a line declined after lines found is "done"; either way, what was
        // found stands)
        if !recursive || r != Read::Ok {
            break;
        }
    }
    addr
}

/// Reads one line's entries from its end into `addr` (`ngx_http_get_forwarded_addr_internal`).
fn read_line(
    addr: &mut SocketAddr,
    v: &[u8],
    recursive: bool,
    trusted: &impl Fn(IpAddr) -> bool,
) -> Read {
    let delim = |b: u8| b == b' ' || b == b',';
    let mut found = false;
    let stop = |found: bool| if found { Read::Done } else { Read::Declined };
    // the bytes not read yet: `v[..len]`
    let mut len = v.len();
    loop {
        if !trusted(addr.ip()) || len == 0 {
            return stop(found);
        }
        // the last entry: trailing separators skipped (the first byte never is), then back
        // to the separator before it (a separator at the very start stays in the entry)
        let mut end = len;
        while end > 1 && delim(v[end - 1]) {
            end -= 1;
        }
        let mut start = end - 1;
        while start > 0 && !delim(v[start]) {
            start -= 1;
        }
        if start > 0 {
            start += 1;
        }
        let Some(a) = parse_addr_port(&v[start..end]) else {
            return stop(found);
        };
        *addr = a;
        found = true;
        if !recursive || start == 0 {
            return Read::Ok;
        }
        len = start - 1;
    }
}

/// An address with an optional port, as `ngx_parse_addr_port` reads it (port 0 without one).
fn parse_addr_port(t: &[u8]) -> Option<SocketAddr> {
    if let Some(ip) = parse_addr(t) {
        return Some(SocketAddr::new(ip, 0));
    }
    let (host, port) = if t.first() == Some(&b'[') {
        let close = t.iter().position(|&b| b == b']')?;
        if close + 1 >= t.len() || t[close + 1] != b':' {
            return None;
        }
        (&t[1..close], &t[close + 2..])
    } else {
        let colon = t.iter().position(|&b| b == b':')?;
        (&t[..colon], &t[colon + 1..])
    };
    // (`ngx_atoi`: digits only)
    if port.is_empty() || port.len() > 5 || !port.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let port = port.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    let port = u16::try_from(port).ok().filter(|p| *p != 0)?;
    Some(SocketAddr::new(parse_addr(host)?, port))
}

/// An IPv4 address as `ngx_inet_addr` reads it (digits and three dots, each part at most
/// 255, empty parts read as 0, `255.255.255.255` refused as its `INADDR_NONE`), else an
/// IPv6 address.
fn parse_addr(t: &[u8]) -> Option<IpAddr> {
    let mut addr = 0u32;
    let mut octet = 0u32;
    let mut dots = 0;
    let mut v4 = true;
    for &c in t {
        match c {
            b'0'..=b'9' => {
                octet = octet * 10 + u32::from(c - b'0');
                if octet > 255 {
                    v4 = false;
                    break;
                }
            }
            b'.' => {
                addr = (addr << 8).wrapping_add(octet);
                octet = 0;
                dots += 1;
            }
            _ => {
                v4 = false;
                break;
            }
        }
    }
    if v4 && dots == 3 {
        let a = (addr << 8).wrapping_add(octet);
        if a != u32::MAX {
            return Some(IpAddr::V4(Ipv4Addr::from(a)));
        }
    }
    std::str::from_utf8(t)
        .ok()?
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The client of a request from 127.0.0.1 with `lines` of `header`, 127.0.0.0/8 and
    /// 10.0.0.0/8 trusted.
    fn client(header: &str, lines: &[&str], recursive: bool) -> String {
        let peer: SocketAddr = "127.0.0.1:5555".parse().unwrap();
        let trusted = |a: IpAddr| match a {
            IpAddr::V4(v) => v.octets()[0] == 127 || v.octets()[0] == 10,
            IpAddr::V6(_) => false,
        };
        let lines = lines.iter().map(|l| l.as_bytes());
        client_addr(peer, header, lines, recursive, trusted).to_string()
    }

    #[test]
    fn entries_are_read_from_the_end_as_nginx_reads_them() {
        let x = "X-Real-IP";
        for (line, recursive, want) in [
            ("1.1.1.1", false, "1.1.1.1:0"),
            ("1.1.1.1, 2.2.2.2", false, "2.2.2.2:0"),
            // spaces separate as commas do; separators at the end are skipped
            ("1.1.1.1 2.2.2.2", false, "2.2.2.2:0"),
            ("1.1.1.1, 2.2.2.2 ,, ", false, "2.2.2.2:0"),
            // a port is taken with the address
            ("203.0.113.7:4711", false, "203.0.113.7:4711"),
            ("[2001:db8::1]:443", false, "[2001:db8::1]:443"),
            ("2001:db8::1", false, "[2001:db8::1]:0"),
            // not an address: the peer stays
            ("1.1.1.1, junk", false, "127.0.0.1:5555"),
            ("", false, "127.0.0.1:5555"),
            ("1.1.1.1:0", false, "127.0.0.1:5555"),
            ("1.1.1.1:65536", false, "127.0.0.1:5555"),
            ("[2001:db8::1]", false, "127.0.0.1:5555"),
            // nginx's IPv4 reading: leading zeros and empty parts pass, the broadcast
            // address is its error value
            ("010.1.1.1", false, "10.1.1.1:0"),
            ("1..2.3", false, "1.0.2.3:0"),
            ("255.255.255.255", false, "127.0.0.1:5555"),
            ("1.2.3", false, "127.0.0.1:5555"),
            // a separator at the very start stays in the first entry, which is then no
            // address
            (",1.1.1.1", false, "127.0.0.1:5555"),
            // recursive: back past trusted entries to the first untrusted one
            ("1.1.1.1, 2.2.2.2, 10.0.0.2", true, "2.2.2.2:0"),
            ("1.1.1.1, 10.0.0.3, 10.0.0.2", true, "1.1.1.1:0"),
            // all trusted: the first
            ("10.0.0.4, 10.0.0.3", true, "10.0.0.4:0"),
            // an entry that is no address ends it, keeping the last one taken
            ("1.1.1.1, junk, 10.0.0.2", true, "10.0.0.2:0"),
            ("1.1.1.1 ,10.0.0.1", true, "1.1.1.1:0"),
            (",1.1.1.1, 10.0.0.1", true, "10.0.0.1:0"),
        ] {
            assert_eq!(client(x, &[line], recursive), want, "{line:?} {recursive}");
        }
    }

    #[test]
    fn x_forwarded_for_is_read_over_its_lines_from_the_last() {
        let x = "X-Forwarded-For";
        // without recursion, the last line only
        assert_eq!(client(x, &["1.1.1.1", "2.2.2.2"], false), "2.2.2.2:0");
        // with it, on to the line before while all were trusted
        assert_eq!(client(x, &["1.1.1.1", "10.0.0.2"], true), "1.1.1.1:0");
        assert_eq!(
            client(x, &["1.1.1.1", "2.2.2.2, 10.0.0.2"], true),
            "2.2.2.2:0"
        );
        assert_eq!(client(x, &["junk", "10.0.0.2"], true), "10.0.0.2:0");
        // any other name: its first line
        assert_eq!(
            client("X-Real-IP", &["1.1.1.1", "2.2.2.2"], false),
            "1.1.1.1:0"
        );
        // (nginx compares the directive's value exactly)
        assert_eq!(
            client("x-forwarded-for", &["1.1.1.1", "2.2.2.2"], false),
            "1.1.1.1:0"
        );
    }

    #[test]
    fn an_untrusted_peer_is_the_client() {
        let peer: SocketAddr = "192.0.2.1:5555".parse().unwrap();
        let lines = [&b"1.1.1.1"[..]].into_iter();
        let got = client_addr(peer, "X-Real-IP", lines, true, |a| a == ip("127.0.0.1"));
        assert_eq!(got, peer);
    }
}
