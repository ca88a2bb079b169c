//! Causal attention over the paged f16 KV cache.
//!
//! The numerics follow llama.cpp's CPU flash-attention kernels (ggml-cpu `ops.cpp`) to the bit,
//! because llama.cpp is the reference this path is tested against and, in a deep network, any
//! last-bit difference grows (an f16 rounding that flips changes an activation by 2^-11, which
//! flips activation codes of the next quantized product, and so on, to a few percent of the
//! logit range):
//! - batches of fewer than 64 rows (decode, short prompts), `ggml_..._f16_one_chunk`: the query
//!   is rounded to f16, scores are f16·f16 dot products summed in the order of ggml's AVX-512
//!   `ggml_vec_dot_f16` ([`dot_f16_lanes`]), the softmax is online (running max and sum in f32,
//!   libm `expf`, the sum update fused as GCC compiles it), and the weighted sum of V
//!   accumulates **in f16** (`VKQ16`), rescaled whenever the maximum grows;
//! - a single-row batch over 512 or more (padded) cache cells: ggml's split-KV path, the same
//!   kernel over two chunks of the cells (llama.cpp at 2 threads, as the fixtures were made),
//!   merged in f32;
//! - batches of 64 rows or more, `ggml_..._tiled`: f32 query, keys and values widened from f16,
//!   tiles of 64 keys with fused multiply-add chains, ggml's vector `expf` for the weights.
//!
//! K and V are stored in f16 (llama.cpp's default cache type).

use half::f16;
use half::slice::HalfFloatSliceExt;

use super::{CpuAct, CpuKv, Pool};
use crate::backend::{AttnParams, RowKv};

/// Batches at least this long take ggml's tiled (all-f32) path.
const TILED_ROWS: usize = 64;
/// llama.cpp pads the number of cache cells it attends over to a multiple of this.
const KV_PAD: usize = 256;
/// From this many (padded) cells on, ggml splits a single row's keys across threads.
const SPLIT_KV_MIN: usize = 512;
/// The number of chunks of that split: the thread count of the reference fixtures (`-t 2`).
const SPLIT_KV_CHUNKS: usize = 2;

/// Whether a call with `rows` rows takes ggml's tiled all-f32 path (the CUDA backend follows the
/// same choice).
pub(crate) fn tiled(invariant: bool, rows: usize) -> bool {
    !invariant && rows >= TILED_ROWS
}

/// ggml splits the keys of a single-row batch across its threads once its view of the cache
/// (positions padded to 256) reaches 512 cells; kiln follows the split of the reference's
/// 2 threads, so that its rounding matches llama.cpp at `-t 2`. The chunk length, for a row at
/// `pos`, where there is a split.
pub(crate) fn split_chunk(pos: usize) -> Option<usize> {
    let n_kv = (pos + 1).next_multiple_of(KV_PAD).max(KV_PAD);
    (n_kv >= SPLIT_KV_MIN).then(|| n_kv.div_ceil(SPLIT_KV_CHUNKS))
}

