//! Candidate selection: which matchers may match a request, yielded in evaluation order
//! (rank = position in the priority order), so that the first full match is Kong's answer.
//!
//! Matchers are bucketed by a necessary condition on the host (exact host, `*.suffix`,
//! `prefix.*`, or no host), and inside each bucket by a necessary condition on the path
//! (the plain prefix; regex paths and path-less matchers are always candidates of their
//! bucket). A request looks up its host (and each of its dot-suffixes/prefixes for wildcard
//! buckets), then each distinct prefix length of the bucket: a handful of hash lookups. The
//! rank lists found are merged in ascending order and evaluated until one matches.

use fnv::FnvHashMap;
use smallvec::SmallVec;

use crate::compile::{Entry, Kind};
use crate::fields::{Affix, PathRule};
use crate::request::Prepared;

/// Rank lists of one host bucket, by path prefix.
#[derive(Default)]
struct PathIndex {
    by_prefix: FnvHashMap<Box<str>, Vec<u32>>,
    /// Distinct prefix lengths, ascending.
    lengths: Vec<usize>,
    /// Matchers with no plain-prefix condition (regex paths, no paths).
    other: Vec<u32>,
}

fn push_rank(v: &mut Vec<u32>, rank: u32) {
    if v.last() != Some(&rank) {
        v.push(rank);
    }
}

impl PathIndex {
    fn add(&mut self, rank: u32, prefixes: Option<&[&str]>) {
        match prefixes {
            None => push_rank(&mut self.other, rank),
            Some(ps) => {
                for p in ps {
                    push_rank(self.by_prefix.entry((*p).into()).or_default(), rank);
                    if !self.lengths.contains(&p.len()) {
                        self.lengths.push(p.len());
                    }
                }
            }
        }
    }

    fn finish(&mut self) {
        self.lengths.sort_unstable();
    }

    fn collect<'i>(&'i self, path: &str, out: &mut Slices<'i>) {
        if !self.other.is_empty() {
            out.push(&self.other);
        }
        for &l in &self.lengths {
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

/// The index over all matchers of a router.
#[derive(Default)]
pub(crate) struct Index {
    exact: FnvHashMap<Box<str>, PathIndex>,
    /// Keys start with `.` (from `*.example.com`).
    suffix: FnvHashMap<Box<str>, PathIndex>,
    /// Keys end with `.` (from `example.*`).
    prefix: FnvHashMap<Box<str>, PathIndex>,
    /// Wildcard hosts that do not fall on a label boundary: always candidates.
    odd_host: PathIndex,
    no_host: PathIndex,
}

impl Index {
    pub fn build(entries: &[Entry]) -> Self {
        let mut ix = Index::default();
        for (rank, e) in entries.iter().enumerate() {
            let rank = rank as u32;
            let (hosts, prefixes): (Vec<&Affix>, Option<Vec<&str>>) = match &e.kind {
                Kind::Fields(f) => {
                    let hosts = f.hosts.iter().map(|h| &h.affix).collect();
                    let mut ps = Vec::with_capacity(f.paths.len());
                    for p in &f.paths {
                        match p {
                            PathRule::Prefix { text, .. } => ps.push(&**text),
                            PathRule::Regex { .. } => {
                                ps.clear();
                                break;
                            }
                        }
                    }
                    (hosts, (!ps.is_empty()).then_some(ps))
                }
                Kind::Expr(x) => (
                    x.host_key.iter().collect(),
                    x.path_key.as_deref().map(|p| vec![p]),
                ),
            };
            let prefixes = prefixes.as_deref();
            if hosts.is_empty() {
                ix.no_host.add(rank, prefixes);
            }
            for h in hosts {
                let bucket = match h {
                    Affix::Exact(s) => ix.exact.entry(s.clone()).or_default(),
                    Affix::Suffix(s) if s.starts_with('.') => {
                        ix.suffix.entry(s.clone()).or_default()
                    }
                    Affix::Prefix(s) if s.ends_with('.') => ix.prefix.entry(s.clone()).or_default(),
                    _ => &mut ix.odd_host,
                };
                bucket.add(rank, prefixes);
            }
        }
        for b in ix
            .exact
            .values_mut()
            .chain(ix.suffix.values_mut())
            .chain(ix.prefix.values_mut())
        {
            b.finish();
        }
        ix.odd_host.finish();
        ix.no_host.finish();
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
            if !self.suffix.is_empty() || !self.prefix.is_empty() {
                for (i, c) in host.bytes().enumerate() {
                    if c != b'.' {
                        continue;
                    }
                    if let Some(b) = self.suffix.get(&host[i..]) {
                        b.collect(path, &mut slices);
                    }
                    if let Some(b) = self.prefix.get(&host[..=i]) {
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
