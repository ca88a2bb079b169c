//! Q8_0: ggml's `block_q8_0`, 32 values in 34 bytes; the weight format of many tensors and the
//! activation format that Q4_0, Q5_0, Q8_0 and MXFP4 weights take in a dot product.
//!
//! Layout: `f16 d` (little-endian), then `qs[32]` as `i8`. A value is `q · d`.
//!
//! ```
//! use kiln_quant::formats::q8_0;
//! // d = 0.5 (0x3800); qs[0] = −3 (0xfd), qs[31] = 127: values −1.5 and 63.5.
//! let mut block = [0u8; 34];
//! block[..2].copy_from_slice(&[0x00, 0x38]);
//! block[2] = 0xfd;
//! block[33] = 127;
//! let mut y = [0f32; 32];
//! q8_0::dequantize(&block, &mut y);
//! assert_eq!((y[0], y[31], y[1]), (-1.5, 63.5, 0.0));
//! ```

use super::common::{c_cast_i32, f16_le, f32_to_f16};
use crate::{Dot, GgmlType, TypeTraits, UnsafeDotFn};

/// Values per block.
pub const QK: usize = 32;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 2 + QK;

/// The Q8_0 table entry.
pub const TRAITS: TypeTraits = TypeTraits {
    ty: GgmlType::Q8_0,
    dequantize,
    quantize: Some(quantize),
    from_float: Some(quantize_cpu),
    vec_dot_type: GgmlType::Q8_0,
    vec_dot: Some(Dot { scalar: dot_scalar, avx2: AVX2, vnni: VNNI }),
};

#[cfg(target_arch = "x86_64")]
const AVX2: Option<UnsafeDotFn> = Some(x86::dot_avx2);
#[cfg(not(target_arch = "x86_64"))]
const AVX2: Option<UnsafeDotFn> = None;
#[cfg(target_arch = "x86_64")]
const VNNI: Option<UnsafeDotFn> = Some(x86::dot_vnni);
#[cfg(not(target_arch = "x86_64"))]
const VNNI: Option<UnsafeDotFn> = None;

/// `dequantize_row_q8_0`: whole blocks of `src` into `dst` (32 values per block).
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.as_chunks::<BLOCK_BYTES>().0.iter().zip(dst.as_chunks_mut::<QK>().0) {
        let [d0, d1, qs @ ..] = b;
        let d = f16_le([*d0, *d1]);
        for (q, y) in qs.iter().zip(y) {
            *y = *q as i8 as f32 * d;
        }
    }
}

/// The scale and codes of one block as `quantize_row_q8_0_ref` / `quantize_row_q8_1_ref`
/// compute them: `amax = MAX(amax, |x|)` (ggml's macro, so a NaN is forgotten unless it is the
/// last value), `d = amax / 127`, `q = (int8)roundf(x · (1/d))`. Returns `d` before rounding to a
/// half.
pub(crate) fn quantize_block(x: &[f32; QK], qs: &mut [u8; QK]) -> f32 {
    let mut amax = 0f32;
    for v in x {
        let a = v.abs();
        amax = if amax > a { amax } else { a };
    }
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (v, q) in x.iter().zip(qs) {
        *q = c_cast_i32((v * id).round()) as u8;
    }
    d
}

/// One block as ggml-cpu's x86 `quantize_row_q8_0` / `quantize_row_q8_1` compute it for
/// activations: `d = amax / 127`, `id = 127 / amax` (not `1 / d`), `q = x · id` rounded to nearest
/// with ties to even (`_mm256_round_ps`), saturated to i8 (a NaN becomes −128, as the SIMD
/// conversion and packing make it). Returns `d` before rounding to a half.
pub(crate) fn quantize_block_cpu(x: &[f32; QK], qs: &mut [u8; QK]) -> f32 {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    for (v, q) in x.iter().zip(qs) {
        *q = round_even_sat_i8(v * id) as u8;
    }
    d
}

/// Rounds to nearest, ties to even, and saturates to i8 as `_mm256_round_ps` +
/// `_mm256_cvtps_epi32` + the saturating packs do (NaN and out-of-range become i32::MIN, so −128).
/// For |v| < 2²² adding and subtracting 1.5·2²³ rounds in the FPU's default mode (ties to even)
/// without a call to `rintf`, which is what `f32::round_ties_even` becomes on baseline x86-64.
#[inline]
fn round_even_sat_i8(v: f32) -> i8 {
    const MAGIC: f32 = 12582912.0; // 1.5 · 2²³
    let r = if v.abs() < 4194304.0 { (v + MAGIC) - MAGIC } else { v };
    let in_range = (-2147483648.0..2147483648.0).contains(&r);
    let i = if in_range { r as i32 } else { i32::MIN }; // NaN is not in range
    i.clamp(-128, 127) as i8
}

