//! Candidate selection: which matchers may match a request, yielded in evaluation order
//! (rank = position in the priority order), so that the first full match is Kong's answer.
//!
//! Matchers are bucketed by a necessary condition on the host (exact host, `*.suffix`,
//! `prefix.*`, or no host), and inside each bucket by a necessary condition on the path: the
//! plain prefix, or the literal text an anchored regex's matches start with; regexes without
//! one and path-less matchers are always candidates of their bucket.
//!
//! A request costs one hash lookup for its exact host, one per dot of the host only where a
//! wildcard key with that many labels and that length exists (most configurations have one
//! or two wildcard shapes, e.g. `*.example.com`), and per bucket either a scan of a few
//! prefixes (kept in the bucket's own text, next to its key) or one hash lookup per distinct
//! prefix length of the bucket. Hashing is FxHash (no DoS concern: the keys come from the
//! configuration, lookups only read; it hashes 8 bytes per step, which measured cheaper than
//! one incremental byte-wise pass over the path). The rank lists found are merged in
//! ascending order and evaluated until one matches.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use rustc_hash::{FxBuildHasher, FxHashMap};
use smallvec::SmallVec;

use crate::compile::{Entry, Kind};
use crate::fields::{Affix, AffixKind, PathRule, Span};
use crate::request::Prepared;

/// Buckets with at most this many distinct prefixes are scanned instead of hashed.
const SCAN_MAX: usize = 6;

fn hash(s: &str) -> u64 {
    FxBuildHasher.hash_one(s)
}

/// The matchers of one host key (or of no host), by path prefix, laid out so that a lookup
/// touches the table slot and this bucket's text: the key, then the scanned prefixes.
#[derive(Default)]
struct Bucket {
    /// The host key, then the scanned prefixes.
    text: Box<str>,
    key_len: u32,
    /// How many of `ranks` are the matchers without a prefix condition.
    other_len: u32,
    /// The ranks: those without a prefix condition, then those of each scanned prefix.
    ranks: SmallVec<[u32; 2]>,
    /// Scanned prefixes and the end of their ranks in `ranks`.
    scan: SmallVec<[(Span, u32); 1]>,
    /// Buckets with many prefixes: ranks by prefix, looked up once per distinct length.
    big: Option<Box<BigPaths>>,
}

struct BigPaths {
    by_prefix: FxHashMap<Box<str>, Box<[u32]>>,
    /// Distinct prefix lengths, ascending.
    lengths: Box<[u32]>,
}

/// A bucket while building.
#[derive(Default)]
struct PathBuilder {
    other: Vec<u32>,
    by_prefix: FxHashMap<Box<str>, Vec<u32>>,
}

fn push_rank(v: &mut Vec<u32>, rank: u32) {
    if v.last() != Some(&rank) {
        v.push(rank);
    }
}

impl PathBuilder {
    fn add(&mut self, rank: u32, prefixes: Option<&[&str]>) {
        match prefixes {
            None => push_rank(&mut self.other, rank),
            Some(ps) => {
                for p in ps {
                    push_rank(self.by_prefix.entry((*p).into()).or_default(), rank);
                }
            }
        }
    }

    fn finish(self, key: &str) -> Bucket {
        let mut text = String::from(key);
        let mut ranks: SmallVec<[u32; 2]> = SmallVec::from_slice(&self.other);
        let other_len = ranks.len() as u32;
        let mut scan = SmallVec::new();
        let mut big = None;
        if self.by_prefix.len() <= SCAN_MAX {
            let mut items: Vec<(Box<str>, Vec<u32>)> = self.by_prefix.into_iter().collect();
            // any order gives the same merge; sorted for determinism
            items.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            for (p, r) in items {
                let span = Span::push(&mut text, &p);
                ranks.extend_from_slice(&r);
                scan.push((span, ranks.len() as u32));
            }
        } else {
            let mut lengths: Vec<u32> = self.by_prefix.keys().map(|k| k.len() as u32).collect();
            lengths.sort_unstable();
            lengths.dedup();
            big = Some(Box::new(BigPaths {
                lengths: lengths.into(),
                by_prefix: self
                    .by_prefix
                    .into_iter()
                    .map(|(k, v)| (k, v.into()))
                    .collect(),
            }));
        }
        ranks.shrink_to_fit();
        scan.shrink_to_fit();
        Bucket {
            key_len: key.len() as u32,
            text: text.into(),
            other_len,
            ranks,
            scan,
            big,
        }
    }
}

