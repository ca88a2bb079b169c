//! Q2_K: ggml's `block_q2_K`, 256 values in 84 bytes (2.625 bits per weight).
//!
//! Layout: `u8 scales[16]` (per 16 values: 4-bit scale in the low nibble, 4-bit min in the high),
//! `u8 qs[64]` (2-bit quants), `f16 d`, `f16 dmin`. Value `v = 128n + 32j + l` (`n = 0..2`,
//! `j = 0..4`, `l = 0..32`) is bits `2j..2j + 2` of `qs[32n + l]`, with scale byte `v / 16`.
//! A value is `(d·sc)·q − dmin·m` in `f32`.

use super::kquant_common::{Q8kBlock, f16_at, make_qkx2_quants, nearest_int, put_f16};
use super::q8_k::BLOCK_BYTES as Q8K_BYTES;
use crate::{Dot, GgmlType, QK_K, TypeTraits, UnsafeDotFn};

/// Bytes per 256-element block.
pub const BLOCK_BYTES: usize = QK_K / 16 + QK_K / 4 + 2 + 2;

const QS: usize = QK_K / 16;
const D: usize = QS + QK_K / 4;
const DMIN: usize = D + 2;

/// The Q2_K table entry.
pub const TRAITS: TypeTraits = TypeTraits {
    ty: GgmlType::Q2_K,
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

/// ggml's `dequantize_row_q2_K`, bit for bit, over the whole blocks that fit both slices.
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_at(b, D);
        let min = f16_at(b, DMIN);
        // Value 128n + 32j + l: bits 2j..2j+2 of qs[32n + l], scale byte 8n + 2j + l / 16.
        for (n, y) in y.chunks_exact_mut(128).enumerate() {
            let q = &b[QS + 32 * n..QS + 32 * n + 32];
            for (j, y) in y.chunks_exact_mut(32).enumerate() {
                for (h, y) in y.chunks_exact_mut(16).enumerate() {
                    let sc = b[8 * n + 2 * j + h];
                    let dl = d * (sc & 0xF) as f32;
                    let ml = min * (sc >> 4) as f32;
                    for (l, y) in y.iter_mut().enumerate() {
                        *y = dl * ((q[16 * h + l] >> (2 * j)) & 3) as f32 - ml;
                    }
                }
            }
        }
    }
}

/// ggml's `quantize_row_q2_K_ref`, bit for bit: per 16-value group a `make_qkx2_quants` search
/// (weights `|x|`, least absolute error, 16 candidate scales), 4-bit scales and mins relative to
/// the block's largest, then the quants recomputed against the stored scales.
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    for (x, y) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(BLOCK_BYTES)) {
        quantize_block(x, y);
    }
}

fn quantize_block(x: &[f32], y: &mut [u8]) {
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 16];
    let mut weights = [0f32; 16];
    let mut scales = [0f32; 16];
    let mut mins = [0f32; 16];
    let mut max_scale = 0f32;
    let mut max_min = 0f32;
    for j in 0..16 {
        let xs = &x[16 * j..16 * j + 16];
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = v.abs();
        }
        let (s, m) = make_qkx2_quants(3, xs, &weights, &mut l[16 * j..16 * j + 16], &mut laux, -0.5, 0.1, 15, true);
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let sc = &mut y[..QS];
    // ggml stores the nearest_int results into uint8_t: keep the wrap.
    if max_scale > 0.0 {
        let iscale = 15.0 / max_scale;
        for (b, &s) in sc.iter_mut().zip(&scales) {
            *b = nearest_int(iscale * s) as u8;
        }
    } else {
        sc.fill(0);
    }
    if max_min > 0.0 {
        let iscale = 15.0 / max_min;
        for (b, &m) in sc.iter_mut().zip(&mins) {
            *b |= (nearest_int(iscale * m) << 4) as u8;
        }
    }
    put_f16(y, D, if max_scale > 0.0 { max_scale / 15.0 } else { 0.0 });
    put_f16(y, DMIN, if max_min > 0.0 { max_min / 15.0 } else { 0.0 });
    let d_all = f16_at(y, D);
    let dmin_all = f16_at(y, DMIN);
    for j in 0..16 {
        let d = d_all * (y[j] & 0xF) as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin_all * (y[j] >> 4) as f32;
        for ii in 0..16 {
            let q = nearest_int((x[16 * j + ii] + dm) / d);
            l[16 * j + ii] = q.clamp(0, 3) as u8;
        }
    }
    for n in 0..2 {
        for k in 0..32 {
            let q = |t: usize| l[128 * n + 32 * t + k];
            y[QS + 32 * n + k] = q(0) | (q(1) << 2) | (q(2) << 4) | (q(3) << 6);
        }
    }
}

