//! Q5_K: ggml's `block_q5_K`, 256 values in 176 bytes (5.5 bits per weight).
//!
//! Layout: `f16 d`, `f16 dmin`, `u8 scales[12]` (six-bit scales and mins, packed as in Q4_K),
//! `u8 qh[32]` (fifth bits), `u8 qs[128]` (low 4 bits). Sub-blocks `2i` and `2i + 1` (32 values
//! each) take their low bits from the low and high nibbles of `qs[32i..32i + 32]` and their fifth
//! bit from bits `2i` and `2i + 1` of `qh[0..32]`. A value is `(d·sc)·q − dmin·m` in `f32`.

use super::common::fma_kernel;
use super::kquant_common::{
    Q8kBlock, acc_scaled, f16_at, f16_round_trip, make_qkx2_quants, nearest_int, pack_scales_mins_k4, put_f16,
    scales_mins_k4, tiled_step,
};
use super::q8_k::BLOCK_BYTES as Q8K_BYTES;
use crate::{Dot, GgmlType, QK_K, TypeTraits, UnsafeDotFn};

/// Bytes per 256-element block.
pub const BLOCK_BYTES: usize = 2 + 2 + 12 + QK_K / 8 + QK_K / 2;

const QH: usize = 16;
const QS: usize = QH + QK_K / 8;

/// The Q5_K table entry.
pub const TRAITS: TypeTraits = TypeTraits {
    ty: GgmlType::Q5_K,
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

/// Quant `l` (0..32) of sub-blocks `2i` (`hi == false`) or `2i + 1`, in `0..32`.
#[inline(always)]
fn quant(b: &[u8], i: usize, hi: bool, l: usize) -> u8 {
    let ql = b[QS + 32 * i + l];
    let low = if hi { ql >> 4 } else { ql & 0xF };
    let bit = 2 * i + hi as usize;
    low | (((b[QH + l] >> bit) & 1) << 4)
}

/// ggml's `dequantize_row_q5_K`, bit for bit, over the whole blocks that fit both slices.
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_at(b, 0);
        let dmin = f16_at(b, 2);
        let (sc, m) = scales_mins_k4(&b[4..16]);
        for (i, y) in y.chunks_exact_mut(64).enumerate() {
            let (d1, m1) = (d * sc[2 * i] as f32, dmin * m[2 * i] as f32);
            let (d2, m2) = (d * sc[2 * i + 1] as f32, dmin * m[2 * i + 1] as f32);
            let (lo, hi) = y.split_at_mut(32);
            for l in 0..32 {
                lo[l] = d1 * quant(b, i, false, l) as f32 - m1;
                hi[l] = d2 * quant(b, i, true, l) as f32 - m2;
            }
        }
    }
}

/// ggml's `quantize_row_q5_K_ref`, bit for bit: as Q4_K's with 31 levels and 16 candidate
/// scales (`rmin = −0.5`, `rdelta = 0.1`, `nstep = 15`).
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
        let (s, m) = make_qkx2_quants(31, xs, &weights, &mut l[32 * j..32 * j + 32], &mut laux, -0.5, 0.1, 15, false);
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
    put_f16(y, 0, max_scale / 63.0);
    put_f16(y, 2, max_min / 63.0);
    y[4..16].copy_from_slice(&pack_scales_mins_k4(&ls, &lm));
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
            l[32 * j + ii] = q.clamp(0, 31) as u8;
        }
    }
    y[QH..QS].fill(0);
    for i in 0..4 {
        for k in 0..32 {
            let (l1, l2) = (l[64 * i + k], l[64 * i + k + 32]);
            y[QH + k] |= ((l1 >> 4) << (2 * i)) | ((l2 >> 4) << (2 * i + 1));
            y[QS + 32 * i + k] = (l1 & 0xF) | ((l2 & 0xF) << 4);
        }
    }
}

