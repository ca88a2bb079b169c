//! The sampling chain's steps as pure functions over a [`Candidates`] list.
//!
//! [`Sampler`](crate::Sampler) runs them in llama.cpp's default order:
//! [`penalties`] → [`top_k`] → [`top_p`] → [`min_p`] → [`temperature`] → [`draw`]
//! (or [`greedy`] instead of the last four when the temperature is `<= 0`). They are public so they
//! can be tested one at a time and reused by a path that does not start from a full logits row
//! (for example a GPU kernel that returns only its top-k candidates).
//!
//! # Numbers
//!
//! Logits are `f32`. Every step keeps the list free of NaN and `+inf`: a NaN logit becomes `-inf`
//! (the token can never be drawn) and `+inf` becomes `f32::MAX`, both when a list is built and after
//! each step that does arithmetic. Probabilities are computed in `f64` with a portable `exp` made of
//! plain IEEE operations (and `libm`'s pure-Rust `log` for min-p), summed in a fixed order, so the
//! same inputs give bit-identical results on every machine.
//!
//! # Order
//!
//! The canonical order is "higher logit first, lower token id first among equal logits"; it is a
//! total order, so steps that select or sort ([`top_k`], [`top_p`]) produce the same list whatever
//! the sorting algorithm does with ties. Steps that only filter keep the order they were given.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::fastmath::{exp_nonpos, sum_fixed};

/// One token and its logit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Token id.
    pub id: u32,
    /// Unnormalized log-probability (never NaN or `+inf` inside a [`Candidates`]).
    pub logit: f32,
}

/// A list of candidate tokens that the steps narrow down.
///
/// Built from a full logits row ([`Candidates::from_logits`]) or from any `(id, logit)` pairs
/// ([`Candidates::from_pairs`]), for instance the top-k list a GPU kernel returned. Ids need not be
/// sorted or contiguous; they should be distinct (a repeated id is treated as two tokens).
///
/// Two lists are equal when they hold the same candidates in the same order.
#[derive(Debug, Clone, Default)]
pub struct Candidates {
    items: Vec<Candidate>,
    /// `items[i].id == i` for every `i` (a full logits row, untouched order): lets [`penalties`]
    /// index by id instead of searching.
    dense: bool,
    /// Scratch space for per-candidate weights, kept to avoid an allocation per call.
    weights: Vec<f64>,
}

impl PartialEq for Candidates {
    fn eq(&self, other: &Self) -> bool {
        self.items == other.items
    }
}

/// Makes a logit safe for the steps: NaN → `-inf`, `+inf` → `f32::MAX`.
#[inline]
pub fn sanitize_logit(x: f32) -> f32 {
    if x.is_nan() {
        f32::NEG_INFINITY
    } else if x == f32::INFINITY {
        f32::MAX
    } else {
        x
    }
}

/// The canonical order: higher logit first, then lower id. A total order on sanitized logits.
#[inline]
pub(crate) fn canonical(a: &Candidate, b: &Candidate) -> Ordering {
    b.logit.partial_cmp(&a.logit).unwrap_or(Ordering::Equal).then(a.id.cmp(&b.id))
}

impl Candidates {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// One candidate per logit, id = index (a row longer than `u32::MAX + 1` entries is cut there).
    pub fn from_logits(logits: &[f32]) -> Self {
        let mut c = Self::new();
        c.fill_from_logits(logits);
        c
    }

    /// Replaces the contents with one candidate per logit, reusing the allocation.
    pub fn fill_from_logits(&mut self, logits: &[f32]) {
        let n = logits.len().min(u32::MAX as usize + 1);
        self.items.clear();
        self.items.reserve(n);
        self.items
            .extend(logits[..n].iter().enumerate().map(|(i, &l)| Candidate { id: i as u32, logit: sanitize_logit(l) }));
        self.dense = true;
    }