/// ggml-cpu's activation quantizer for Q8_0 (see [`quantize_block_cpu`]).
pub fn quantize_cpu(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.as_chunks::<QK>().0.iter().zip(dst.as_chunks_mut::<BLOCK_BYTES>().0) {
        let [d0, d1, qs @ ..] = b;
        let d = quantize_block_cpu(x, qs);
        [*d0, *d1] = f32_to_f16(d).to_le_bytes();
    }
}

/// `quantize_row_q8_0_ref`: `d = amax / 127`, `q = roundf(x / d)` (halves away from zero).
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.as_chunks::<QK>().0.iter().zip(dst.as_chunks_mut::<BLOCK_BYTES>().0) {
        let [d0, d1, qs @ ..] = b;
        let d = quantize_block(x, qs);
        [*d0, *d1] = f32_to_f16(d).to_le_bytes();
    }
}

/// Portable Q8_0 · Q8_0 dot product, as `ggml_vec_dot_q8_0_q8_0_generic`: exact integer sums
/// per block, then `sumf += sumi · (d_x·d_y)` in `f32`.
pub fn dot_scalar(w: &[u8], act: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in w.as_chunks::<BLOCK_BYTES>().0.iter().zip(act.as_chunks::<BLOCK_BYTES>().0) {
        let [xd0, xd1, xq @ ..] = x;
        let [yd0, yd1, yq @ ..] = y;
        let sumi: i32 = xq.iter().zip(yq).map(|(a, b)| *a as i8 as i32 * *b as i8 as i32).sum();
        sumf += sumi as f32 * (f16_le([*xd0, *xd1]) * f16_le([*yd0, *yd1]));
    }
    sumf
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::BLOCK_BYTES;
    use crate::formats::common::dot_entry_points;
    use crate::formats::common::x86::{Isa, f16_splat8, hsum_f32x8, load32};

    /// Per-lane integer sums of one block's products.
    ///
    /// # Safety
    /// As [`dot`].
    #[inline(always)]
    unsafe fn ints<I: Isa>(x: &[u8; BLOCK_BYTES], y: &[u8; BLOCK_BYTES]) -> __m256i {
        let ([_, _, xq @ ..], [_, _, yq @ ..]) = (x, y);
        // Weights first. VNNI: exact for all bytes. AVX2 (ggml's sign trick): exact for any
        // weight byte, but a negative weight against an activation byte of −128 comes out
        // negated; the Q8_0 activation quantizer writes −128 only for NaN inputs (ggml's AVX2
        // kernel behaves the same).
        // SAFETY: the caller's features (this function's contract).
        unsafe { I::dot_i8_i8(load32(xq), load32(yq)) }
    }

    /// SIMD Q8_0 · Q8_0 in the order of ggml-cpu's x86 kernel (`ggml_vec_dot_q8_0_q8_0`, the same on
    /// AVX2 and AVX-512 builds, and llamafile's `tinyBLAS_Q0_AVX` that llama.cpp uses for
    /// batches): one block at a time, its eight lanes (each the exact sum of four products)
    /// converted to `f32` and accumulated with one multiply-add by `d_x·d_y`; the lanes reduced
    /// pairwise at the end. The same order makes the result bit-identical to llama.cpp's.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA, F16C and `I`'s features; only the entry points that
    /// [`dot_entry_points!`] makes call it.
    #[inline(always)]
    unsafe fn dot<I: Isa>(w: &[u8], act: &[u8]) -> f32 {
        let (xb, _) = w.as_chunks::<BLOCK_BYTES>();
        let (yb, _) = act.as_chunks::<BLOCK_BYTES>();
        // SAFETY: the entry point this body is inlined into enables AVX2, FMA, F16C and `I`'s
        // features, and its caller checked them at run time.
        unsafe {
            // Summing eight blocks' integers first would be faster but round differently from
            // llama.cpp, which the model tests compare with bit for bit (see `q4_1.rs`).
            let mut acc = _mm256_setzero_ps();
            for (x, y) in xb.iter().zip(yb) {
                // d_x·d_y in every lane (see `f16_splat8` for why not a scalar product).
                let d = _mm256_mul_ps(f16_splat8([x[0], x[1]]), f16_splat8([y[0], y[1]]));
                let sumi = ints::<I>(x, y);
                acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
            }
            hsum_f32x8(acc)
        }
    }

    dot_entry_points!(dot);
}

#[cfg(test)]
mod round_tests {
    use super::round_even_sat_i8;

