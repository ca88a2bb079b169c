//! Q5_1: ggml's `block_q5_1`, 32 values in 24 bytes.
//!
//! Layout: `f16 d`, `f16 m` (little-endian), `qh` (4 bytes, a little-endian `u32`), then
//! `qs[16]`. The 5-bit code of value `j` (0–15) is the low nibble of `qs[j]` plus bit `j` of `qh`
//! as its fifth bit; value `j + 16` takes the high nibble of `qs[j]` and bit `j + 16`. A value is
//! `q · d + m`. The dot product takes Q8_1 activations.
//!
//! ```
//! use kiln_quant::formats::q5_1;
//! // d = 0.5 (0x3800), m = −1 (0xbc00); qh bit 16 set, qs[0] = 0x20: value 16 has code
//! // 0b1_0010 = 18 → 18·0.5 − 1 = 8; value 0 has code 0 → −1.
//! let mut block = [0u8; 24];
//! block[..4].copy_from_slice(&[0x00, 0x38, 0x00, 0xbc]);
//! block[6] = 0x01;
//! block[8] = 0x20;
//! let mut y = [0f32; 32];
//! q5_1::dequantize(&block, &mut y);
//! assert_eq!((y[0], y[16]), (-1.0, 8.0));
//! ```

use super::common::{c_cast_i32, f16_le, f32_to_f16};
use crate::{Dot, GgmlType, TypeTraits, UnsafeDotFn};

/// Values per block.
pub const QK: usize = 32;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 4 + 4 + QK / 2;

/// The Q5_1 table entry.
pub const TRAITS: TypeTraits = TypeTraits {
    ty: GgmlType::Q5_1,
    dequantize,
    quantize: Some(quantize),
    from_float: None,
    vec_dot_type: GgmlType::Q8_1,
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

/// The two codes `(q_j, q_{j+16})` (0–31) of byte `j` of a block.
#[inline]
fn codes(q: u8, qh: u32, j: usize) -> (i32, i32) {
    let h0 = ((qh >> j) << 4) & 0x10;
    let h1 = (qh >> (j + 12)) & 0x10;
    (((q & 0x0f) as u32 | h0) as i32, ((q >> 4) as u32 | h1) as i32)
}

/// `dequantize_row_q5_1`: whole blocks of `src` into `dst` (32 values per block).
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.as_chunks::<BLOCK_BYTES>().0.iter().zip(dst.as_chunks_mut::<QK>().0) {
        let [d0, d1, m0, m1, h0, h1, h2, h3, qs @ ..] = b;
        let d = f16_le([*d0, *d1]);
        let m = f16_le([*m0, *m1]);
        let qh = u32::from_le_bytes([*h0, *h1, *h2, *h3]);
        let (lo, hi) = y.split_at_mut(QK / 2);
        for (j, ((q, a), b)) in qs.iter().zip(lo).zip(hi).enumerate() {
            let (x0, x1) = codes(*q, qh, j);
            *a = x0 as f32 * d + m;
            *b = x1 as f32 * d + m;
        }
    }
}

/// `quantize_row_q5_1_ref`: `d = (max − min) / 31`, `m = min`,
/// `q = (uint8)((x − min) · (1/d) + 0.5)` (no clamp in ggml; the low five bits are stored).
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.as_chunks::<QK>().0.iter().zip(dst.as_chunks_mut::<BLOCK_BYTES>().0) {
        let mut min = f32::MAX;
        let mut max = -f32::MAX;
        for &v in x {
            if v < min {
                min = v;
            }
            if v > max {
                max = v;
            }
        }
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let [d0, d1, m0, m1, h0, h1, h2, h3, qs @ ..] = b;
        [*d0, *d1] = f32_to_f16(d).to_le_bytes();
        [*m0, *m1] = f32_to_f16(min).to_le_bytes();
        let code = |v: f32| c_cast_i32((v - min) * id + 0.5) as u8;
        let mut qh = 0u32;
        for (j, q) in qs.iter_mut().enumerate() {
            let (x0, x1) = (code(x[j]), code(x[j + QK / 2]));
            *q = (x0 & 0x0f) | ((x1 & 0x0f) << 4);
            qh |= (((x0 & 0x10) >> 4) as u32) << j;
            qh |= (((x1 & 0x10) >> 4) as u32) << (j + QK / 2);
        }
        [*h0, *h1, *h2, *h3] = qh.to_le_bytes();
    }
}