    /// A list from arbitrary `(id, logit)` pairs, kept in the given order.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (u32, f32)>) -> Self {
        let items = pairs.into_iter().map(|(id, logit)| Candidate { id, logit: sanitize_logit(logit) }).collect();
        Self { items, dense: false, weights: Vec::new() }
    }

    /// The candidates, in the list's current order.
    pub fn as_slice(&self) -> &[Candidate] {
        &self.items
    }

    /// The candidates' ids, in the list's current order.
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.items.iter().map(|c| c.id)
    }

    /// The logit of token `id`, if it is still in the list (linear search).
    pub fn logit_of(&self, id: u32) -> Option<f32> {
        self.items.iter().find(|c| c.id == id).map(|c| c.logit)
    }

    /// Number of candidates left.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether no candidate is left.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The largest logit (`None` when empty).
    pub fn max_logit(&self) -> Option<f32> {
        self.items.iter().map(|c| c.logit).reduce(f32::max)
    }

    fn sort_canonical(&mut self) {
        self.items.sort_unstable_by(canonical);
        self.dense = false;
    }
}

/// Token occurrence counts over the penalty window, sorted by token id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenCounts {
    counts: Vec<(u32, u32)>,
    scratch: Vec<u32>,
}

impl TokenCounts {
    /// No tokens.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts the tokens of the window `history` and `last_n` select: `last_n > 0` → the last
    /// `last_n` tokens (all of them if there are fewer), `-1` (or any negative value) → all of
    /// `history`, `0` → none.
    pub fn from_history(history: &[u32], last_n: i32) -> Self {
        let mut c = Self::new();
        c.refill(history, last_n);
        c
    }

    /// Like [`TokenCounts::from_history`], reusing the allocations.
    pub fn refill(&mut self, history: &[u32], last_n: i32) {
        let window = match last_n {
            0 => &history[..0],
            n if n < 0 => history,
            n => &history[history.len().saturating_sub(n as usize)..],
        };
        self.scratch.clear();
        self.scratch.extend_from_slice(window);
        self.scratch.sort_unstable();
        self.counts.clear();
        for &id in &self.scratch {
            match self.counts.last_mut() {
                Some((last, n)) if *last == id => *n += 1,
                _ => self.counts.push((id, 1)),
            }
        }
    }

    /// How often `id` occurs in the window.
    pub fn get(&self, id: u32) -> u32 {
        match self.counts.binary_search_by_key(&id, |&(t, _)| t) {
            Ok(i) => self.counts[i].1,
            Err(_) => 0,
        }
    }

    /// `(id, count)` for every distinct token in the window, by increasing id.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.counts.iter().copied()
    }

    /// Number of distinct tokens in the window.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

/// The penalized value of one logit whose token occurs `count > 0` times in the window
/// (llama.cpp's formula, in `f32`): the repetition penalty divides a positive logit and multiplies a
/// zero or negative one, then `count * frequency + presence` is subtracted.
#[inline]
pub fn penalize(logit: f32, count: u32, repeat: f32, frequency: f32, presence: f32) -> f32 {
    if count == 0 {
        return logit;
    }
    let l = if logit <= 0.0 { logit * repeat } else { logit / repeat };
    sanitize_logit(l - (count as f32 * frequency + presence))
}

/// Applies the repetition, frequency and presence penalties to every candidate that occurs in
/// `counts`. Candidates not in the window are untouched; window tokens that are not candidates (for
/// example ids past the vocabulary) are ignored. Order is kept.
pub fn penalties(c: &mut Candidates, counts: &TokenCounts, repeat: f32, frequency: f32, presence: f32) {
    if counts.is_empty() {
        return;
    }
    if c.dense {
        for (id, n) in counts.iter() {
            if let Some(cand) = c.items.get_mut(id as usize) {
                cand.logit = penalize(cand.logit, n, repeat, frequency, presence);
            }
        }
    } else {
        for cand in &mut c.items {
            let n = counts.get(cand.id);
            if n > 0 {
                cand.logit = penalize(cand.logit, n, repeat, frequency, presence);
            }
        }
    }
}

/// What [`scan_row`] feeds: every value of a row, except that a run of values that are all `<=`
/// the current [`RowVisitor::skip_at_or_below`] may be skipped.
trait RowVisitor {
    /// Values at or below this cannot change the visitor's result (`None`: every value matters).
    fn skip_at_or_below(&self) -> Option<f32>;
    fn visit(&mut self, id: u32, value: f32);
}

/// Largest sanitized value of a slice (`-inf` for an empty or all-NaN slice): eight independent
/// lanes so that the compiler can vectorize it.
#[inline]
fn slice_max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let mut it = xs.chunks_exact(8);
    for c in &mut it {
        for j in 0..8 {
            acc[j] = acc[j].max(c[j]);
        }
    }
    let mut m = it.remainder().iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    for a in acc {
        m = m.max(a);
    }
    sanitize_logit(m)
}

