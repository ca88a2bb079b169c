//! Q6_K: ggml's `block_q6_K`, 256 values in 210 bytes (6.5625 bits per weight).
//!
//! Layout: `u8 ql[128]` (low 4 bits), `u8 qh[64]` (high 2 bits), `i8 scales[16]` (one per
//! 16 values), `f16 d`. Each 128-value half `h` uses `ql[64h..64h + 64]` and `qh[32h..32h + 32]`:
//! value `32t + l` of the half (`t = 0..4`, `l = 0..32`) takes its low bits from the low nibble of
//! `ql[l]` (t = 0), `ql[l + 32]` (t = 1), or the high nibbles (t = 2, 3), and its high bits from
//! bits `2t..2t + 2` of `qh[l]`. A value is `(d·scale)·(q − 32)`, in that order, in `f32`.

use super::common::{fma_kernel, isa_kernel};
use super::kquant_common::{
    GROUP_MAX_EPS, Q8kBlock, acc_scaled, f16_at, f16_round_trip, make_qx_quants, nearest_int, put_f16, put_lane8,
    q8k_bsum, tiled_step,
};
use super::q8_k::BLOCK_BYTES as Q8K_BYTES;
use crate::{Dot, GgmlType, QK_K, TypeTraits, UnsafeDotFn};

/// Bytes per 256-element block.
pub const BLOCK_BYTES: usize = QK_K / 2 + QK_K / 4 + QK_K / 16 + 2;

const QH: usize = QK_K / 2;
const SC: usize = QH + QK_K / 4;
const D: usize = SC + QK_K / 16;

