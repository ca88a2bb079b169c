//! BF16: bfloat16 (the upper 16 bits of an IEEE `f32`), one value per 2 little-endian bytes.
//!
//! Dequantizing is `GGML_BF16_TO_FP32`, a plain 16-bit shift (exact for every pattern, NaNs kept
//! as they are); quantizing is ggml's `ggml_fp32_to_bf16_row_ref`, i.e.
//! `ggml_compute_fp32_to_bf16`: round to nearest even on the bits, NaN → its top bits with the
//! quiet bit forced (see [`super::common::f32_to_bf16`]). The dot product takes BF16 activations
//! (ggml's `vec_dot_type` for BF16 is BF16) and follows `ggml_vec_dot_bf16`: products formed in
//! `f32`; the portable kernel sums them in `f64`; the SIMD kernel follows llama.cpp's
//! AVX-512 BF16 build (`vdpbf16ps` chains, emulated with AVX2: see `avx2::dpbf16`).

use super::common::{bf16_to_f32, f32_to_bf16};
use crate::{Dot, GgmlType, TypeTraits, UnsafeDotFn};

/// The BF16 table entry.
pub const TRAITS: TypeTraits = TypeTraits {
    ty: GgmlType::BF16,
    dequantize,
    quantize: Some(quantize),
    from_float: None,
    vec_dot_type: GgmlType::BF16,
    vec_dot: Some(Dot { scalar: dot_scalar, avx2: AVX2, vnni: None }),
};

#[cfg(target_arch = "x86_64")]
const AVX2: Option<UnsafeDotFn> = Some(avx2::dot);
#[cfg(not(target_arch = "x86_64"))]
const AVX2: Option<UnsafeDotFn> = None;

/// `ggml_bf16_to_fp32_row`: `dst[i]` is the bfloat16 at `src[2i..2i + 2]`.
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.as_chunks::<2>().0.iter().zip(dst) {
        *y = bf16_to_f32(u16::from_le_bytes(*b));
    }
}

/// `ggml_fp32_to_bf16_row_ref`: each value rounded to the nearest bfloat16 (ties to even).
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.iter().zip(dst.as_chunks_mut::<2>().0) {
        *b = f32_to_bf16(*x).to_le_bytes();
    }
}

/// Portable dot product: `f32` products summed in `f64`, as ggml's scalar `ggml_vec_dot_bf16`.
pub fn dot_scalar(w: &[u8], act: &[u8]) -> f32 {
    let mut sum = 0f64;
    for (x, y) in w.as_chunks::<2>().0.iter().zip(act.as_chunks::<2>().0) {
        let p = bf16_to_f32(u16::from_le_bytes(*x)) * bf16_to_f32(u16::from_le_bytes(*y));
        sum += p as f64;
    }
    sum as f32
}

/// BF16 · BF16 as llama.cpp's CPU matrix product sums it for batches of two or more activation
/// rows (llamafile's tinyBLAS with AVX-512 BF16, taken when the row length is a multiple of 32 and
/// the weight's row count a multiple of 4). Without AVX2 + FMA: [`dot_scalar`].
pub fn dot_tinyblas(w: &[u8], act: &[u8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2_fma() {
        // SAFETY: AVX2, FMA and F16C were detected at run time.
        return unsafe { avx2::dot_tinyblas(w, act) };
    }
    dot_scalar(w, act)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use crate::formats::common::bf16_to_f32;
    use crate::formats::common::x86::{hsum_f32x8, load32};

    /// Sixteen bfloat16 values as two `f32` vectors without any shuffle: the even-indexed values
    /// (low half of each 32-bit lane, shifted up) and the odd-indexed ones (high half, masked).
    /// A dot product only needs both operands split the same way.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn split16(b: &[u8; 32]) -> (__m256, __m256) {
        let v = load32(b);
        let even = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(v));
        let odd = _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(0xffff_0000u32 as i32)));
        (even, odd)
    }

    /// A 16-lane vector as two 8-lane halves.
    type V16 = [__m256; 2];

    /// `_mm512_dpbf16_ps(acc, x, y)` over 32 values: lane j adds the product of values 2j + 1,
    /// then that of values 2j, each rounded once (a product of two bfloat16 is exact in `f32`),
    /// as the instruction's definition orders them. (Its flushing of subnormal inputs and
    /// results to zero is not modelled.)
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn dpbf16(acc: V16, x: &[u8; 64], y: &[u8; 64]) -> V16 {
        let (x, y) = (x.as_chunks::<32>().0, y.as_chunks::<32>().0);
        let mut out = acc;
        for h in 0..2 {
            let ((xe, xo), (ye, yo)) = (split16(&x[h]), split16(&y[h]));
            out[h] = _mm256_fmadd_ps(xe, ye, _mm256_fmadd_ps(xo, yo, out[h]));
        }
        out
    }

    /// `_mm512_reduce_add_ps`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn reduce16(v: V16) -> f32 {
        hsum_f32x8(_mm256_add_ps(v[1], v[0]))
    }

    /// `ggml_vec_dot_bf16` of llama.cpp's AVX-512 BF16 build: per 64 values, two `dpbf16`
    /// accumulators (values 0–31 and 32–63); each reduced and added to an `f64` sum, then the
    /// last n mod 64 products in `f64`.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot(w: &[u8], act: &[u8]) -> f32 {
        let (wb, wr) = w.as_chunks::<128>();
        let (ab, ar) = act.as_chunks::<128>();
        let z = [_mm256_setzero_ps(); 2];
        let (mut c1, mut c2) = (z, z);
        for (x, y) in wb.iter().zip(ab) {
            let (x, y) = (x.as_chunks::<64>().0, y.as_chunks::<64>().0);
            c1 = dpbf16(c1, &x[0], &y[0]);
            c2 = dpbf16(c2, &x[1], &y[1]);
        }
        let mut sum = reduce16(c1) as f64 + reduce16(c2) as f64;
        for (x, y) in wr.as_chunks::<2>().0.iter().zip(ar.as_chunks::<2>().0) {
            sum += (bf16_to_f32(u16::from_le_bytes(*x)) * bf16_to_f32(u16::from_le_bytes(*y))) as f64;
        }
        sum as f32
    }

    /// llamafile's tinyBLAS BF16 kernel of the AVX-512 BF16 build: one `dpbf16` chain over the
    /// row (a multiple of 32 values long), then `_mm512_reduce_add_ps`.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_tinyblas(w: &[u8], act: &[u8]) -> f32 {
        let mut acc = [_mm256_setzero_ps(); 2];
        for (x, y) in w.as_chunks::<64>().0.iter().zip(act.as_chunks::<64>().0) {
            acc = dpbf16(acc, x, y);
        }
        reduce16(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_values_and_dot() {
        // 1.0 = 0x3f80, -2.5 = 0xc020, 3.140625 = 0x4049; pi rounds to 0x4049 (3.140625).
        let mut b = [0u8; 6];
        quantize(&[1.0, -2.5, std::f32::consts::PI], &mut b);
        assert_eq!(b, [0x80, 0x3f, 0x20, 0xc0, 0x49, 0x40]);
        let mut y = [0f32; 3];
        dequantize(&b, &mut y);
        assert_eq!(y, [1.0, -2.5, 3.140625]);
        // (1, -2.5, 3.140625) · (2, 2, 2) = 2 - 5 + 6.28125 = 3.28125
        let mut a = [0u8; 6];
        quantize(&[2.0, 2.0, 2.0], &mut a);
        assert_eq!(dot_scalar(&b, &a), 3.28125);
        assert_eq!(TRAITS.dot(&b, &a), Some(3.28125));
    }
}
