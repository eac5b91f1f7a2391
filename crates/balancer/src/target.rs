//! Target strings: `host[:port]`, `ipv4[:port]`, `[ipv6][:port]` or a bare IPv6 address.

use std::net::IpAddr;

/// Kong's default target port.
pub const DEFAULT_TARGET_PORT: u16 = 8000;

/// A parsed target string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetAddr {
    /// The host: a hostname (lowercased) or an IP literal (no brackets).
    pub host: String,
    /// The port (8000 when the string has none).
    pub port: u16,
    /// The IP when the host is an IP literal.
    pub ip: Option<IpAddr>,
}

impl TargetAddr {
    /// Parses `host[:port]`. The port defaults to 8000, as Kong does.
    pub fn parse(s: &str) -> Result<TargetAddr, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty target".into());
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let end = rest.find(']').ok_or("missing ']' after an IPv6 address")?;
            let host = &rest[..end];
            let after = &rest[end + 1..];
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err("unexpected text after ']'".into()),
            };
            (host, port)
        } else if s.matches(':').count() > 1 {
            // A bare IPv6 address has no port.
            (s, None)
        } else {
            match s.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        let port = match port {
            None => DEFAULT_TARGET_PORT,
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| format!("invalid port '{p}'"))?,
        };
        if let Some(ip) = ip_literal(host) {
            return Ok(TargetAddr {
                host: ip.to_string(),
                port,
                ip: Some(ip),
            });
        }
        if s.starts_with('[') {
            return Err(format!("'{host}' is not an IPv6 address"));
        }
        valid_hostname(host)?;
        Ok(TargetAddr {
            host: host.to_ascii_lowercase(),
            port,
            ip: None,
        })
    }
}

/// An IP address, in brackets or not, written as Kong reads it (`010.0.0.1`,
/// `1:2:3:4:5:6:7::8` and `1::2:` included; see [`silverback_config::typedefs::kong_ip`]),
/// or as Rust's parser reads it.
pub(crate) fn ip_literal(s: &str) -> Option<IpAddr> {
    let s = s.trim_start_matches('[').trim_end_matches(']');
    silverback_config::typedefs::kong_ip(s).or_else(|| s.parse().ok())
}

/// Checks a DNS hostname: labels of letters, digits, `-` and `_`, 1..63 bytes each.
pub(crate) fn valid_hostname(host: &str) -> Result<(), String> {
    let h = host.strip_suffix('.').unwrap_or(host);
    if h.is_empty() || h.len() > 253 {
        return Err(format!("invalid hostname '{host}'"));
    }
    for label in h.split('.') {
        if label.is_empty()
            || label.len() > 63
            || !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!("invalid hostname '{host}'"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms() {
        let t = TargetAddr::parse("10.0.0.1").expect("ok");
        assert_eq!(
            (t.host.as_str(), t.port, t.ip.is_some()),
            ("10.0.0.1", 8000, true)
        );
        let t = TargetAddr::parse("Example.COM:81").expect("ok");
        assert_eq!((t.host.as_str(), t.port, t.ip), ("example.com", 81, None));
        let t = TargetAddr::parse("[::1]:9000").expect("ok");
        assert_eq!((t.host.as_str(), t.port), ("::1", 9000));
        let t = TargetAddr::parse("[::1]").expect("ok");
        assert_eq!(t.port, 8000);
        let t = TargetAddr::parse("fe80::1").expect("ok");
        assert_eq!((t.host.as_str(), t.port), ("fe80::1", 8000));
        // spellings Kong reads as addresses where Rust's parser does not
        for (target, host, port) in [
            ("010.0.0.1:81", "10.0.0.1", 81),
            ("1:2:3:4:5:6:7::8", "1:2:3:4:5:6:7:8", 8000),
            ("1::2:", "1::2:0", 8000),
            ("[1::2:]:9000", "1::2:0", 9000),
        ] {
            let t = TargetAddr::parse(target).expect(target);
            assert_eq!((t.host.as_str(), t.port), (host, port), "{target}");
            assert_eq!(t.ip, Some(host.parse().unwrap()), "{target}");
        }
        assert!(TargetAddr::parse("a:b").is_err());
        assert!(TargetAddr::parse("a b:80").is_err());
        assert!(TargetAddr::parse("host:70000").is_err());
        assert!(TargetAddr::parse("[x]:80").is_err());
        assert!(TargetAddr::parse("").is_err());
    }
}