impl Bucket {
    #[inline]
    fn key(&self) -> &str {
        self.text.get(..self.key_len as usize).unwrap_or("")
    }

    fn collect<'i>(&'i self, path: &str, out: &mut Slices<'i>) {
        let mut start = self.other_len as usize;
        if start > 0 {
            out.push(&self.ranks[..start]);
        }
        for &(p, end) in &self.scan {
            let end = end as usize;
            if path.starts_with(p.get(&self.text)) {
                out.push(&self.ranks[start..end]);
            }
            start = end;
        }
        if let Some(big) = &self.big {
            for &l in &*big.lengths {
                let l = l as usize;
                if l > path.len() {
                    break;
                }
                if let Some(v) = path.get(..l).and_then(|k| big.by_prefix.get(k)) {
                    out.push(v);
                }
            }
        }
    }
}

type Slices<'i> = SmallVec<[&'i [u32]; 16]>;

/// Buckets by host key.
#[derive(Default)]
struct HostMap {
    table: HashTable<Bucket>,
}

impl HostMap {
    fn build(buckets: FxHashMap<Box<str>, PathBuilder>) -> HostMap {
        let mut table = HashTable::with_capacity(buckets.len());
        for (k, b) in buckets {
            table.insert_unique(hash(&k), b.finish(&k), |b: &Bucket| hash(b.key()));
        }
        HostMap { table }
    }

    #[inline]
    fn get(&self, key: &str) -> Option<&Bucket> {
        self.table.find(hash(key), |b| b.key() == key)
    }
}

/// Wildcard keys of one kind (`*.x` suffixes or `x.*` prefixes), with filters on the label
/// count and length of the keys that exist, so that a request probes only plausible keys.
#[derive(Default)]
struct WildMap {
    map: HostMap,
    /// Bit `n`: a key has `n` dots (bit 63: 63 or more).
    dots: u64,
    /// Bit `n`: a key is `n` bytes long (bit 255: 255 or more).
    lens: [u64; 4],
}

fn dot_bit(dots: usize) -> u64 {
    1 << dots.min(63)
}

impl WildMap {
    fn build(buckets: FxHashMap<Box<str>, PathBuilder>) -> WildMap {
        let mut w = WildMap::default();
        for key in buckets.keys() {
            w.dots |= dot_bit(key.bytes().filter(|&b| b == b'.').count());
            let l = key.len().min(255);
            w.lens[l / 64] |= 1 << (l % 64);
        }
        w.map = HostMap::build(buckets);
        w
    }

    #[inline]
    fn get(&self, key: &str, dots: usize) -> Option<&Bucket> {
        let l = key.len().min(255);
        if self.dots & dot_bit(dots) == 0 || self.lens[l / 64] & (1 << (l % 64)) == 0 {
            return None;
        }
        self.map.get(key)
    }
}

/// The index over all matchers of a router.
#[derive(Default)]
pub(crate) struct Index {
    exact: HostMap,
    /// Keys start with `.` (from `*.example.com`).
    suffix: WildMap,
    /// Keys end with `.` (from `example.*`).
    prefix: WildMap,
    /// Wildcard hosts that do not fall on a label boundary: always candidates.
    odd_host: Bucket,
    no_host: Bucket,
}

