//! Pieces shared by the K-quant formats (Q2_K … Q6_K, Q8_K): half-precision loads and stores with
//! ggml's semantics, the 6-bit scale packings, ggml's `nearest_int`, and the scale searches of ggml's
//! reference quantizers (`make_qx_quants`, `make_q3_quants`, `make_qkx2_quants`).
//!
//! Everything here follows `ggml-quants.c` operation by operation: each float expression is
//! evaluated in `f32`, left to right, without fused multiply-adds, as ggml-base is compiled for
//! baseline x86-64. That is what makes the quantizers bit-exact.

use crate::QK_K;

use super::common::f32_to_f16;

/// ggml's `GROUP_MAX_EPS`: groups whose largest magnitude is below this quantize to zero.
pub(crate) const GROUP_MAX_EPS: f32 = 1e-15;

/// Reads the little-endian IEEE half at `b[off..off + 2]` as `f32` (exact).
#[inline(always)]
pub(crate) fn f16_at(b: &[u8], off: usize) -> f32 {
    super::common::f16_le([b[off], b[off + 1]])
}

/// Reads the little-endian `f32` at `b[off..off + 4]`.
#[inline(always)]
pub(crate) fn f32_at(b: &[u8], off: usize) -> f32 {
    f32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Writes `x` as a little-endian half (ggml's rounding) at `b[off..off + 2]`.
#[inline]
pub(crate) fn put_f16(b: &mut [u8], off: usize, x: f32) {
    b[off..off + 2].copy_from_slice(&f32_to_f16(x).to_le_bytes());
}

/// A half's value after it went through storage: what a dequantizer will read back.
#[inline]
pub(crate) fn f16_round_trip(x: f32) -> f32 {
    half::f16::from_bits(f32_to_f16(x)).to_f32()
}

/// ggml's `nearest_int`: round half to even through the `1.5·2^23` trick. Exact for
/// `|f| <= 4194303`; outside that range it returns what ggml's bit manipulation returns (ggml only
/// asserts in debug builds), NaN gives 0. Never panics.
#[inline(always)]
pub(crate) fn nearest_int(f: f32) -> i32 {
    let val = f + 12_582_912.0;
    (val.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` (0..8) from the 12 packed bytes of
/// a Q4_K / Q5_K block. Bytes 0–3 hold scales 0–3 (low 6 bits), bytes 4–7 mins 0–3; bytes 8–11
/// hold the low nibbles of scales 4–7 (low half) and mins 4–7 (high half), whose top two bits sit
/// in the top two bits of bytes 0–3 (scales) and 4–7 (mins). (The kernels use the equivalent
/// [`scales_mins_k4`]; this byte-wise form is the reference its test compares with.)
#[cfg(test)]
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// All eight scales and mins of a Q4_K / Q5_K block, `(scales, mins)`, unpacked with 32-bit
/// masks: bytes 0–3 hold scales 0–3 (low 6 bits) and bytes 4–7 mins 0–3; bytes 8–11 hold the low
/// nibbles of scales 4–7 (low half) and mins 4–7 (high half), whose top two bits sit in the top
/// two bits of bytes 0–3 (scales) and 4–7 (mins), as ggml's `get_scale_min_k4` reads them.
#[inline(always)]
pub(crate) fn scales_mins_k4(q: &[u8]) -> ([u8; 8], [u8; 8]) {
    const KMASK1: u32 = 0x3f3f_3f3f;
    const KMASK2: u32 = 0x0f0f_0f0f;
    const KMASK3: u32 = 0x0303_0303;
    let w = |i: usize| u32::from_le_bytes([q[4 * i], q[4 * i + 1], q[4 * i + 2], q[4 * i + 3]]);
    let (u0, u1, u2) = (w(0), w(1), w(2));
    let sc_lo = u0 & KMASK1;
    let sc_hi = (u2 & KMASK2) | (((u0 >> 6) & KMASK3) << 4);
    let m_lo = u1 & KMASK1;
    let m_hi = ((u2 >> 4) & KMASK2) | (((u1 >> 6) & KMASK3) << 4);
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    sc[..4].copy_from_slice(&sc_lo.to_le_bytes());
    sc[4..].copy_from_slice(&sc_hi.to_le_bytes());
    m[..4].copy_from_slice(&m_lo.to_le_bytes());
    m[4..].copy_from_slice(&m_hi.to_le_bytes());
    (sc, m)
}

/// Packs eight 6-bit scales and mins (each `<= 63`) the way [`scale_min_k4`] reads them.
pub(crate) fn pack_scales_mins_k4(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..8 {
        if j < 4 {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4);
            s[j - 4] |= (ls[j] >> 4) << 6;
            s[j] |= (lm[j] >> 4) << 6;
        }
    }
    s
}

/// The sixteen signed scales of a Q3_K block (6-bit values stored with a +32 bias, already minus
/// 32). Bytes 0–7 hold the low nibbles of scales 0–7 (low halves) and 8–15 (high halves); byte
/// `8 + j % 4` holds the top two bits of scale `j` at bit `2·(j / 4)`.
#[inline(always)]
pub(crate) fn q3_scales(s: &[u8]) -> [i8; 16] {
    const KMASK1: u32 = 0x0303_0303;
    const KMASK2: u32 = 0x0f0f_0f0f;
    let w = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
    let (a0, a1, hi) = (w(0), w(1), w(2));
    let words = [
        (a0 & KMASK2) | ((hi & KMASK1) << 4),
        (a1 & KMASK2) | (((hi >> 2) & KMASK1) << 4),
        ((a0 >> 4) & KMASK2) | (((hi >> 4) & KMASK1) << 4),
        ((a1 >> 4) & KMASK2) | (((hi >> 6) & KMASK1) << 4),
    ];
    let mut out = [0i8; 16];
    for (o, w) in out.chunks_exact_mut(4).zip(words) {
        for (o, b) in o.iter_mut().zip(w.to_le_bytes()) {
            *o = b as i8 - 32;
        }
    }
    out
}

/// ggml's `make_qx_quants` for the reference quantizers (no importance weights, `qw == NULL`):
/// symmetric quantization of `x` to `l[i] ∈ [0, 2·nmax)` (stored with a `+nmax` bias) and the
/// scale, trying 18 scales around `nmax / max` when `rmse_type != 0`.
pub(crate) fn make_qx_quants(nmax: i32, x: &[f32], l: &mut [i8], rmse_type: i32) -> f32 {
    let n = x.len();
    let mut max = 0f32;
    let mut amax = 0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l[..n].fill(0);
        return 0.0;
    }
    let mut iscale = -(nmax as f32) / max;
    if rmse_type == 0 {
        for (q, &v) in l.iter_mut().zip(x) {
            let v = nearest_int(iscale * v);
            *q = (nmax + v.clamp(-nmax, nmax - 1)) as i8;
        }
        return 1.0 / iscale;
    }
    let (rmse_type, return_early) = if rmse_type < 0 { (-rmse_type, true) } else { (rmse_type, false) };
    let weight = |v: f32| -> f32 {
        match rmse_type {
            1 => v * v,
            2 => 1.0,
            3 => v.abs(),
            _ => v.abs().sqrt(),
        }
    };
    let mut sumlx = 0f32;
    let mut suml2 = 0f32;
    for (q, &v) in l.iter_mut().zip(x) {
        let li = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        *q = (li + nmax) as i8;
        let w = weight(v);
        let lf = li as f32;
        sumlx += w * v * lf;
        suml2 += w * lf * lf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    if return_early {
        return if suml2 > 0.0 { 0.5 * (scale + 1.0 / iscale) } else { 1.0 / iscale };
    }
    let mut best = scale * sumlx;
    for is in -9i32..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &v in x {
            let li = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
            let w = weight(v);
            let lf = li as f32;
            sumlx += w * v * lf;
            suml2 += w * lf * lf;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (q, &v) in l.iter_mut().zip(x) {
                let li = nearest_int(iscale * v);
                *q = (nmax + li.clamp(-nmax, nmax - 1)) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    debug_assert!(l.len() >= n);
    scale
}

/// ggml's `make_q3_quants`: symmetric quantization of `x` to `l[i] ∈ [0, 2·nmax)` (`+nmax` bias),
/// refined coordinate by coordinate when `do_rmse`, weighting each value by `x²`.
pub(crate) fn make_q3_quants(nmax: i32, x: &[f32], l: &mut [i8], do_rmse: bool) -> f32 {
    let n = x.len();
    let mut max = 0f32;
    let mut amax = 0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l[..n].fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    if do_rmse {
        let mut sumlx = 0f32;
        let mut suml2 = 0f32;
        for (q, &v) in l.iter_mut().zip(x) {
            let li = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
            *q = li as i8;
            let w = v * v;
            let lf = li as f32;
            sumlx += w * v * lf;
            suml2 += w * lf * lf;
        }
        for _ in 0..5 {
            let mut n_changed = 0;
            for (q, &v) in l.iter_mut().zip(x) {
                let w = v * v;
                let cur = *q as f32;
                let mut slx = sumlx - w * v * cur;
                if slx > 0.0 {
                    let mut sl2 = suml2 - w * cur * cur;
                    let new_l = nearest_int(v * sl2 / slx).clamp(-nmax, nmax - 1);
                    if new_l != *q as i32 {
                        let nf = new_l as f32;
                        slx += w * v * nf;
                        sl2 += w * nf * nf;
                        if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                            *q = new_l as i8;
                            sumlx = slx;
                            suml2 = sl2;
                            n_changed += 1;
                        }
                    }
                }
            }
            if n_changed == 0 {
                break;
            }
        }
        for q in l[..n].iter_mut() {
            *q += nmax as i8;
        }
        return if suml2 > 0.0 { sumlx / suml2 } else { 0.0 };
    }
    for (q, &v) in l.iter_mut().zip(x) {
        let li = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        *q = (li + nmax) as i8;
    }
    1.0 / iscale
}

/// ggml's `make_qkx2_quants`: asymmetric quantization `x ≈ scale·l − the_min` with
/// `l ∈ [0, nmax]`, searching `nstep + 1` scales `(nmax + rmin + rdelta·is) / (max − min)` for the
/// least weighted error (absolute when `use_mad`, squared otherwise). Returns `(scale, the_min)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let n = x.len();
    let (l, laux, weights) = (&mut l[..n], &mut laux[..n], &weights[..n]);
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l.fill(0);
        return (0.0, -min);
    }
    let err = |diff: f32| if use_mad { diff.abs() } else { diff * diff };
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l[i] = q as u8;
        let diff = scale * q as f32 + min - x[i];
        best_error += weights[i] * err(diff);
    }
    if nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let mut sum_l = 0f32;
        let mut sum_l2 = 0f32;
        let mut sum_xl = 0f32;
        for i in 0..n {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = q as u8;
            let w = weights[i];
            let lf = q as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * err(diff);
            }
            if cur_error < best_error {
                l.copy_from_slice(laux);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// One block's share of llama.cpp's tiled K-quant matrix product (`ggml-cpu/tiled`, its AVX-512
/// VNNI microkernel's epilogue as GCC compiles it): the block's exact integer sum `isum` times
/// `d_w`, minus `dmin_w · msum` (fused) for formats with minimums, then multiply-added with the
/// activation scale `d_a` into the running sum.
#[inline(always)]
pub(crate) fn tiled_step(acc: f32, isum: i32, d: f32, mins: Option<(i32, f32)>, da: f32) -> f32 {
    let mut r = isum as f32 * d;
    if let Some((msum, dmin)) = mins {
        r = (-dmin).mul_add(msum as f32, r);
    }
    r.mul_add(da, acc)
}

/// Row `r`'s `values` (in order) into the eight-row groups of the K-quant batch kernels
/// (`q4_k::Group8`, `q6_k::Group8`): values `4c..4c + 4` into lane `r` of `codes[c]`.
pub(crate) fn put_lane8(codes: &mut [[u8; 32]; QK_K / 4], r: usize, values: &[u8; QK_K]) {
    for (codes, four) in codes.iter_mut().zip(values.chunks_exact(4)) {
        codes[4 * r..4 * r + 4].copy_from_slice(four);
    }
}

/// `bsums[j]` of a Q8_K block (the sum of its quants `16j..16j + 16`), read from the bytes.
#[inline(always)]
pub(crate) fn q8k_bsum(y: &[u8], j: usize) -> i32 {
    i16::from_le_bytes([y[4 + QK_K + 2 * j], y[5 + QK_K + 2 * j]]) as i32
}

/// One Q8_K activation block, decoded from its 292 bytes: `f32 d`, `i8 qs[256]`,
/// `i16 bsums[16]` (sums of `qs` in groups of 16).
pub(crate) struct Q8kBlock<'a> {
    pub d: f32,
    pub qs: &'a [u8],
    pub bsums: [i16; QK_K / 16],
}

impl<'a> Q8kBlock<'a> {
    #[inline(always)]
    pub(crate) fn new(b: &'a [u8]) -> Self {
        let mut bsums = [0i16; QK_K / 16];
        for (j, s) in bsums.iter_mut().enumerate() {
            let o = 4 + QK_K + 2 * j;
            *s = i16::from_le_bytes([b[o], b[o + 1]]);
        }
        Q8kBlock { d: f32_at(b, 0), qs: &b[4..4 + QK_K], bsums }
    }

    /// Quant `i` as a signed value.
    #[inline(always)]
    pub(crate) fn q(&self, i: usize) -> i32 {
        self.qs[i] as i8 as i32
    }
}

/// `aux32[l] += scale · q8[i]·a[i]` over consecutive runs of 8 values (`i % 8 == l`), the lane
/// layout of ggml's portable K-quant dots (integer sums: the order within a lane is immaterial).
#[inline(always)]
pub(crate) fn acc_scaled(aux32: &mut [i32; 8], q8: &[u8], a: &[i8], scale: i32) {
    for (q8, a) in q8.chunks_exact(8).zip(a.chunks_exact(8)) {
        for l in 0..8 {
            // |q8·a| ≤ 128·32: an i16 product, as ggml's aux16.
            aux32[l] += scale * (q8[l] as i8 as i16 * a[l] as i16) as i32;
        }
    }
}

/// AVX2 helpers.
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    /// Sum of the four lanes: pairs `(0+2, 1+3)`, then the two.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn hsum_f32x4(x: __m128) -> f32 {
        let r = _mm_add_ps(x, _mm_movehl_ps(x, x));
        _mm_cvtss_f32(_mm_add_ss(r, _mm_movehdup_ps(r)))
    }

    /// Sixteen i16 lanes: eight copies of byte `k` of `scales` (sign-extended), then eight of
    /// byte `k + 1`: the scales of two 16-value groups, lined up with the `maddubs` output of
    /// their 32 values.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn pair_scales(scales: __m128i, k: usize) -> __m256i {
        const ONES: i64 = 0x0101_0101_0101_0101;
        let ctrl = _mm_set_epi64x((k as i64 + 1) * ONES, k as i64 * ONES);
        _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, ctrl))
    }

    /// The sum of eight `i32` lanes (wrapping; exact where the kernels use it).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn hsum_i32(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        _mm_cvtsi128_si32(s)
    }

    /// Quants `4c..4c + 4` of a Q8_K block `y` in every 32-bit lane: the activation side of the
    /// eight-row group kernels' `dpbusd` (one row per lane).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn q8k_four(y: &[u8], c: usize) -> __m256i {
        _mm256_set1_epi32(i32::from_le_bytes([y[4 + 4 * c], y[5 + 4 * c], y[6 + 4 * c], y[7 + 4 * c]]))
    }

    /// Loads 32 bytes from `b[off..off + 32]`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn load256(b: &[u8], off: usize) -> __m256i {
        let s = &b[off..off + 32];
        // SAFETY: `s` is exactly 32 readable bytes and `loadu` has no alignment requirement.
        unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
    }

    /// Loads 16 bytes from `b[off..off + 16]`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn load128(b: &[u8], off: usize) -> __m128i {
        let s = &b[off..off + 16];
        // SAFETY: `s` is exactly 16 readable bytes and `loadu` has no alignment requirement.
        unsafe { _mm_loadu_si128(s.as_ptr().cast()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        // Hand-worked: ties go to the even neighbour, as the 1.5·2^23 trick does.
        let cases = [
            (0.5, 0),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (-2.5, -2),
            (0.49999997, 0),
            (3.7, 4),
            (-3.7, -4),
            (127.0, 127),
            (4194303.0, 4194303),
        ];
        for (x, want) in cases {
            assert_eq!(nearest_int(x), want, "nearest_int({x})");
        }
        assert_eq!(nearest_int(f32::NAN), 0);
        // Agrees with Rust's round-ties-even over a range of values.
        for i in -100_000..100_000 {
            let x = i as f32 * 0.173;
            assert_eq!(nearest_int(x), x.round_ties_even() as i32, "{x}");
        }
    }

    #[test]
    fn f16_store_rounds_to_nearest_even() {
        // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1.0).
        assert_eq!(f32_to_f16(1.0 + 1.0 / 2048.0), 0x3c00);
        // 1 + 3·2^-11 is halfway between 1 + 2^-10 and 1 + 2^-9: ties to even (0x3c02).
        assert_eq!(f32_to_f16(1.0 + 3.0 / 2048.0), 0x3c02);
        assert_eq!(f32_to_f16(65520.0), 0x7c00); // rounds up to infinity
        assert_eq!(f32_to_f16(-f32::NAN), 0xfe00);
        assert_eq!(f32_to_f16(f32::NAN), 0x7e00);
        assert_eq!(f32_to_f16(2f32.powi(-24)), 0x0001); // smallest subnormal
    }

    #[test]
    fn k4_scale_packing_hand_worked() {
        // Scales 1..8 and mins 60..53: the first four fit their byte; 5..8 and 56..53 are split.
        let ls = [1, 2, 3, 4, 5, 6, 7, 63];
        let lm = [60, 59, 58, 57, 56, 55, 54, 53];
        let s = pack_scales_mins_k4(&ls, &lm);
        // Scale 7 = 63 = 0b11_1111: low nibble 0xF in byte 11, top bits 0b11 in byte 3's top.
        // Min 7 = 53 = 0b11_0101: low nibble 0x5 in byte 11's high half, top bits in byte 7.
        assert_eq!(s[11], 0x5F);
        assert_eq!(s[3], 4 | (0b11 << 6));
        assert_eq!(s[7], 57 | (0b11 << 6));
        // Scale 4 = 5 = 0b00_0101, min 4 = 56 = 0b11_1000.
        assert_eq!(s[8], 0x85);
        assert_eq!(s[0], 1);
        assert_eq!(s[4], 60 | (0b11 << 6));
        assert_eq!(scales_mins_k4(&s), (ls, lm));
    }

    #[test]
    fn k4_mask_unpacking_matches_bytewise_reading() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..10_000 {
            let mut q = [0u8; 12];
            for b in q.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
            let (sc, m) = scales_mins_k4(&q);
            for j in 0..8 {
                assert_eq!((sc[j], m[j]), scale_min_k4(j, &q), "{q:?} j={j}");
            }
        }
    }

    #[test]
    fn q3_scale_unpacking_matches_bytewise_reading() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..10_000 {
            let mut s = [0u8; 12];
            for b in s.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
            let got = q3_scales(&s);
            for (j, &g) in got.iter().enumerate() {
                let lo = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 };
                let hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
                assert_eq!(g, (lo | (hi << 4)) as i8 - 32, "{s:?} j={j}");
            }
        }
    }

    #[test]
    fn q3_scale_unpacking_hand_worked() {
        // Byte 0 = 0x21: scale 0 low nibble 1, scale 8 low nibble 2.
        // Byte 8 = 0b11_10_01_00: top bits of scales 0, 4, 8, 12 = 0, 1, 2, 3.
        let mut s = [0u8; 12];
        s[0] = 0x21;
        s[4] = 0x0F; // scale 4 low nibble 15
        s[8] = 0b1110_0100;
        let sc = q3_scales(&s);
        assert_eq!(sc[0], 1 - 32);
        assert_eq!(sc[4], (15 | (1 << 4)) - 32);
        assert_eq!(sc[8], (2 | (2 << 4)) - 32);
        assert_eq!(sc[12], (3 << 4) - 32);
        assert_eq!(sc[1], -32);
    }

    #[test]
    fn make_qkx2_quants_exact_grid() {
        // Values on an exact grid 0.5·l − 1: recovered exactly (scale 0.5, min 1).
        let x: Vec<f32> = (0..32).map(|i| 0.5 * (i % 16) as f32 - 1.0).collect();
        let w = vec![1.0; 32];
        let mut l = [0u8; 32];
        let mut laux = [0u8; 32];
        let (scale, min) = make_qkx2_quants(15, &x, &w, &mut l, &mut laux, -1.0, 0.1, 20, false);
        assert_eq!((scale, min), (0.5, 1.0));
        for (i, &q) in l.iter().enumerate() {
            assert_eq!(q as usize, i % 16);
        }
    }
}
