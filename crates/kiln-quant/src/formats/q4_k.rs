//! Q4_K: ggml's `block_q4_K`, 256 values in 144 bytes (4.5 bits per weight).
//!
//! Layout: `f16 d`, `f16 dmin`, `u8 scales[12]` (eight 6-bit scales and eight 6-bit mins, packed
//! as `get_scale_min_k4` reads them), `u8 qs[128]` (4-bit quants). Sub-block `j` (32 values) has
//! scale `d·sc[j]` and offset `dmin·m[j]`; sub-blocks `2i` and `2i + 1` share `qs[32i..32i + 32]`,
//! low nibbles then high nibbles. A value is `(d·sc)·q − dmin·m`, in that order, in `f32`.

use super::common::isa_kernel;
use super::kquant_common::{
    Q8kBlock, acc_scaled, f16_at, f16_round_trip, make_qkx2_quants, nearest_int, pack_scales_mins_k4, put_f16,
    put_lane8, q8k_bsum, scales_mins_k4, tiled_step,
};
use super::q8_k::BLOCK_BYTES as Q8K_BYTES;
use crate::{Dot, GgmlType, QK_K, TypeTraits, UnsafeDotFn};

/// Bytes per 256-element block.
pub const BLOCK_BYTES: usize = 2 + 2 + 12 + QK_K / 2;

/// The Q4_K table entry.
pub const TRAITS: TypeTraits = TypeTraits {
    ty: GgmlType::Q4_K,
    dequantize,
    quantize: Some(quantize),
    from_float: None,
    vec_dot_type: GgmlType::Q8_K,
    vec_dot: Some(Dot { scalar: dot_scalar, avx2: AVX2, vnni: VNNI }),
};

#[cfg(target_arch = "x86_64")]
const AVX2: Option<UnsafeDotFn> = Some(dot_avx2);
#[cfg(not(target_arch = "x86_64"))]
const AVX2: Option<UnsafeDotFn> = None;
#[cfg(target_arch = "x86_64")]
const VNNI: Option<UnsafeDotFn> = Some(dot_vnni);
#[cfg(not(target_arch = "x86_64"))]
const VNNI: Option<UnsafeDotFn> = None;

/// ggml's `dequantize_row_q4_K`, bit for bit, over the whole blocks that fit both slices.
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_at(b, 0);
        let dmin = f16_at(b, 2);
        let (sc, m) = scales_mins_k4(&b[4..16]);
        for (i, (q, y)) in b[16..].chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
            let (d1, m1) = (d * sc[2 * i] as f32, dmin * m[2 * i] as f32);
            let (d2, m2) = (d * sc[2 * i + 1] as f32, dmin * m[2 * i + 1] as f32);
            let (lo, hi) = y.split_at_mut(32);
            for l in 0..32 {
                lo[l] = d1 * (q[l] & 0xF) as f32 - m1;
                hi[l] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }
}

/// ggml's `quantize_row_q4_K_ref`, bit for bit: per 32-value sub-block a weighted
/// `make_qkx2_quants` search (weights `rms(x) + |x|`, 21 candidate scales), then 6-bit scales and
/// mins relative to the block's largest, then the quants recomputed against the stored scales.
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    for (x, y) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(BLOCK_BYTES)) {
        quantize_block(x, y);
    }
}

fn quantize_block(x: &[f32], y: &mut [u8]) {
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 32];
    let mut weights = [0f32; 32];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let mut max_scale = 0f32;
    let mut max_min = 0f32;
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (s, m) = make_qkx2_quants(15, xs, &weights, &mut l[32 * j..32 * j + 32], &mut laux, -1.0, 0.1, 20, false);
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..8 {
        // ggml stores nearest_int's result in a uint8_t before clamping: keep the wrap.
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    let packed = pack_scales_mins_k4(&ls, &lm);
    put_f16(y, 0, max_scale / 63.0);
    put_f16(y, 2, max_min / 63.0);
    y[4..16].copy_from_slice(&packed);
    let d_all = f16_round_trip(max_scale / 63.0);
    let dmin_all = f16_round_trip(max_min / 63.0);
    for j in 0..8 {
        let d = d_all * ls[j] as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin_all * lm[j] as f32;
        for ii in 0..32 {
            let q = nearest_int((x[32 * j + ii] + dm) / d);
            l[32 * j + ii] = q.clamp(0, 15) as u8;
        }
    }
    for (i, q) in y[16..].chunks_exact_mut(32).enumerate() {
        for (k, b) in q.iter_mut().enumerate() {
            *b = l[64 * i + k] | (l[64 * i + k + 32] << 4);
        }
    }
}

