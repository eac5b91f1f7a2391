//! The balancer's address list for one moment (a [`Ring`]) and the four algorithms over it.
//! A ring is immutable except for the algorithms' small mutable state (the round-robin
//! pointer, the least-connections heap); a DNS refresh or configuration change builds a new
//! ring and swaps it in.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use xxhash_rust::xxh3::xxh3_64;

use arc_swap::ArcSwap;

use crate::health::{HEALTH_GENERATION, HealthPolicy, HealthState};

/// Points per address on the consistent-hashing continuum when all weights are equal.
const POINTS_PER_ADDRESS: f64 = 160.0;
/// Largest round-robin wheel; bigger weight sets are scaled down to fit.
const MAX_WHEEL: u64 = 1 << 16;
/// The latency algorithm's EWMA decay time (Kong's `DECAY_TIME`, 10 s): an average
/// `td` old weighs `exp(-td / EWMA_WINDOW)`, in a new sample and when scoring.
const EWMA_WINDOW: Duration = Duration::from_secs(10);

/// The balancing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Weighted round-robin over a shuffled wheel.
    RoundRobin,
    /// Ketama-style consistent hashing.
    ConsistentHashing,
    /// Fewest in-flight requests per unit of weight.
    LeastConnections,
    /// Lowest decaying average latency per unit of weight, with two random choices.
    Latency,
}

impl Algorithm {
    pub(crate) fn parse(s: &str) -> Result<Algorithm, String> {
        Ok(match s {
            "round-robin" => Algorithm::RoundRobin,
            "consistent-hashing" => Algorithm::ConsistentHashing,
            "least-connections" => Algorithm::LeastConnections,
            "latency" => Algorithm::Latency,
            other => return Err(format!("unknown algorithm '{other}'")),
        })
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since [`epoch`].
fn now_nanos() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// One resolved address of a target, with state that outlives rings: health, latency.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub addr: SocketAddr,
    /// The name for Host and SNI: the target's hostname, the SRV name with `use_srv_name`,
    /// or the IP.
    pub hostname: Arc<str>,
    /// The target string (`host:port`) this address belongs to.
    pub target: Arc<str>,
    /// The upstream's name.
    pub upstream: Arc<str>,
    /// The newest health rules of the upstream (passive reports use them).
    pub policy: ArcSwap<HealthPolicy>,
    pub health: HealthState,
    /// The Host header values for this address without an upstream `host_header`
    /// (plain, TLS), made on first use ([`crate::Peer::host_header`]).
    pub host_values: [OnceLock<Option<http::HeaderValue>>; 2],
    /// EWMA of latency in microseconds (f64 bits); 0 = no sample yet.
    ewma: AtomicU64,
    /// Nanoseconds since [`epoch`] of the last sample.
    ewma_at: AtomicU64,
}

impl Endpoint {
    pub(crate) fn new(
        addr: SocketAddr,
        hostname: Arc<str>,
        target: Arc<str>,
        upstream: Arc<str>,
        policy: Arc<HealthPolicy>,
    ) -> Endpoint {
        Endpoint {
            addr,
            hostname,
            target,
            upstream,
            policy: ArcSwap::new(policy),
            health: HealthState::default(),
            host_values: Default::default(),
            ewma: AtomicU64::new(0),
            ewma_at: AtomicU64::new(0),
        }
    }

    #[inline]
    pub(crate) fn ewma(&self) -> f64 {
        f64::from_bits(self.ewma.load(Ordering::Relaxed))
    }

    /// Gives an address without a sample the mean of the others (Kong's slow start),
    /// touched now.
    pub(crate) fn seed_ewma(&self, v: f64) {
        if self
            .ewma
            .compare_exchange(0, v.to_bits(), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.ewma_at.store(now_nanos(), Ordering::Relaxed);
        }
    }

    /// The average as the latency algorithm scores it at `now` (nanoseconds since
    /// [`epoch`]): decayed toward 0 by the time since it was last touched, as Kong's
    /// `get_or_update_ewma` with an rtt of 0 does, so that an address left alone (a slow one)
    /// scores lower and lower until it is tried again.
    #[inline]
    pub(crate) fn decayed_ewma(&self, now: u64) -> f64 {
        let v = self.ewma();
        if v == 0.0 {
            return 0.0;
        }
        let at = self.ewma_at.load(Ordering::Relaxed);
        let dt = now.saturating_sub(at) as f64 / 1e9;
        v * (-dt / EWMA_WINDOW.as_secs_f64()).exp()
    }

