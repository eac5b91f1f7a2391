//! nginx's limits on a request head, as its buffers make them: `client_header_buffer_size`
//! (1k) and `large_client_header_buffers` (4 x 8k), Kong's `nginx_http_*` and
//! `nginx_proxy_*` settings of those names.
//!
//! nginx reads a head into a first buffer of `client_header_buffer_size`. When a buffer fills
//! up, the line it was reading (if any) moves to a new large buffer of the second size, up
//! to the number given: lines already complete stay where they are. So a head is refused
//! when one line does not fit in a large buffer (the request line: 414, `URI too long`; a
//! header line: nginx's 494, which Kong answers as 400 with `Request header or cookie too
//! large`), or when the lines need more large buffers than there are (494, or 414 while the
//! request line is still being read). Since nginx fills each buffer before it takes the next,
//! where the lines fall does not depend on how the client's bytes arrived, and
//! [`HeaderBuffers::refusal`] finds the same answer from the head alone.

use crate::proxy::Refusal;

/// The sizes of nginx's request head buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderBuffers {
    /// `client_header_buffer_size`: the first buffer.
    pub first: usize,
    /// `large_client_header_buffers`: how many large buffers a head may take...
    pub count: usize,
    /// ...and the size of each.
    pub size: usize,
}

impl Default for HeaderBuffers {
    /// nginx's (and Kong's) defaults: `1k`, and `4 8k`.
    fn default() -> Self {
        HeaderBuffers {
            first: 1024,
            count: 4,
            size: 8192,
        }
    }
}

impl HeaderBuffers {
    /// The most bytes a head can take (all buffers full).
    pub fn max_bytes(&self) -> usize {
        self.first
            .saturating_add(self.count.saturating_mul(self.size))
    }

    /// Parses `client_header_buffer_size` as nginx writes it (`1k`), positive.
    pub fn parse_first(s: &str) -> Result<usize, String> {
        parse_buffer_size(s).map_err(|e| format!("'{s}': {e}"))
    }

    /// Parses `large_client_header_buffers` as nginx writes it: a number and a size
    /// (`4 8k`), both positive.
    pub fn parse_large(s: &str) -> Result<(usize, usize), String> {
        let mut words = s.split_ascii_whitespace();
        let (Some(n), Some(size), None) = (words.next(), words.next(), words.next()) else {
            return Err(format!(
                "'{s}': expected a number of buffers and their size, as '4 8k'"
            ));
        };
        let n: usize =
            n.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                format!("'{s}': the number of buffers must be a positive integer")
            })?;
        let size = parse_buffer_size(size).map_err(|e| format!("'{s}': {e}"))?;
        // (nginx's own floor: `connection_pool_size`, 512 bytes on 64-bit machines)
        if size < 512 {
            return Err(format!(
                "'{s}': the buffer size must be at least 512 bytes (nginx's connection_pool_size)"
            ));
        }
        Ok((n, size))
    }

    /// Why nginx refuses the request head at the start of `head` with these buffers, if it
    /// does. `head` is the whole head, or what has arrived of it (its last line may be
    /// partial). Heads within the first buffer are never refused here.
    pub(crate) fn refusal(&self, head: &[u8]) -> Option<Refusal> {
        if head.len() <= self.first {
            return None;
        }
        let mut fill = Fill::new(self);
        let mut rest = head;
        while let Some(i) = rest.iter().position(|&c| c == b'\n') {
            if let Err(why) = fill.line(self, &rest[..=i]) {
                return Some(why);
            }
            rest = &rest[i + 1..];
        }
        fill.partial(self, rest.len())
    }
}

/// How nginx's buffers are filled by the complete lines of a head so far: the same packing
/// as [`HeaderBuffers::refusal`], a line at a time, for a head checked as its lines arrive
/// (the framing guard's, [`crate::h1_fast::HeadCheck`]). A head whose lines all pass
/// [`Fill::line`], and whose partial last line passes [`Fill::partial`], is one
/// [`HeaderBuffers::refusal`] does not refuse.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fill {
    /// Room left in the buffer being filled.
    free: usize,
    /// Large buffers taken.
    taken: usize,
    /// Whether the request line is still to come (empty lines before it are skipped, but
    /// take room).
    request_line: bool,
}

impl Fill {
    /// Nothing read yet: the first buffer empty.
    pub(crate) fn new(b: &HeaderBuffers) -> Fill {
        Fill {
            free: b.first,
            taken: 0,
            request_line: true,
        }
    }

    /// The refusal of a line too large for the buffers (414 while the request line is
    /// read, else nginx's 494).
    fn too_large(&self) -> Refusal {
        if self.request_line {
            Refusal::UriTooLong
        } else {
            Refusal::TooLarge
        }
    }

