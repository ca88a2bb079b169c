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

/// Four weight rows decoded for batch products ([`decode4`]), one block: each row's 32 five-bit
/// codes (0–31, one per byte, the fifth bit already merged) and its scale as `f32`. A batch
/// product decodes its weight rows once and reads them against every activation row.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Group4 {
    pub codes: [[u8; QK]; 4],
    pub d: [f32; 4],
}

isa_kernel! {
    /// Decodes four rows of whole blocks into `out` (one [`Group4`] per block, as many as `out`
    /// and the shortest row allow).
    pub fn decode4(rows: [&[u8]; 4], out: &mut [Group4]) -> () = x86::decode4 else decode4_scalar(rows, out)
}

fn decode4_scalar(rows: [&[u8]; 4], out: &mut [Group4]) {
    for (r, row) in rows.iter().enumerate() {
        for (b, g) in row.as_chunks::<BLOCK_BYTES>().0.iter().zip(out.iter_mut()) {
            let [d0, d1, h0, h1, h2, h3, qs @ ..] = b;
            let qh = u32::from_le_bytes([*h0, *h1, *h2, *h3]);
            for (j, q) in qs.iter().enumerate() {
                let (x0, x1) = codes(*q, qh, j);
                g.codes[r][j] = (x0 + 16) as u8;
                g.codes[r][j + QK / 2] = (x1 + 16) as u8;
            }
            g.d[r] = f16_le([*d0, *d1]);
        }
    }
}

/// A Q8_0 activation block prepared for [`gemm_group4x4`] ([`prepare_act`]): minus the offset
/// term per group of four bytes, `−16 · Σ q_y` (the decoded codes are unsigned; this takes their
/// bias of 16 back off, as `vec_dot`'s integer sums do), and the scale as `f32`. Computed once per
/// activation row and shared by every weight group.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ActBlock {
    pub neg_offset: [i32; 8],
    pub d: f32,
}

/// Prepares a Q8_0 activation row (whole blocks) into `out`, one [`ActBlock`] per block.
pub fn prepare_act(act: &[u8], out: &mut [ActBlock]) {
    for (y, p) in act.as_chunks::<34>().0.iter().zip(out.iter_mut()) {
        let [d0, d1, yq @ ..] = y;
        for (o, lane) in p.neg_offset.iter_mut().zip(yq.as_chunks::<4>().0) {
            *o = -16 * lane.iter().map(|&q| q as i8 as i32).sum::<i32>();
        }
        p.d = f16_le([*d0, *d1]);
    }
}

isa_kernel! {
    /// A decoded group of four weight rows ([`decode4`]) against four Q8_0 activation rows and
    /// their [`prepare_act`] blocks: `out[r][i]` is bit for bit [`crate::TypeTraits::dot`] of
    /// weight row `r` (before decoding) and activation row `i` — the same exact integer sum per
    /// block and 4-byte lane, the same `d_x · d_y` and multiply-add.
    pub fn gemm_group4x4(w: &[Group4], acts: [&[u8]; 4], prep: [&[ActBlock]; 4]) -> [[f32; 4]; 4] = x86::group4x4 else group_scalar(w, acts, prep)
}