    /// Adds a latency sample (decaying over a 10 s window).
    pub(crate) fn record_latency(&self, sample: Duration) {
        self.record_latency_at(sample, now_nanos());
    }

    /// [`Endpoint::record_latency`] at `now` (nanoseconds since [`epoch`]).
    pub(crate) fn record_latency_at(&self, sample: Duration, now: u64) {
        let sample = sample.as_secs_f64() * 1e6;
        let prev_at = self.ewma_at.swap(now, Ordering::Relaxed);
        let prev = self.ewma();
        let v = if prev == 0.0 || prev_at == 0 {
            sample
        } else {
            let dt = now.saturating_sub(prev_at) as f64 / 1e9;
            let w = (-dt / EWMA_WINDOW.as_secs_f64()).exp();
            prev * w + sample * (1.0 - w)
        };
        // A sample of exactly 0 would read as "no sample".
        self.ewma
            .store(v.max(f64::MIN_POSITIVE).to_bits(), Ordering::Relaxed);
    }
}

/// One address in a ring.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub ep: Arc<Endpoint>,
    pub weight: u32,
    /// Index of the target in the balancer's target list.
    pub target: u32,
}

impl Entry {
    #[inline]
    fn eligible(&self, tried: &[SocketAddr]) -> bool {
        self.weight > 0 && self.ep.health.is_healthy() && !tried.contains(&self.ep.addr)
    }
}

/// The algorithm's structure.
#[derive(Debug)]
enum Algo {
    RoundRobin {
        wheel: Vec<u32>,
        next: AtomicUsize,
    },
    Hash {
        /// (top 32 bits of the point's hash, entry): 8 bytes a point.
        points: Vec<(u32, u32)>,
        index: Vec<u32>,
        shift: u32,
    },
    LeastConn(Mutex<LcHeap>),
    Latency,
}

/// An immutable address list plus the algorithm's state.
#[derive(Debug)]
pub(crate) struct Ring {
    pub entries: Vec<Entry>,
    algo: Algo,
}

impl Ring {
    pub(crate) fn new(algorithm: Algorithm, entries: Vec<Entry>) -> Ring {
        let algo = match algorithm {
            Algorithm::RoundRobin => Algo::RoundRobin {
                wheel: wheel(&entries),
                next: AtomicUsize::new(0),
            },
            Algorithm::ConsistentHashing => {
                let (points, index, shift) = continuum(&entries);
                Algo::Hash {
                    points,
                    index,
                    shift,
                }
            }
            Algorithm::LeastConnections => Algo::LeastConn(Mutex::new(LcHeap::new(&entries))),
            Algorithm::Latency => {
                let measured: Vec<f64> = entries
                    .iter()
                    .map(|e| e.ep.ewma())
                    .filter(|v| *v > 0.0)
                    .collect();
                if !measured.is_empty() {
                    let mean = measured.iter().sum::<f64>() / measured.len() as f64;
                    for e in &entries {
                        e.ep.seed_ewma(mean);
                    }
                }
                Algo::Latency
            }
        };
        Ring { entries, algo }
    }

    /// Picks an entry index. `hash` is used by consistent-hashing only.
    pub(crate) fn pick(&self, hash: u64, tried: &[SocketAddr]) -> Option<u32> {
        if self.entries.is_empty() {
            return None;
        }
        match &self.algo {
            Algo::RoundRobin { wheel, next } => {
                let len = wheel.len();
                if len == 0 {
                    return None;
                }
                let start = next.fetch_add(1, Ordering::Relaxed);
                for k in 0..len {
                    let i = wheel[(start.wrapping_add(k)) % len];
                    if self.entries[i as usize].eligible(tried) {
                        if k > 0 {
                            next.fetch_add(k, Ordering::Relaxed);
                        }
                        return Some(i);
                    }
                }
                None
            }
            Algo::Hash {
                points,
                index,
                shift,
            } => {
                let len = points.len();
                if len == 0 {
                    return None;
                }
                let hash = (hash >> 32) as u32;
                let b = (hash >> shift) as usize;
                let (lo, hi) = (index[b] as usize, index[b + 1] as usize);
                let start = lo + points[lo..hi].partition_point(|p| p.0 < hash);
                for k in 0..len {
                    let i = points[(start + k) % len].1;
                    if self.entries[i as usize].eligible(tried) {
                        return Some(i);
                    }
                }
                None
            }
            Algo::LeastConn(heap) => heap
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pick(&self.entries, tried),
            Algo::Latency => self.pick_latency(tried, now_nanos()),
        }
    }

