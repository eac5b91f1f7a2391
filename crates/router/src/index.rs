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
//! prefixes or one hash lookup per distinct prefix length of the bucket. Hashing is FxHash
//! (no DoS concern: the keys come from the configuration, lookups only read). The rank lists
//! found are merged in ascending order and evaluated until one matches.

use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use crate::compile::{Entry, Kind};
use crate::fields::{Affix, AffixKind, PathRule};
use crate::request::Prepared;

/// Buckets with at most this many distinct prefixes are scanned instead of hashed.
const SCAN_MAX: usize = 6;

/// Rank lists of one host bucket, by path prefix.
#[derive(Default)]
struct PathIndex {
    /// Matchers with no prefix condition (regex paths without a literal start, no paths).
    other: Box<[u32]>,
    /// Small buckets: (prefix, ranks), scanned.
    scan: Box<[Keyed]>,
    /// Large buckets: ranks by prefix, looked up once per distinct length.
    by_prefix: FxHashMap<Box<str>, Box<[u32]>>,
    /// Distinct prefix lengths of `by_prefix`, ascending.
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

    fn finish(self) -> PathIndex {
        let mut ix = PathIndex {
            other: self.other.into(),
            ..PathIndex::default()
        };
        if self.by_prefix.len() <= SCAN_MAX {
            let mut scan: Vec<Keyed> = self
                .by_prefix
                .into_iter()
                .map(|(k, v)| (k, v.into()))
                .collect();
            // any order gives the same merge; sorted for determinism
            scan.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            ix.scan = scan.into();
        } else {
            let mut lengths: Vec<u32> = self.by_prefix.keys().map(|k| k.len() as u32).collect();
            lengths.sort_unstable();
            lengths.dedup();
            ix.lengths = lengths.into();
            ix.by_prefix = self
                .by_prefix
                .into_iter()
                .map(|(k, v)| (k, v.into()))
                .collect();
        }
        ix
    }
}

impl PathIndex {
    fn collect<'i>(&'i self, path: &str, out: &mut Slices<'i>) {
        if !self.other.is_empty() {
            out.push(&self.other);
        }
        for (p, ranks) in &*self.scan {
            if path.starts_with(&**p) {
                out.push(ranks);
            }
        }
        for &l in &*self.lengths {
            let l = l as usize;
            if l > path.len() {
                break;
            }
            if let Some(v) = path.get(..l).and_then(|k| self.by_prefix.get(k)) {
                out.push(v);
            }
        }
    }
}

type Slices<'i> = SmallVec<[&'i [u32]; 16]>;

/// A prefix and the ranks of the matchers filed under it.
type Keyed = (Box<str>, Box<[u32]>);

/// Wildcard keys of one kind (`*.x` suffixes or `x.*` prefixes), with filters on the label
/// count and length of the keys that exist, so that a request probes only plausible keys.
#[derive(Default)]
struct WildMap {
    map: FxHashMap<Box<str>, PathIndex>,
    /// Bit `n`: a key has `n` dots (bit 63: 63 or more).
    dots: u64,
    /// Bit `n`: a key is `n` bytes long (bit 255: 255 or more).
    lens: [u64; 4],
}

fn dot_bit(dots: usize) -> u64 {
    1 << dots.min(63)
}

impl WildMap {
    fn insert(&mut self, key: Box<str>, ix: PathIndex) {
        self.dots |= dot_bit(key.bytes().filter(|&b| b == b'.').count());
        let l = key.len().min(255);
        self.lens[l / 64] |= 1 << (l % 64);
        self.map.insert(key, ix);
    }

    #[inline]
    fn get(&self, key: &str, dots: usize) -> Option<&PathIndex> {
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
    exact: FxHashMap<Box<str>, PathIndex>,
    /// Keys start with `.` (from `*.example.com`).
    suffix: WildMap,
    /// Keys end with `.` (from `example.*`).
    prefix: WildMap,
    /// Wildcard hosts that do not fall on a label boundary: always candidates.
    odd_host: PathIndex,
    no_host: PathIndex,
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
        let mut ix = Index {
            exact: exact.into_iter().map(|(k, b)| (k, b.finish())).collect(),
            odd_host: odd_host.finish(),
            no_host: no_host.finish(),
            ..Index::default()
        };
        for (k, b) in suffix {
            ix.suffix.insert(k, b.finish());
        }
        for (k, b) in prefix {
            ix.prefix.insert(k, b.finish());
        }
        ix
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
