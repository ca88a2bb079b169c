//! Q4_0: ggml's `block_q4_0`, 32 values in 18 bytes.
//!
//! Layout: `f16 d` (little-endian), then `qs[16]`; value `j` (0–15) is the low nibble of
//! `qs[j]`, value `j + 16` its high nibble. A value is `(q − 8) · d`, so codes 0–15 stand for
//! −8 … 7. The dot product takes Q8_0 activations.
//!
//! ```
//! use kiln_quant::formats::q4_0;
//! // d = 0.5 (0x3800); qs[0] = 0x9f: value 0 is (0xf − 8)·0.5 = 3.5, value 16 is (9 − 8)·0.5 = 0.5.
//! let mut block = [0x88u8; 18]; // every other value (8 − 8)·d = 0
//! block[0] = 0x00;
//! block[1] = 0x38;
//! block[2] = 0x9f;
//! let mut y = [0f32; 32];
//! q4_0::dequantize(&block, &mut y);
//! assert_eq!((y[0], y[16], y[1]), (3.5, 0.5, 0.0));
//! ```

use super::common::fma_kernel;
use super::common::{c_cast_i32, f16_le, f32_to_f16};
use crate::{Dot, GgmlType, TypeTraits, UnsafeDotFn};

/// Values per block.
pub const QK: usize = 32;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 2 + QK / 2;