/// ggml-cpu's portable `ggml_vec_dot_q4_K_q8_K_generic`: integer sums per sub-block in eight
/// lanes, scaled by `d_w·d_a` per block; the min terms from the activation's `bsums`. Summation
/// order as ggml's, so the result is bit-identical to ggml's portable build (without FMA).
pub fn dot_scalar(w: &[u8], act: &[u8]) -> f32 {
    let mut sums = [0f32; 8];
    let mut sumf = 0f32;
    for (x, yb) in w.chunks_exact(BLOCK_BYTES).zip(act.chunks_exact(Q8K_BYTES)) {
        let y = Q8kBlock::new(yb);
        let (scales, mins) = scales_mins_k4(&x[4..16]);
        let mut sumi = 0i32;
        for (j, &b) in y.bsums.iter().enumerate() {
            sumi += b as i32 * mins[j / 2] as i32;
        }
        let mut a = [0i8; QK_K];
        for (q4, a) in x[16..].chunks_exact(32).zip(a.chunks_exact_mut(64)) {
            for l in 0..32 {
                a[l] = (q4[l] & 0xF) as i8;
                a[l + 32] = (q4[l] >> 4) as i8;
            }
        }
        let mut aux32 = [0i32; 8];
        for (j, &sc) in scales.iter().enumerate() {
            acc_scaled(&mut aux32, &y.qs[32 * j..32 * j + 32], &a[32 * j..32 * j + 32], sc as i32);
        }
        let d = f16_at(x, 0) * y.d;
        for (s, &a) in sums.iter_mut().zip(&aux32) {
            *s += d * a as f32;
        }
        let dmin = f16_at(x, 2) * y.d;
        sumf -= dmin * sumi as f32;
    }
    for s in sums {
        sumf += s;
    }
    sumf
}

