//! Q4_1: ggml's `block_q4_1`, 32 values in 20 bytes.
//!
//! Layout: `f16 d`, `f16 m` (little-endian), then `qs[16]`; value `j` (0–15) is the low nibble
//! of `qs[j]`, value `j + 16` its high nibble. A value is `q · d + m`. The dot product takes Q8_1
//! activations, whose per-block `s = d_y · Σ q_y` turns the offset into one product per block.
//!
//! ```
//! use kiln_quant::formats::q4_1;
//! // d = 0.5 (0x3800), m = −1 (0xbc00); qs[0] = 0x3f: value 0 is 15·0.5 − 1 = 6.5,
//! // value 16 is 3·0.5 − 1 = 0.5; zero codes give m.
//! let mut block = [0u8; 20];
//! block[..4].copy_from_slice(&[0x00, 0x38, 0x00, 0xbc]);
//! block[4] = 0x3f;
//! let mut y = [0f32; 32];
//! q4_1::dequantize(&block, &mut y);
//! assert_eq!((y[0], y[16], y[1]), (6.5, 0.5, -1.0));
//! ```

use super::common::{c_cast_i32, f16_le, f32_to_f16};
use crate::{Dot, GgmlType, TypeTraits, UnsafeDotFn};

/// Values per block.
pub const QK: usize = 32;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 4 + QK / 2;

/// The Q4_1 table entry.
pub const TRAITS: TypeTraits = TypeTraits {
    ty: GgmlType::Q4_1,
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

/// `dequantize_row_q4_1`: whole blocks of `src` into `dst` (32 values per block).
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.as_chunks::<BLOCK_BYTES>().0.iter().zip(dst.as_chunks_mut::<QK>().0) {
        let [d0, d1, m0, m1, qs @ ..] = b;
        let d = f16_le([*d0, *d1]);
        let m = f16_le([*m0, *m1]);
        let (lo, hi) = y.split_at_mut(QK / 2);
        for ((q, a), b) in qs.iter().zip(lo).zip(hi) {
            *a = (q & 0x0f) as f32 * d + m;
            *b = (q >> 4) as f32 * d + m;
        }
    }
}

/// `quantize_row_q4_1_ref`: `d = (max − min) / 15`, `m = min`,
/// `q = min(15, (int8)((x − min) · (1/d) + 0.5))`.
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
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let [d0, d1, m0, m1, qs @ ..] = b;
        [*d0, *d1] = f32_to_f16(d).to_le_bytes();
        [*m0, *m1] = f32_to_f16(min).to_le_bytes();
        let code = |v: f32| (c_cast_i32((v - min) * id + 0.5) as i8 as i32).min(15) as u8;
        for (j, q) in qs.iter_mut().enumerate() {
            *q = code(x[j]) | (code(x[j + QK / 2]) << 4);
        }
    }
}