    /// A least-connections request finished.
    pub(crate) fn release(&self, idx: u32) {
        if let Algo::LeastConn(heap) = &self.algo {
            heap.lock().unwrap_or_else(|e| e.into_inner()).release(idx);
        }
    }

    /// In-flight count of an entry (least-connections only).
    #[cfg(test)]
    pub(crate) fn in_flight(&self, idx: u32) -> u32 {
        match &self.algo {
            Algo::LeastConn(h) => h.lock().unwrap_or_else(|e| e.into_inner()).active[idx as usize],
            _ => 0,
        }
    }

    /// Two random choices among the eligible addresses, the lower `decayed ewma / weight`
    /// winning (Kong's `pick_and_score`), at `now` (nanoseconds since [`epoch`]).
    fn pick_latency(&self, tried: &[SocketAddr], now: u64) -> Option<u32> {
        let n = self.entries.len();
        let score = |i: usize| {
            let e = &self.entries[i];
            e.ep.decayed_ewma(now) / f64::from(e.weight.max(1))
        };
        let mut found: [usize; 2] = [usize::MAX; 2];
        let mut count = 0;
        if n > 2 {
            for _ in 0..8 {
                let i = fastrand::usize(..n);
                if i != found[0] && self.entries[i].eligible(tried) {
                    found[count] = i;
                    count += 1;
                    if count == 2 {
                        break;
                    }
                }
            }
        }
        if count < 2 {
            // Few addresses, or most are unavailable: look at all of them.
            count = 0;
            let offset = fastrand::usize(..n);
            for k in 0..n {
                let i = (offset + k) % n;
                if self.entries[i].eligible(tried) {
                    if count < 2 {
                        found[count] = i;
                        count += 1;
                    } else if score(i) < score(found[0]).max(score(found[1])) {
                        let worst = if score(found[0]) > score(found[1]) {
                            0
                        } else {
                            1
                        };
                        found[worst] = i;
                    }
                }
            }
        }
        match count {
            0 => None,
            1 => Some(found[0] as u32),
            _ => {
                let (a, b) = (found[0], found[1]);
                Some(if score(b) < score(a) {
                    b as u32
                } else {
                    a as u32
                })
            }
        }
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The round-robin wheel: each entry `weight / gcd` times (scaled down to at most
/// [`MAX_WHEEL`] slots), shuffled.
fn wheel(entries: &[Entry]) -> Vec<u32> {
    let g = entries
        .iter()
        .map(|e| u64::from(e.weight))
        .filter(|w| *w > 0)
        .fold(0, gcd);
    if g == 0 {
        return Vec::new();
    }
    let total: u64 = entries.iter().map(|e| u64::from(e.weight) / g).sum();
    let scale = if total > MAX_WHEEL {
        MAX_WHEEL as f64 / total as f64
    } else {
        1.0
    };
    let mut wheel = Vec::with_capacity(total.min(MAX_WHEEL + entries.len() as u64) as usize);
    for (i, e) in entries.iter().enumerate() {
        if e.weight == 0 {
            continue;
        }
        let n = ((u64::from(e.weight) / g) as f64 * scale).round().max(1.0) as usize;
        wheel.extend(std::iter::repeat_n(i as u32, n));
    }
    fastrand::shuffle(&mut wheel);
    wheel
}

/// The consistent-hashing continuum: each address gets points proportional to its weight
/// (160 when all are equal), hashed from `"<ip>:<port> <i>"`, so its points depend on
/// nothing but its own address and weight share; adding one address of N moves about 1/N
/// of the keys. Plus an index by the top bits of the point (about one bucket per point, at
/// most 2^16) for O(1) lookup; returns (points, index, shift).
fn continuum(entries: &[Entry]) -> (Vec<(u32, u32)>, Vec<u32>, u32) {
    let total: u64 = entries.iter().map(|e| u64::from(e.weight)).sum();
    let mut points = Vec::new();
    if total > 0 {
        let n = entries.len() as f64;
        for (i, e) in entries.iter().enumerate() {
            if e.weight == 0 {
                continue;
            }
            let share = f64::from(e.weight) / total as f64;
            let count = ((share * n * POINTS_PER_ADDRESS).floor() as usize).max(1);
            let name = e.ep.addr.to_string();
            let mut buf = String::with_capacity(name.len() + 8);
            for k in 1..=count {
                buf.clear();
                buf.push_str(&name);
                buf.push(' ');
                buf.push_str(&k.to_string());
                points.push(((xxh3_64(buf.as_bytes()) >> 32) as u32, i as u32));
            }
        }
    }
    // Ties (vanishingly rare) resolve by address, so every process builds the same ring.
    points.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0).then_with(|| {
            entries[a.1 as usize]
                .ep
                .addr
                .cmp(&entries[b.1 as usize].ep.addr)
        })
    });
    let bits = (points.len().max(2).next_power_of_two().trailing_zeros()).clamp(4, 16);
    let shift = 32 - bits;
    let mut index = vec![0u32; (1usize << bits) + 1];
    let mut p = 0usize;
    for (b, slot) in index.iter_mut().enumerate() {
        while p < points.len() && ((points[p].0 >> shift) as usize) < b {
            p += 1;
        }
        *slot = p as u32;
    }
    (points, index, shift)
}