#[allow(clippy::too_many_arguments)]
pub(super) fn attention(
    pool: &Pool,
    invariant: bool,
    kv: &CpuKv,
    layer: usize,
    rows: &[RowKv<'_>],
    q: &CpuAct,
    p: &AttnParams,
    sinks: Option<&[f32]>,
    out: &mut CpuAct,
) {
    let group = p.n_head / p.n_head_kv;
    let (hd, hdv) = (p.head_dim, p.head_dim_v);
    let (kw, vw) = (p.n_head_kv * hd, p.n_head_kv * hdv);
    let (ks, vs) = (&kv.k[layer], &kv.v[layer]);
    // Batch-invariant mode: every row as a one-row batch computes it.
    let tiled = tiled(invariant, rows.len());
    let single_split = |r: &RowKv<'_>| split_chunk(r.pos);
    let split_chunk = match rows {
        [r] => single_split(r),
        _ => None,
    };
    // The tiled path reads every key and value of a sequence once per query row and head; widen
    // them from f16 once per call instead (exact, so the results do not change).
    let widened: Vec<Widened> = if tiled { widen(kv, layer, rows, p) } else { Vec::new() };
    // With AVX-512, the tiled path takes the heads that share a KV head together, up to four at
    // a time: one task per (row, KV head).
    #[cfg(target_arch = "x86_64")]
    if tiled && hdv.is_multiple_of(64) && group > 1 && kiln_quant::simd::has_avx512f() {
        pool.chunks_mut(&mut out.data, group * hdv, |task, o| {
            let (i, kvh) = (task / p.n_head_kv, task % p.n_head_kv);
            let r = &rows[i];
            let lo = p.window.map_or(0, |w| (r.pos + 1).saturating_sub(w));
            let wd = Widened::of(&widened, r);
            let (tile, value) = (|t0| wd.tile(kvh, t0), |t| wd.value(kvh, t));
            let q = |h: usize| &q.data[i * q.cols + h * hd..i * q.cols + (h + 1) * hd];
            let sink = |h: usize| sinks.map(|s| s[h]);
            let mut h = kvh * group;
            for o in o.chunks_mut(4 * hdv) {
                let range = lo..=r.pos;
                let n = o.len() / hdv;
                macro_rules! heads {
                    ($n:literal) => {
                        // SAFETY: AVX-512F, AVX2 and FMA were detected at run time.
                        unsafe {
                            attend_f32_heads::<$n>(
                                std::array::from_fn(|j| q(h + j)),
                                range,
                                tile,
                                value,
                                p.scale,
                                std::array::from_fn(|j| sink(h + j)),
                                o,
                            )
                        }
                    };
                }
                match n {
                    4 => heads!(4),
                    3 => heads!(3),
                    2 => heads!(2),
                    _ => heads!(1),
                }
                h += n;
            }
        });
        return;
    }
    // One task per (row, head).
    pool.chunks_mut(&mut out.data, hdv, |task, o| {
        let (i, h) = (task / p.n_head, task % p.n_head);
        let r = &rows[i];
        let kvh = h / group;
        let sink = sinks.map(|s| s[h]);
        let lo = match p.window {
            Some(w) => (r.pos + 1).saturating_sub(w),
            None => 0,
        };
        let qsrc = &q.data[i * q.cols + h * hd..i * q.cols + (h + 1) * hd];
        let key = |t: usize| {
            let slot = kv.slot(r, t);
            &ks[slot * kw + kvh * hd..slot * kw + (kvh + 1) * hd]
        };
        let value = |t: usize| {
            let slot = kv.slot(r, t);
            &vs[slot * vw + kvh * hdv..slot * vw + (kvh + 1) * hdv]
        };
        if tiled {
            let wd = Widened::of(&widened, r);
            attend_f32(qsrc, lo..=r.pos, |t0| wd.tile(kvh, t0), |t| wd.value(kvh, t), p.scale, sink, o);
        } else {
            let split = if invariant { single_split(r) } else { split_chunk };
            attend_f16(qsrc, lo..=r.pos, split, key, value, p.scale, sink, o);
        }
    });
}

/// Keys per tile of ggml's tiled path (`GGML_FA_TILE_KV`); tiles start at multiples of it.
const KV_TILE: usize = 64;

/// One sequence's keys and values widened to f32 for the tiled path: keys as transposed tiles,
/// `kt[kv head][tile][d][t - tile start]` (zero past the last position), values as rows,
/// `v[position][kv head · head_dim_v]`.
struct Widened<'a> {
    blocks: &'a [u32],
    n_tiles: usize,
    /// `head_dim`, `head_dim_v`, and a value row's width (`n_head_kv · head_dim_v`).
    hd: usize,
    hdv: usize,
    vw: usize,
    kt: Vec<f32>,
    v: Vec<f32>,
}

impl Widened<'_> {
    /// The widened sequence of row `r`.
    fn of<'w>(all: &'w [Self], r: &RowKv<'_>) -> &'w Self {
        all.iter().find(|w| std::ptr::eq(w.blocks, r.blocks)).expect("every row's sequence is widened")
    }

    /// KV head `kvh`'s transposed key tile that starts at position `t0` (`head_dim · KV_TILE`).
    fn tile(&self, kvh: usize, t0: usize) -> &[f32] {
        let base = (kvh * self.n_tiles + t0 / KV_TILE) * self.hd * KV_TILE;
        &self.kt[base..base + self.hd * KV_TILE]
    }

    /// KV head `kvh`'s value row at position `t`.
    fn value(&self, kvh: usize, t: usize) -> &[f32] {
        &self.v[t * self.vw + kvh * self.hdv..t * self.vw + (kvh + 1) * self.hdv]
    }
}

