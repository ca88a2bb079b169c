//! Q5_0: ggml's `block_q5_0`, 32 values in 22 bytes.
//!
//! Layout: `f16 d` (little-endian), `qh` (4 bytes, a little-endian `u32`), then `qs[16]`. The
//! 5-bit code of value `j` (0–15) is the low nibble of `qs[j]` plus bit `j` of `qh` as its fifth
//! bit; value `j + 16` takes the high nibble of `qs[j]` and bit `j + 16`. A value is
//! `(q − 16) · d`. The dot product takes Q8_0 activations.
//!
//! ```
//! use kiln_quant::formats::q5_0;
//! // d = 0.5 (0x3800); qh bit 0 set and qs[0] = 0x0f: value 0 has code 31 → 15·0.5 = 7.5;
//! // value 16 has code 0 → −16·0.5 = −8.
//! let mut block = [0u8; 22];
//! block[..2].copy_from_slice(&[0x00, 0x38]);
//! block[2] = 0x01;
//! block[6] = 0x0f;
//! let mut y = [0f32; 32];
//! q5_0::dequantize(&block, &mut y);
//! assert_eq!((y[0], y[16]), (7.5, -8.0));
//! ```

use super::common::{c_cast_i32, f16_le, f32_to_f16, isa_kernel};
use crate::{Dot, GgmlType, TypeTraits, UnsafeDotFn};

/// Values per block.
pub const QK: usize = 32;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 2 + 4 + QK / 2;

/// The Q5_0 table entry.
pub const TRAITS: TypeTraits = TypeTraits {
    ty: GgmlType::Q5_0,
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

/// The two signed codes `(q_j − 16, q_{j+16} − 16)` of byte `j` of a block.
#[inline]
fn codes(q: u8, qh: u32, j: usize) -> (i32, i32) {
    let h0 = ((qh >> j) << 4) & 0x10;
    let h1 = (qh >> (j + 12)) & 0x10;
    (((q & 0x0f) as u32 | h0) as i32 - 16, ((q >> 4) as u32 | h1) as i32 - 16)
}

/// `dequantize_row_q5_0`: whole blocks of `src` into `dst` (32 values per block).
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.as_chunks::<BLOCK_BYTES>().0.iter().zip(dst.as_chunks_mut::<QK>().0) {
        let [d0, d1, h0, h1, h2, h3, qs @ ..] = b;
        let d = f16_le([*d0, *d1]);
        let qh = u32::from_le_bytes([*h0, *h1, *h2, *h3]);
        let (lo, hi) = y.split_at_mut(QK / 2);
        for (j, ((q, a), b)) in qs.iter().zip(lo).zip(hi).enumerate() {
            let (x0, x1) = codes(*q, qh, j);
            *a = x0 as f32 * d;
            *b = x1 as f32 * d;
        }
    }
}

/// `quantize_row_q5_0_ref`: `d = max / −16` where `max` is the value of largest magnitude (the
/// first one on ties), `q = min(31, (int8)(x · (1/d) + 16.5))`.
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
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let [d0, d1, h0, h1, h2, h3, qs @ ..] = b;
        [*d0, *d1] = f32_to_f16(d).to_le_bytes();
        let code = |v: f32| (c_cast_i32(v * id + 16.5) as i8 as i32).min(31) as u8;
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

/// Portable Q5_0 · Q8_0 dot product, as `ggml_vec_dot_q5_0_q8_0_generic`: exact integer sums
/// per block, then `sumf += (d_x·d_y) · sumi` in `f32`.
pub fn dot_scalar(w: &[u8], act: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in w.as_chunks::<BLOCK_BYTES>().0.iter().zip(act.as_chunks::<34>().0) {
        let [xd0, xd1, h0, h1, h2, h3, xq @ ..] = x;
        let [yd0, yd1, yq @ ..] = y;
        let qh = u32::from_le_bytes([*h0, *h1, *h2, *h3]);
        let (mut sumi0, mut sumi1) = (0i32, 0i32);
        for (j, q) in xq.iter().enumerate() {
            let (x0, x1) = codes(*q, qh, j);
            sumi0 += x0 * yq[j] as i8 as i32;
            sumi1 += x1 * yq[j + QK / 2] as i8 as i32;
        }
        sumf += (f16_le([*xd0, *xd1]) * f16_le([*yd0, *yd1])) * (sumi0 + sumi1) as f32;
    }
    sumf
}