/// ggml-cpu's portable `ggml_vec_dot_q5_K_q8_K_generic`, summing in the same order (bit-identical
/// to ggml's portable build without FMA).
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
        for (i, a) in a.chunks_exact_mut(64).enumerate() {
            for l in 0..32 {
                a[l] = quant(x, i, false, l) as i8;
                a[l + 32] = quant(x, i, true, l) as i8;
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
    use crate::formats::common::x86::hsum_f32x8;
    use crate::formats::kquant_common::x86::load256;

    /// The SIMD dot product: 5-bit quants assembled from a nibble and a `qh` bit, then `maddubs`
    /// / `I::dpwssd` per sub-block as in Q4_K; the min terms once per block from `bsums`.
    /// Accumulates as ggml's AVX2 kernel does (bit-identical to ggml's x86 build).
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
            let m16 = _mm256_set1_epi8(16);
            let mut acc = _mm256_setzero_ps();
            let mut summs = 0f32;
            for (x, y) in w.chunks_exact(BLOCK_BYTES).zip(act.chunks_exact(Q8K_BYTES)) {
                let yd = f32::from_le_bytes([y[0], y[1], y[2], y[3]]);
                let d = yd * f16_at(x, 0);
                let dmin = -yd * f16_at(x, 2);
                let (sc, mn) = scales_mins_k4(&x[4..16]);

                let mins = _mm_cvtepu8_epi16(_mm_set_epi64x(0, i64::from_le_bytes(mn)));
                let bsums = load256(y, 4 + QK_K);
                let q8s = _mm_hadd_epi16(_mm256_castsi256_si128(bsums), _mm256_extracti128_si256(bsums, 1));
                let prod = _mm_madd_epi16(mins, q8s);
                let z = _mm_setzero_si128();
                let hsum = _mm_hadd_epi32(_mm_hadd_epi32(prod, z), z);
                summs += dmin * _mm_cvtsi128_si32(hsum) as f32;

                let hbits = load256(x, QH);
                let mut sum_0 = _mm256_setzero_si256();
                let mut sum_1 = _mm256_setzero_si256();
                for i in 0..4 {
                    let q5 = load256(x, QS + 32 * i);
                    let b0 = _mm256_set1_epi8((1u8 << (2 * i)) as i8);
                    let b1 = _mm256_set1_epi8((2u8 << (2 * i)) as i8);
                    let h0 = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hbits, b0), b0), m16);
                    let h1 = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hbits, b1), b1), m16);
                    let q0 = _mm256_or_si256(_mm256_and_si256(q5, m4), h0);
                    let q1 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q5, 4), m4), h1);
                    // Quant ≤ 31: a pair sum is at most 2·31·128, no i16 saturation.
                    let p0 = _mm256_maddubs_epi16(q0, load256(y, 4 + 64 * i));
                    let p1 = _mm256_maddubs_epi16(q1, load256(y, 4 + 64 * i + 32));
                    sum_0 = I::dpwssd(sum_0, p0, _mm256_set1_epi16(sc[2 * i] as i16));
                    sum_1 = I::dpwssd(sum_1, p1, _mm256_set1_epi16(sc[2 * i + 1] as i16));
                }
                let sumi = _mm256_add_epi32(sum_0, sum_1);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
            }
            hsum_f32x8(acc) + summs
        }
    }

    dot_entry_points!(dot);
}

fma_kernel! {
    /// Q5_K · Q8_K summed as llama.cpp's tiled K-quant matrix product sums it (`ggml-cpu/tiled`,
    /// taken on x86 for batches of 8 or more activation rows): per block the exact integer sums, then
    /// [`tiled_step`] (Q4_K's epilogue: both formats have 32-value sub-blocks with minimums).
    pub fn dot_tiled(w: &[u8], act: &[u8]) -> f32 = tiled_body
}

