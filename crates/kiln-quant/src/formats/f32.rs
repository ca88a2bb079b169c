//! F32: plain little-endian IEEE single precision, one value per 4 bytes.
//!
//! Dequantizing and quantizing copy the values. The dot product takes F32 activations (ggml's
//! `vec_dot_type` for F32 is F32) and follows `ggml_vec_dot_f32`: the portable kernel multiplies
//! in `f32` and accumulates in `f64` (ggml's `ggml_float`), the AVX2 kernel accumulates fused
//! multiply-adds in four 8-lane `f32` accumulators as ggml's SIMD path does.

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

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use crate::formats::common::x86::hsum_f32x8;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn load8(b: &[u8; 32]) -> __m256 {
        // SAFETY: `b` is 32 readable bytes (8 floats); `loadu` has no alignment requirement.
        unsafe { _mm256_loadu_ps(b.as_ptr().cast()) }
    }

    /// AVX2 + FMA dot product: 32 values per step in four accumulators, then 8 at a time, then
    /// the last few one by one.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot(w: &[u8], act: &[u8]) -> f32 {
        let n = w.len().min(act.len()) / 4 * 4;
        let (w, act) = (&w[..n], &act[..n]);
        let (wb, wt) = w.as_chunks::<128>();
        let (ab, at) = act.as_chunks::<128>();
        let mut acc = [_mm256_setzero_ps(); 4];
        for (x, y) in wb.iter().zip(ab) {
            let (x, y) = (x.as_chunks::<32>().0, y.as_chunks::<32>().0);
            acc[0] = _mm256_fmadd_ps(load8(&x[0]), load8(&y[0]), acc[0]);
            acc[1] = _mm256_fmadd_ps(load8(&x[1]), load8(&y[1]), acc[1]);
            acc[2] = _mm256_fmadd_ps(load8(&x[2]), load8(&y[2]), acc[2]);
            acc[3] = _mm256_fmadd_ps(load8(&x[3]), load8(&y[3]), acc[3]);
        }
        let (wc, wr) = wt.as_chunks::<32>();
        let (ac, ar) = at.as_chunks::<32>();
        for (x, y) in wc.iter().zip(ac) {
            acc[0] = _mm256_fmadd_ps(load8(x), load8(y), acc[0]);
        }
        let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut sum = hsum_f32x8(v);
        for (x, y) in wr.as_chunks::<4>().0.iter().zip(ar.as_chunks::<4>().0) {
            sum += f32::from_le_bytes(*x) * f32::from_le_bytes(*y);
        }
        sum
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
