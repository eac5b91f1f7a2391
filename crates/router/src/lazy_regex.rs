//! Regexes compiled on first use.
//!
//! Compiling a regex with the `regex` crate costs 10–150 µs (Unicode classes such as `\d`
//! make large automata), which for a few thousand regex routes is most of `Router::new`.
//! So a [`LazyRegex`] is checked up front with `regex-syntax`'s parser (the same parser and
//! settings `Regex::new` uses, so the same syntax errors with the same messages, at ~2 µs),
//! and compiled the first time a request needs it. Identical patterns of one router share
//! one [`LazyRegex`] (see [`Interner`]).
//!
//! The only failure `Regex::new` has beyond syntax is the compiled-size limit, which only a
//! long pattern or a counted repetition (`x{n}`) can reach: such patterns are compiled
//! eagerly, so a router accepts exactly the patterns it accepted before.
//!
//! Besides, when every match of a pattern starts at the beginning of the haystack (it begins
//! with `^` and no alternation escapes it), the literal text every match starts with is
//! extracted; the index files the matcher under it, and evaluation checks it before touching
//! the regex.

use std::sync::{Arc, OnceLock};

use regex::Regex;
use regex_syntax::hir::Look;
use regex_syntax::hir::literal::{ExtractKind, Extractor};
use rustc_hash::FxHashMap;

/// Patterns at most this long and without `{` cannot exceed the regex size limit (a Unicode
/// class such as `\w` compiles to ~25 KB; 64 of them stay far below 10 MB).
const LAZY_MAX_LEN: usize = 128;

/// A regex compiled on first use.
pub(crate) struct LazyRegex {
    src: Box<str>,
    re: OnceLock<Regex>,
    /// Text every match starts with at offset 0 (empty: no such text, or not anchored).
    pub prefix: Box<str>,
}

impl std::fmt::Debug for LazyRegex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LazyRegex({:?})", self.src)
    }
}

impl LazyRegex {
    /// Checks `src` and prepares it; the error is the message `Regex::new` would give.
    pub fn new(src: &str) -> Result<LazyRegex, String> {
        let hir = regex_syntax::Parser::new()
            .parse(src)
            .map_err(|e| regex::Error::Syntax(e.to_string()).to_string())?;
        let re = OnceLock::new();
        if src.len() > LAZY_MAX_LEN || src.contains('{') {
            let _ = re.set(Regex::new(src).map_err(|e| e.to_string())?);
        }
        Ok(LazyRegex {
            src: src.into(),
            re,
            prefix: anchored_prefix(&hir).into(),
        })
    }

    /// The compiled regex.
    pub fn get(&self) -> &Regex {
        if let Some(re) = self.re.get() {
            return re;
        }
        // Compiled without holding the cell, so that no request waits on another one's
        // compilation (two racing threads may both compile; one result is kept). The
        // pattern passed the same parser in `new` and is too small for the size limit.
        let re = Regex::new(&self.src).expect("pattern checked when the router was built");
        let _ = self.re.set(re);
        self.re.get().unwrap_or_else(|| unreachable!("set above"))
    }

    /// Whether the regex was compiled already.
    pub fn is_compiled(&self) -> bool {
        self.re.get().is_some()
    }
}

/// The literal every match of `hir` begins with, when every match begins at offset 0;
/// cut to whole UTF-8 characters.
fn anchored_prefix(hir: &regex_syntax::hir::Hir) -> String {
    if !hir.properties().look_set_prefix().contains(Look::Start) {
        return String::new();
    }
    let seq = Extractor::new().kind(ExtractKind::Prefix).extract(hir);
    let Some(lcp) = seq.longest_common_prefix() else {
        return String::new();
    };
    match std::str::from_utf8(lcp) {
        Ok(s) => s.to_string(),
        Err(e) => String::from_utf8_lossy(&lcp[..e.valid_up_to()]).into_owned(),
    }
}

/// One [`LazyRegex`] per distinct pattern of a router, and one allocation per distinct
/// header name (so that matchers of the same header share its bytes in cache).
#[derive(Default)]
pub(crate) struct Interner {
    map: FxHashMap<String, Arc<LazyRegex>>,
    header_names: FxHashMap<String, http::HeaderName>,
}

impl Interner {
    /// The shared header name `name` (already lowercased), if valid.
    pub fn header_name(&mut self, name: &str) -> Option<http::HeaderName> {
        if let Some(h) = self.header_names.get(name) {
            return Some(h.clone());
        }
        let h = http::HeaderName::from_bytes(name.as_bytes()).ok()?;
        self.header_names.insert(name.to_string(), h.clone());
        Some(h)
    }

    /// The shared regex of `src`, checked on first sight.
    pub fn get(&mut self, src: &str) -> Result<Arc<LazyRegex>, String> {
        if let Some(r) = self.map.get(src) {
            return Ok(r.clone());
        }
        let r = Arc::new(LazyRegex::new(src)?);
        self.map.insert(src.to_string(), r.clone());
        Ok(r)
    }

    /// The distinct regexes.
    pub fn into_vec(self) -> Vec<Arc<LazyRegex>> {
        self.map.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let p = |s: &str| LazyRegex::new(s).expect("valid").prefix.to_string();
        assert_eq!(p("^/re-1/(?P<id>\\d+)$"), "/re-1/");
        assert_eq!(p("^/a|/b"), "");
        assert_eq!(p("^(/a|/ab)x"), "/a");
        assert_eq!(p("/a"), "");
        assert_eq!(p("^(?i)/ab"), "/");
        assert_eq!(p("^(?i)ab"), "");
        assert_eq!(p("^/x(?i)ab"), "/x");
        assert_eq!(p("^/é|^/è"), "/");
        assert_eq!(p("^\\d"), "");
        assert_eq!(p("^/a?b"), "/");
    }

    #[test]
    fn same_errors_as_regex() {
        for bad in ["^(", "^[z-a]", "^\\p{Nope}", "^a{3,2}", "^(?<n>a)(?<n>b)"] {
            let want = Regex::new(bad).expect_err("invalid").to_string();
            assert_eq!(LazyRegex::new(bad).expect_err("invalid"), want, "{bad}");
        }
        let big = format!("^{}", "\\w{100}".repeat(8));
        let want = Regex::new(&big).expect_err("too big").to_string();
        assert_eq!(LazyRegex::new(&big).expect_err("too big"), want);
    }

    #[test]
    fn lazy_compiles_on_first_use() {
        let r = LazyRegex::new("^/a/\\d+").expect("valid");
        assert!(!r.is_compiled());
        assert!(r.get().is_match("/a/1"));
        assert!(r.is_compiled());
        assert!(LazyRegex::new("^a{2}").expect("valid").is_compiled());
    }
}