/// ggml-cpu's portable `ggml_vec_dot_q2_K_q8_K_generic`, summing in the same order
/// (bit-identical to ggml's portable build without FMA).
pub fn dot_scalar(w: &[u8], act: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (x, yb) in w.chunks_exact(BLOCK_BYTES).zip(act.chunks_exact(Q8K_BYTES)) {
        let y = Q8kBlock::new(yb);
        let mut summs = 0i32;
        for (j, &b) in y.bsums.iter().enumerate() {
            summs += b as i32 * (x[j] >> 4) as i32;
        }
        let dall = y.d * f16_at(x, D);
        let dmin = y.d * f16_at(x, DMIN);
        let mut a = [0u8; QK_K];
        for (n, a) in a.chunks_exact_mut(128).enumerate() {
            let q = &x[QS + 32 * n..QS + 32 * n + 32];
            for (j, a) in a.chunks_exact_mut(32).enumerate() {
                for l in 0..32 {
                    a[l] = (q[l] >> (2 * j)) & 3;
                }
            }
        }
        let mut isum = 0i32;
        for (g, (q8, a)) in y.qs.chunks_exact(16).zip(a.chunks_exact(16)).enumerate() {
            let mut isuml = 0i32;
            for l in 0..16 {
                isuml += (q8[l] as i8 as i16 * a[l] as i16) as i32;
            }
            isum += (x[g] & 0xF) as i32 * isuml;
        }
        sumf += dall * isum as f32 - dmin * summs as f32;
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
    use crate::formats::kquant_common::x86::{load128, load256, pair_scales};

    /// The SIMD dot product: 2-bit quants through `maddubs`, `I::dpwssd` by the 4-bit group
    /// scales; the min terms once per block from the activation's `bsums`. Accumulates as ggml's
    /// AVX2 kernel does (bit-identical to ggml's x86 build).
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA, F16C and `I`'s features; only the entry points that
    /// [`dot_entry_points!`] makes call it.
    #[inline(always)]
    unsafe fn dot<I: Isa>(w: &[u8], act: &[u8]) -> f32 {
        // SAFETY: the entry point this body is inlined into enables AVX2, FMA, F16C and `I`'s
        // features, and its caller checked them at run time.
        unsafe {
            let m3 = _mm256_set1_epi8(3);
            let m4 = _mm_set1_epi8(0xF);
            let mut acc = _mm256_setzero_ps();
            for (x, y) in w.chunks_exact(BLOCK_BYTES).zip(act.chunks_exact(Q8K_BYTES)) {
                let yd = f32::from_le_bytes([y[0], y[1], y[2], y[3]]);
                let d = yd * f16_at(x, D);
                let dmin = -yd * f16_at(x, DMIN);

                let sm = load128(x, 0);
                let scales8 = _mm_and_si128(sm, m4);
                let mins8 = _mm_and_si128(_mm_srli_epi16(sm, 4), m4);
                let prod = _mm256_madd_epi16(_mm256_cvtepi8_epi16(mins8), load256(y, 4 + QK_K));
                acc = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(prod), acc);

                // Two integer accumulators keep the VNNI dependency chains short.
                let mut sum_a = _mm256_setzero_si256();
                let mut sum_b = _mm256_setzero_si256();
                for n in 0..2 {
                    let q2 = load256(x, QS + 32 * n);
                    let q = [
                        _mm256_and_si256(q2, m3),
                        _mm256_and_si256(_mm256_srli_epi16(q2, 2), m3),
                        _mm256_and_si256(_mm256_srli_epi16(q2, 4), m3),
                        _mm256_and_si256(_mm256_srli_epi16(q2, 6), m3),
                    ];
                    for (j, &q) in q.iter().enumerate() {
                        let prod = _mm256_maddubs_epi16(q, load256(y, 4 + 128 * n + 32 * j));
                        let s = pair_scales(scales8, 8 * n + 2 * j);
                        if j % 2 == 0 {
                            sum_a = I::dpwssd(sum_a, prod, s);
                        } else {
                            sum_b = I::dpwssd(sum_b, prod, s);
                        }
                    }
                }
                let sumi = _mm256_add_epi32(sum_a, sum_b);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
            }
            hsum_f32x8(acc)
        }
    }

    dot_entry_points!(dot);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::common::f32_to_f16;

    /// Quant of value `v` (0..256), in `0..4`, read from the bytes by the layout description.
    fn quant(b: &[u8], v: usize) -> u8 {
        let (n, j, l) = (v / 128, (v / 32) % 4, v % 32);
        (b[QS + 32 * n + l] >> (2 * j)) & 3
    }

    /// d = 0.5, dmin = 0.125; group g's scale byte is g | ((15 − g) << 4); quant of value
    /// v is (v / 3) % 4.
    fn hand_block() -> [u8; BLOCK_BYTES] {
        let mut b = [0u8; BLOCK_BYTES];
        for (g, s) in b[..16].iter_mut().enumerate() {
            *s = (g as u8) | ((15 - g as u8) << 4);
        }
        for v in 0..QK_K {
            let (n, j, l) = (v / 128, (v / 32) % 4, v % 32);
            b[QS + 32 * n + l] |= (((v / 3) % 4) as u8) << (2 * j);
        }
        b[D..D + 2].copy_from_slice(&f32_to_f16(0.5).to_le_bytes());
        b[DMIN..DMIN + 2].copy_from_slice(&f32_to_f16(0.125).to_le_bytes());
        b
    }

    fn hand_value(v: usize) -> f32 {
        let g = v / 16;
        0.5 * g as f32 * ((v / 3) % 4) as f32 - 0.125 * (15 - g) as f32
    }

    #[test]
    fn dequantize_hand_worked() {
        let b = hand_block();
        let mut y = [0f32; QK_K];
        dequantize(&b, &mut y);
        for (v, &got) in y.iter().enumerate() {
            assert_eq!(got, hand_value(v), "v={v}");
        }
        // Value 0: scale 0, min 15·0.125. Value 255: 0.5·15·(85 % 4 = 1) − 0.
        assert_eq!(y[0], -1.875);
        assert_eq!(y[255], 7.5);
    }

    #[test]
    fn dot_hand_worked() {
        let mut a = [0u8; Q8K_BYTES];
        a[..4].copy_from_slice(&2.0f32.to_le_bytes());
        let q8 = |i: usize| ((i * 29) % 256) as i32 - 128;
        for i in 0..QK_K {
            a[4 + i] = q8(i) as i8 as u8;
        }
        for j in 0..16 {
            let s: i32 = (0..16).map(|l| q8(16 * j + l)).sum();
            a[4 + QK_K + 2 * j..6 + QK_K + 2 * j].copy_from_slice(&(s as i16).to_le_bytes());
        }
        let want: f64 = (0..QK_K).map(|v| hand_value(v) as f64 * 2.0 * q8(v) as f64).sum();
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
    fn quantize_hand_worked() {
        // Every group holds k·0.5 − 1 for k = v % 4 (values −1, −0.5, 0, 0.5): scale 0.5 and min 1
        // everywhere, found exactly by make_qkx2_quants (the first candidate has zero error). Then
        // d = 0.5/15 and dmin = 1/15 (rounded to f16), 4-bit scales and mins are all 15, and the
        // quants k come back: values decode to (d·15)·k − dmin·15.
        let x: Vec<f32> = (0..QK_K).map(|v| (v % 4) as f32 * 0.5 - 1.0).collect();
        let mut b = [0u8; BLOCK_BYTES];
        quantize(&x, &mut b);
        assert!(b[..QS].iter().all(|&s| s == 0xFF));
        assert_eq!(f16_at(&b, D), half::f16::from_f32(0.5 / 15.0).to_f32());
        assert_eq!(f16_at(&b, DMIN), half::f16::from_f32(1.0 / 15.0).to_f32());
        for v in 0..QK_K {
            assert_eq!(quant(&b, v) as usize, v % 4, "v={v}");
        }
        let dd = half::f16::from_f32(0.5 / 15.0).to_f32() * 15.0;
        let mm = half::f16::from_f32(1.0 / 15.0).to_f32() * 15.0;
        let mut y = [0f32; QK_K];
        dequantize(&b, &mut y);
        for v in 0..QK_K {
            assert_eq!(y[v], dd * (v % 4) as f32 - mm, "v={v}");
            assert!((y[v] - x[v]).abs() < 2e-3, "v={v}: {} vs {}", y[v], x[v]);
        }
    }

    #[test]
    fn quantize_zero_block() {
        let mut b = [0xAAu8; BLOCK_BYTES];
        quantize(&[0.0; QK_K], &mut b);
        assert!(b.iter().all(|&v| v == 0));
    }
}