/// Hashes a request's hash value.
#[inline]
pub(crate) fn hash_value(v: &str) -> u64 {
    xxh3_64(v.as_bytes())
}

/// Indexed binary min-heap keyed by `(in_flight + 1) / weight`. Unhealthy addresses are
/// parked outside the heap when met at the top, and come back once some health changed.
#[derive(Debug)]
struct LcHeap {
    heap: Vec<u32>,
    /// Entry -> heap position, or `u32::MAX` when not in the heap.
    pos: Vec<u32>,
    active: Vec<u32>,
    weight: Vec<u64>,
    parked: Vec<u32>,
    parked_gen: u64,
}

const NOT_IN_HEAP: u32 = u32::MAX;

impl LcHeap {
    fn new(entries: &[Entry]) -> LcHeap {
        let mut h = LcHeap {
            heap: Vec::with_capacity(entries.len()),
            pos: vec![NOT_IN_HEAP; entries.len()],
            active: vec![0; entries.len()],
            weight: entries.iter().map(|e| u64::from(e.weight)).collect(),
            parked: Vec::new(),
            parked_gen: 0,
        };
        for (i, e) in entries.iter().enumerate() {
            if e.weight > 0 {
                h.insert(i as u32);
            }
        }
        h
    }

    #[inline]
    fn less(&self, a: u32, b: u32) -> bool {
        let (a, b) = (a as usize, b as usize);
        (u64::from(self.active[a]) + 1) * self.weight[b]
            < (u64::from(self.active[b]) + 1) * self.weight[a]
    }

    fn sift_up(&mut self, mut p: usize) {
        while p > 0 {
            let parent = (p - 1) / 2;
            if self.less(self.heap[p], self.heap[parent]) {
                self.swap(p, parent);
                p = parent;
            } else {
                break;
            }
        }
    }

    fn sift_down(&mut self, mut p: usize) {
        let n = self.heap.len();
        loop {
            let (l, r) = (2 * p + 1, 2 * p + 2);
            let mut m = p;
            if l < n && self.less(self.heap[l], self.heap[m]) {
                m = l;
            }
            if r < n && self.less(self.heap[r], self.heap[m]) {
                m = r;
            }
            if m == p {
                break;
            }
            self.swap(p, m);
            p = m;
        }
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.pos[self.heap[a] as usize] = a as u32;
        self.pos[self.heap[b] as usize] = b as u32;
    }

    fn insert(&mut self, idx: u32) {
        self.pos[idx as usize] = self.heap.len() as u32;
        self.heap.push(idx);
        self.sift_up(self.heap.len() - 1);
    }

    fn remove_at(&mut self, p: usize) -> u32 {
        let last = self.heap.len() - 1;
        self.swap(p, last);
        let idx = self.heap.pop().unwrap_or(NOT_IN_HEAP);
        self.pos[idx as usize] = NOT_IN_HEAP;
        if p < self.heap.len() {
            self.sift_down(p);
            self.sift_up(p);
        }
        idx
    }

    fn unpark(&mut self, entries: &[Entry]) {
        let generation = HEALTH_GENERATION.load(Ordering::Relaxed);
        if self.parked.is_empty() || generation == self.parked_gen {
            return;
        }
        self.parked_gen = generation;
        let parked = std::mem::take(&mut self.parked);
        for idx in parked {
            if entries[idx as usize].ep.health.is_healthy() {
                self.insert(idx);
            } else {
                self.parked.push(idx);
            }
        }
    }

