//! The PROXY protocol (versions 1 and 2, as HAProxy specifies them) on listeners with the
//! `proxy_protocol` flag: a load balancer that forwards TCP sends the client's addresses in
//! a header before the first byte of the connection's own traffic (before the TLS handshake
//! on `ssl` listeners).
//!
//! As in nginx:
//! - a connection on such a listener must start with a valid header, or it is closed
//!   without an answer;
//! - the header is read within the first request's `client_header_timeout`, which starts
//!   when the connection is accepted and goes on through a TLS handshake and the first
//!   request head (nginx reads the header as part of its wait for the first request:
//!   `ngx_http_wait_request_handler`, `ngx_http_ssl_handshake`, one read timer set at
//!   accept);
//! - a version 1 header is at most 107 bytes, a version 2 one at most 4,096;
//! - `UNKNOWN` (v1), `LOCAL` (v2), and v2 headers other than TCP over IPv4 or IPv6 (UDP,
//!   UNIX, UNSPEC) carry no address: the connection's own addresses stand;
//! - v2 TLVs are skipped.
//!
//! The source address counts only when `real_ip_header` is `proxy_protocol` and the peer is
//! in `trusted_ips` (nginx's `realip` module): see `proxy::real_ip`.

use bytes::{Buf, Bytes, BytesMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The longest version 1 header, its `\r\n` included.
pub const V1_MAX: usize = 107;
/// The longest header of either version this gateway reads (nginx's limit).
pub const MAX: usize = 4096;
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// The addresses a PROXY header gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Addresses {
    /// The client's address; `None` when the header names none (`UNKNOWN`, `LOCAL`, ...).
    pub source: Option<SocketAddr>,
    /// The address the client connected to.
    pub destination: Option<SocketAddr>,
}

/// Why a connection's PROXY header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The connection does not start with `PROXY ` or the version 2 signature.
    #[error("the connection does not start with a PROXY protocol header")]
    Missing,
    /// A version 1 header with no `\r\n` within 107 bytes, or a bad field.
    #[error("broken PROXY protocol v1 header: {0}")]
    V1(&'static str),
    /// A version 2 header with a bad version, command, or length.
    #[error("broken PROXY protocol v2 header: {0}")]
    V2(&'static str),
    /// The peer closed, or the header did not arrive in time.
    #[error("the PROXY protocol header did not arrive: {0}")]
    Incomplete(&'static str),
}

/// Parses the header at the start of `buf`: `Ok(None)` while more bytes are needed, else the
/// addresses and the header's length.
pub fn parse(buf: &[u8]) -> Result<Option<(Addresses, usize)>, Error> {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] {
        return if n < V2_SIGNATURE.len() {
            Ok(None)
        } else {
            parse_v2(buf)
        };
    }
    let n = buf.len().min(6);
    if buf[..n] != b"PROXY "[..n] {
        return Err(Error::Missing);
    }
    parse_v1(buf)
}

fn parse_v1(buf: &[u8]) -> Result<Option<(Addresses, usize)>, Error> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(lf) = memchr::memchr(b'\n', window) else {
        return if buf.len() >= V1_MAX {
            Err(Error::V1("no end of line within 107 bytes"))
        } else {
            Ok(None)
        };
    };
    if lf == 0 || window[lf - 1] != b'\r' {
        return Err(Error::V1("the line does not end with CRLF"));
    }
    let line = std::str::from_utf8(&window[6..lf - 1])
        .map_err(|_| Error::V1("a byte that is not text"))?;
    let mut fields = line.split(' ');
    let family = fields.next().unwrap_or("");
    let v4 = match family {
        "TCP4" => true,
        "TCP6" => false,
        // (the rest of an UNKNOWN line is ignored, as the specification says)
        "UNKNOWN" => return Ok(Some((Addresses::default(), lf + 1))),
        _ => return Err(Error::V1("an unknown protocol family")),
    };
    let ip = |s: Option<&str>| -> Result<IpAddr, Error> {
        let ip: IpAddr = s
            .and_then(|s| s.parse().ok())
            .ok_or(Error::V1("a bad address"))?;
        if ip.is_ipv4() == v4 {
            Ok(ip)
        } else {
            Err(Error::V1("an address of the other family"))
        }
    };
    let port = |s: Option<&str>| -> Result<u16, Error> {
        let s = s.ok_or(Error::V1("a missing port"))?;
        // decimal, no sign, no leading zero (the specification's form)
        if s.is_empty()
            || !s.bytes().all(|b| b.is_ascii_digit())
            || (s.len() > 1 && s.starts_with('0'))
        {
            return Err(Error::V1("a bad port"));
        }
        s.parse().map_err(|_| Error::V1("a bad port"))
    };
    let (src, dst) = (ip(fields.next())?, ip(fields.next())?);
    let (sport, dport) = (port(fields.next())?, port(fields.next())?);
    if fields.next().is_some() {
        return Err(Error::V1("extra fields"));
    }
    let addresses = Addresses {
        source: Some(SocketAddr::new(src, sport)),
        destination: Some(SocketAddr::new(dst, dport)),
    };
    Ok(Some((addresses, lf + 1)))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(Addresses, usize)>, Error> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return Err(Error::V2("a version other than 2"));
    }
    let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > MAX {
        return Err(Error::V2("longer than 4096 bytes"));
    }
    let local = match command {
        0 => true,
        1 => false,
        _ => return Err(Error::V2("an unknown command")),
    };
    if buf.len() < len {
        return Ok(None);
    }
    let block = &buf[16..len];
    // TCP (transport 1) over IPv4 (0x1_) or IPv6 (0x2_); others carry no address here, as
    // nginx takes addresses from STREAM headers only
    let addresses = match (local, buf[13]) {
        (true, _) => Addresses::default(),
        (false, 0x11) => {
            let b: &[u8; 12] = block
                .get(..12)
                .and_then(|b| b.try_into().ok())
                .ok_or(Error::V2("an IPv4 address block shorter than 12 bytes"))?;
            let ip = |i: usize| IpAddr::from(Ipv4Addr::new(b[i], b[i + 1], b[i + 2], b[i + 3]));
            let port = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
            Addresses {
                source: Some(SocketAddr::new(ip(0), port(8))),
                destination: Some(SocketAddr::new(ip(4), port(10))),
            }
        }
        (false, 0x21) => {
            let b: &[u8; 36] = block
                .get(..36)
                .and_then(|b| b.try_into().ok())
                .ok_or(Error::V2("an IPv6 address block shorter than 36 bytes"))?;
            let ip = |i: usize| {
                let mut a = [0u8; 16];
                a.copy_from_slice(&b[i..i + 16]);
                IpAddr::from(Ipv6Addr::from(a))
            };
            let port = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
            Addresses {
                source: Some(SocketAddr::new(ip(0), port(32))),
                destination: Some(SocketAddr::new(ip(16), port(34))),
            }
        }
        (false, _) => Addresses::default(),
    };
    Ok(Some((addresses, len)))
}

