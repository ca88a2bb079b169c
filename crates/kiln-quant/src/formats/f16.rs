//! F16: IEEE half precision, one value per 2 little-endian bytes.
//!
//! Dequantizing is `GGML_FP16_TO_FP32` (exact; NaNs come back quiet with their payload);
//! quantizing is ggml's `ggml_fp32_to_fp16_row`, i.e. `GGML_FP32_TO_FP16`: round to nearest even,
//! NaN → `0x7e00` with the sign (see [`super::common::f32_to_f16`]). The dot product takes F16
//! activations (ggml's `vec_dot_type` for F16 is F16) and follows `ggml_vec_dot_f16`: each product
//! of the two halves is formed in `f32`; the portable kernel sums them in `f64`, the SIMD kernel in the
//! order of llama.cpp's AVX-512 build (`super::float_dot`).

use super::common::{f16_to_f32, f32_to_f16};
use crate::{Dot, GgmlType, TypeTraits, UnsafeDotFn};

/// The F16 table entry.
pub const TRAITS: TypeTraits = TypeTraits {
    ty: GgmlType::F16,
    dequantize,
    quantize: Some(quantize),
    from_float: None,
    vec_dot_type: GgmlType::F16,
    vec_dot: Some(Dot { scalar: dot_scalar, avx2: AVX2, vnni: None }),
};

#[cfg(target_arch = "x86_64")]
const AVX2: Option<UnsafeDotFn> = Some(avx2::dot);
#[cfg(not(target_arch = "x86_64"))]
const AVX2: Option<UnsafeDotFn> = None;

/// `ggml_fp16_to_fp32_row`: `dst[i]` is the half at `src[2i..2i + 2]`.
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.as_chunks::<2>().0.iter().zip(dst) {
        *y = f16_to_f32(u16::from_le_bytes(*b));
    }
}

/// `ggml_fp32_to_fp16_row`: each value rounded to the nearest half (ties to even).
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.iter().zip(dst.as_chunks_mut::<2>().0) {
        *b = f32_to_f16(*x).to_le_bytes();
    }
}

/// Portable dot product: `f32` products summed in `f64`, as ggml's scalar `ggml_vec_dot_f16`.
pub fn dot_scalar(w: &[u8], act: &[u8]) -> f32 {
    let mut sum = 0f64;
    for (x, y) in w.as_chunks::<2>().0.iter().zip(act.as_chunks::<2>().0) {
        let p = f16_to_f32(u16::from_le_bytes(*x)) * f16_to_f32(u16::from_le_bytes(*y));
        sum += p as f64;
    }
    sum as f32
}

/// F16 · F16 as llama.cpp's CPU matrix product sums it for batches of two or more activation
/// rows (llamafile's tinyBLAS, taken when the row length is a multiple of 16 and the weight's
/// row count a multiple of 4). Without AVX2 + FMA: [`dot_scalar`].
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
    use crate::formats::common::x86::f16_le;
    use crate::formats::float_dot::{F16s, tinyblas, vec_dot};

    /// `ggml_vec_dot_f16` of the AVX-512 build (see `float_dot`); the last n mod 64 products
    /// formed in `f32` and added in `f64`, as ggml's `ggml_float` sum.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot(w: &[u8], act: &[u8]) -> f32 {
        // SAFETY: this function's features.
        let (sum, done) = unsafe { vec_dot::<F16s>(w, act) };
        let mut sum = sum as f64;
        for (x, y) in w[done * 2..].as_chunks::<2>().0.iter().zip(act[done * 2..].as_chunks::<2>().0) {
            sum += (f16_le(*x) * f16_le(*y)) as f64;
        }
        sum as f32
    }

    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_tinyblas(w: &[u8], act: &[u8]) -> f32 {
        // SAFETY: this function's features.
        unsafe { tinyblas::<F16s>(w, act) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_values_and_dot() {
        // 1.0 = 0x3c00, -2.5 = 0xc100, 65504 = 0x7bff, 2^-24 = 0x0001.
        let x = [1.0f32, -2.5, 65504.0, 2f32.powi(-24)];
        let mut b = [0u8; 8];
        quantize(&x, &mut b);
        assert_eq!(b, [0x00, 0x3c, 0x00, 0xc1, 0xff, 0x7b, 0x01, 0x00]);
        let mut y = [0f32; 4];
        dequantize(&b, &mut y);
        assert_eq!(x, y);
        // 1·1 + (-2.5)·(-2.5) + 0 ... : w = (1, -2.5, 3), a = (1, -2.5, 0.5) → 1 + 6.25 + 1.5
        let mut w = [0u8; 6];
        let mut a = [0u8; 6];
        quantize(&[1.0, -2.5, 3.0], &mut w);
        quantize(&[1.0, -2.5, 0.5], &mut a);
        assert_eq!(dot_scalar(&w, &a), 8.75);
        assert_eq!(TRAITS.dot(&w, &a), Some(8.75));
    }
}