fn widen<'a>(kv: &CpuKv, layer: usize, rows: &[RowKv<'a>], p: &AttnParams) -> Vec<Widened<'a>> {
    let (hd, hdv) = (p.head_dim, p.head_dim_v);
    let (kw, vw) = (p.n_head_kv * hd, p.n_head_kv * hdv);
    // Per sequence: a row of it, and the positions its rows see (lo..n).
    let mut seqs: Vec<(RowKv<'a>, usize, usize)> = Vec::new();
    for r in rows {
        let lo = p.window.map_or(0, |w| (r.pos + 1).saturating_sub(w));
        match seqs.iter_mut().find(|(s, _, _)| std::ptr::eq(s.blocks, r.blocks)) {
            Some((_, l, n)) => (*l, *n) = ((*l).min(lo), (*n).max(r.pos + 1)),
            None => seqs.push((*r, lo, r.pos + 1)),
        }
    }
    seqs.into_iter()
        .map(|(r, lo, n)| {
            let blocks = r.blocks;
            let n_tiles = n.div_ceil(KV_TILE);
            let mut kt = vec![0f32; p.n_head_kv * n_tiles * hd * KV_TILE];
            let mut v = vec![0f32; n * vw];
            let mut krow = vec![0f32; kw];
            for t in lo..n {
                let slot = kv.slot(&r, t);
                kv.k[layer][slot * kw..(slot + 1) * kw].convert_to_f32_slice(&mut krow);
                kv.v[layer][slot * vw..(slot + 1) * vw].convert_to_f32_slice(&mut v[t * vw..(t + 1) * vw]);
                for h in 0..p.n_head_kv {
                    let base = (h * n_tiles + t / KV_TILE) * hd * KV_TILE + t % KV_TILE;
                    for d in 0..hd {
                        kt[base + d * KV_TILE] = krow[h * hd + d];
                    }
                }
            }
            Widened { blocks, n_tiles, hd, hdv, vw, kt, v }
        })
        .collect()
}

/// All-f32 attention for one query head, as ggml's tiled kernel computes it
/// (`ggml_compute_forward_flash_attn_ext_tiled`): the keys in tiles of 64 positions; per tile,
/// scores as fused multiply-add chains over the head dimension, the running maximum and sum
/// updated once (`expf`), the tile's weights from ggml's vector `expf` summed 16 at a time into
/// an f64, and the values accumulated by fused multiply-add chains over the tile's positions.
fn attend_f32<'a>(
    q: &[f32],
    range: std::ops::RangeInclusive<usize>,
    tile: impl Fn(usize) -> &'a [f32],
    value: impl Fn(usize) -> &'a [f32],
    scale: f32,
    sink: Option<f32>,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if kiln_quant::simd::has_avx2_fma() {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { attend_f32_fma(q, range, tile, value, scale, sink, out) };
    }
    attend_f32_body(q, range, tile, value, scale, sink, out)
}

/// [`attend_f32`] compiled with FMA: `mul_add` becomes an instruction instead of an `fmaf` call,
/// and the chains over the tile's keys vectorize.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn attend_f32_fma<'a>(
    q: &[f32],
    range: std::ops::RangeInclusive<usize>,
    tile: impl Fn(usize) -> &'a [f32],
    value: impl Fn(usize) -> &'a [f32],
    scale: f32,
    sink: Option<f32>,
    out: &mut [f32],
) {
    attend_f32_body(q, range, tile, value, scale, sink, out)
}