#[cfg(target_arch = "x86_64")]
pub use x86::{dot_avx2, dot_vnni};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::*;
    use crate::formats::common::dot_entry_points;
    use crate::formats::common::x86::Isa;
    use crate::formats::common::x86::{hsum_f32x8, load32};
    use crate::formats::kquant_common::x86::{hsum_f32x4, load256, q8k_four};

    /// The SIMD dot product: per 64 values one 32-byte load of nibbles, two `maddubs` (u4 × i8
    /// → i16 pairs) and two `I::dpwssd` by the sub-block scales (`madd` + add on AVX2, one
    /// `vpdpwssd` on VNNI: the same lanes); the mins enter once per block through the
    /// activation's `bsums`. Accumulates as ggml's AVX2 kernel does (eight float lanes for the
    /// scales, four for the mins), so it agrees with ggml's x86 build bit for bit.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA, F16C and `I`'s features; only the entry points that
    /// [`dot_entry_points!`] makes call it.
    #[inline(always)]
    unsafe fn dot<I: Isa>(w: &[u8], act: &[u8]) -> f32 {
        // SAFETY: the entry point this body is inlined into enables AVX2, FMA, F16C and `I`'s
        // features, and its caller checked them at run time.
        unsafe {
            let m4 = _mm256_set1_epi8(0xF);
            let mut acc = _mm256_setzero_ps();
            let mut acc_m = _mm_setzero_ps();
            for (x, y) in w.chunks_exact(BLOCK_BYTES).zip(act.chunks_exact(Q8K_BYTES)) {
                let yd = f32::from_le_bytes([y[0], y[1], y[2], y[3]]);
                let d = yd * f16_at(x, 0);
                let dmin = -yd * f16_at(x, 2);
                let (sc, mn) = scales_mins_k4(&x[4..16]);

                // Min terms: Σ_j m[j] · (sum of the 32 activations of sub-block j).
                let mins = _mm_cvtepu8_epi16(_mm_set_epi64x(0, i64::from_le_bytes(mn)));
                let bsums = load256(y, 4 + QK_K);
                let q8s = _mm_hadd_epi16(_mm256_castsi256_si128(bsums), _mm256_extracti128_si256(bsums, 1));
                let prod = _mm_madd_epi16(mins, q8s);
                acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m);

                // Two integer accumulators (low and high nibbles) keep the VNNI dependency chains short.
                let mut sum_l = _mm256_setzero_si256();
                let mut sum_h = _mm256_setzero_si256();
                for i in 0..4 {
                    let q4 = load256(x, 16 + 32 * i);
                    let q4l = _mm256_and_si256(q4, m4);
                    let q4h = _mm256_and_si256(_mm256_srli_epi16(q4, 4), m4);
                    let q8l = load256(y, 4 + 64 * i);
                    let q8h = load256(y, 4 + 64 * i + 32);
                    // Nibble ≤ 15, so a pair sum is at most 2·15·128: no i16 saturation.
                    let pl = _mm256_maddubs_epi16(q4l, q8l);
                    let ph = _mm256_maddubs_epi16(q4h, q8h);
                    sum_l = I::dpwssd(sum_l, pl, _mm256_set1_epi16(sc[2 * i] as i16));
                    sum_h = I::dpwssd(sum_h, ph, _mm256_set1_epi16(sc[2 * i + 1] as i16));
                }
                let sumi = _mm256_add_epi32(sum_l, sum_h);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
            }
            hsum_f32x8(acc) + hsum_f32x4(acc_m)
        }
    }

    /// [`super::gemm_group8x4`]'s body: per block and activation row, `d_w·d_y` and
    /// `dmin_w·d_y` for the eight rows (one multiply each); per pair of sub-blocks, 16 `dpbusd`
    /// of the codes against four activation bytes broadcast (four independent chains, exact),
    /// the two sub-blocks' sums times their scales, and the minimum term; then the GEMM kernel's
    /// two fused multiply-adds, each row in its lane.
    ///
    /// # Safety
    /// As [`dot`].
    #[inline(always)]
    pub(super) unsafe fn group8x4<I: Isa>(w: &[Group8], acts: [&[u8]; 4]) -> [[f32; 8]; 4] {
        let n = acts.iter().fold(w.len(), |n, a| n.min(a.len() / Q8K_BYTES));
        // SAFETY: the entry point this body is inlined into enables AVX2, FMA, F16C and `I`'s
        // features, and its caller checked them at run time.
        unsafe {
            let load8 = |v: &[i32; 8]| _mm256_loadu_si256(v.as_ptr().cast());
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut acc_min = [_mm256_setzero_ps(); 4];
            for (k, g) in w[..n].iter().enumerate() {
                let dw = _mm256_loadu_ps(g.d.as_ptr());
                let dmw = _mm256_loadu_ps(g.dmin.as_ptr());
                for i in 0..4 {
                    let y = &acts[i][k * Q8K_BYTES..(k + 1) * Q8K_BYTES];
                    let yd = _mm256_set1_ps(f32::from_le_bytes([y[0], y[1], y[2], y[3]]));
                    let (d, dmin) = (_mm256_mul_ps(dw, yd), _mm256_mul_ps(dmw, yd));
                    let bsum = |j: usize| q8k_bsum(y, j);
                    for p in 0..4 {
                        // Chains 0, 1: the low sub-block (2p); 2, 3: the high one (2p + 1).
                        let mut s = [_mm256_setzero_si256(); 4];
                        for c in 0..4 {
                            for (h, s) in s.chunks_exact_mut(2).enumerate() {
                                for (e, s) in s.iter_mut().enumerate() {
                                    let cc = 16 * p + 8 * h + 2 * c + e;
                                    *s = I::dpbusd(*s, load32(&g.codes[cc]), q8k_four(y, cc));
                                }
                            }
                        }
                        let (lo, hi) = (_mm256_add_epi32(s[0], s[1]), _mm256_add_epi32(s[2], s[3]));
                        let pair = _mm256_add_epi32(
                            _mm256_mullo_epi32(lo, load8(&g.scales[2 * p])),
                            _mm256_mullo_epi32(hi, load8(&g.scales[2 * p + 1])),
                        );
                        let (b01, b23) = (bsum(4 * p) + bsum(4 * p + 1), bsum(4 * p + 2) + bsum(4 * p + 3));
                        let min = _mm256_add_epi32(
                            _mm256_mullo_epi32(load8(&g.mins[2 * p]), _mm256_set1_epi32(b01)),
                            _mm256_mullo_epi32(load8(&g.mins[2 * p + 1]), _mm256_set1_epi32(b23)),
                        );
                        acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(pair), d, acc[i]);
                        acc_min[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(min), dmin, acc_min[i]);
                    }
                }
            }
            let mut out = [[0f32; 8]; 4];
            for (o, (a, m)) in out.iter_mut().zip(acc.iter().zip(&acc_min)) {
                // `o` is 32 writable bytes; `storeu` has no alignment requirement.
                _mm256_storeu_ps(o.as_mut_ptr(), _mm256_sub_ps(*a, *m));
            }
            out
        }
    }

    dot_entry_points!(dot);
}