/// Visits the entries of one unpenalized stretch of a row, starting at id `base`, 64 at a time;
/// a block whose maximum is at or below the visitor's threshold is skipped whole.
#[inline]
fn scan_segment<V: RowVisitor>(seg: &[f32], base: usize, v: &mut V) {
    const BLOCK: usize = 64;
    for (bi, block) in seg.chunks(BLOCK).enumerate() {
        if let Some(t) = v.skip_at_or_below()
            && slice_max(block) <= t
        {
            continue;
        }
        let start = base + bi * BLOCK;
        for (j, &l) in block.iter().enumerate() {
            v.visit((start + j) as u32, sanitize_logit(l));
        }
    }
}

/// Feeds a full logits row to `v` in id order: the sanitized logit, penalized for the tokens in
/// `counts` (`pen` = repeat, frequency, presence) — the values [`penalties`] gives on
/// `Candidates::from_logits(logits)`, without building that list.
fn scan_row<V: RowVisitor>(logits: &[f32], counts: &TokenCounts, pen: (f32, f32, f32), v: &mut V) {
    let n = logits.len().min(u32::MAX as usize + 1);
    let logits = &logits[..n];
    let mut start = 0usize;
    for (id, count) in counts.iter() {
        let id = id as usize;
        if id >= n {
            break;
        }
        scan_segment(&logits[start..id], start, v);
        v.visit(id as u32, penalize(sanitize_logit(logits[id]), count, pen.0, pen.1, pen.2));
        start = id + 1;
    }
    scan_segment(&logits[start..], start, v);
}

/// [`penalties`] then [`greedy`] on a full row, without a candidate list. An empty row gives 0.
pub(crate) fn greedy_row(logits: &[f32], counts: &TokenCounts, pen: (f32, f32, f32)) -> u32 {
    struct Best {
        id: u32,
        logit: f32,
    }
    impl RowVisitor for Best {
        fn skip_at_or_below(&self) -> Option<f32> {
            Some(self.logit) // ties go to the lower id, seen first
        }
        fn visit(&mut self, id: u32, value: f32) {
            if value > self.logit {
                self.id = id;
                self.logit = value;
            }
        }
    }
    let mut best = Best { id: 0, logit: f32::NEG_INFINITY };
    scan_row(logits, counts, pen, &mut best);
    best.id
}

/// Heap entry ordered so that the worst candidate (canonical order) is the greatest.
struct Worst(Candidate);