isa_kernel! {
    /// Four weight rows against four activation rows: `out[r][i]` is bit for bit
    /// [`crate::TypeTraits::dot`]`(w[r], acts[i])` (each block's codes decoded once for the four
    /// activation rows, each activation block's offset term once for the four weight rows).
    pub fn dot_4x4(w: [&[u8]; 4], acts: [&[u8]; 4]) -> [[f32; 4]; 4] = x86::dot4x4 else w.map(|w| acts.map(|a| dot_scalar(w, a)))
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::BLOCK_BYTES;
    use crate::formats::common::dot_entry_points;
    use crate::formats::common::x86::{Isa, expand_bits, f16_splat8, hsum_f32x8, load32, unpack_nibbles};

    /// The block's 5-bit codes (the nibble, plus 16 where the fifth bit is set), one per byte.
    ///
    /// # Safety
    /// As [`dot`].
    #[inline(always)]
    unsafe fn codes(x: &[u8; BLOCK_BYTES]) -> __m256i {
        let [_, _, h0, h1, h2, h3, xq @ ..] = x;
        // SAFETY: the caller's features (this function's contract).
        unsafe {
            let hi = _mm256_and_si256(expand_bits(u32::from_le_bytes([*h0, *h1, *h2, *h3])), _mm256_set1_epi8(0x10));
            _mm256_or_si256(unpack_nibbles(xq), hi)
        }
    }

    /// Per-lane integer sums of one block's products: `Σ (code − 16) · q_y` with the codes as the
    /// unsigned operand, exact in both implementations for every activation byte.
    ///
    /// # Safety
    /// As [`dot`].
    #[inline(always)]
    unsafe fn ints<I: Isa>(codes: __m256i, y: &[u8; 34]) -> __m256i {
        let [_, _, yq @ ..] = y;
        // SAFETY: the caller's features (this function's contract).
        unsafe { I::dot_offset(codes, _mm256_set1_epi8(16), load32(yq)) }
    }

    /// [`super::dot_4x4`]'s body: per block, the four weight rows' codes and scales; for each
    /// activation row its offset term `16 · Σ q_y` (per lane, as `ints` takes it off) and scale;
    /// then per output one `dpbusd` starting from minus that offset (the same exact lanes as
    /// `ints`), and `dot`'s multiply-add by `d_x·d_y`.
    ///
    /// # Safety
    /// As [`dot`].
    #[inline(always)]
    pub(super) unsafe fn dot4x4<I: Isa>(w: [&[u8]; 4], acts: [&[u8]; 4]) -> [[f32; 4]; 4] {
        let xb = w.map(|r| r.as_chunks::<BLOCK_BYTES>().0);
        let yb = acts.map(|a| a.as_chunks::<34>().0);
        let n = xb.iter().map(|x| x.len()).chain(yb.iter().map(|y| y.len())).min().unwrap_or(0);
        // SAFETY: the entry point this body is inlined into enables AVX2, FMA, F16C and `I`'s
        // features, and its caller checked them at run time.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 4]; 4];
            for k in 0..n {
                let mut q = [_mm256_setzero_si256(); 4];
                let mut dx = [_mm256_setzero_ps(); 4];
                for r in 0..4 {
                    let x = &xb[r][k];
                    q[r] = codes(x);
                    dx[r] = f16_splat8([x[0], x[1]]);
                }
                for (i, y) in yb.iter().enumerate() {
                    let y = &y[k];
                    let [_, _, yq @ ..] = y;
                    let yv = load32(yq);
                    let neg_off = _mm256_sub_epi32(_mm256_setzero_si256(), I::dot_u8_i8(_mm256_set1_epi8(16), yv));
                    let dy = f16_splat8([y[0], y[1]]);
                    for r in 0..4 {
                        let sumi = I::dpbusd(neg_off, q[r], yv);
                        acc[r][i] = _mm256_fmadd_ps(_mm256_mul_ps(dx[r], dy), _mm256_cvtepi32_ps(sumi), acc[r][i]);
                    }
                }
            }
            // Loops, not `map`: a closure would not be compiled with the entry point's features.
            let mut out = [[0f32; 4]; 4];
            for (o, a) in out.iter_mut().zip(&acc) {
                for (o, a) in o.iter_mut().zip(a) {
                    *o = hsum_f32x8(*a);
                }
            }
            out
        }
    }

    /// SIMD Q5_0 · Q8_0 in the order of ggml-cpu's x86 kernel (`ggml_vec_dot_q5_0_q8_0`, the same on
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
        let (yb, _) = act.as_chunks::<34>();
        // SAFETY: the entry point this body is inlined into enables AVX2, FMA, F16C and `I`'s
        // features, and its caller checked them at run time.
        unsafe {
            // Summing eight blocks' integers first would be faster but round differently from
            // llama.cpp, which the model tests compare with bit for bit (see `q4_1.rs`).
            let mut acc = _mm256_setzero_ps();
            for (x, y) in xb.iter().zip(yb) {
                // d_x·d_y in every lane (see `f16_splat8` for why not a scalar product).
                let d = _mm256_mul_ps(f16_splat8([x[0], x[1]]), f16_splat8([y[0], y[1]]));
                let sumi = ints::<I>(codes(x), y);
                acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
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
    fn four_by_four_tiles_equal_one_by_one() {
        let mut state = 0x5eed_u64;
        let mut next = move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let z = (state ^ (state >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0
        };
        for blocks in [1usize, 3, 20] {
            let x: Vec<f32> = (0..32 * blocks).map(|_| next()).collect();
            let mut w = vec![0u8; BLOCK_BYTES * blocks];
            quantize(&x, &mut w);
            let acts: Vec<Vec<u8>> = (0..4)
                .map(|_| {
                    crate::quantize_activations(GgmlType::Q5_0, &(0..32 * blocks).map(|_| next()).collect::<Vec<_>>())
                        .unwrap()
                })
                .collect();
            // Four weight rows (this one and three more) against the four activation rows.
            let mut ws = vec![w.clone()];
            for _ in 0..3 {
                let x: Vec<f32> = (0..32 * blocks).map(|_| next()).collect();
                let mut w = vec![0u8; BLOCK_BYTES * blocks];
                quantize(&x, &mut w);
                ws.push(w);
            }
            let mut acts = acts;
            acts[1][2] = 0x80; // a −128 activation byte: exact in every kernel
            let tile = dot_4x4(std::array::from_fn(|r| ws[r].as_slice()), std::array::from_fn(|i| acts[i].as_slice()));
            for (r, w) in ws.iter().enumerate() {
                for (i, a) in acts.iter().enumerate() {
                    let want = TRAITS.dot(w, a).unwrap();
                    assert_eq!(
                        tile[r][i].to_bits(),
                        want.to_bits(),
                        "{blocks} blocks, weight row {r}, activation row {i}"
                    );
                }
            }
        }
    }

    #[test]
    fn hand_worked_block() {
        // max = −4 is the largest magnitude: d = −4/−16 = 0.25, id = 4.
        let mut x = [0f32; 32];
        x[0] = -4.0; // −16 + 16.5 = 0.5 → 0
        x[1] = 3.9; // 15.6 + 16.5 = 32.1 → 32, clamped to 31
        x[16] = 1.0; // 4 + 16.5 = 20.5 → 20 = 0b1_0100
        x[31] = -0.1; // −0.4 + 16.5 = 16.1 → 16 = 0b1_0000
        let mut b = [0u8; BLOCK_BYTES];
        quantize(&x, &mut b);
        assert_eq!(&b[..2], &[0x00, 0x34]); // 0.25 as a half
        // Fifth bits: value 1 (31), values 2..=15 and 17..=30 (16 each), 16 (20), 31 (16).
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        assert_eq!(qh, !1u32);
        assert_eq!(b[6], 0x40); // value 0 → 0, value 16 → 20 & 15 = 4
        assert_eq!(b[7], 0x0f); // value 1 → 31 & 15, value 17 → 16 & 15 = 0
        let mut y = [0f32; 32];
        dequantize(&b, &mut y);
        assert_eq!((y[0], y[1], y[16], y[31], y[5]), (-4.0, 3.75, 1.0, 0.0, 0.0));
    }
}