#[inline(always)]
fn attend_f32_body<'a>(
    q: &[f32],
    range: std::ops::RangeInclusive<usize>,
    tile: impl Fn(usize) -> &'a [f32],
    value: impl Fn(usize) -> &'a [f32],
    scale: f32,
    sink: Option<f32>,
    out: &mut [f32],
) {
    let (lo, hi) = (*range.start(), *range.end());
    let mut acc = vec![0f32; out.len()];
    let mut w = [0f32; KV_TILE];
    let (mut m, mut sum) = (f32::NEG_INFINITY, 0f32);
    for t0 in (lo / KV_TILE * KV_TILE..=hi).step_by(KV_TILE) {
        let valid = t0.max(lo)..(t0 + KV_TILE).min(hi + 1);
        // The tile's keys transposed, `kt[d][t]`, so the 64 chains run side by side (as ggml's GEMM).
        let kt = tile(t0);
        let mut s = [0f32; KV_TILE];
        for (d, qd) in q.iter().enumerate() {
            for (s, k) in s.iter_mut().zip(&kt[d * KV_TILE..(d + 1) * KV_TILE]) {
                *s = qd.mul_add(*k, *s);
            }
        }
        tile_weights(&s, t0, &valid, scale, &mut m, &mut sum, &mut acc, &mut w);
        for t in valid {
            let p = w[t - t0];
            acc.iter_mut().zip(value(t)).for_each(|(a, v)| *a = p.mul_add(*v, *a));
        }
    }
    finish_f32(sink, m, sum, &mut acc, out);
}

/// The tiled path's softmax step for one head and tile: the scores `s` scaled (masked outside
/// `valid`), the running maximum `m` and sum `sum` updated (the accumulator `acc` rescaled when
/// the maximum grows), and the tile's weights into `w`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn tile_weights(
    s: &[f32; KV_TILE],
    t0: usize,
    valid: &std::ops::Range<usize>,
    scale: f32,
    m: &mut f32,
    sum: &mut f32,
    acc: &mut [f32],
    w: &mut [f32; KV_TILE],
) {
    for (t, (w, s)) in w.iter_mut().zip(s).enumerate() {
        *w = if valid.contains(&(t0 + t)) { s * scale } else { f32::NEG_INFINITY };
    }
    let tile_max = w.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
    let m_new = m.max(tile_max);
    if m_new > *m {
        let ms = (*m - m_new).exp();
        acc.iter_mut().for_each(|v| *v *= ms);
        *sum *= ms;
    }
    *m = m_new;
    // `ggml_vec_soft_max_f32`: 16 lanes at a time, each group reduced as `_mm512_reduce_add_ps`.
    let mut tile_sum = 0f64;
    for lanes in w.as_chunks_mut::<16>().0 {
        for s in lanes.iter_mut() {
            *s = super::unary::expf_v(*s - *m);
        }
        tile_sum += reduce16(lanes) as f64;
    }
    *sum = (*sum as f64 + tile_sum) as f32;
}

/// The tiled path's end for one head: the sink folded in, the accumulator normalized into `out`.
#[inline(always)]
fn finish_f32(sink: Option<f32>, mut m: f32, mut sum: f32, acc: &mut [f32], out: &mut [f32]) {
    if let Some(s) = sink {
        // GCC fuses the tiled kernel's `S*ms + vs` (but not the one-chunk kernel's).
        apply_sink(s, &mut m, &mut sum, acc, true);
    }
    let inv = 1.0 / sum;
    for (o, a) in out.iter_mut().zip(acc.iter()) {
        *o = a * inv;
    }
}