/// The Q6_K table entry.
pub const TRAITS: TypeTraits = TypeTraits {
    ty: GgmlType::Q6_K,
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

/// The 256 quants of a block, minus 32 (in `-32..32`), in value order.
#[inline(always)]
fn unpack(b: &[u8]) -> [i8; QK_K] {
    let mut a = [0i8; QK_K];
    for h in 0..2 {
        let ql = &b[64 * h..64 * h + 64];
        let qh = &b[QH + 32 * h..QH + 32 * h + 32];
        let a = &mut a[128 * h..128 * h + 128];
        for l in 0..32 {
            a[l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
            a[l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            a[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            a[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
        }
    }
    a
}

/// ggml's `dequantize_row_q6_K`, bit for bit, over the whole blocks that fit both slices.
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_at(b, D);
        let q = unpack(b);
        for (j, (y, q)) in y.chunks_exact_mut(16).zip(q.chunks_exact(16)).enumerate() {
            let dl = d * b[SC + j] as i8 as f32;
            for (y, &q) in y.iter_mut().zip(q) {
                *y = dl * q as f32;
            }
        }
    }
}

/// ggml's `quantize_row_q6_K_ref`, bit for bit: per 16-value group `make_qx_quants(nmax = 32,
/// rmse_type = 1)`, 8-bit group scales relative to the largest (`-128 / max_scale`), then the
/// quants recomputed against the stored scales.
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    for (x, y) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(BLOCK_BYTES)) {
        quantize_block(x, y);
    }
}

fn quantize_block(x: &[f32], y: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    let mut max_scale = 0f32;
    let mut max_abs_scale = 0f32;
    for (ib, s) in scales.iter_mut().enumerate() {
        let scale = make_qx_quants(32, &x[16 * ib..16 * ib + 16], &mut l[16 * ib..16 * ib + 16], 1);
        *s = scale;
        let abs_scale = scale.abs();
        if abs_scale > max_abs_scale {
            max_abs_scale = abs_scale;
            max_scale = scale;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        y.fill(0);
        return;
    }
    let iscale = -128.0 / max_scale;
    put_f16(y, D, 1.0 / iscale);
    for (ib, &s) in scales.iter().enumerate() {
        // ggml stores min(127, nearest_int(..)) into an int8_t: keep the wrap.
        y[SC + ib] = nearest_int(iscale * s).min(127) as i8 as u8;
    }
    let d_all = f16_round_trip(1.0 / iscale);
    for j in 0..16 {
        let d = d_all * y[SC + j] as i8 as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = nearest_int(x[16 * j + ii] / d).clamp(-32, 31);
            l[16 * j + ii] = (q + 32) as i8;
        }
    }
    for h in 0..2 {
        let l = &l[128 * h..128 * h + 128];
        for k in 0..32 {
            let (q1, q2, q3, q4) = (l[k] as u8, l[k + 32] as u8, l[k + 64] as u8, l[k + 96] as u8);
            y[64 * h + k] = (q1 & 0xF) | ((q3 & 0xF) << 4);
            y[64 * h + k + 32] = (q2 & 0xF) | ((q4 & 0xF) << 4);
            y[QH + 32 * h + k] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
        }
    }
}

/// ggml-cpu's portable `ggml_vec_dot_q6_K_q8_K_generic`: integer sums per 16-value group in
/// eight lanes, scaled by `d_w·d_a` per block; summation order as ggml's, so the result is
/// bit-identical to ggml's portable build (without FMA). Does not read the activation's `bsums`.
pub fn dot_scalar(w: &[u8], act: &[u8]) -> f32 {
    let mut sums = [0f32; 8];
    for (x, yb) in w.chunks_exact(BLOCK_BYTES).zip(act.chunks_exact(Q8K_BYTES)) {
        let y = Q8kBlock::new(yb);
        let a = unpack(x);
        let mut aux32 = [0i32; 8];
        for j in 0..16 {
            let scale = x[SC + j] as i8 as i32;
            acc_scaled(&mut aux32, &y.qs[16 * j..16 * j + 16], &a[16 * j..16 * j + 16], scale);
        }
        let d = f16_at(x, D) * y.d;
        for (s, &v) in sums.iter_mut().zip(&aux32) {
            *s += d * v as f32;
        }
    }
    let mut sumf = 0f32;
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
    use crate::formats::kquant_common::x86::{load128, load256, pair_scales, q8k_four};

    /// The SIMD dot product: the 6-bit quants are assembled unsigned (`0..64`) with shifts and
    /// masks, multiplied with `maddubs` and by the group scales with `I::dpwssd` (`madd` + add
    /// on AVX2, `vpdpwssd` on VNNI: the same lanes); the `−32` offset is taken off once per block
    /// as `32 · Σ scale·bsum`. Accumulates as ggml's AVX2 kernel does, so it agrees with ggml's
    /// x86 build bit for bit (given activations whose `bsums` are the sums of their quants, as
    /// [`super::super::q8_k::quantize`] writes them).
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA, F16C and `I`'s features; only the entry points that
    /// [`dot_entry_points!`] makes call it.
    #[inline(always)]
    unsafe fn dot<I: Isa>(w: &[u8], act: &[u8]) -> f32 {
        // SAFETY: the entry point this body is inlined into enables AVX2, FMA, F16C and `I`'s
        // features, and its caller checked them at run time.
        unsafe {
            let mut acc = _mm256_setzero_ps();
            for (x, y) in w.chunks_exact(BLOCK_BYTES).zip(act.chunks_exact(Q8K_BYTES)) {
                let d = f32::from_le_bytes([y[0], y[1], y[2], y[3]]) * f16_at(x, D);

                let scales = load128(x, SC);
                let scales16 = _mm256_cvtepi8_epi16(scales);
                // 32 · Σ scale·bsum, lane k holding groups 2k and 2k + 1.
                let offset = _mm256_slli_epi32(_mm256_madd_epi16(load256(y, 4 + QK_K), scales16), 5);

                let q = unsigned_quants(x);
                let sumi = _mm256_sub_epi32(block_sums::<I>(&q, scales, y), offset);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
            }
            hsum_f32x8(acc)
        }
    }

    /// The block's 256 quants assembled unsigned (`0..64`), 32 per register: register `4h + t`
    /// holds values `128h + 32t..128h + 32t + 32`. High bits are moved to bits 4–5 of each byte;
    /// the masks keep the shifts inside bytes.
    ///
    /// # Safety
    /// As [`dot`].
    #[inline(always)]
    unsafe fn unsigned_quants(x: &[u8]) -> [__m256i; 8] {
        // SAFETY: the caller's features (this function's contract).
        unsafe {
            let m3 = _mm256_set1_epi8(3);
            let m15 = _mm256_set1_epi8(15);
            let mut q = [_mm256_setzero_si256(); 8];
            for h in 0..2 {
                let ql1 = load256(x, 64 * h);
                let ql2 = load256(x, 64 * h + 32);
                let qh = load256(x, QH + 32 * h);
                let h0 = _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4);
                let h1 = _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(12)), 2);
                let h2 = _mm256_and_si256(qh, _mm256_set1_epi8(48));
                let h3 = _mm256_srli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(-64)), 2);
                q[4 * h] = _mm256_or_si256(_mm256_and_si256(ql1, m15), h0);
                q[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(ql2, m15), h1);
                q[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m15), h2);
                q[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql2, 4), m15), h3);
            }
            q
        }
    }

    /// `Σ scale · q · a` per lane (without the `−32` offset) of one block's unsigned quants `q`
    /// against the activation block `y`: `maddubs`, then the group scales with `I::dpwssd`
    /// (`madd` + add on AVX2, `vpdpwssd` on VNNI: the same lanes), in two accumulators to keep the
    /// VNNI dependency chains short. Exact.
    ///
    /// # Safety
    /// As [`dot`].
    #[inline(always)]
    unsafe fn block_sums<I: Isa>(q: &[__m256i; 8], scales: __m128i, y: &[u8]) -> __m256i {
        // SAFETY: the caller's features (this function's contract).
        unsafe {
            let mut sum_a = _mm256_setzero_si256();
            let mut sum_b = _mm256_setzero_si256();
            for h in 0..2 {
                let base = 4 + 128 * h;
                // Quant ≤ 63: a pair sum is at most 2·63·128 < 2^15, no saturation.
                let p0 = _mm256_maddubs_epi16(q[4 * h], load256(y, base));
                let p1 = _mm256_maddubs_epi16(q[4 * h + 1], load256(y, base + 32));
                let p2 = _mm256_maddubs_epi16(q[4 * h + 2], load256(y, base + 64));
                let p3 = _mm256_maddubs_epi16(q[4 * h + 3], load256(y, base + 96));
                // 32 values = groups 2g and 2g + 1 (g = 4h + t): the low 8 i16 lanes take scale 2g,
                // the high 8 scale 2g + 1.
                sum_a = I::dpwssd(sum_a, p0, pair_scales(scales, 8 * h));
                sum_b = I::dpwssd(sum_b, p1, pair_scales(scales, 8 * h + 2));
                sum_a = I::dpwssd(sum_a, p2, pair_scales(scales, 8 * h + 4));
                sum_b = I::dpwssd(sum_b, p3, pair_scales(scales, 8 * h + 6));
            }
            _mm256_add_epi32(sum_a, sum_b)
        }
    }

    /// [`super::gemm_group8x4`]'s body: per block and activation row, per group of 16 values
    /// four `dpbusd` of the unsigned codes against four activation bytes broadcast (two chains,
    /// exact), less `32 · bsum` (the codes' offset), times the group's scales; then
    /// [`tiled_step`]'s two operations with row `r` in lane `r`.
    ///
    /// # Safety
    /// As [`dot`].
    #[inline(always)]
    pub(super) unsafe fn group8x4<I: Isa>(w: &[Group8], acts: [&[u8]; 4]) -> [[f32; 8]; 4] {
        let n = acts.iter().fold(w.len(), |n, a| n.min(a.len() / Q8K_BYTES));
        // SAFETY: the entry point this body is inlined into enables AVX2, FMA, F16C and `I`'s
        // features, and its caller checked them at run time.
        unsafe {
            let mut acc = [_mm256_setzero_ps(); 4];
            for (k, g) in w[..n].iter().enumerate() {
                let dw = _mm256_loadu_ps(g.d.as_ptr());
                for i in 0..4 {
                    let y = &acts[i][k * Q8K_BYTES..(k + 1) * Q8K_BYTES];
                    let mut isum = _mm256_setzero_si256();
                    for j in 0..QK_K / 16 {
                        let mut s = [_mm256_setzero_si256(); 2];
                        for c in 4 * j..4 * j + 4 {
                            s[c % 2] = I::dpbusd(s[c % 2], load32(&g.codes[c]), q8k_four(y, c));
                        }
                        let group =
                            _mm256_sub_epi32(_mm256_add_epi32(s[0], s[1]), _mm256_set1_epi32(32 * q8k_bsum(y, j)));
                        let scales = _mm256_loadu_si256(g.scales[j].as_ptr().cast());
                        isum = _mm256_add_epi32(isum, _mm256_mullo_epi32(group, scales));
                    }
                    let yd = _mm256_set1_ps(f32::from_le_bytes([y[0], y[1], y[2], y[3]]));
                    acc[i] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(isum), dw), yd, acc[i]);
                }
            }
            let mut out = [[0f32; 8]; 4];
            for (o, a) in out.iter_mut().zip(&acc) {
                // `o` is 32 writable bytes; `storeu` has no alignment requirement.
                _mm256_storeu_ps(o.as_mut_ptr(), *a);
            }
            out
        }
    }

    dot_entry_points!(dot);
}