    #[test]
    fn ties_to_even_and_saturation() {
        for (v, want) in [
            (0.5f32, 0i8),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (126.5, 126),
            (127.4, 127),
            (200.0, 127),
            (-200.0, -128),
            (f32::NAN, -128),
            (3.0e9, -128),
            (-3.0e9, -128),
            (0.49999997, 0),
        ] {
            assert_eq!(round_even_sat_i8(v), want, "{v}");
        }
        // Against the definition on a sweep of values.
        for k in -40000..40000 {
            let v = k as f32 * 0.00731;
            let want = (v.round_ties_even() as i32).clamp(-128, 127) as i8;
            assert_eq!(round_even_sat_i8(v), want, "{v}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_worked_block() {
        // amax = 127 → d = 1, id = 1: codes are roundf(x), halves away from zero.
        let mut x = [0f32; 32];
        x[0] = -127.0;
        x[1] = 2.5; // → 3
        x[2] = -2.5; // → −3
        x[3] = 0.49; // → 0
        x[4] = 100.5; // → 101
        let mut b = [0u8; BLOCK_BYTES];
        quantize(&x, &mut b);
        assert_eq!(&b[..7], &[0x00, 0x3c, 0x81, 3, 0xfd, 0, 101]);
        // Dot with itself: 127² + 9 + 9 + 101² = 16129 + 18 + 10201.
        assert_eq!(dot_scalar(&b, &b), 26348.0);
        assert_eq!(TRAITS.dot(&b, &b), Some(26348.0));
    }

    #[test]
    fn weight_minus_128_is_exact_in_every_kernel() {
        // A weight byte of −128 (never written by the quantizer, but valid input) against
        // activations of −127 and 127: (−128)·(−127)·16 + (−128)·127·16 = 0; then one more.
        let mut w = [0u8; BLOCK_BYTES];
        let mut a = [0u8; BLOCK_BYTES];
        w[..2].copy_from_slice(&[0x00, 0x3c]);
        a[..2].copy_from_slice(&[0x00, 0x3c]);
        for j in 0..32 {
            w[2 + j] = 0x80;
            a[2 + j] = if j % 2 == 0 { 0x81 } else { 0x7f };
        }
        a[2] = 0x7f; // now 17 × 127 and 15 × −127: (−128)·(2·127) = −32512
        assert_eq!(dot_scalar(&w, &a), -32512.0);
        assert_eq!(TRAITS.dot(&w, &a), Some(-32512.0));
    }

    #[test]
    fn activation_minus_128_is_exact_in_the_vnni_kernel() {
        // Activation bytes of −128 (ggml-cpu's quantizer writes them for NaN inputs; any byte is
        // valid input) against negative weights, −128 included, over 9 blocks (8 + 1 tail):
        // the AVX2 sign trick negates these products (ggml's AVX2 kernel does the same); the
        // VNNI kernel must give the exact integer sum, as the scalar one does.
        let nb = 9;
        let mut w = vec![0u8; nb * BLOCK_BYTES];
        let mut a = vec![0u8; nb * BLOCK_BYTES];
        for (k, (wb, ab)) in w.chunks_exact_mut(BLOCK_BYTES).zip(a.chunks_exact_mut(BLOCK_BYTES)).enumerate() {
            wb[..2].copy_from_slice(&[0x00, 0x3c]); // d = 1
            ab[..2].copy_from_slice(&[0x00, 0x3c]);
            for j in 0..32 {
                wb[2 + j] = [0x80u8, 0xff, 0x81, 0x05][(j + k) % 4]; // −128, −1, −127, 5
                ab[2 + j] = if j % 3 == 0 { 0x80 } else { (j as u8).wrapping_mul(37) };
            }
        }
        let exact: i64 = w
            .chunks_exact(BLOCK_BYTES)
            .zip(a.chunks_exact(BLOCK_BYTES))
            .flat_map(|(x, y)| x[2..].iter().zip(&y[2..]).map(|(p, q)| *p as i8 as i64 * *q as i8 as i64))
            .sum();
        assert_eq!(dot_scalar(&w, &a) as i64, exact);
        #[cfg(target_arch = "x86_64")]
        if crate::simd::has_avx512_vnni() {
            // SAFETY: AVX2, FMA, F16C and AVX-512 F/VL/BW/VNNI were detected.
            assert_eq!(unsafe { x86::dot_vnni(&w, &a) } as i64, exact);
            assert_eq!(TRAITS.dot(&w, &a).unwrap() as i64, exact);
        } else {
            eprintln!("Q8_0 dot_vnni not tested: CPU lacks AVX-512 VNNI (or KILN_NO_VNNI is set)");
        }
    }
}