/// Reads the header that starts `io` by `deadline`; returns its addresses and the bytes
/// read past it (the start of the connection's own traffic). The gateway gives the deadline
/// of the connection's first request head: as in nginx, one `client_header_timeout` from the
/// connection's accept covers the header, a TLS handshake and that head together.
pub async fn read<S: AsyncRead + Unpin>(
    io: &mut S,
    deadline: tokio::time::Instant,
) -> Result<(Addresses, Bytes), Error> {
    let mut buf = BytesMut::with_capacity(512);
    let read = async {
        loop {
            if !buf.is_empty()
                && let Some((addresses, len)) = parse(&buf)?
            {
                buf.advance(len);
                return Ok((addresses, std::mem::take(&mut buf).freeze()));
            }
            if buf.capacity() == buf.len() {
                buf.reserve(512);
            }
            match io.read_buf(&mut buf).await {
                Ok(0) => return Err(Error::Incomplete("the peer closed")),
                Ok(_) => {}
                Err(_) => return Err(Error::Incomplete("a read failed")),
            }
        }
    };
    tokio::time::timeout_at(deadline, read)
        .await
        .unwrap_or(Err(Error::Incomplete("timed out")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn v2(command: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(block.len() as u16).to_be_bytes());
        h.extend_from_slice(block);
        h
    }

    fn sa(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn v1_tcp4_and_tcp6() {
        let h = b"PROXY TCP4 203.0.113.7 10.0.0.2 51000 8000\r\nGET / HTTP/1.1\r\n";
        let (a, n) = parse(h).unwrap().unwrap();
        assert_eq!(a.source, sa("203.0.113.7:51000"));
        assert_eq!(a.destination, sa("10.0.0.2:8000"));
        assert_eq!(&h[n..], b"GET / HTTP/1.1\r\n");
        let h = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n";
        let (a, n) = parse(h).unwrap().unwrap();
        assert_eq!(a.source, sa("[2001:db8::1]:1"));
        assert_eq!(a.destination, sa("[2001:db8::2]:65535"));
        assert_eq!(n, h.len());
    }

    #[test]
    fn v1_unknown_carries_no_address() {
        let h = b"PROXY UNKNOWN whatever follows\r\nX";
        let (a, n) = parse(h).unwrap().unwrap();
        assert_eq!(a, Addresses::default());
        assert_eq!(&h[n..], b"X");
    }

    #[test]
    fn v1_partial_waits_and_broken_is_refused() {
        for partial in [
            &b"PRO"[..],
            b"PROXY TCP4 1.2.3.4",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r",
        ] {
            assert_eq!(parse(partial), Ok(None), "{partial:?}");
        }
        let cases: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\n",
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
        ];
        for c in cases {
            assert!(parse(c).is_err(), "{:?}", String::from_utf8_lossy(c));
        }
        // 107 bytes ending in CRLF is the longest line
        let longest = [b"PROXY UNKNOWN ".as_slice(), &[b'a'; 91], b"\r\n"].concat();
        assert_eq!(longest.len(), V1_MAX);
        assert_eq!(parse(&longest), Ok(Some((Addresses::default(), V1_MAX))));
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'a'; 100]].concat();
        assert_eq!(
            parse(&long),
            Err(Error::V1("no end of line within 107 bytes"))
        );
    }

    #[test]
    fn v2_addresses_local_and_tlvs() {
        let mut block = vec![192, 0, 2, 1, 10, 0, 0, 2, 0xc7, 0x38, 0x1f, 0x40];
        block.extend_from_slice(&[0x04, 0x00, 0x02, b'h', b'i']); // a TLV, skipped
        let mut h = v2(1, 0x11, &block);
        h.extend_from_slice(b"rest");
        let (a, n) = parse(&h).unwrap().unwrap();
        assert_eq!(a.source, sa("192.0.2.1:51000"));
        assert_eq!(a.destination, sa("10.0.0.2:8000"));
        assert_eq!(&h[n..], b"rest");

        let mut block = vec![0u8; 36];
        block[15] = 1;
        block[31] = 2;
        block[32..36].copy_from_slice(&[0, 80, 1, 187]);
        let (a, _) = parse(&v2(1, 0x21, &block)).unwrap().unwrap();
        assert_eq!(a.source, sa("[::1]:80"));
        assert_eq!(a.destination, sa("[::2]:443"));

        // LOCAL (a health check from the balancer itself) and AF_UNIX: no address
        assert_eq!(
            parse(&v2(0, 0x11, &[0; 12])).unwrap().unwrap().0,
            Addresses::default()
        );
        assert_eq!(
            parse(&v2(1, 0x31, &[0; 216])).unwrap().unwrap().0,
            Addresses::default()
        );
    }

    #[test]
    fn v2_partial_waits_and_broken_is_refused() {
        let h = v2(1, 0x11, &[0; 12]);
        for n in 1..h.len() {
            assert_eq!(parse(&h[..n]), Ok(None), "{n} bytes");
        }
        let mut bad_version = h.clone();
        bad_version[12] = 0x11;
        assert!(parse(&bad_version).is_err());
        let mut bad_command = h.clone();
        bad_command[12] = 0x22;
        assert!(parse(&bad_command).is_err());
        assert!(parse(&v2(1, 0x11, &[0; 8])).is_err(), "short IPv4 block");
        assert!(parse(&v2(1, 0x21, &[0; 12])).is_err(), "short IPv6 block");
        assert_eq!(
            parse(&v2(1, 0x11, &[0; 4081])),
            Err(Error::V2("longer than 4096 bytes"))
        );
        assert!(parse(&v2(1, 0x11, &[0; 4080])).unwrap().is_some());
    }

    #[tokio::test]
    async fn read_across_segments_keeps_what_follows() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let task = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            client.write_all(b"PROXY TCP4 1.2.3.4 ").await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            client.write_all(b"5.6.7.8 1 2\r\nGET /").await.unwrap();
            client
        });
        let soon = |d| tokio::time::Instant::now() + d;
        let (a, rest) = read(&mut server, soon(Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!(a.source, sa("1.2.3.4:1"));
        assert_eq!(&rest[..], b"GET /");
        let client = task.await.unwrap();
        drop(client);
        let (_c, mut s) = tokio::io::duplex(64);
        assert_eq!(
            read(&mut s, soon(Duration::from_millis(30))).await,
            Err(Error::Incomplete("timed out"))
        );
    }
}