/// [`gemm_group4x4`] without SIMD: [`dot_scalar`]'s arithmetic (`sumf += (d_x·d_y) · sumi`, not
/// fused), as `vec_dot` has it there.
fn group_scalar(w: &[Group4], acts: [&[u8]; 4], prep: [&[ActBlock]; 4]) -> [[f32; 4]; 4] {
    let mut out = [[0f32; 4]; 4];
    for (i, (act, prep)) in acts.iter().zip(prep).enumerate() {
        for ((g, y), p) in w.iter().zip(act.as_chunks::<34>().0).zip(prep) {
            let yq = &y[2..];
            for (r, o) in out.iter_mut().enumerate() {
                let sumi: i32 = g.codes[r].iter().zip(yq).map(|(&c, &q)| (c as i32 - 16) * q as i8 as i32).sum();
                o[i] += (g.d[r] * p.d) * sumi as f32;
            }
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{ActBlock, BLOCK_BYTES, Group4};
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

    /// [`super::decode4`] with SIMD: each block's codes as [`dot`] unpacks them.
    ///
    /// # Safety
    /// As [`dot`].
    #[inline(always)]
    pub(super) unsafe fn decode4<I: Isa>(rows: [&[u8]; 4], out: &mut [Group4]) {
        for (r, row) in rows.iter().enumerate() {
            for (x, g) in row.as_chunks::<BLOCK_BYTES>().0.iter().zip(out.iter_mut()) {
                // SAFETY: the entry point this body is inlined into enables AVX2 (the contract);
                // `codes[r]` is 32 writable bytes.
                unsafe { _mm256_storeu_si256(g.codes[r].as_mut_ptr().cast(), codes(x)) };
                g.d[r] = super::f16_le([x[0], x[1]]);
            }
        }
    }

    /// [`super::gemm_group4x4`]'s body. Per run of up to [`RUN`] blocks, first the sixteen
    /// products `d_x · d_y` of each block (four multiplies, each the product `dot` takes), stored;
    /// then per block the four rows' decoded codes and per output one `dpbusd` starting from the
    /// prepared `−16 · Σ q_y` (the same exact lanes as `ints`), and `dot`'s multiply-add with its
    /// product broadcast from memory (a load, where a product kept in a register would cost a
    /// shuffle per output).
    ///
    /// # Safety
    /// As [`dot`].
    #[inline(always)]
    pub(super) unsafe fn group4x4<I: Isa>(w: &[Group4], acts: [&[u8]; 4], prep: [&[ActBlock]; 4]) -> [[f32; 4]; 4] {
        const RUN: usize = 16;
        let n = acts.iter().map(|a| a.len() / 34).chain(prep.iter().map(|p| p.len())).fold(w.len(), usize::min);
        // Each exactly `n` long, so the loops below index without bounds checks.
        let w = &w[..n];
        let (a, p) = (|i: usize| &acts[i].as_chunks::<34>().0[..n], |i: usize| &prep[i][..n]);
        let (yb, prep) = ([a(0), a(1), a(2), a(3)], [p(0), p(1), p(2), p(3)]);
        // SAFETY: the entry point this body is inlined into enables AVX2, FMA, F16C and `I`'s
        // features, and its caller checked them at run time.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 4]; 4];
            let mut k0 = 0;
            while k0 < n {
                let len = (n - k0).min(RUN);
                // products[c][4 · i + r] = d_x(row r) · d_y(activation i) of block k0 + c; left
                // uninitialised past `len` (zeroing the whole array cost as much as the stores).
                let mut products = [std::mem::MaybeUninit::<[f32; 16]>::uninit(); RUN];
                for (c, p) in products[..len].iter_mut().enumerate() {
                    let dx = _mm_loadu_ps(w[k0 + c].d.as_ptr());
                    let p = p.as_mut_ptr().cast::<f32>();
                    for (i, prep) in prep.iter().enumerate() {
                        _mm_storeu_ps(p.add(4 * i), _mm_mul_ps(dx, _mm_set1_ps(prep[k0 + c].d)));
                    }
                }
                for (c, p) in products[..len].iter().enumerate() {
                    // Written above: all sixteen floats of each of the first `len` entries.
                    let p = p.assume_init_ref();
                    let k = k0 + c;
                    let mut q = [_mm256_setzero_si256(); 4];
                    for (q, codes) in q.iter_mut().zip(&w[k].codes) {
                        *q = load32(codes);
                    }
                    for i in 0..4 {
                        let [_, _, yq @ ..] = &yb[i][k];
                        let yv = load32(yq);
                        let neg_off = _mm256_loadu_si256(prep[i][k].neg_offset.as_ptr().cast());
                        for r in 0..4 {
                            let sumi = I::dpbusd(neg_off, q[r], yv);
                            let d = _mm256_broadcast_ss(&p[4 * i + r]);
                            acc[r][i] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc[r][i]);
                        }
                    }
                }
                k0 += len;
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
    fn decoded_groups_equal_one_by_one() {
        let mut next = crate::test_rng::uniform(0x5eed);
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
            let mut group = vec![Group4::default(); blocks];
            decode4(std::array::from_fn(|r| ws[r].as_slice()), &mut group);
            let prep: Vec<Vec<ActBlock>> = acts
                .iter()
                .map(|a| {
                    let mut p = vec![ActBlock::default(); blocks];
                    prepare_act(a, &mut p);
                    p
                })
                .collect();
            let tile = gemm_group4x4(
                &group,
                std::array::from_fn(|i| acts[i].as_slice()),
                std::array::from_fn(|i| prep[i].as_slice()),
            );
            // The decoded codes are the file's: (code − 16) · d is what `dequantize` gives.
            for (r, w) in ws.iter().enumerate() {
                let mut y = vec![0f32; 32 * blocks];
                dequantize(w, &mut y);
                for (b, g) in group.iter().enumerate() {
                    for (j, &c) in g.codes[r].iter().enumerate() {
                        assert_eq!((c as i32 - 16) as f32 * g.d[r], y[32 * b + j]);
                    }
                }
            }
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