impl Index {
    pub fn build(entries: &[Entry]) -> Self {
        let mut exact: FxHashMap<Box<str>, PathBuilder> = FxHashMap::default();
        let mut suffix: FxHashMap<Box<str>, PathBuilder> = FxHashMap::default();
        let mut prefix: FxHashMap<Box<str>, PathBuilder> = FxHashMap::default();
        let mut odd_host = PathBuilder::default();
        let mut no_host = PathBuilder::default();
        let mut hosts: Vec<(AffixKind, &str)> = Vec::new();
        let mut ps: Vec<&str> = Vec::new();
        for (rank, e) in entries.iter().enumerate() {
            let rank = rank as u32;
            hosts.clear();
            ps.clear();
            let mut indexed = true;
            match &e.kind {
                Kind::Fields(f) => {
                    let text = &*e.text;
                    hosts.extend(f.hosts.iter().map(|h| (h.kind, h.affix.get(text))));
                    for p in &*f.paths {
                        let key = match p {
                            PathRule::Prefix { orig } => orig.get(text),
                            PathRule::Regex { lit, .. } => lit.get(text),
                        };
                        if key.is_empty() {
                            indexed = false;
                            break;
                        }
                        ps.push(key);
                    }
                }
                Kind::Expr(x) => {
                    hosts.extend(x.host_key.as_ref().map(|a| match a {
                        Affix::Exact(s) => (AffixKind::Exact, &**s),
                        Affix::Suffix(s) => (AffixKind::Suffix, &**s),
                        Affix::Prefix(s) => (AffixKind::Prefix, &**s),
                    }));
                    ps.extend(x.path_key.as_deref());
                }
            }
            let prefixes = (indexed && !ps.is_empty()).then_some(&ps[..]);
            if hosts.is_empty() {
                no_host.add(rank, prefixes);
            }
            for &(kind, s) in &hosts {
                let bucket = match kind {
                    AffixKind::Exact => exact.entry(s.into()).or_default(),
                    AffixKind::Suffix if s.starts_with('.') => suffix.entry(s.into()).or_default(),
                    AffixKind::Prefix if s.ends_with('.') => prefix.entry(s.into()).or_default(),
                    _ => &mut odd_host,
                };
                bucket.add(rank, prefixes);
            }
        }
        Index {
            exact: HostMap::build(exact),
            suffix: WildMap::build(suffix),
            prefix: WildMap::build(prefix),
            odd_host: odd_host.finish(""),
            no_host: no_host.finish(""),
        }
    }

    /// The candidates for a request, in ascending rank order.
    pub fn candidates<'i>(&'i self, req: &Prepared<'_>) -> Candidates<'i> {
        let mut slices: Slices<'i> = SmallVec::new();
        let path: &str = &req.path;
        if let Some(host) = req.host {
            if let Some(b) = self.exact.get(host) {
                b.collect(path, &mut slices);
            }
            if self.suffix.dots != 0 || self.prefix.dots != 0 {
                let total = host.bytes().filter(|&b| b == b'.').count();
                let mut seen = 0;
                for (i, c) in host.bytes().enumerate() {
                    if c != b'.' {
                        continue;
                    }
                    seen += 1;
                    // `host[i..]` holds the dots from this one on, `host[..=i]` those up to it
                    if let Some(b) = self.suffix.get(&host[i..], total - seen + 1) {
                        b.collect(path, &mut slices);
                    }
                    if let Some(b) = self.prefix.get(&host[..=i], seen) {
                        b.collect(path, &mut slices);
                    }
                }
            }
            self.odd_host.collect(path, &mut slices);
        }
        self.no_host.collect(path, &mut slices);
        Candidates { slices, last: None }
    }
}

/// Candidate ranks in ascending order (a k-way merge of sorted rank lists, without
/// duplicates).
pub(crate) struct Candidates<'i> {
    slices: Slices<'i>,
    last: Option<u32>,
}

impl Candidates<'_> {
    pub fn next_rank(&mut self) -> Option<u32> {
        loop {
            let mut best: Option<(usize, u32)> = None;
            for (i, s) in self.slices.iter().enumerate() {
                if let Some(&r) = s.first().filter(|&&r| best.is_none_or(|(_, b)| r < b)) {
                    best = Some((i, r));
                }
            }
            let (i, r) = best?;
            self.slices[i] = &self.slices[i][1..];
            if self.last == Some(r) {
                continue;
            }
            self.last = Some(r);
            return Some(r);
        }
    }
}
