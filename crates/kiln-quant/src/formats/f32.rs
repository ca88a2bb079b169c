//! F32: plain little-endian IEEE single precision, one value per 4 bytes.
//!
//! Dequantizing and quantizing copy the values. The dot product takes F32 activations (ggml's
//! `vec_dot_type` for F32 is F32) and follows `ggml_vec_dot_f32`: the portable kernel multiplies
//! in `f32` and accumulates in `f64` (ggml's `ggml_float`); the SIMD kernel sums in the order of
//! llama.cpp's AVX-512 build (`super::float_dot`). [`dot_tinyblas`] is the order of llama.cpp's
//! F32 matrix product for batches (llamafile's tinyBLAS).

use crate::{Dot, GgmlType, TypeTraits, UnsafeDotFn};

/// The F32 table entry.
pub const TRAITS: TypeTraits = TypeTraits {
    ty: GgmlType::F32,
    dequantize,
    quantize: Some(quantize),
    from_float: None,
    vec_dot_type: GgmlType::F32,
    vec_dot: Some(Dot { scalar: dot_scalar, avx2: AVX2, vnni: None }),
};

#[cfg(target_arch = "x86_64")]
const AVX2: Option<UnsafeDotFn> = Some(avx2::dot);
#[cfg(not(target_arch = "x86_64"))]
const AVX2: Option<UnsafeDotFn> = None;

/// Reads little-endian `f32`s: `dst[i]` from `src[4i..4i + 4]`.
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.as_chunks::<4>().0.iter().zip(dst) {
        *y = f32::from_le_bytes(*b);
    }
}

/// Writes `src` as little-endian `f32`s (ggml's F32 "quantizer" is a copy).
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.iter().zip(dst.as_chunks_mut::<4>().0) {
        *b = x.to_le_bytes();
    }
}

/// Portable dot product: `f32` products summed in `f64`, as ggml's scalar `ggml_vec_dot_f32`.
pub fn dot_scalar(w: &[u8], act: &[u8]) -> f32 {
    let mut sum = 0f64;
    for (x, y) in w.as_chunks::<4>().0.iter().zip(act.as_chunks::<4>().0) {
        sum += (f32::from_le_bytes(*x) * f32::from_le_bytes(*y)) as f64;
    }
    sum as f32
}

/// F32 · F32 as llama.cpp's CPU matrix product sums it for batches of two or more activation
/// rows (llamafile's tinyBLAS, taken when the row length is a multiple of 16 and the weight's
/// row count a multiple of 4): one fused multiply-add chain per lane of a 16-lane vector, then
/// the lanes reduced. Without AVX2 + FMA: [`dot_scalar`].
pub fn dot_tinyblas(w: &[u8], act: &[u8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2_fma() {
        // SAFETY: AVX2 and FMA (and F16C, which every such CPU has and `has_avx2_fma` checks)
        // were detected at run time.
        return unsafe { avx2::dot_tinyblas(w, act) };
    }
    dot_scalar(w, act)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use crate::formats::float_dot::{F32s, tinyblas, vec_dot};

    /// `ggml_vec_dot_f32` of the AVX-512 build (see `float_dot`); the last n mod 64 products
    /// rounded and added one by one to the `f32` sum (ggml's `sumf += x[i]*y[i]`, which GCC leaves
    /// unfused there: checked against llama.cpp's products with 96-long rows).
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot(w: &[u8], act: &[u8]) -> f32 {
        // SAFETY: this function's features.
        let (mut sum, done) = unsafe { vec_dot::<F32s>(w, act) };
        for (x, y) in w[done * 4..].as_chunks::<4>().0.iter().zip(act[done * 4..].as_chunks::<4>().0) {
            sum += f32::from_le_bytes(*x) * f32::from_le_bytes(*y);
        }
        sum
    }

    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_tinyblas(w: &[u8], act: &[u8]) -> f32 {
        // SAFETY: this function's features.
        unsafe { tinyblas::<F32s>(w, act) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_and_hand_dot() {
        let x = [1.5f32, -2.0, f32::MIN_POSITIVE / 4.0, f32::NEG_INFINITY];
        let mut b = [0u8; 16];
        quantize(&x, &mut b);
        assert_eq!(&b[0..4], &[0, 0, 0xc0, 0x3f]); // 1.5 = 0x3fc00000
        let mut y = [0f32; 4];
        dequantize(&b, &mut y);
        assert_eq!(x.map(f32::to_bits), y.map(f32::to_bits));

        // (1, 2, 3) · (4, -5, 6) = 4 - 10 + 18 = 12
        let w: Vec<u8> = [1f32, 2.0, 3.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let a: Vec<u8> = [4f32, -5.0, 6.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(dot_scalar(&w, &a), 12.0);
        assert_eq!(TRAITS.dot(&w, &a), Some(12.0));
    }
}