/// [`attend_f32`] for `N` query heads that share a KV head (grouped-query attention) at once, on
/// 512-bit registers: each tile of keys and each value row is loaded once for the `N` heads, and
/// the values are accumulated 64 dimensions at a time in registers across a tile's positions
/// (`head_dim_v` must be a multiple of 64). Every head's arithmetic is `attend_f32`'s, element
/// by element in the same order — the same bits.
///
/// # Safety
/// The CPU must support AVX-512F, AVX2 and FMA ([`kiln_quant::simd::has_avx512f`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
// Indexed loops: `[h][j]` names a head's register, as the layout above describes.
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn attend_f32_heads<'a, const N: usize>(
    qs: [&[f32]; N],
    range: std::ops::RangeInclusive<usize>,
    tile: impl Fn(usize) -> &'a [f32],
    value: impl Fn(usize) -> &'a [f32],
    scale: f32,
    sinks: [Option<f32>; N],
    outs: &mut [f32],
) {
    use std::arch::x86_64::*;
    let hdv = outs.len() / N;
    assert!(hdv.is_multiple_of(64), "values in runs of 64 dimensions");
    let hd = qs[0].len();
    let (lo, hi) = (*range.start(), *range.end());
    let mut acc = vec![0f32; N * hdv];
    let mut w = [[0f32; KV_TILE]; N];
    let (mut m, mut sum) = ([f32::NEG_INFINITY; N], [0f32; N]);
    for t0 in (lo / KV_TILE * KV_TILE..=hi).step_by(KV_TILE) {
        let valid = t0.max(lo)..(t0 + KV_TILE).min(hi + 1);
        let kt = &tile(t0)[..hd * KV_TILE];
        // Scores: head h's 64 chains in s[h] (four registers), one tile row of keys per step.
        let mut s = [[_mm512_setzero_ps(); 4]; N];
        for d in 0..hd {
            let row = &kt[d * KV_TILE..(d + 1) * KV_TILE];
            let mut k = [_mm512_setzero_ps(); 4];
            for (j, k) in k.iter_mut().enumerate() {
                // SAFETY: `row` has 64 floats; j · 16 + 16 ≤ 64.
                *k = unsafe { _mm512_loadu_ps(row.as_ptr().add(16 * j)) };
            }
            for h in 0..N {
                let qd = _mm512_set1_ps(qs[h][d]);
                for j in 0..4 {
                    s[h][j] = _mm512_fmadd_ps(qd, k[j], s[h][j]);
                }
            }
        }
        for h in 0..N {
            let mut sh = [0f32; KV_TILE];
            for j in 0..4 {
                // SAFETY: `sh` has 64 floats; j · 16 + 16 ≤ 64.
                unsafe { _mm512_storeu_ps(sh.as_mut_ptr().add(16 * j), s[h][j]) };
            }
            let acc = &mut acc[h * hdv..(h + 1) * hdv];
            tile_weights(&sh, t0, &valid, scale, &mut m[h], &mut sum[h], acc, &mut w[h]);
        }
        // Values: 64 dimensions of every head in registers while the tile's positions pass.
        for c in (0..hdv).step_by(64) {
            let mut a = [[_mm512_setzero_ps(); 4]; N];
            for h in 0..N {
                for j in 0..4 {
                    // SAFETY: h · hdv + c + 64 ≤ N · hdv = acc.len().
                    a[h][j] = unsafe { _mm512_loadu_ps(acc.as_ptr().add(h * hdv + c + 16 * j)) };
                }
            }
            for t in valid.clone() {
                let v = &value(t)[c..c + 64];
                let mut vv = [_mm512_setzero_ps(); 4];
                for (j, vv) in vv.iter_mut().enumerate() {
                    // SAFETY: `v` has 64 floats.
                    *vv = unsafe { _mm512_loadu_ps(v.as_ptr().add(16 * j)) };
                }
                for h in 0..N {
                    let p = _mm512_set1_ps(w[h][t - t0]);
                    for j in 0..4 {
                        a[h][j] = _mm512_fmadd_ps(p, vv[j], a[h][j]);
                    }
                }
            }
            for h in 0..N {
                for j in 0..4 {
                    // SAFETY: as the loads above.
                    unsafe { _mm512_storeu_ps(acc.as_mut_ptr().add(h * hdv + c + 16 * j), a[h][j]) };
                }
            }
        }
    }
    for (h, (acc, out)) in acc.chunks_exact_mut(hdv).zip(outs.chunks_exact_mut(hdv)).enumerate() {
        finish_f32(sinks[h], m[h], sum[h], acc, out);
    }
}

