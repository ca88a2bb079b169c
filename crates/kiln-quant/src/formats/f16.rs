//! F16: IEEE half precision, one value per 2 little-endian bytes.
//!
//! Dequantizing is `GGML_FP16_TO_FP32` (exact; NaNs come back quiet with their payload);
//! quantizing is ggml's `ggml_fp32_to_fp16_row`, i.e. `GGML_FP32_TO_FP16`: round to nearest even,
//! NaN → `0x7e00` with the sign (see [`super::common::f32_to_f16`]). The dot product takes F16
//! activations (ggml's `vec_dot_type` for F16 is F16) and follows `ggml_vec_dot_f16`: each product
//! of the two halves is formed in `f32`; the portable kernel sums them in `f64`, the AVX2 kernel in
//! four 8-lane `f32` fused multiply-add accumulators (halves widened by F16C), as ggml's SIMD path.

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

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use crate::formats::common::x86::{f16_le, hsum_f32x8, load16};

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn load8(b: &[u8; 16]) -> __m256 {
        _mm256_cvtph_ps(load16(b))
    }

    /// AVX2 + FMA + F16C dot product: 32 values per step in four accumulators, then 8 at a
    /// time, then the last few one by one.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot(w: &[u8], act: &[u8]) -> f32 {
        let n = w.len().min(act.len()) / 2 * 2;
        let (w, act) = (&w[..n], &act[..n]);
        let (wb, wt) = w.as_chunks::<64>();
        let (ab, at) = act.as_chunks::<64>();
        let mut acc = [_mm256_setzero_ps(); 4];
        for (x, y) in wb.iter().zip(ab) {
            let (x, y) = (x.as_chunks::<16>().0, y.as_chunks::<16>().0);
            acc[0] = _mm256_fmadd_ps(load8(&x[0]), load8(&y[0]), acc[0]);
            acc[1] = _mm256_fmadd_ps(load8(&x[1]), load8(&y[1]), acc[1]);
            acc[2] = _mm256_fmadd_ps(load8(&x[2]), load8(&y[2]), acc[2]);
            acc[3] = _mm256_fmadd_ps(load8(&x[3]), load8(&y[3]), acc[3]);
        }
        let (wc, wr) = wt.as_chunks::<16>();
        let (ac, ar) = at.as_chunks::<16>();
        for (x, y) in wc.iter().zip(ac) {
            acc[0] = _mm256_fmadd_ps(load8(x), load8(y), acc[0]);
        }
        let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut sum = hsum_f32x8(v);
        for (x, y) in wr.as_chunks::<2>().0.iter().zip(ar.as_chunks::<2>().0) {
            sum += f16_le(*x) * f16_le(*y);
        }
        sum
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