    /// Takes room for `line`, a complete line (its LF included); when it does not fit, the
    /// head's refusal.
    pub(crate) fn line(&mut self, b: &HeaderBuffers, line: &[u8]) -> Result<(), Refusal> {
        if line.len() <= self.free {
            self.free -= line.len();
        } else {
            // the buffer fills up inside this line: the line moves to a new large buffer
            if line.len() > b.size || self.taken == b.count {
                return Err(self.too_large());
            }
            self.taken += 1;
            self.free = b.size - line.len();
        }
        // empty lines before the request line are skipped, but take room
        if !(self.request_line && (line == b"\r\n" || line == b"\n")) {
            self.request_line = false;
        }
        Ok(())
    }

    /// Why a partial last line of `len` bytes after the lines taken is refused, if it is:
    /// past the room left it needs a new large buffer, so it is refused when it already
    /// fills one, or none is left.
    pub(crate) fn partial(&self, b: &HeaderBuffers, len: usize) -> Option<Refusal> {
        (len > self.free && (len >= b.size || self.taken == b.count)).then(|| self.too_large())
    }
}

/// A buffer size as nginx writes it (`8k`, `1m`, `512`), positive.
fn parse_buffer_size(s: &str) -> Result<usize, String> {
    match crate::settings::parse_size(s) {
        Ok(0) | Err(_) => Err(format!("invalid buffer size '{s}'")),
        Ok(n) => usize::try_from(n).map_err(|_| format!("buffer size '{s}' is too large")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(request_line: usize, headers: &[usize]) -> Vec<u8> {
        // lines of the given lengths, CRLF included
        let mut h = b"GET /".to_vec();
        h.resize(request_line - 11, b'a');
        h.extend_from_slice(b" HTTP/1.1\r\n");
        for &n in headers {
            let start = h.len();
            h.extend_from_slice(b"X: ");
            h.resize(start + n - 2, b'b');
            h.extend_from_slice(b"\r\n");
        }
        h.extend_from_slice(b"\r\n");
        h
    }

    #[test]
    fn lines_are_packed_as_nginx_packs_them() {
        let d = HeaderBuffers::default();
        // within the first buffer
        assert_eq!(d.refusal(&head(100, &[900])), None);
        // a header line of exactly one large buffer fits; one byte more does not
        assert_eq!(d.refusal(&head(100, &[8192])), None);
        assert_eq!(d.refusal(&head(100, &[8193])), Some(Refusal::TooLarge));
        // the request line likewise, with 414
        assert_eq!(d.refusal(&head(8192, &[])), None);
        assert_eq!(d.refusal(&head(8193, &[])), Some(Refusal::UriTooLong));
        // four large buffers: four lines of 6k each take one (no two fit in one), a fifth
        // needs a fifth buffer
        assert_eq!(d.refusal(&head(100, &[6000; 4])), None);
        assert_eq!(d.refusal(&head(100, &[6000; 5])), Some(Refusal::TooLarge));
        // small lines pack: 28 KiB of 1 KiB lines fit in 1k + 4 x 8k
        assert_eq!(d.refusal(&head(100, &[1000; 28])), None);
        assert_eq!(d.refusal(&head(100, &[1000; 34])), Some(Refusal::TooLarge));
        // a partial line is refused once it is over a buffer, not before
        let partial = head(100, &[9000]);
        assert_eq!(d.refusal(&partial[..8000]), None);
        assert_eq!(d.refusal(&partial[..9000]), Some(Refusal::TooLarge));
        let partial = head(9000, &[]);
        assert_eq!(d.refusal(&partial[..8500]), Some(Refusal::UriTooLong));
        // larger buffers, as Kong users set them for large cookies
        let big = HeaderBuffers {
            first: 1024,
            count: 8,
            size: 24 * 1024,
        };
        assert_eq!(big.refusal(&head(100, &[20000, 20000])), None);
        assert_eq!(big.max_bytes(), 1024 + 8 * 24 * 1024);
    }

    #[test]
    fn settings_parse_as_nginx_writes_them() {
        assert_eq!(HeaderBuffers::parse_large("4 8k"), Ok((4, 8192)));
        assert_eq!(HeaderBuffers::parse_large(" 8  24k "), Ok((8, 24 * 1024)));
        assert_eq!(HeaderBuffers::parse_large("2 1m"), Ok((2, 1 << 20)));
        for bad in [
            "", "4", "8k", "0 8k", "4 0", "-1 8k", "4 8x", "4 8k 2", "4 511",
        ] {
            assert!(HeaderBuffers::parse_large(bad).is_err(), "{bad}");
        }
        assert_eq!(HeaderBuffers::parse_first("1k"), Ok(1024));
        assert!(HeaderBuffers::parse_first("0").is_err());
    }
}