#[inline(always)]
fn tiled_body(w: &[u8], act: &[u8]) -> f32 {
    let mut acc = 0f32;
    for (x, yb) in w.chunks_exact(BLOCK_BYTES).zip(act.chunks_exact(Q8K_BYTES)) {
        let y = Q8kBlock::new(yb);
        let (sc, m) = scales_mins_k4(&x[4..16]);
        let mut isum = 0i32;
        for i in 0..4 {
            for (hi, sc) in [(false, sc[2 * i]), (true, sc[2 * i + 1])] {
                let at = 64 * i + 32 * hi as usize;
                let s: i32 = (0..32).map(|l| quant(x, i, hi, l) as i32 * y.q(at + l)).sum();
                isum += sc as i32 * s;
            }
        }
        let b = |j: usize| y.bsums[j] as i32;
        let msum: i32 = (0..8).map(|j| m[j] as i32 * (b(2 * j) + b(2 * j + 1))).sum();
        acc = tiled_step(acc, isum, f16_at(x, 0), Some((msum, f16_at(x, 2))), y.d);
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::common::f32_to_f16;

    /// d = 0.25, dmin = 1, scales 1..=8, mins 0..8; the quant of value i is (3i) % 32.
    fn hand_block() -> [u8; BLOCK_BYTES] {
        let mut b = [0u8; BLOCK_BYTES];
        b[0..2].copy_from_slice(&f32_to_f16(0.25).to_le_bytes());
        b[2..4].copy_from_slice(&f32_to_f16(1.0).to_le_bytes());
        let ls = [1, 2, 3, 4, 5, 6, 7, 8];
        let lm = [0, 1, 2, 3, 4, 5, 6, 7];
        b[4..16].copy_from_slice(&pack_scales_mins_k4(&ls, &lm));
        for v in 0..QK_K {
            let q = ((3 * v) % 32) as u8;
            let (j, l) = (v / 32, v % 32);
            let (i, hi) = (j / 2, j % 2);
            b[QS + 32 * i + l] |= (q & 0xF) << (4 * hi);
            b[QH + l] |= (q >> 4) << j;
        }
        b
    }

    #[test]
    fn dequantize_hand_worked() {
        let b = hand_block();
        let mut y = [0f32; QK_K];
        dequantize(&b, &mut y);
        for (v, &got) in y.iter().enumerate() {
            let j = v / 32;
            let want = 0.25 * (j + 1) as f32 * ((3 * v) % 32) as f32 - j as f32;
            assert_eq!(got, want, "v={v}");
        }
        // Value 11 (sub-block 0): q = 33 % 32 = 1 → 0.25·1·1 − 0; value 255: q = 765 % 32 = 29
        // → 0.25·8·29 − 7 = 51.
        assert_eq!(y[11], 0.25);
        assert_eq!(y[255], 51.0);
    }

    #[test]
    fn dot_hand_worked() {
        let mut a = [0u8; Q8K_BYTES];
        a[..4].copy_from_slice(&0.5f32.to_le_bytes());
        let q8 = |i: usize| 100 - (i % 201) as i32;
        for i in 0..QK_K {
            a[4 + i] = q8(i) as i8 as u8;
        }
        for j in 0..16 {
            let s: i32 = (0..16).map(|l| q8(16 * j + l)).sum();
            a[4 + QK_K + 2 * j..6 + QK_K + 2 * j].copy_from_slice(&(s as i16).to_le_bytes());
        }
        let want: f64 = (0..QK_K)
            .map(|v| {
                let j = v / 32;
                let w = 0.25 * (j + 1) as f64 * ((3 * v) % 32) as f64 - j as f64;
                w * 0.5 * q8(v) as f64
            })
            .sum();
        let b = hand_block();
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
        // x = 61.0 everywhere: sub-block scale 61/31, block d = fp16(61/31/63), 6-bit scales 63,
        // mins 0, quants nearest(61 / (d·63)) = 31 (all fifth bits set, nibbles 0xF).
        let x = [61.0f32; QK_K];
        let mut b = [0u8; BLOCK_BYTES];
        quantize(&x, &mut b);
        let d = f16_round_trip(1.0 / (31.0 / 61.0) / 63.0);
        assert_eq!(f16_at(&b, 0), d);
        assert_eq!(&b[2..4], &[0, 0]);
        assert_eq!(&b[4..16], &[0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0x0F, 0x0F, 0x0F, 0x0F]);
        assert!(b[QH..].iter().all(|&q| q == 0xFF));
        let mut y = [0f32; QK_K];
        dequantize(&b, &mut y);
        assert!(y.iter().all(|&v| v == d * 63.0 * 31.0));
        assert!((y[0] - 61.0).abs() <= 61.0 * 1e-3);
    }
}