/// The Q4_0 table entry.
pub const TRAITS: TypeTraits = TypeTraits {
    ty: GgmlType::Q4_0,
    dequantize,
    quantize: Some(quantize),
    from_float: None,
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

/// `dequantize_row_q4_0`: whole blocks of `src` into `dst` (32 values per block).
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.as_chunks::<BLOCK_BYTES>().0.iter().zip(dst.as_chunks_mut::<QK>().0) {
        let [d0, d1, qs @ ..] = b;
        let d = f16_le([*d0, *d1]);
        let (lo, hi) = y.split_at_mut(QK / 2);
        for ((q, a), b) in qs.iter().zip(lo).zip(hi) {
            *a = ((q & 0x0f) as i32 - 8) as f32 * d;
            *b = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}

/// `quantize_row_q4_0_ref`: `d = max / −8` where `max` is the value of largest magnitude (the
/// first one on ties), `q = min(15, (int8)(x · (1/d) + 8.5))`.
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.as_chunks::<QK>().0.iter().zip(dst.as_chunks_mut::<BLOCK_BYTES>().0) {
        let mut amax = 0f32;
        let mut max = 0f32;
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let [d0, d1, qs @ ..] = b;
        [*d0, *d1] = f32_to_f16(d).to_le_bytes();
        let code = |v: f32| (c_cast_i32(v * id + 8.5) as i8 as i32).min(15) as u8;
        for (j, q) in qs.iter_mut().enumerate() {
            *q = code(x[j]) | (code(x[j + QK / 2]) << 4);
        }
    }
}

/// Portable Q4_0 · Q8_0 dot product, as `ggml_vec_dot_q4_0_q8_0_generic`: exact integer sums per
/// block, then `sumf += sumi · d_x · d_y` in `f32`.
pub fn dot_scalar(w: &[u8], act: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in w.as_chunks::<BLOCK_BYTES>().0.iter().zip(act.as_chunks::<34>().0) {
        let [xd0, xd1, xq @ ..] = x;
        let [yd0, yd1, yq @ ..] = y;
        let (mut sumi0, mut sumi1) = (0i32, 0i32);
        for (j, q) in xq.iter().enumerate() {
            sumi0 += ((q & 0x0f) as i32 - 8) * yq[j] as i8 as i32;
            sumi1 += ((q >> 4) as i32 - 8) * yq[j + QK / 2] as i8 as i32;
        }
        sumf += (sumi0 + sumi1) as f32 * f16_le([*xd0, *xd1]) * f16_le([*yd0, *yd1]);
    }
    sumf
}

fma_kernel! {
    /// Q4_0 · Q8_0 summed as llama.cpp's x86 build sums it for Q4_0 matrices whose row count is a
    /// multiple of 8: ggml-cpu repacks them (`q4_0_8x8_q8_0`) and its GEMV and GEMM kernels both chain
    /// `acc = fma(sumi_b, d_w · d_y, acc)` over the blocks in order, `sumi_b` the block's exact
    /// integer dot product.
    pub fn dot_repacked(w: &[u8], act: &[u8]) -> f32 = repacked_body
}

#[inline(always)]
fn repacked_body(w: &[u8], act: &[u8]) -> f32 {
    let mut acc = 0f32;
    for (x, y) in w.as_chunks::<BLOCK_BYTES>().0.iter().zip(act.as_chunks::<34>().0) {
        let ([xd0, xd1, xq @ ..], [yd0, yd1, yq @ ..]) = (x, y);
        let mut sumi = 0i32;
        for (j, q) in xq.iter().enumerate() {
            sumi += ((q & 0x0F) as i32 - 8) * yq[j] as i8 as i32 + ((q >> 4) as i32 - 8) * yq[j + QK / 2] as i8 as i32;
        }
        acc = (sumi as f32).mul_add(f16_le([*xd0, *xd1]) * f16_le([*yd0, *yd1]), acc);
    }
    acc
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::BLOCK_BYTES;
    use crate::formats::common::dot_entry_points;
    use crate::formats::common::x86::{Isa, f16_le, halves8, hsum_f32x8, load32, sum_lanes8, unpack_nibbles};

    /// Per-lane integer sums of one block's products: `Σ (code − 8) · q_y` with the codes
    /// (0..15) as the unsigned operand, exact in both implementations for every activation byte.
    ///
    /// # Safety
    /// As [`dot`].
    #[inline(always)]
    unsafe fn ints<I: Isa>(x: &[u8; BLOCK_BYTES], y: &[u8; 34]) -> __m256i {
        let ([_, _, xq @ ..], [_, _, yq @ ..]) = (x, y);
        // SAFETY: the caller's features (this function's contract).
        unsafe { I::dot_offset(unpack_nibbles(xq), _mm256_set1_epi8(8), load32(yq)) }
    }

    /// SIMD Q4_0 · Q8_0.
    /// Eight blocks per step: each block's integer dot product, the eight horizontal sums
    /// reduced together into one vector (lane k = block k's exact `sumi`), then one multiply-add
    /// with the eight block scales (their halves converted at once). The last (< 8) blocks go one
    /// by one.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA, F16C and `I`'s features; only the entry points that
    /// [`dot_entry_points!`] makes call it.
    #[inline(always)]
    unsafe fn dot<I: Isa>(w: &[u8], act: &[u8]) -> f32 {
        let (xb, _) = w.as_chunks::<BLOCK_BYTES>();
        let (yb, _) = act.as_chunks::<34>();
        let (x8, _) = xb.as_chunks::<8>();
        let (y8, _) = yb.as_chunks::<8>();
        // SAFETY: the entry point this body is inlined into enables AVX2, FMA, F16C and `I`'s
        // features, and its caller checked them at run time.
        unsafe {
            let mut acc = _mm256_setzero_ps();
            for (x, y) in x8.iter().zip(y8) {
                let dx = halves8(x.each_ref().map(|b| [b[0], b[1]]));
                let dy = halves8(y.each_ref().map(|b| [b[0], b[1]]));
                // A loop, not `array::from_fn`: a closure would not be compiled with the entry
                // point's target features, and LLVM does not always inline it.
                let mut p = [_mm256_setzero_si256(); 8];
                for (k, p) in p.iter_mut().enumerate() {
                    *p = ints::<I>(&x[k], &y[k]);
                }
                let sumi = sum_lanes8(p);
                acc = _mm256_fmadd_ps(_mm256_mul_ps(dx, dy), _mm256_cvtepi32_ps(sumi), acc);
            }
            let done = x8.len().min(y8.len()) * 8;
            for (x, y) in xb.iter().zip(yb).skip(done) {
                let d = f16_le([x[0], x[1]]) * f16_le([y[0], y[1]]);
                let sumi = ints::<I>(x, y);
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

    #[test]
    fn hand_worked_block() {
        // Values −8·0.25 … : with d = −0.25, x = 2.0 is the largest magnitude, so d = 2/−8.
        let mut x = [0f32; 32];
        x[0] = 2.0; // (2 · −4) + 8.5 = 0.5 → code 0
        x[1] = -1.0; // 4 + 8.5 = 12.5 → 12
        x[16] = 0.3; // −1.2 + 8.5 = 7.3 → 7
        x[17] = -2.0; // 8 + 8.5 = 16.5 → 16, clamped to 15
        let mut b = [0u8; BLOCK_BYTES];
        quantize(&x, &mut b);
        assert_eq!(&b[..2], &[0x00, 0xb4]); // −0.25 as a half
        assert_eq!(b[2], 0x70); // value 0 → 0, value 16 → 7
        assert_eq!(b[3], 0xfc); // value 1 → 12, value 17 → 15
        assert_eq!(b[4], 0x88); // zeros → 8
        let mut y = [0f32; 32];
        dequantize(&b, &mut y);
        assert_eq!((y[0], y[1], y[16], y[17], y[2]), (2.0, -1.0, 0.25, -1.75, 0.0));
    }

    #[test]
    fn zero_and_nan_blocks_do_not_panic() {
        let mut b = [0xffu8; BLOCK_BYTES];
        quantize(&[0.0; 32], &mut b);
        // d = 0 / −8 = −0 (0x8000), as C computes it; every code is (int8)(0 + 8.5) = 8.
        let mut want = [0x88u8; BLOCK_BYTES];
        want[..2].copy_from_slice(&[0x00, 0x80]);
        assert_eq!(b, want);
        let mut x = [1.0f32; 32];
        x[3] = f32::NAN;
        quantize(&x, &mut b);
        assert_eq!(b[2 + 3] & 0x0f, 0); // (int8)NaN is 0 on x86
        let nan_scale = [0x00, 0x7e, 0x12, 0x34, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut y = [0f32; 32];
        dequantize(&nan_scale, &mut y);
        assert!(y.iter().all(|v| v.is_nan()));
    }
}