/// Q4_K · Q8_K summed as llama.cpp's CPU backend sums it for *repacked* weights. On x86 with
/// AVX2, ggml-cpu interleaves the blocks of eight Q4_K rows (`block_q4_Kx8`, used when the number
/// of rows is a multiple of 8) and multiplies them with its own GEMV and GEMM kernels
/// (`ggml_gemv_q4_K_8x8_q8_K`, `ggml_gemm_q4_K_8x8_q8_K`), which round differently from the
/// plain dot product: each output is one lane, `Σ d_w·d_a·(scales · quants)` and
/// `Σ dmin_w·d_a·(mins · bsums)` are accumulated separately with fused multiply-adds and
/// subtracted at the end. The GEMV kernel (single activation rows) adds one term per 256-value
/// block (`per_pair == false`); the GEMM kernel (activation rows in groups of four) one per 64
/// values (`per_pair == true`). The integer parts are exact, so this function and ggml agree to
/// the bit.
pub fn dot_repacked(w: &[u8], act: &[u8], per_pair: bool) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2_fma() {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { x86_orders::dot_repacked(w, act, per_pair) };
    }
    repacked_body(w, act, per_pair, pair_ints)
}

/// Eight weight rows decoded for batch products ([`decode8`]), one block, laid out so that a
/// 32-bit lane carries one row: `codes[c][4·r + e]` is row `r`'s nibble of value `4c + e`, and
/// `scales[j][r]`, `mins[j][r]` are row `r`'s 6-bit scale and minimum of sub-block `j`. One
/// `dpbusd` against four activation bytes broadcast then adds four products to each of the
/// eight rows, with no horizontal sums.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Group8 {
    pub codes: [[u8; 32]; QK_K / 4],
    pub scales: [[i32; 8]; 8],
    pub mins: [[i32; 8]; 8],
    pub d: [f32; 8],
    pub dmin: [f32; 8],
}

impl Default for Group8 {
    fn default() -> Self {
        Group8 { codes: [[0; 32]; QK_K / 4], scales: [[0; 8]; 8], mins: [[0; 8]; 8], d: [0.0; 8], dmin: [0.0; 8] }
    }
}

/// Decodes eight rows of whole blocks into `out` (one [`Group8`] per block, as many as `out` and
/// the shortest row allow).
pub fn decode8(rows: [&[u8]; 8], out: &mut [Group8]) {
    for (r, row) in rows.iter().enumerate() {
        for (x, g) in row.chunks_exact(BLOCK_BYTES).zip(out.iter_mut()) {
            let (sc, mn) = scales_mins_k4(&x[4..16]);
            for j in 0..8 {
                g.scales[j][r] = sc[j] as i32;
                g.mins[j][r] = mn[j] as i32;
            }
            (g.d[r], g.dmin[r]) = (f16_at(x, 0), f16_at(x, 2));
            // The values in order (pair p: low nibbles for its first 32, high for the rest), then
            // each run of four into its entry's lane r.
            let mut values = [0u8; QK_K];
            for (q, v) in x[16..].chunks_exact(32).zip(values.chunks_exact_mut(64)) {
                let (lo, hi) = v.split_at_mut(32);
                for ((q, lo), hi) in q.iter().zip(lo).zip(hi) {
                    (*lo, *hi) = (q & 0xF, q >> 4);
                }
            }
            put_lane8(&mut g.codes, r, &values);
        }
    }
}

