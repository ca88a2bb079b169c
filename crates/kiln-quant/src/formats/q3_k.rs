//! Q3_K: ggml's `block_q3_K`, 256 values in 110 bytes (3.4375 bits per weight).
//!
//! Layout: `u8 hmask[32]` (third bits), `u8 qs[64]` (low 2 bits), `u8 scales[12]` (sixteen
//! 6-bit scales with a +32 bias), `f16 d`. Value `v = 128n + 32j + l` (`n = 0..2`, `j = 0..4`,
//! `l = 0..32`) takes bits `2j..2j + 2` of `qs[32n + l]`, and has 4 subtracted unless bit `4n + j`
//! of `hmask[l]` is set; its scale is number `v / 16`. A value is `(d·(sc − 32))·q` in `f32`,
//! with `q ∈ [−4, 3]`.

use super::common::fma_kernel;
use super::kquant_common::{Q8kBlock, acc_scaled, f16_at, make_q3_quants, nearest_int, put_f16, q3_scales, tiled_step};
use super::q8_k::BLOCK_BYTES as Q8K_BYTES;
use crate::{Dot, GgmlType, QK_K, TypeTraits, UnsafeDotFn};

/// Bytes per 256-element block.
pub const BLOCK_BYTES: usize = QK_K / 8 + QK_K / 4 + 12 + 2;

const QS: usize = QK_K / 8;
const SC: usize = QS + QK_K / 4;
const D: usize = SC + 12;

/// The Q3_K table entry.
pub const TRAITS: TypeTraits = TypeTraits {
    ty: GgmlType::Q3_K,
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

/// The 256 signed quants (`−4..=3`) of a block, in value order.
#[inline(always)]
fn unpack(b: &[u8]) -> [i8; QK_K] {
    let mut a = [0i8; QK_K];
    let hm = &b[..QS];
    for (n, a) in a.chunks_exact_mut(128).enumerate() {
        let q = &b[QS + 32 * n..QS + 32 * n + 32];
        for (j, a) in a.chunks_exact_mut(32).enumerate() {
            let m = 1u8 << (4 * n + j);
            for l in 0..32 {
                let low = ((q[l] >> (2 * j)) & 3) as i8;
                a[l] = low - if hm[l] & m != 0 { 0 } else { 4 };
            }
        }
    }
    a
}

/// ggml's `dequantize_row_q3_K`, bit for bit, over the whole blocks that fit both slices.
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let d_all = f16_at(b, D);
        let scales = q3_scales(&b[SC..D]);
        let q = unpack(b);
        for ((y, q), &s) in y.chunks_exact_mut(16).zip(q.chunks_exact(16)).zip(&scales) {
            let dl = d_all * s as f32;
            for (y, &q) in y.iter_mut().zip(q) {
                *y = dl * q as f32;
            }
        }
    }
}

/// ggml's `quantize_row_q3_K_ref`, bit for bit: per 16-value group `make_q3_quants(nmax = 4,
/// do_rmse)`, 6-bit group scales relative to the one of largest magnitude (`−32 / max_scale`), then
/// the quants recomputed against the stored scales.
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    for (x, y) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(BLOCK_BYTES)) {
        quantize_block(x, y);
    }
}

fn quantize_block(x: &[f32], y: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    let mut max_scale = 0f32;
    let mut amax = 0f32;
    for (j, s) in scales.iter_mut().enumerate() {
        *s = make_q3_quants(4, &x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16], true);
        let scale = s.abs();
        if scale > amax {
            amax = scale;
            max_scale = *s;
        }
    }
    let sc = &mut [0u8; 12];
    if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        for (j, &s) in scales.iter().enumerate() {
            // ggml stores nearest_int's result in an int8_t before clamping: keep the wrap.
            let q = (nearest_int(iscale * s) as i8).clamp(-32, 31) + 32;
            if j < 8 {
                sc[j] = q as u8 & 0xF;
            } else {
                sc[j - 8] |= (q as u8 & 0xF) << 4;
            }
            sc[j % 4 + 8] |= ((q >> 4) as u8) << (2 * (j / 4));
        }
        put_f16(y, D, 1.0 / iscale);
    } else {
        put_f16(y, D, 0.0);
    }
    y[SC..D].copy_from_slice(sc);
    let d_all = f16_at(y, D);
    for (j, &s) in q3_scales(sc).iter().enumerate() {
        let d = d_all * s as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = nearest_int(x[16 * j + ii] / d).clamp(-4, 3);
            l[16 * j + ii] = (q + 4) as i8;
        }
    }
    // hmask: the third bit of value v goes to bit v / 32 of byte v % 32.
    y[..QS].fill(0);
    for (v, q) in l.iter_mut().enumerate() {
        if *q > 3 {
            y[v % 32] |= 1 << (v / 32);
            *q -= 4;
        }
    }
    for n in 0..2 {
        for k in 0..32 {
            let q = |t: usize| l[128 * n + 32 * t + k] as u8;
            y[QS + 32 * n + k] = q(0) | (q(1) << 2) | (q(2) << 4) | (q(3) << 6);
        }
    }
}