/// f16 attention for one query head (ggml's one-chunk path): f16 query, online softmax, values
/// accumulated in an f16 vector.
///
/// A single-row batch over a long context (`split_kv`) takes ggml's split-KV path instead: the
/// positions are cut into chunks, each chunk is attended as above (its own maximum, sum and f16
/// accumulator), and the chunks are merged in f32 (`ggml_flash_attn_ext_reduce_partials`).
#[allow(clippy::too_many_arguments)]
fn attend_f16<'a>(
    q: &[f32],
    range: std::ops::RangeInclusive<usize>,
    chunk: Option<usize>,
    key: impl Fn(usize) -> &'a [f16],
    value: impl Fn(usize) -> &'a [f16],
    scale: f32,
    sink: Option<f32>,
    out: &mut [f32],
) {
    let mut q16 = vec![f16::ZERO; q.len()];
    q16.convert_from_f32_slice(q);
    let mut qf = vec![0f32; q.len()];
    q16.convert_to_f32_slice(&mut qf);
    let mut acc = vec![f16::ZERO; out.len()];
    let mut acc32 = vec![0f32; out.len()];
    let (lo, hi) = (*range.start(), *range.end());
    let Some(chunk) = chunk else {
        let (mut m, mut sum) = attend_f16_chunk(&qf, lo..=hi, &key, &value, scale, &mut acc);
        acc.convert_to_f32_slice(&mut acc32);
        if let Some(s) = sink {
            apply_sink(s, &mut m, &mut sum, &mut acc32, false);
        }
        let inv = 1.0 / sum;
        for (o, a) in out.iter_mut().zip(&acc32) {
            *o = a * inv;
        }
        return;
    };
    let (mut m, mut sum) = (f32::NEG_INFINITY, 0f32);
    out.iter_mut().for_each(|o| *o = 0.0);
    for c0 in (0..=hi).step_by(chunk) {
        let part = c0.max(lo)..=(c0 + chunk - 1).min(hi);
        // As ggml, the sink joins the first chunk (even one the window leaves empty).
        let sink = if c0 == 0 { sink } else { None };
        if part.is_empty() && sink.is_none() {
            continue;
        }
        acc.fill(f16::ZERO);
        let (mut mc, mut sc) = if part.is_empty() {
            (f32::NEG_INFINITY, 0.0)
        } else {
            attend_f16_chunk(&qf, part, &key, &value, scale, &mut acc)
        };
        acc.convert_to_f32_slice(&mut acc32);
        if let Some(s) = sink {
            apply_sink(s, &mut mc, &mut sc, &mut acc32, false);
        }
        // As GCC compiles ggml's merge: the first product of `a*b + c*d` fused with the sum.
        let m_new = m.max(mc);
        let (s_old, s_new) = ((m - m_new).exp(), (mc - m_new).exp());
        for (o, a) in out.iter_mut().zip(&acc32) {
            *o = o.mul_add(s_old, a * s_new);
        }
        sum = sum.mul_add(s_old, sc * s_new);
        m = m_new;
    }
    let inv = 1.0 / sum;
    out.iter_mut().for_each(|o| *o *= inv);
}

/// Folds an attention sink (a logit with no value) into a finished softmax, as ggml's flash
/// attention does after its last key: running maximum `m`, sum `sum`, unnormalized output `acc`.
/// `fused`: whether the sum's `S*ms + vs` is one fused multiply-add, as GCC compiles it in the
/// tiled kernel; in the one-chunk kernel it stays a multiply and an add (both checked bit for bit
/// against llama.cpp's attention output).
fn apply_sink(s: f32, m: &mut f32, sum: &mut f32, acc: &mut [f32], fused: bool) {
    let (mut ms, mut vs) = (1.0f32, 1.0f32);
    if s > *m {
        ms = (*m - s).exp();
        *m = s;
        acc.iter_mut().for_each(|a| *a *= ms);
    } else {
        vs = (s - *m).exp();
    }
    *sum = if fused { sum.mul_add(ms, vs) } else { *sum * ms + vs };
}

/// ggml's `ggml_compute_forward_flash_attn_ext_f16_one_chunk` for one query head over `range`:
/// accumulates the unnormalized weighted values into `acc` (f16) and returns the running maximum
/// and sum of weights.
fn attend_f16_chunk<'a>(
    qf: &[f32],
    range: std::ops::RangeInclusive<usize>,
    key: &impl Fn(usize) -> &'a [f16],
    value: &impl Fn(usize) -> &'a [f16],
    scale: f32,
    acc: &mut [f16],
) -> (f32, f32) {
    let mut kt = vec![0f32; qf.len()];
    let (mut m, mut sum) = (f32::NEG_INFINITY, 0f32);
    for t in range {
        key(t).convert_to_f32_slice(&mut kt);
        let s = dot_f16_lanes(qf, &kt) * scale;
        let (mut ms, mut vs) = (1.0f32, 1.0f32);
        if s > m {
            ms = (m - s).exp();
            m = s;
            scale_f16(acc, ms);
        } else {
            vs = (s - m).exp();
        }
        mad_f16(acc, value(t), vs);
        // GCC contracts `S*ms + vs` into a fused multiply-add in ggml.
        sum = sum.mul_add(ms, vs);
    }
    (m, sum)
}