impl PartialEq for Worst {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Worst {}
impl PartialOrd for Worst {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Worst {
    fn cmp(&self, other: &Self) -> Ordering {
        canonical(&self.0, &other.0)
    }
}

/// [`penalties`] then [`top_k`] on a full row, into `out`, without building the full candidate
/// list: a bounded heap of the `k` best so far; once it is full, blocks of the row that cannot
/// beat its worst entry are skipped. Requires `0 < k < len`.
pub(crate) fn top_k_row(logits: &[f32], counts: &TokenCounts, pen: (f32, f32, f32), k: usize, out: &mut Candidates) {
    struct Heap {
        heap: BinaryHeap<Worst>,
        k: usize,
        worst: f32,
    }
    impl RowVisitor for Heap {
        fn skip_at_or_below(&self) -> Option<f32> {
            (self.heap.len() == self.k).then_some(self.worst)
        }
        fn visit(&mut self, id: u32, logit: f32) {
            let c = Worst(Candidate { id, logit });
            if self.heap.len() < self.k {
                self.heap.push(c);
            } else if logit > self.worst {
                // ids arrive in increasing order, so an equal logit loses the tie: `>` is exact.
                if let Some(mut top) = self.heap.peek_mut() {
                    *top = c;
                }
            } else {
                return;
            }
            if self.heap.len() == self.k {
                self.worst = self.heap.peek().map_or(f32::NEG_INFINITY, |w| w.0.logit);
            }
        }
    }
    let mut h = Heap { heap: BinaryHeap::with_capacity(k), k, worst: f32::NEG_INFINITY };
    scan_row(logits, counts, pen, &mut h);
    out.items.clear();
    out.items.extend(h.heap.into_vec().into_iter().map(|w| w.0));
    out.sort_canonical();
}

/// Keeps the `k` best candidates (canonical order: highest logit, then lowest id), sorted in that
/// order. `k == 0` or `k >= len` leaves the list as it is. O(n) selection (`select_nth_unstable`)
/// plus a sort of the `k` kept; the result does not depend on the selection algorithm, since the
/// canonical order has no ties.
pub fn top_k(c: &mut Candidates, k: usize) {
    if k == 0 || k >= c.items.len() {
        return;
    }
    c.items.select_nth_unstable_by(k - 1, canonical);
    c.items.truncate(k);
    c.sort_canonical();
}

/// Relative weight `exp(logit - max)` in `f64` (the best candidate's is exactly 1).
#[inline(always)]
fn weight(logit: f32, max: f32) -> f64 {
    exp_nonpos(logit as f64 - max as f64)
}

/// Fills `out` with the weights of `items` relative to `max` and returns their fixed-order sum.
fn fill_weights(items: &[Candidate], max: f32, out: &mut Vec<f64>) -> f64 {
    out.clear();
    out.extend(items.iter().map(|x| weight(x.logit, max)));
    sum_fixed(out)
}

/// Nucleus filter: keeps the smallest canonical-order prefix (best first) whose probabilities
/// (softmax of the current logits) sum to at least `p`, and at least one candidate. The kept
/// candidates stay in the order they were in. `p >= 1` (or NaN) leaves the list as it is; `p <= 0`
/// keeps the best candidate. If every logit is `-inf` the list is left as it is.
///
/// No full sort: one pass computes each candidate's weight and adds it to a histogram over the
/// distance from the best logit (buckets of 1/32 nat); the bucket where the running mass reaches
/// `p` is the only one sorted, which fixes the last kept candidate `c*`; one more pass keeps every
/// candidate that comes before or at `c*` in canonical order. O(n) plus sorting one bucket.
pub fn top_p(c: &mut Candidates, p: f32) {
    const PER_NAT: f64 = 32.0;
    const BUCKETS: usize = 32 * 40; // the last bucket takes everything 40 nats or more below the best
    let n = c.items.len();
    if p.is_nan() || p >= 1.0 || n <= 1 {
        return;
    }
    let max = match c.max_logit() {
        Some(m) if m > f32::NEG_INFINITY => m,
        _ => return,
    };
    // Monotone in the logit: a lower bucket holds only strictly higher logits.
    let bucket = |l: f32| -> usize {
        let d = (max as f64 - l as f64) * PER_NAT;
        if d < (BUCKETS - 1) as f64 { d as usize } else { BUCKETS - 1 }
    };
    let mut weights = std::mem::take(&mut c.weights);
    let total = fill_weights(&c.items, max, &mut weights);
    let target = (p.max(0.0) as f64) * total;
    let mut mass = vec![0.0f64; BUCKETS];
    for (x, &w) in c.items.iter().zip(&weights) {
        mass[bucket(x.logit)] += w;
    }

    let mut cum = 0.0f64;
    let mut members: Vec<usize> = Vec::new(); // positions in `c.items`
    let mut last = None;
    'buckets: for (b, &m) in mass.iter().enumerate() {
        if cum + m < target {
            cum += m; // the whole bucket is kept
            continue;
        }
        members.clear();
        members.extend((0..n).filter(|&i| bucket(c.items[i].logit) == b));
        members.sort_unstable_by(|&i, &j| canonical(&c.items[i], &c.items[j]));
        for &i in &members {
            cum += weights[i];
            if cum >= target {
                last = Some(c.items[i]);
                break 'buckets;
            }
        }
        // Summed member by member, the bucket fell just short of `target`: go on to the next one.
    }
    c.weights = weights;
    // `None`: rounding kept the total just below `target`; keep everything.
    if let Some(last) = last {
        let before = c.items.len();
        c.items.retain(|y| canonical(y, &last) != Ordering::Greater);
        if c.items.len() != before {
            c.dense = false;
        }
    }
}

/// Keeps candidates whose probability is at least `p` times the best one's, i.e. whose logit is at
/// least `max_logit + ln(p)` (compared in `f64`). The best candidate always stays. `p <= 0` (or NaN)
/// leaves the list as it is; so does a list whose logits are all `-inf`. Order is kept.
pub fn min_p(c: &mut Candidates, p: f32) {
    if p.is_nan() || p <= 0.0 || c.items.is_empty() {
        return;
    }
    let max = match c.max_logit() {
        Some(m) if m > f32::NEG_INFINITY => m,
        _ => return,
    };
    let threshold = max as f64 + libm::log(p.min(1.0) as f64);
    let before = c.items.len();
    c.items.retain(|x| x.logit as f64 >= threshold);
    if c.items.len() != before {
        c.dense = false;
    }
}

/// Temperature scaling: every logit becomes `(logit - max) / t`, computed in `f64` and rounded to
/// `f32`. Subtracting the largest logit first leaves the softmax unchanged and keeps tiny
/// temperatures from overflowing distinct logits into equal infinities (the best becomes 0, the
/// rest go towards `-inf`). `t <= 0` keeps only the [`greedy`] choice (llama.cpp's "temperature
/// 0"); `t == 1` (or NaN) changes nothing. If every logit is `-inf` nothing changes. Order is kept.
pub fn temperature(c: &mut Candidates, t: f32) {
    if t.is_nan() || t == 1.0 || c.items.is_empty() {
        return;
    }
    if t <= 0.0 {
        if let Some(id) = greedy(c) {
            c.items.retain(|x| x.id == id);
            c.dense = false;
        }
        return;
    }
    let max = match c.max_logit() {
        Some(m) if m > f32::NEG_INFINITY => m as f64,
        _ => return,
    };
    let t = t as f64;
    for x in &mut c.items {
        x.logit = ((x.logit as f64 - max) / t) as f32;
    }
}

/// Probabilities of the candidates (softmax of their logits), in list order, computed in `f64`.
/// When every logit is `-inf` the distribution is uniform (the limit of equal logits).
pub fn softmax(c: &Candidates) -> Vec<f64> {
    let max = match c.max_logit() {
        None => return Vec::new(),
        Some(m) if m == f32::NEG_INFINITY => {
            return vec![1.0 / c.items.len() as f64; c.items.len()];
        }
        Some(m) => m,
    };
    let mut w = Vec::new();
    let total = fill_weights(&c.items, max, &mut w);
    w.into_iter().map(|x| x / total).collect()
}

/// The candidate with the highest logit; ties go to the lowest token id (so on a full logits row,
/// the lowest index). All `-inf` → the lowest id. `None` only for an empty list.
pub fn greedy(c: &Candidates) -> Option<u32> {
    c.items.iter().min_by(|a, b| canonical(a, b)).map(|x| x.id)
}

/// Draws one candidate from the softmax of the logits, driven by a uniform number `u` in `[0, 1)`:
/// walking the list in its order, the first candidate whose cumulative weight exceeds
/// `u * total_weight` is chosen (inverse CDF). Candidates with zero probability are never chosen.
/// `u` outside `[0, 1)` is clamped into it (NaN → 0). If every logit is `-inf`, the lowest id is
/// returned. `None` only for an empty list.
pub fn draw(c: &Candidates, u: f64) -> Option<u32> {
    draw_with(c, u, &mut Vec::new())
}

/// [`draw`] with a caller-owned buffer for the weights (no allocation once it is large enough).
///
/// The cumulative walk goes block by block (256 candidates, each block's weight summed with
/// [`sum_fixed`]) and then one candidate at a time inside the block where `u * total` falls.
pub(crate) fn draw_with(c: &Candidates, u: f64, weights: &mut Vec<f64>) -> Option<u32> {
    const BLOCK: usize = 256;
    let max = c.max_logit()?;
    if max == f32::NEG_INFINITY {
        return c.items.iter().map(|x| x.id).min();
    }
    let u = if u.is_nan() { 0.0 } else { u.clamp(0.0, 1.0 - f64::EPSILON / 2.0) };
    let total = fill_weights(&c.items, max, weights);
    let target = u * total;
    let mut cum = 0.0f64;
    for (bi, wb) in weights.chunks(BLOCK).enumerate() {
        let block = sum_fixed(wb);
        if cum + block <= target {
            cum += block;
            continue;
        }
        for (j, &w) in wb.iter().enumerate() {
            if w > 0.0 {
                cum += w;
                if cum > target {
                    return Some(c.items[bi * BLOCK + j].id);
                }
            }
        }
        // Summed one by one, the block fell just short: go on with the next one.
    }
    // `u * total` rounded up to the whole mass: the last token with nonzero probability.
    c.items.iter().zip(weights.iter()).rev().find(|&(_, &w)| w > 0.0).map(|(x, _)| x.id)
}