fma_kernel! {
    /// Q6_K · Q8_K summed as llama.cpp's tiled K-quant matrix product sums it
    /// (`ggml-cpu/tiled`, taken on x86 for batches of 8 or more activation rows): per 256-value block
    /// the exact integer dot product, times `d_w` in `f32`, then multiply-added with `d_a` into the
    /// output (the AVX-512 VNNI microkernel's epilogue as GCC contracts it). The integer part is
    /// exact, so this function and ggml agree to the bit.
    pub fn dot_tiled(w: &[u8], act: &[u8]) -> f32 = tiled_body
}

#[inline(always)]
fn tiled_body(w: &[u8], act: &[u8]) -> f32 {
    let mut acc = 0f32;
    for (x, y) in w.chunks_exact(BLOCK_BYTES).zip(act.chunks_exact(Q8K_BYTES)) {
        let yd = f32::from_le_bytes([y[0], y[1], y[2], y[3]]);
        acc = tiled_step(acc, block_int(x, y), f16_at(x, D), None, yd);
    }
    acc
}

/// Eight weight rows decoded for batch products ([`decode8`]), one block, laid out so that a
/// 32-bit lane carries one row: `codes[c][4·r + e]` is row `r`'s unsigned 6-bit code (the value
/// plus 32) of value `4c + e`, `scales[j][r]` row `r`'s scale of group `j` (16 values). One
/// `dpbusd` against four activation bytes broadcast adds four products to each of the eight rows.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Group8 {
    pub codes: [[u8; 32]; QK_K / 4],
    pub scales: [[i32; 8]; QK_K / 16],
    pub d: [f32; 8],
}