/// Dot product of two rows of f16 values (given widened to f32), summed in the order of ggml's
/// `ggml_vec_dot_f16` on x86 with AVX-512: four accumulators of 16 lanes over each 64-element step,
/// accumulators combined as (0+2)+(1+3), the 16 lanes by halves (8, 4, then 2 and 1), the tail
/// (length not a multiple of 64) added in f64. Products of two halves are exact in f32, so only the
/// order of the additions matters; it is followed because the f16 accumulation of the values
/// turns a last-bit difference in a score into a visible difference in the output.
fn dot_f16_lanes(x: &[f32], y: &[f32]) -> f32 {
    const LANES: usize = 16;
    const STEP: usize = 4 * LANES;
    let np = x.len() / STEP * STEP;
    let mut acc = [[0f32; LANES]; 4];
    for (xs, ys) in x[..np].chunks_exact(STEP).zip(y[..np].chunks_exact(STEP)) {
        for (j, a) in acc.iter_mut().enumerate() {
            for (l, a) in a.iter_mut().enumerate() {
                *a += xs[j * LANES + l] * ys[j * LANES + l];
            }
        }
    }
    let mut v = [0f32; LANES];
    for l in 0..LANES {
        v[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    }
    let mut sum = reduce16(&v) as f64;
    for (a, b) in x[np..].iter().zip(&y[np..]) {
        sum += (a * b) as f64;
    }
    sum as f32
}

/// The sum of 16 lanes in the order of GCC's `_mm512_reduce_add_ps`: halves of 8, then of 4,
/// then lanes (0+2) + (1+3).
fn reduce16(v: &[f32; 16]) -> f32 {
    let mut h8 = [0f32; 8];
    for i in 0..8 {
        h8[i] = v[i + 8] + v[i];
    }
    let mut h4 = [0f32; 4];
    for i in 0..4 {
        h4[i] = h8[i + 4] + h8[i];
    }
    (h4[0] + h4[2]) + (h4[1] + h4[3])
}

/// `y = f16(f32(y) * s)`, as `ggml_vec_scale_f16`.
fn scale_f16(y: &mut [f16], s: f32) {
    for v in y.iter_mut() {
        *v = f16::from_f32(v.to_f32() * s);
    }
}

/// `y = f16(f32(y) + f32(x) * s)` with a fused multiply-add, as `ggml_vec_mad_f16`.
fn mad_f16(y: &mut [f16], x: &[f16], s: f32) {
    #[cfg(target_arch = "x86_64")]
    if kiln_quant::simd::has_avx2_fma() && y.len().is_multiple_of(8) {
        // SAFETY: AVX2, FMA and F16C were detected at run time.
        unsafe { mad_f16_avx2(y, x, s) };
        return;
    }
    for (y, x) in y.iter_mut().zip(x) {
        *y = f16::from_f32(x.to_f32().mul_add(s, y.to_f32()));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn mad_f16_avx2(y: &mut [f16], x: &[f16], s: f32) {
    use std::arch::x86_64::*;
    let sv = _mm256_set1_ps(s);
    for (yc, xc) in y.chunks_exact_mut(8).zip(x.chunks_exact(8)) {
        // SAFETY: both chunks hold 8 halves (16 bytes); unaligned loads and stores.
        unsafe {
            let yv = _mm256_cvtph_ps(_mm_loadu_si128(yc.as_ptr() as *const __m128i));
            let xv = _mm256_cvtph_ps(_mm_loadu_si128(xc.as_ptr() as *const __m128i));
            let r = _mm256_fmadd_ps(xv, sv, yv);
            _mm_storeu_si128(yc.as_mut_ptr() as *mut __m128i, _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(r));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_f16_accumulate_matches_scalar_definition() {
        // y + x*s rounded once to f16, compared with an f64 computation rounded to f16.
        let y: Vec<f16> = (0..64).map(|i| f16::from_f32((i as f32 - 30.0) * 0.37)).collect();
        let x: Vec<f16> = (0..64).map(|i| f16::from_f32((i as f32 * 0.11).sin() * 3.0)).collect();
        let s = 0.8137f32;
        let mut got = y.clone();
        mad_f16(&mut got, &x, s);
        for i in 0..64 {
            let exact = y[i].to_f64() + x[i].to_f64() * s as f64;
            assert_eq!(got[i], f16::from_f64(exact), "element {i}");
        }
    }

    #[test]
    fn single_position_returns_its_value() {
        // With one visible position the softmax weight is exactly 1.
        let k = [f16::from_f32(0.5); 8];
        let v: Vec<f16> = (0..8).map(|i| f16::from_f32(i as f32 - 3.5)).collect();
        let q = vec![0.25f32; 8];
        // The tiled path takes the keys as a transposed f32 tile `[d][t]` and f32 values.
        let mut tile = vec![0f32; 8 * KV_TILE];
        (0..8).for_each(|d| tile[d * KV_TILE] = 0.5);
        let v32: Vec<f32> = v.iter().map(|x| x.to_f32()).collect();
        for tiled in [false, true] {
            let mut out = vec![0f32; 8];
            if tiled {
                attend_f32(&q, 0..=0, |_| &tile[..], |_| &v32[..], 0.125, None, &mut out);
            } else {
                attend_f16(&q, 0..=0, None, |_| &k[..], |_| &v[..], 0.125, None, &mut out);
            }
            assert_eq!(out, (0..8).map(|i| i as f32 - 3.5).collect::<Vec<_>>());
        }
    }

    #[test]
    fn two_positions_match_a_hand_computed_softmax() {
        // Scores 1·2·0.5 = 1 and 0: weights e/(e+1), 1/(e+1).
        let k0 = vec![f16::from_f32(2.0); 1];
        let k1 = vec![f16::from_f32(0.0); 1];
        let v0 = vec![f16::from_f32(1.0); 1];
        let v1 = vec![f16::from_f32(-1.0); 1];
        let keys = [k0, k1];
        let vals = [v0, v1];
        let e = std::f64::consts::E;
        let want = (e - 1.0) / (e + 1.0);
        let mut out = vec![0f32; 1];
        let mut tile = vec![0f32; KV_TILE];
        tile[0] = 2.0;
        let vals32 = [[1.0f32], [-1.0]];
        attend_f32(&[1.0], 0..=1, |_| &tile[..], |t| &vals32[t][..], 0.5, None, &mut out);
        assert!((out[0] as f64 - want).abs() < 1e-6, "{}", out[0]);
        attend_f16(&[1.0], 0..=1, None, |t| &keys[t][..], |t| &vals[t][..], 0.5, None, &mut out);
        assert!((out[0] as f64 - want).abs() < 1e-3, "{}", out[0]);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn grouped_heads_equal_one_head_at_a_time() {
        if !kiln_quant::simd::has_avx512f() {
            eprintln!("attend_f32_heads not tested: this CPU lacks AVX-512F (or KILN_NO_VNNI is set)");
            return;
        }
        let mut state = 7u64;
        let mut next = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as f32 / (1u64 << 31) as f32 * 2.0 - 1.0
        };
        let (hd, hdv, n) = (40usize, 128usize, 150usize);
        let tiles = n.div_ceil(KV_TILE);
        let kt: Vec<f32> = (0..tiles * hd * KV_TILE).map(|_| next() * 2.0).collect();
        let v: Vec<f32> = (0..n * hdv).map(|_| next()).collect();
        let qs: Vec<Vec<f32>> = (0..3).map(|_| (0..hd).map(|_| next() * 3.0).collect()).collect();
        let tile = |t0: usize| &kt[t0 / KV_TILE * hd * KV_TILE..(t0 / KV_TILE + 1) * hd * KV_TILE];
        let value = |t: usize| &v[t * hdv..(t + 1) * hdv];
        // Windows that start inside a tile, end inside one, and a sink on one head.
        for range in [0..=n - 1, 37..=n - 1, 70..=100] {
            let sinks = [None, Some(1.5), None];
            let mut got = vec![0f32; 3 * hdv];
            // SAFETY: AVX-512F, AVX2 and FMA were detected above.
            unsafe { attend_f32_heads([&qs[0][..], &qs[1], &qs[2]], range.clone(), tile, value, 0.3, sinks, &mut got) };
            for h in 0..3 {
                let mut want = vec![0f32; hdv];
                attend_f32(&qs[h], range.clone(), tile, value, 0.3, sinks[h], &mut want);
                let got = &got[h * hdv..(h + 1) * hdv];
                assert_eq!(
                    got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    want.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    "head {h}, {range:?}"
                );
            }
        }
    }
}