    fn pick(&mut self, entries: &[Entry], tried: &[SocketAddr]) -> Option<u32> {
        self.unpark(entries);
        let mut aside: [u32; 8] = [NOT_IN_HEAP; 8];
        let mut n_aside = 0;
        let mut chosen = None;
        while let Some(&top) = self.heap.first() {
            let e = &entries[top as usize];
            if !e.ep.health.is_healthy() {
                self.remove_at(0);
                self.parked.push(top);
                self.parked_gen = HEALTH_GENERATION.load(Ordering::Relaxed);
                continue;
            }
            if tried.contains(&e.ep.addr) {
                if n_aside == aside.len() {
                    break;
                }
                aside[n_aside] = self.remove_at(0);
                n_aside += 1;
                continue;
            }
            chosen = Some(top);
            break;
        }
        if let Some(top) = chosen {
            self.active[top as usize] += 1;
            self.sift_down(0);
        }
        for &idx in &aside[..n_aside] {
            self.insert(idx);
        }
        chosen
    }

    fn release(&mut self, idx: u32) {
        let i = idx as usize;
        self.active[i] = self.active[i].saturating_sub(1);
        let p = self.pos[i];
        if p != NOT_IN_HEAP {
            self.sift_up(p as usize);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn test_endpoint(addr: SocketAddr) -> Endpoint {
        let hc: silverback_config::Healthchecks = serde_json::from_value(serde_json::json!({
            "threshold": 0,
            "active": {"type": "http", "timeout": 1, "concurrency": 1, "http_path": "/", "https_verify_certificate": true,
                "healthy": {"interval": 0, "http_statuses": [200], "successes": 0},
                "unhealthy": {"interval": 0, "http_statuses": [500], "tcp_failures": 0, "timeouts": 0, "http_failures": 0}},
            "passive": {"type": "http", "healthy": {"http_statuses": [200], "successes": 0},
                "unhealthy": {"http_statuses": [500], "tcp_failures": 0, "timeouts": 0, "http_failures": 0}}
        }))
        .expect("healthchecks");
        let policy = Arc::new(HealthPolicy::from_config(&hc).expect("policy"));
        Endpoint::new(addr, "h".into(), "t:80".into(), "up".into(), policy)
    }

    fn entries(weights: &[u32]) -> Vec<Entry> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let addr: SocketAddr = format!("10.0.{}.{}:80", i / 250, i % 250 + 1)
                    .parse()
                    .expect("addr");
                Entry {
                    ep: Arc::new(test_endpoint(addr)),
                    weight: w,
                    target: i as u32,
                }
            })
            .collect()
    }

    #[test]
    fn round_robin_follows_weights_exactly_per_turn() {
        let ring = Ring::new(Algorithm::RoundRobin, entries(&[10, 20, 30, 0]));
        let mut counts = [0u32; 4];
        for _ in 0..6 * 100 {
            counts[ring.pick(0, &[]).expect("peer") as usize] += 1;
        }
        assert_eq!(counts, [100, 200, 300, 0]);
    }

    #[test]
    fn huge_wheels_are_scaled() {
        let ring = Ring::new(Algorithm::RoundRobin, entries(&[65535, 65534, 1, 7]));
        let Algo::RoundRobin { wheel, .. } = &ring.algo else {
            panic!("rr")
        };
        assert!(wheel.len() as u64 <= MAX_WHEEL + 4, "{}", wheel.len());
        assert!(wheel.contains(&2) && wheel.contains(&3));
    }

    #[test]
    fn hashing_is_stable_and_skips_unhealthy() {
        let e = entries(&[100; 10]);
        let ring = Ring::new(Algorithm::ConsistentHashing, e.clone());
        let again = Ring::new(Algorithm::ConsistentHashing, e.clone());
        let keys: Vec<u64> = (0..2000)
            .map(|k| hash_value(&format!("user-{k}")))
            .collect();
        let first: Vec<u32> = keys
            .iter()
            .map(|&h| ring.pick(h, &[]).expect("peer"))
            .collect();
        let second: Vec<u32> = keys
            .iter()
            .map(|&h| again.pick(h, &[]).expect("peer"))
            .collect();
        assert_eq!(first, second);
        // Mark entry 3 down: only its keys move.
        e[3].ep.health.set(false);
        for (k, &h) in keys.iter().enumerate() {
            let now = ring.pick(h, &[]).expect("peer");
            if first[k] != 3 {
                assert_eq!(now, first[k]);
            } else {
                assert_ne!(now, 3);
            }
        }
        // A retry lands on another address.
        let p = ring.pick(keys[0], &[]).expect("peer");
        let tried = [e[p as usize].ep.addr];
        assert_ne!(ring.pick(keys[0], &tried), Some(p));
    }

    #[test]
    fn least_connections_prefers_idle_and_weight() {
        let ring = Ring::new(Algorithm::LeastConnections, entries(&[100, 100, 200]));
        // 8 picks without release: the weight-200 entry takes twice the share.
        let mut counts: HashMap<u32, u32> = HashMap::new();
        for _ in 0..8 {
            *counts.entry(ring.pick(0, &[]).expect("peer")).or_default() += 1;
        }
        assert_eq!((counts[&0], counts[&1], counts[&2]), (2, 2, 4));
        // Releasing all of entry 0's requests makes it the first choice.
        ring.release(0);
        ring.release(0);
        assert_eq!(ring.pick(0, &[]), Some(0));
        assert_eq!(ring.in_flight(0), 1);
        // Tried and unhealthy entries are skipped, and come back when healthy.
        let tried = [ring.entries[0].ep.addr];
        ring.entries[1].ep.health.set(false);
        assert_eq!(ring.pick(0, &tried), Some(2));
        ring.entries[1].ep.health.set(true);
        for _ in 0..3 {
            ring.release(2);
        }
        // Now: 0 has 1, 1 has 2, 2 has 2 (weight 200) -> key (3/100, 3/100, 3/200): 2 wins.
        assert_eq!(ring.pick(0, &[]), Some(2));
        let mut seen1 = false;
        for _ in 0..6 {
            seen1 |= ring.pick(0, &[]) == Some(1);
        }
        assert!(seen1, "unparked entry never picked again");
    }

    #[test]
    fn latency_prefers_fast() {
        let e = entries(&[100, 100, 100, 100]);
        e[0].ep.record_latency(Duration::from_millis(100));
        e[1].ep.record_latency(Duration::from_millis(100));
        e[2].ep.record_latency(Duration::from_millis(1));
        e[3].ep.record_latency(Duration::from_millis(100));
        let ring = Ring::new(Algorithm::Latency, e);
        let mut fast = 0;
        for _ in 0..1000 {
            if ring.pick(0, &[]) == Some(2) {
                fast += 1;
            }
        }
        // With two random choices the fastest wins every time it is drawn (about 7/16).
        assert!(fast > 300, "{fast}");
        let tried = [ring.entries[2].ep.addr];
        for _ in 0..50 {
            assert_ne!(ring.pick(0, &tried), Some(2));
        }
    }

    /// Kong's latency.lua decays an address's average when scoring it, by the time since it
    /// was last touched (`ewma * exp(-td / 10)`): a slow address that gets no traffic scores
    /// lower and lower, and is tried again once it scores below the fast one.
    #[test]
    fn latency_tries_an_idle_slow_address_again() {
        let e = entries(&[100, 100]);
        let t0 = now_nanos();
        e[1].ep.record_latency_at(Duration::from_millis(100), t0);
        e[0].ep.record_latency_at(Duration::from_millis(1), t0);
        let ring = Ring::new(Algorithm::Latency, e);
        // Right away the fast one wins every time.
        for _ in 0..20 {
            assert_eq!(ring.pick_latency(&[], t0), Some(0));
        }
        // The fast one keeps being used (its average is touched); the slow one is idle.
        let later = t0 + 60_000_000_000;
        ring.entries[0]
            .ep
            .record_latency_at(Duration::from_millis(1), later);
        // 100 ms * exp(-6) = 0.25 ms < 1 ms: the slow one is tried again.
        let slow = ring.entries[1].ep.decayed_ewma(later);
        assert!((slow - 100_000.0 * (-6f64).exp()).abs() < 1.0, "{slow}");
        assert_eq!(ring.pick_latency(&[], later), Some(1));
        // Its new sample is then what it is scored by (the old average weighs exp(-6)).
        ring.entries[1]
            .ep
            .record_latency_at(Duration::from_millis(100), later);
        assert_eq!(ring.pick_latency(&[], later), Some(0));
    }

    #[test]
    fn empty_and_all_down() {
        let ring = Ring::new(Algorithm::RoundRobin, entries(&[0, 0]));
        assert_eq!(ring.pick(0, &[]), None);
        for alg in [
            Algorithm::RoundRobin,
            Algorithm::ConsistentHashing,
            Algorithm::LeastConnections,
            Algorithm::Latency,
        ] {
            let e = entries(&[1, 2, 3]);
            for x in &e {
                x.ep.health.set(false);
            }
            let ring = Ring::new(alg, e);
            assert_eq!(ring.pick(7, &[]), None, "{alg:?}");
        }
    }
}