isa_kernel! {
    /// A decoded group of eight weight rows ([`decode8`]) against four Q8_K activation rows:
    /// `out[i][r]` is bit for bit [`dot_repacked`]`(row r, acts[i], true)` (ggml's repacked GEMM
    /// order) — the same exact pair sums and minimum terms, the same products and fused
    /// multiply-adds, with row `r`'s chain in lane `r`.
    pub fn gemm_group8x4(w: &[Group8], acts: [&[u8]; 4]) -> [[f32; 8]; 4] = x86::group8x4 else group_scalar(w, acts)
}

/// [`gemm_group8x4`] without SIMD: [`repacked_body`]'s arithmetic on the decoded values.
fn group_scalar(w: &[Group8], acts: [&[u8]; 4]) -> [[f32; 8]; 4] {
    let mut out = [[0f32; 8]; 4];
    for (o, act) in out.iter_mut().zip(acts) {
        for (r, o) in o.iter_mut().enumerate() {
            let (mut acc, mut acc_min) = (0f32, 0f32);
            for (g, yb) in w.iter().zip(act.chunks_exact(Q8K_BYTES)) {
                let y = Q8kBlock::new(yb);
                let (d, dmin) = (g.d[r] * y.d, g.dmin[r] * y.d);
                for p in 0..4 {
                    let sub = |j: usize| {
                        (0..32).map(|l| g.codes[(32 * j + l) / 4][4 * r + l % 4] as i32 * y.q(32 * j + l)).sum::<i32>()
                    };
                    let pair = g.scales[2 * p][r] * sub(2 * p) + g.scales[2 * p + 1][r] * sub(2 * p + 1);
                    let b = |j: usize| y.bsums[j] as i32;
                    let min = g.mins[2 * p][r] * (b(4 * p) + b(4 * p + 1))
                        + g.mins[2 * p + 1][r] * (b(4 * p + 2) + b(4 * p + 3));
                    acc = (pair as f32).mul_add(d, acc);
                    acc_min = (min as f32).mul_add(dmin, acc_min);
                }
            }
            *o = acc - acc_min;
        }
    }
    out
}