/// Portable Q4_1 · Q8_1 dot product, as `ggml_vec_dot_q4_1_q8_1_generic`: per block
/// `sumf += (d_x·d_y)·sumi + m_x·s_y` in `f32`.
pub fn dot_scalar(w: &[u8], act: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in w.as_chunks::<BLOCK_BYTES>().0.iter().zip(act.as_chunks::<36>().0) {
        let [xd0, xd1, xm0, xm1, xq @ ..] = x;
        let [yd0, yd1, ys0, ys1, yq @ ..] = y;
        let (mut sumi0, mut sumi1) = (0i32, 0i32);
        for (j, q) in xq.iter().enumerate() {
            sumi0 += (q & 0x0f) as i32 * yq[j] as i8 as i32;
            sumi1 += (q >> 4) as i32 * yq[j + QK / 2] as i8 as i32;
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
    use crate::formats::common::x86::{Isa, half_pair, hsum_f32x8, load32, unpack_nibbles};

    /// SIMD Q4_1 · Q8_1 in the order of ggml-cpu's x86 kernel (`ggml_vec_dot_q4_1_q8_1`, the
    /// same on AVX2 and AVX-512 builds): one block at a time, its eight lanes (each the exact sum
    /// of four products) converted to `f32` and accumulated with one multiply-add by `d_x·d_y`;
    /// `m_x·s_y` summed in a scalar with a fused multiply-add (as GCC contracts it); at the end
    /// the lanes are reduced pairwise and the scalar added. Following ggml's order makes the
    /// result bit-identical to llama.cpp's, which the model tests rely on: in a deep network a
    /// last-bit difference grows (it flips activation codes and f16 roundings further on).
    ///
    /// Each block's two halves are loaded as one 32-bit word ([`half_pair`]) and converted
    /// together: `[d_x, m_x]` times `[d_y, s_y]` gives `d_x·d_y` in lane 0, and a multiply-add
    /// into a vector whose lane 1 is the running `m_x·s_y` sum keeps that sum's rounding. (A
    /// 16-bit insert per half would merge into whatever register the compiler picks, here the
    /// running sum, which chained every block to the previous block's multiply-add latency.)
    /// The integer sums come from `I` (codes 0..15 are the unsigned operand: exact in both
    /// implementations for every activation byte).
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA, F16C and `I`'s features; only the entry points that
    /// [`dot_entry_points!`] makes call it.
    #[inline(always)]
    unsafe fn dot<I: Isa>(w: &[u8], act: &[u8]) -> f32 {
        let (xb, _) = w.as_chunks::<BLOCK_BYTES>();
        let (yb, _) = act.as_chunks::<36>();
        // SAFETY: the entry point this body is inlined into enables AVX2, FMA, F16C and `I`'s
        // features, and its caller checked them at run time.
        unsafe {
            let mut acc = _mm256_setzero_ps();
            // Lane 1 is ggml's scalar `summs`; lane 0 collects unused products.
            let mut summs = _mm_setzero_ps();
            for (x, y) in xb.iter().zip(yb) {
                let [xd0, xd1, xm0, xm1, xq @ ..] = x;
                let [yd0, yd1, ys0, ys1, yq @ ..] = y;
                let xs = half_pair(&[*xd0, *xd1, *xm0, *xm1]);
                let ys = half_pair(&[*yd0, *yd1, *ys0, *ys1]);
                let d = _mm256_broadcastss_ps(_mm_mul_ss(xs, ys));
                summs = _mm_fmadd_ps(xs, ys, summs);
                let sumi = I::dot_u8_i8(unpack_nibbles(xq), load32(yq));
                acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
            }
            hsum_f32x8(acc) + _mm_cvtss_f32(_mm_movehdup_ps(summs))
        }
    }

    dot_entry_points!(dot);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_worked_block() {
        // min = −1, max = 2: d = 3/15 = 0.2, codes (x + 1)·5 + 0.5 truncated.
        let mut x = [0f32; 32];
        x[0] = -1.0; // 0.5 → 0
        x[1] = 2.0; // 15.5 → 15
        x[16] = 0.5; // 1.5 · 5 + 0.5 = 8.0 → 8
        x[17] = 0.09; // 5.45 + 0.5 = 5.95 → 5
        let mut b = [0u8; BLOCK_BYTES];
        quantize(&x, &mut b);
        assert_eq!(u16::from_le_bytes([b[0], b[1]]), f32_to_f16(0.2));
        assert_eq!(&b[2..4], &[0x00, 0xbc]); // −1 as a half
        assert_eq!(b[4], 0x80);
        assert_eq!(b[5], 0x5f);
        assert_eq!(b[6] & 0x0f, 5); // zeros: 5.5 → 5
        let mut y = [0f32; 32];
        dequantize(&b, &mut y);
        let d = f16_le([b[0], b[1]]);
        assert_eq!(y[1], 15.0 * d - 1.0);
        assert_eq!(y[16], 8.0 * d - 1.0);
    }
}