/// ggml-cpu's portable `ggml_vec_dot_q3_K_q8_K_generic`, summing in the same order
/// (bit-identical to ggml's portable build without FMA). Does not read the activation's `bsums`.
pub fn dot_scalar(w: &[u8], act: &[u8]) -> f32 {
    let mut sums = [0f32; 8];
    for (x, yb) in w.chunks_exact(BLOCK_BYTES).zip(act.chunks_exact(Q8K_BYTES)) {
        let y = Q8kBlock::new(yb);
        let a = unpack(x);
        let scales = q3_scales(&x[SC..D]);
        let mut aux32 = [0i32; 8];
        for (j, &s) in scales.iter().enumerate() {
            acc_scaled(&mut aux32, &y.qs[16 * j..16 * j + 16], &a[16 * j..16 * j + 16], s as i32);
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
    use crate::formats::common::x86::hsum_f32x8;
    use crate::formats::kquant_common::x86::{load128, load256, pair_scales};

    /// The SIMD dot product: the 2-bit parts go through `maddubs` as unsigned bytes and the
    /// "minus 4" of a clear third bit as a second `maddubs` that is subtracted, then `I::dpwssd`
    /// by the group scales. Accumulates as ggml's AVX2 kernel does (bit-identical to ggml's x86
    /// build).
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
            let m4 = _mm256_set1_epi8(4);
            let zero = _mm256_setzero_si256();
            let mut acc = _mm256_setzero_ps();
            for (x, y) in w.chunks_exact(BLOCK_BYTES).zip(act.chunks_exact(Q8K_BYTES)) {
                let d = f32::from_le_bytes([y[0], y[1], y[2], y[3]]) * f16_at(x, D);
                let scales = load128(&q3_scales(&x[SC..D]).map(|v| v as u8), 0);
                let hbits = load256(x, 0);
                // Two integer accumulators keep the VNNI dependency chains short.
                let mut sum_a = _mm256_setzero_si256();
                let mut sum_b = _mm256_setzero_si256();
                for n in 0..2 {
                    let q3 = load256(x, QS + 32 * n);
                    let low = [
                        _mm256_and_si256(q3, m3),
                        _mm256_and_si256(_mm256_srli_epi16(q3, 2), m3),
                        _mm256_and_si256(_mm256_srli_epi16(q3, 4), m3),
                        _mm256_and_si256(_mm256_srli_epi16(q3, 6), m3),
                    ];
                    for (j, &low) in low.iter().enumerate() {
                        let bit = _mm256_set1_epi8((1u8 << (4 * n + j)) as i8);
                        let sub4 = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hbits, bit), zero), m4);
                        let q8 = load256(y, 4 + 128 * n + 32 * j);
                        // |pair sums| ≤ 2·3·128 and 2·4·128: no i16 saturation, nor in the difference.
                        let p = _mm256_sub_epi16(_mm256_maddubs_epi16(low, q8), _mm256_maddubs_epi16(sub4, q8));
                        let s = pair_scales(scales, 8 * n + 2 * j);
                        if j % 2 == 0 {
                            sum_a = I::dpwssd(sum_a, p, s);
                        } else {
                            sum_b = I::dpwssd(sum_b, p, s);
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

fma_kernel! {
    /// Q3_K · Q8_K summed as llama.cpp's tiled K-quant matrix product sums it (`ggml-cpu/tiled`,
    /// taken on x86 for batches of 8 or more activation rows): per block the exact integer sum
    /// `Σ scale · q · a`, then [`tiled_step`] (Q6_K's epilogue: no minimums).
    pub fn dot_tiled(w: &[u8], act: &[u8]) -> f32 = tiled_body
}

#[inline(always)]
fn tiled_body(w: &[u8], act: &[u8]) -> f32 {
    let mut acc = 0f32;
    for (x, yb) in w.chunks_exact(BLOCK_BYTES).zip(act.chunks_exact(Q8K_BYTES)) {
        let y = Q8kBlock::new(yb);
        let (a, sc) = (unpack(x), q3_scales(&x[SC..SC + 12]));
        let isum: i32 =
            (0..16).map(|j| sc[j] as i32 * (16 * j..16 * j + 16).map(|i| a[i] as i32 * y.q(i)).sum::<i32>()).sum();
        acc = tiled_step(acc, isum, f16_at(x, D), None, y.d);
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::common::f32_to_f16;

    /// d = 0.5; scale j (biased) = 2j + 1 → signed 2j − 31; quant of value v = (v % 8) − 4.
    fn hand_block() -> [u8; BLOCK_BYTES] {
        let mut b = [0u8; BLOCK_BYTES];
        for v in 0..QK_K {
            let q = (v % 8) as u8; // stored 0..8: bit 2 is the hmask bit
            let (n, j, l) = (v / 128, (v / 32) % 4, v % 32);
            b[QS + 32 * n + l] |= (q & 3) << (2 * j);
            b[l] |= (q >> 2) << (4 * n + j);
        }
        for j in 0..16 {
            let s = (2 * j + 1) as u8;
            if j < 8 {
                b[SC + j] |= s & 0xF;
            } else {
                b[SC + j - 8] |= (s & 0xF) << 4;
            }
            b[SC + 8 + j % 4] |= (s >> 4) << (2 * (j / 4));
        }
        b[D..D + 2].copy_from_slice(&f32_to_f16(0.5).to_le_bytes());
        b
    }

    #[test]
    fn dequantize_hand_worked() {
        let b = hand_block();
        let mut y = [0f32; QK_K];
        dequantize(&b, &mut y);
        for (v, &got) in y.iter().enumerate() {
            let scale = 0.5 * (2 * (v / 16) as i32 - 31) as f32;
            assert_eq!(got, scale * ((v % 8) as f32 - 4.0), "v={v}");
        }
        // Value 0: scale 0.5·(−31), quant −4 → 62. Value 255: scale 0.5·(−1), quant 3 → −1.5.
        assert_eq!(y[0], 62.0);
        assert_eq!(y[255], -1.5);
    }

    #[test]
    fn dot_hand_worked() {
        let mut a = [0u8; Q8K_BYTES];
        a[..4].copy_from_slice(&0.25f32.to_le_bytes());
        let q8 = |i: usize| (i as i32 * 37) % 255 - 127;
        for i in 0..QK_K {
            a[4 + i] = q8(i) as i8 as u8;
        }
        let want: f64 = (0..QK_K)
            .map(|v| {
                let scale = 0.5 * (2 * (v / 16) as i32 - 31) as f64;
                scale * ((v % 8) as f64 - 4.0) * 0.25 * q8(v) as f64
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
    fn quantize_hand_worked() {
        // Group g (16 values) holds s_g·(k − 4), s_g = 0.25·(g + 1), k = v % 8: each group sits on
        // its own exact grid, so make_q3_quants finds l = k − 4 and scale ≈ s_g (exactly 4 for
        // g = 15, whose sums are integers). Group 15 has the largest scale: iscale = −32/4 = −8,
        // d = 1/iscale = −0.125 (exact in f16), and group g's 6-bit scale is nearest(−8·s_g) =
        // −2(g + 1), so d·scale = s_g exactly and every value decodes back exactly.
        let x: Vec<f32> = (0..QK_K).map(|v| ((v % 8) as f32 - 4.0) * 0.25 * ((v / 16) + 1) as f32).collect();
        let mut b = [0u8; BLOCK_BYTES];
        quantize(&x, &mut b);
        assert_eq!(f16_at(&b, D), -0.125);
        let sc = q3_scales(&b[SC..D]);
        for (g, &s) in sc.iter().enumerate() {
            assert_eq!(s as i32, -2 * (g as i32 + 1), "group {g}");
        }
        let mut y = [0f32; QK_K];
        dequantize(&b, &mut y);
        assert_eq!(y.to_vec(), x);
    }

    #[test]
    fn quantize_zero_block() {
        let mut b = [0xAAu8; BLOCK_BYTES];
        quantize(&[0.0; QK_K], &mut b);
        // Zero scales and d; the quants are 0 with a clear third bit (ggml leaves L = 0).
        assert!(b.iter().all(|&v| v == 0));
    }
}