impl Default for Group8 {
    fn default() -> Self {
        Group8 { codes: [[0; 32]; QK_K / 4], scales: [[0; 8]; QK_K / 16], d: [0.0; 8] }
    }
}

/// Decodes eight rows of whole blocks into `out` (one [`Group8`] per block, as many as `out` and
/// the shortest row allow).
pub fn decode8(rows: [&[u8]; 8], out: &mut [Group8]) {
    for (r, row) in rows.iter().enumerate() {
        for (x, g) in row.chunks_exact(BLOCK_BYTES).zip(out.iter_mut()) {
            let values = unpack(x).map(|a| (a + 32) as u8);
            put_lane8(&mut g.codes, r, &values);
            for (j, s) in g.scales.iter_mut().enumerate() {
                s[r] = x[SC + j] as i8 as i32;
            }
            g.d[r] = f16_at(x, D);
        }
    }
}

isa_kernel! {
    /// A decoded group of eight weight rows ([`decode8`]) against four Q8_K activation rows:
    /// `out[i][r]` is bit for bit [`dot_tiled`]`(row r, acts[i])` — the same exact integer sum
    /// per block, then the same product by `d_w` and multiply-add by `d_a`, row `r` in lane `r`.
    pub fn gemm_group8x4(w: &[Group8], acts: [&[u8]; 4]) -> [[f32; 8]; 4] = x86::group8x4 else group_scalar(w, acts)
}