/// Q4_K · Q8_K summed as llama.cpp's tiled K-quant matrix product sums it
/// (`ggml-cpu/tiled`, taken on x86 for batches of 8 or more activation rows when the weights are
/// not repacked): per 256-value block `(Σ scales·dots)·d_w − dmin_w·(Σ mins·bsums)` (one fused
/// multiply-add), then multiply-added with `d_a` into the output. Exact integer parts, so this
/// function and ggml agree to the bit.
pub fn dot_tiled(w: &[u8], act: &[u8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2_fma() {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { x86_orders::dot_tiled(w, act) };
    }
    tiled_body(w, act, pair_ints)
}

type PairInts = fn(&[u8], &[u8]) -> ([i32; 4], [i32; 4]);

#[inline(always)]
fn repacked_body(w: &[u8], act: &[u8], per_pair: bool, ints: PairInts) -> f32 {
    let mut acc = 0f32;
    let mut acc_min = 0f32;
    for (x, y) in w.chunks_exact(BLOCK_BYTES).zip(act.chunks_exact(Q8K_BYTES)) {
        let yd = f32::from_le_bytes([y[0], y[1], y[2], y[3]]);
        let (d, dmin) = (f16_at(x, 0) * yd, f16_at(x, 2) * yd);
        let (pairs, mins) = ints(x, y);
        if per_pair {
            for (p, m) in pairs.iter().zip(&mins) {
                acc = (*p as f32).mul_add(d, acc);
                acc_min = (*m as f32).mul_add(dmin, acc_min);
            }
        } else {
            acc = (pairs.iter().sum::<i32>() as f32).mul_add(d, acc);
            acc_min = (mins.iter().sum::<i32>() as f32).mul_add(dmin, acc_min);
        }
    }
    acc - acc_min
}

#[inline(always)]
fn tiled_body(w: &[u8], act: &[u8], ints: PairInts) -> f32 {
    let mut acc = 0f32;
    for (x, y) in w.chunks_exact(BLOCK_BYTES).zip(act.chunks_exact(Q8K_BYTES)) {
        let yd = f32::from_le_bytes([y[0], y[1], y[2], y[3]]);
        let (pairs, mins) = ints(x, y);
        let mins = Some((mins.iter().sum::<i32>(), f16_at(x, 2)));
        acc = tiled_step(acc, pairs.iter().sum(), f16_at(x, 0), mins, yd);
    }
    acc
}

/// The exact integer parts of one block's dot product, per pair `i` of 32-value sub-blocks:
/// `sc[2i]·Σ q·a + sc[2i+1]·Σ q·a` over its 64 values, and `m[2i]·Σ a + m[2i+1]·Σ a`.
#[inline(always)]
fn pair_ints(x: &[u8], yb: &[u8]) -> ([i32; 4], [i32; 4]) {
    let y = Q8kBlock::new(yb);
    let (sc, mn) = scales_mins_k4(&x[4..16]);
    let pairs = std::array::from_fn(|i| {
        let q4 = &x[16 + 32 * i..16 + 32 * i + 32];
        let (mut lo, mut hi) = (0i32, 0i32);
        for (l, q) in q4.iter().enumerate() {
            lo += (q & 0xF) as i32 * y.q(64 * i + l);
            hi += (q >> 4) as i32 * y.q(64 * i + 32 + l);
        }
        sc[2 * i] as i32 * lo + sc[2 * i + 1] as i32 * hi
    });
    (pairs, pair_mins(&y, &mn))
}

#[inline(always)]
fn pair_mins(y: &Q8kBlock<'_>, mn: &[u8; 8]) -> [i32; 4] {
    let b = |j: usize| y.bsums[j] as i32;
    std::array::from_fn(|i| {
        mn[2 * i] as i32 * (b(4 * i) + b(4 * i + 1)) + mn[2 * i + 1] as i32 * (b(4 * i + 2) + b(4 * i + 3))
    })
}

/// [`dot_repacked`] and [`dot_tiled`] compiled with AVX2 + FMA: the fused multiply-adds are
/// instructions (not `fmaf` calls) and the integer parts use `maddubs` / `madd`.
#[cfg(target_arch = "x86_64")]
mod x86_orders {
    use std::arch::x86_64::*;

    use super::*;
    use crate::formats::kquant_common::x86::{hsum_i32, load256};

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn dot_repacked(w: &[u8], act: &[u8], per_pair: bool) -> f32 {
        repacked_body(w, act, per_pair, pair_ints_avx2)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn dot_tiled(w: &[u8], act: &[u8]) -> f32 {
        tiled_body(w, act, pair_ints_avx2)
    }

    /// [`pair_ints`] with AVX2 (`maddubs`, `madd` by the scales, a horizontal sum). Only called
    /// from the functions above, which require AVX2.
    fn pair_ints_avx2(x: &[u8], yb: &[u8]) -> ([i32; 4], [i32; 4]) {
        // SAFETY: only reached through `dot_repacked` / `dot_tiled` here, whose callers checked
        // AVX2 and FMA at run time.
        unsafe { pair_ints_avx2_inner(x, yb) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn pair_ints_avx2_inner(x: &[u8], yb: &[u8]) -> ([i32; 4], [i32; 4]) {
        let y = Q8kBlock::new(yb);
        let (sc, mn) = scales_mins_k4(&x[4..16]);
        let m4 = _mm256_set1_epi8(0xF);
        let mut pairs = [0i32; 4];
        for (i, p) in pairs.iter_mut().enumerate() {
            let q4 = load256(x, 16 + 32 * i);
            let q4l = _mm256_and_si256(q4, m4);
            let q4h = _mm256_and_si256(_mm256_srli_epi16(q4, 4), m4);
            // Nibble ≤ 15, so a pair sum is at most 2·15·128: no i16 saturation.
            let pl = _mm256_madd_epi16(
                _mm256_set1_epi16(sc[2 * i] as i16),
                _mm256_maddubs_epi16(q4l, load256(yb, 4 + 64 * i)),
            );
            let ph = _mm256_madd_epi16(
                _mm256_set1_epi16(sc[2 * i + 1] as i16),
                _mm256_maddubs_epi16(q4h, load256(yb, 4 + 64 * i + 32)),
            );
            *p = hsum_i32(_mm256_add_epi32(pl, ph));
        }
        (pairs, pair_mins(&y, &mn))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::common::f32_to_f16;

    /// A block with d = 0.5, dmin = 0.25, scales (1, 2, …, 8), mins (8, 7, …, 1); sub-block j's
    /// quants are `(l + j) % 16`.
    fn hand_block() -> [u8; BLOCK_BYTES] {
        let mut b = [0u8; BLOCK_BYTES];
        b[0..2].copy_from_slice(&f32_to_f16(0.5).to_le_bytes());
        b[2..4].copy_from_slice(&f32_to_f16(0.25).to_le_bytes());
        // Scales and mins below 16, so the packing is: bytes 0–3 scales 1–4, bytes 4–7 mins 8–5,
        // bytes 8–11 = scale (low nibble) | min << 4 for sub-blocks 4–7.
        b[4..16].copy_from_slice(&[1, 2, 3, 4, 8, 7, 6, 5, 5 | 4 << 4, 6 | 3 << 4, 7 | 2 << 4, 8 | 1 << 4]);
        for i in 0..4 {
            for l in 0..32 {
                let lo = (l + 2 * i) % 16;
                let hi = (l + 2 * i + 1) % 16;
                b[16 + 32 * i + l] = (lo | hi << 4) as u8;
            }
        }
        b
    }

    #[test]
    fn dequantize_hand_worked() {
        let b = hand_block();
        let mut y = [0f32; QK_K];
        dequantize(&b, &mut y);
        for j in 0..8 {
            let scale = 0.5 * (j + 1) as f32;
            let min = 0.25 * (8 - j) as f32;
            for l in 0..32 {
                let q = ((l + j) % 16) as f32;
                assert_eq!(y[32 * j + l], scale * q - min, "j={j} l={l}");
            }
        }
        // Spot values: sub-block 0, l = 0 → 0.5·0 − 2 = −2; sub-block 7, l = 8 → 4·15 − 0.25.
        assert_eq!(y[0], -2.0);
        assert_eq!(y[7 * 32 + 8], 59.75);
    }

    #[test]
    fn dot_hand_worked() {
        // Activations: d = 0.5, all quants 2 except the first of each sub-block, which is −3.
        let mut a = [0u8; Q8K_BYTES];
        a[..4].copy_from_slice(&0.5f32.to_le_bytes());
        for i in 0..QK_K {
            a[4 + i] = if i % 32 == 0 { -3i8 as u8 } else { 2 };
        }
        for j in 0..16 {
            let s: i16 = if j % 2 == 0 { -3 + 15 * 2 } else { 16 * 2 };
            a[4 + QK_K + 2 * j..6 + QK_K + 2 * j].copy_from_slice(&s.to_le_bytes());
        }
        let b = hand_block();
        // By hand: Σ_j Σ_l (scale_j·q − min_j)·act, act = 1.0 (q8 2 · 0.5) or −1.5 at l = 0.
        let mut want = 0f64;
        for j in 0..8 {
            let scale = 0.5 * (j + 1) as f64;
            let min = 0.25 * (8 - j) as f64;
            for l in 0..32 {
                let act = if l == 0 { -1.5 } else { 1.0 };
                want += (scale * ((l + j) % 16) as f64 - min) * act;
            }
        }
        assert_eq!(dot_scalar(&b, &a) as f64, want);
        #[cfg(target_arch = "x86_64")]
        if crate::simd::has_avx2_fma() {
            // SAFETY: AVX2, FMA and F16C were detected.
            assert_eq!(unsafe { dot_avx2(&b, &a) } as f64, want);
        }
        #[cfg(target_arch = "x86_64")]
        if crate::simd::has_avx512_vnni() {
            // SAFETY: AVX2, FMA, F16C and AVX-512 F/VL/BW/VNNI were detected.
            assert_eq!(unsafe { dot_vnni(&b, &a) } as f64, want);
        } else {
            eprintln!("dot_vnni not tested: CPU lacks AVX-512 VNNI (or KILN_NO_VNNI is set)");
        }
    }

    #[test]
    fn quantize_constant_block_hand_worked() {
        // x = 59.0625 = 945/16 everywhere: each sub-block has min 0 (clamped), scale x/15 =
        // 3.9375; the block scale is d = 3.9375/63 = 1/16 (exact in f16), every 6-bit scale is 63,
        // every min 0 and every quant 15, which decodes to exactly 59.0625.
        let x = [59.0625f32; QK_K];
        let mut b = [0u8; BLOCK_BYTES];
        quantize(&x, &mut b);
        assert_eq!(&b[0..4], &[0x00, 0x2C, 0x00, 0x00]); // d = 0x2C00 = 1/16, dmin = 0
        assert_eq!(&b[4..16], &[0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0x0F, 0x0F, 0x0F, 0x0F]);
        assert!(b[16..].iter().all(|&q| q == 0xFF));
        let mut y = [0f32; QK_K];
        dequantize(&b, &mut y);
        assert!(y.iter().all(|&v| v == 59.0625));
    }

    #[test]
    fn quantize_zero_block() {
        let mut b = [0xAAu8; BLOCK_BYTES];
        quantize(&[0.0; QK_K], &mut b);
        assert!(b.iter().all(|&v| v == 0));
    }

    #[test]
    fn repacked_orders_agree_with_exact_sum() {
        // Both ggml orders compute the same exact integer sums; in f64 they must match the
        // dequantized dot product to f32 rounding.
        let w: Vec<u8> = (0..2).flat_map(|_| hand_block()).collect();
        let x: Vec<f32> = (0..2 * QK_K).map(|i| ((i * 37 % 101) as f32 - 50.0) / 13.0).collect();
        let mut a = vec![0u8; 2 * Q8K_BYTES];
        super::super::q8_k::quantize(&x, &mut a);
        let mut wf = vec![0f32; 2 * QK_K];
        dequantize(&w, &mut wf);
        let mut af = vec![0f32; 2 * QK_K];
        super::super::q8_k::dequantize(&a, &mut af);
        let exact: f64 = wf.iter().zip(&af).map(|(p, q)| *p as f64 * *q as f64).sum();
        for per_pair in [false, true] {
            let got = dot_repacked(&w, &a, per_pair) as f64;
            assert!((got - exact).abs() <= 1e-5 * exact.abs().max(1.0), "{per_pair}: {got} vs {exact}");
        }
    }

    #[test]
    fn decoded_groups_equal_repacked_gemm() {
        use crate::formats::q8_k;
        use crate::test_rng::quantized_rows;
        let mut next = crate::test_rng::uniform(0x4b);
        for blocks in [1usize, 3] {
            let ws = quantized_rows(&mut next, 8, QK_K * blocks, 3.0, BLOCK_BYTES * blocks, quantize);
            let mut acts = quantized_rows(&mut next, 4, QK_K * blocks, 1.0, Q8K_BYTES * blocks, q8_k::quantize);
            // −128 activation bytes (bsums left as they are: the kernels read them, not recompute).
            acts[2][4..4 + 40].fill(0x80);
            let mut group = vec![Group8::default(); blocks];
            decode8(std::array::from_fn(|r| ws[r].as_slice()), &mut group);
            let got = gemm_group8x4(&group, std::array::from_fn(|i| acts[i].as_slice()));
            let scalar = group_scalar(&group, std::array::from_fn(|i| acts[i].as_slice()));
            for (i, a) in acts.iter().enumerate() {
                for (r, w) in ws.iter().enumerate() {
                    let want = dot_repacked(w, a, true).to_bits();
                    assert_eq!(got[i][r].to_bits(), want, "{blocks} blocks, activation {i}, row {r}");
                    assert_eq!(scalar[i][r].to_bits(), want, "scalar: {blocks} blocks, activation {i}, row {r}");
                }
            }
        }
    }
}