/// Portable Q5_1 · Q8_1 dot product, as `ggml_vec_dot_q5_1_q8_1_generic`: per block
/// `sumf += (d_x·d_y)·sumi + m_x·s_y` in `f32`.
pub fn dot_scalar(w: &[u8], act: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in w.as_chunks::<BLOCK_BYTES>().0.iter().zip(act.as_chunks::<36>().0) {
        let [xd0, xd1, xm0, xm1, h0, h1, h2, h3, xq @ ..] = x;
        let [yd0, yd1, ys0, ys1, yq @ ..] = y;
        let qh = u32::from_le_bytes([*h0, *h1, *h2, *h3]);
        let (mut sumi0, mut sumi1) = (0i32, 0i32);
        for (j, q) in xq.iter().enumerate() {
            let (x0, x1) = codes(*q, qh, j);
            sumi0 += x0 * yq[j] as i8 as i32;
            sumi1 += x1 * yq[j + QK / 2] as i8 as i32;
        }
        let dd = f16_le([*xd0, *xd1]) * f16_le([*yd0, *yd1]);
        sumf += dd * (sumi0 + sumi1) as f32 + f16_le([*xm0, *xm1]) * f16_le([*ys0, *ys1]);
    }
    sumf
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::BLOCK_BYTES;
    use crate::formats::common::dot_entry_points;
    use crate::formats::common::x86::{
        Isa, expand_bits, f16_le, halves8, hsum_f32x8, load32, sum_lanes8, unpack_nibbles,
    };

    /// Per-lane integer sums of one block's products.
    ///
    /// # Safety
    /// As [`dot`].
    #[inline(always)]
    unsafe fn ints<I: Isa>(x: &[u8; BLOCK_BYTES], y: &[u8; 36]) -> __m256i {
        let ([_, _, _, _, h0, h1, h2, h3, xq @ ..], [_, _, _, _, yq @ ..]) = (x, y);
        // SAFETY: the caller's features (this function's contract).
        unsafe {
            let hi = _mm256_and_si256(expand_bits(u32::from_le_bytes([*h0, *h1, *h2, *h3])), _mm256_set1_epi8(0x10));
            // Codes 0..31 are the unsigned operand; exact in both implementations for every
            // activation byte.
            I::dot_u8_i8(_mm256_or_si256(unpack_nibbles(xq), hi), load32(yq))
        }
    }

    /// SIMD Q5_1 · Q8_1.
    /// Eight blocks per step: each block's integer dot product, the eight horizontal sums
    /// reduced together into one vector (lane k = block k's exact `sumi`), one multiply-add with
    /// the eight `d_x·d_y`, and one with the eight `m_x·s_y` (all 32 halves converted eight at a
    /// time). The last (< 8) blocks go one by one.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA, F16C and `I`'s features; only the entry points that
    /// [`dot_entry_points!`] makes call it.
    #[inline(always)]
    unsafe fn dot<I: Isa>(w: &[u8], act: &[u8]) -> f32 {
        let (xb, _) = w.as_chunks::<BLOCK_BYTES>();
        let (yb, _) = act.as_chunks::<36>();
        let (x8, _) = xb.as_chunks::<8>();
        let (y8, _) = yb.as_chunks::<8>();
        // SAFETY: the entry point this body is inlined into enables AVX2, FMA, F16C and `I`'s
        // features, and its caller checked them at run time.
        unsafe {
            let mut acc = _mm256_setzero_ps();
            let mut acc_m = _mm256_setzero_ps();
            for (x, y) in x8.iter().zip(y8) {
                let dx = halves8(x.each_ref().map(|b| [b[0], b[1]]));
                let mx = halves8(x.each_ref().map(|b| [b[2], b[3]]));
                let dy = halves8(y.each_ref().map(|b| [b[0], b[1]]));
                let sy = halves8(y.each_ref().map(|b| [b[2], b[3]]));
                // A loop, not `array::from_fn`: a closure would not be compiled with the entry
                // point's target features, and LLVM does not always inline it.
                let mut p = [_mm256_setzero_si256(); 8];
                for (k, p) in p.iter_mut().enumerate() {
                    *p = ints::<I>(&x[k], &y[k]);
                }
                let sumi = sum_lanes8(p);
                acc = _mm256_fmadd_ps(_mm256_mul_ps(dx, dy), _mm256_cvtepi32_ps(sumi), acc);
                acc_m = _mm256_fmadd_ps(mx, sy, acc_m);
            }
            let done = x8.len().min(y8.len()) * 8;
            let mut summs = 0f32;
            for (x, y) in xb.iter().zip(yb).skip(done) {
                let d = f16_le([x[0], x[1]]) * f16_le([y[0], y[1]]);
                let sumi = ints::<I>(x, y);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
                summs += f16_le([x[2], x[3]]) * f16_le([y[2], y[3]]);
            }
            hsum_f32x8(acc) + hsum_f32x8(acc_m) + summs
        }
    }

    dot_entry_points!(dot);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_worked_block() {
        // min = −1, max = 2.1: d = 3.1/31 ≈ 0.1, id = 1/d ≈ 10.
        let mut x = [0f32; 32];
        x[0] = -1.0; // 0 + 0.5 → 0
        x[1] = 2.1; // ≈ 31 + 0.5 → 31
        x[16] = 0.6; // ≈ 16 + 0.5 → 16
        x[17] = 0.44; // ≈ 14.4 + 0.5 → 14
        let mut b = [0u8; BLOCK_BYTES];
        quantize(&x, &mut b);
        assert_eq!(u16::from_le_bytes([b[0], b[1]]), f32_to_f16((2.1f32 - -1.0) / 31.0));
        assert_eq!(&b[2..4], &[0x00, 0xbc]); // −1 as a half
        // Zeros: ≈ 10 + 0.5 → 10 = 0b0_1010, so the fifth bits are those of values 1 and 16.
        assert_eq!(u32::from_le_bytes([b[4], b[5], b[6], b[7]]), (1 << 1) | (1 << 16));
        assert_eq!(b[8], 0x00); // value 0 → 0, value 16 → 16 & 15 = 0
        assert_eq!(b[9], 0xef); // value 1 → 31 & 15, value 17 → 14
        assert_eq!(b[10], 0xaa);
    }
}