/// [`gemm_group8x4`] without SIMD: [`tiled_body`]'s arithmetic on the decoded values.
fn group_scalar(w: &[Group8], acts: [&[u8]; 4]) -> [[f32; 8]; 4] {
    let mut out = [[0f32; 8]; 4];
    for (o, act) in out.iter_mut().zip(acts) {
        for (r, o) in o.iter_mut().enumerate() {
            for (g, y) in w.iter().zip(act.chunks_exact(Q8K_BYTES)) {
                let qs = &y[4..4 + QK_K];
                let isum: i32 = (0..QK_K / 16)
                    .map(|j| {
                        let group: i32 = (16 * j..16 * j + 16)
                            .map(|v| (g.codes[v / 4][4 * r + v % 4] as i32 - 32) * qs[v] as i8 as i32)
                            .sum();
                        g.scales[j][r] * group
                    })
                    .sum();
                let yd = f32::from_le_bytes([y[0], y[1], y[2], y[3]]);
                *o = tiled_step(*o, isum, g.d[r], None, yd);
            }
        }
    }
    out
}

/// The exact integer dot product of one block with its activations: Σ scale · (q − 32) · a.
#[inline(always)]
fn block_int(x: &[u8], yb: &[u8]) -> i32 {
    unpacked_int(x, &unpack(x), yb)
}

/// [`block_int`] with the block's quants already unpacked (`a`).
#[inline(always)]
fn unpacked_int(x: &[u8], a: &[i8; QK_K], yb: &[u8]) -> i32 {
    let qs = &yb[4..4 + QK_K];
    let mut sum = 0i32;
    for j in 0..16 {
        let mut g = 0i32;
        for i in 16 * j..16 * j + 16 {
            g += a[i] as i32 * qs[i] as i8 as i32;
        }
        sum += x[SC + j] as i8 as i32 * g;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::common::f32_to_f16;

    /// d = 0.125, group scales j − 8 (−8 … 7), quant of value i = i % 64 (stored), i.e. i % 64 − 32.
    fn hand_block() -> [u8; BLOCK_BYTES] {
        let mut b = [0u8; BLOCK_BYTES];
        for i in 0..QK_K {
            let q = (i % 64) as u8;
            let (h, r) = (i / 128, i % 128);
            let (t, l) = (r / 32, r % 32);
            let ql = 64 * h + l + if t % 2 == 1 { 32 } else { 0 };
            b[ql] |= if t < 2 { q & 0xF } else { (q & 0xF) << 4 };
            b[QH + 32 * h + l] |= (q >> 4) << (2 * t);
        }
        for j in 0..16 {
            b[SC + j] = (j as i8 - 8) as u8;
        }
        b[D..D + 2].copy_from_slice(&f32_to_f16(0.125).to_le_bytes());
        b
    }

    #[test]
    fn dequantize_hand_worked() {
        let b = hand_block();
        let mut y = [0f32; QK_K];
        dequantize(&b, &mut y);
        for (i, &v) in y.iter().enumerate() {
            let want = 0.125 * (i / 16) as f32 - 1.0; // 0.125 · (j − 8)
            assert_eq!(v, want * ((i % 64) as f32 - 32.0), "i={i}");
        }
        // Value 0: scale −8·0.125 = −1, quant 0 − 32 → 32. Value 255: scale 7·0.125, quant 31.
        assert_eq!(y[0], 32.0);
        assert_eq!(y[255], 0.875 * 31.0);
    }

    #[test]
    fn dot_hand_worked() {
        // Activations d = 0.25, quants (i % 7) − 3.
        let mut a = [0u8; Q8K_BYTES];
        a[..4].copy_from_slice(&0.25f32.to_le_bytes());
        let q8 = |i: usize| (i % 7) as i32 - 3;
        for i in 0..QK_K {
            a[4 + i] = q8(i) as i8 as u8;
        }
        for j in 0..16 {
            let s: i32 = (0..16).map(|l| q8(16 * j + l)).sum();
            a[4 + QK_K + 2 * j..6 + QK_K + 2 * j].copy_from_slice(&(s as i16).to_le_bytes());
        }
        let b = hand_block();
        let want: f64 = (0..QK_K)
            .map(|i| {
                let scale = 0.125 * ((i / 16) as f64 - 8.0);
                scale * ((i % 64) as f64 - 32.0) * 0.25 * q8(i) as f64
            })
            .sum();
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
    fn quantize_hand_worked() {
        // Every 16-value group holds (k − 16)·0.5 for k = 0..16, so max |x| = 8 at k = 0 (negative). make_qx_quants gives
        // iscale = 32 / 8 = 4 → l = 2(k − 16) ∈ [−32, −2]; its rmse search keeps scale 0.25.
        // All 16 group scales equal, max_scale = 0.25 → iscale = −128/0.25 = −512, d = −1/512
        // (exact f16), 8-bit scale = nearest(−512·0.25) = −128; d·scale = 0.25 and the quants
        // are x / 0.25 = 2(k − 16) ∈ [−32, −2] exactly, so the block decodes to x exactly.
        let x: Vec<f32> = (0..QK_K).map(|i| ((i % 16) as f32 - 16.0) * 0.5).collect();
        let mut b = [0u8; BLOCK_BYTES];
        quantize(&x, &mut b);
        assert_eq!(u16::from_le_bytes([b[D], b[D + 1]]), f32_to_f16(-1.0 / 512.0));
        assert!(b[SC..D].iter().all(|&s| s as i8 == -128));
        let mut y = [0f32; QK_K];
        dequantize(&b, &mut y);
        assert_eq!(y.to_vec(), x);
    }

    #[test]
    fn quantize_zero_block() {
        let mut b = [0xAAu8; BLOCK_BYTES];
        quantize(&[0.0; QK_K], &mut b);
        assert!(b.iter().all(|&v| v == 0));
    }

    #[test]
    fn tiled_order_agrees_with_exact_sum() {
        // ggml's tiled order sums the same exact integers; in f64 the result must match the
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
        let got = dot_tiled(&w, &a) as f64;
        assert!((got - exact).abs() <= 1e-5 * exact.abs().max(1.0), "{got} vs {exact}");
    }

    #[test]
    fn decoded_groups_equal_tiled() {
        use crate::formats::q8_k;
        use crate::test_rng::quantized_rows;
        let mut next = crate::test_rng::uniform(0x66);
        for blocks in [1usize, 3] {
            let ws = quantized_rows(&mut next, 8, QK_K * blocks, 3.0, BLOCK_BYTES * blocks, quantize);
            let acts = quantized_rows(&mut next, 4, QK_K * blocks, 1.0, Q8K_BYTES * blocks, q8_k::quantize);
            let mut group = vec![Group8::default(); blocks];
            decode8(std::array::from_fn(|r| ws[r].as_slice()), &mut group);
            let got = gemm_group8x4(&group, std::array::from_fn(|i| acts[i].as_slice()));
            let scalar = group_scalar(&group, std::array::from_fn(|i| acts[i].as_slice()));
            for (i, a) in acts.iter().enumerate() {
                for (r, w) in ws.iter().enumerate() {
                    let want = dot_tiled(w, a).to_bits();
                    assert_eq!(got[i][r].to_bits(), want, "{blocks} blocks, activation {i}, row {r}");
                    assert_eq!(scalar[i][r].to_bits(), want, "scalar: {blocks} blocks, activation {i}, row {r}");
                }
            }
        }
    }
}
