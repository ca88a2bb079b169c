//! MXFP4 (`GGML_TYPE_MXFP4` = 39): the OCP Microscaling 4-bit float format, as ggml stores it.
//! gpt-oss ships its expert weights in it.
//!
//! # Block layout
//!
//! A block holds 32 values in 17 bytes:
//!
//! | bytes | field | meaning |
//! | --- | --- | --- |
//! | 0 | `e` | the block's shared scale, E8M0: an 8-bit biased exponent, scale = 2^(e − 127) |
//! | 1..17 | `qs[16]` | 32 E2M1 codes, 4 bits each: value `j` (0–15) is the **low** nibble of `qs[j]`, value `j + 16` the **high** nibble of `qs[j]` |
//!
//! (The halves are split the same way as in Q4_0: the first 16 values sit in the low nibbles,
//! not interleaved pairs.)
//!
//! # Values
//!
//! An E2M1 code is `s e1 e0 m`: a sign bit, two exponent bits and one mantissa bit. Its eight
//! magnitudes are
//!
//! | code (sign 0) | 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 |
//! | --- | --- | --- | --- | --- | --- | --- | --- | --- |
//! | E2M1 value | 0 | 0.5 | 1 | 1.5 | 2 | 3 | 4 | 6 |
//!
//! and codes 8–15 are the same magnitudes negated (code 8 is −0 in the spec). The decoded value
//! is `E2M1(code) · 2^(e − 127)`.
//!
//! ggml keeps the table doubled, as integers — [`KVALUES`] = `{0, 1, 2, 3, 4, 6, 8, 12, 0, −1, −2,
//! −3, −4, −6, −8, −12}` — and halves the scale instead: it multiplies by
//! `ggml_e8m0_to_fp32_half(e)` = 2^(e − 128) ([`e8m0_to_f32_half`]). The product is the same
//! number (both factors are powers of two times small integers), and the integer table lets the
//! dot product against Q8_0 activations run on integer multiply-adds. One visible consequence:
//! the integer table has no −0, so code 8 decodes to +0 in ggml (and here), not −0.
//!
//! `ggml_e8m0_to_fp32_half` builds the `f32` bits directly: `e ≥ 2` gives exponent field `e − 1`
//! (2^(e − 128)); `e = 1` gives the subnormal 2^(−127) and `e = 0` the subnormal 2^(−128). There
//! is no NaN: the OCP spec reserves `e = 255` for NaN, but ggml decodes it as 2^127, so a block
//! with `e = 255` dequantizes to ±0, ±2^127 (code ±1) and ±∞ (every larger code, whose product
//! overflows `f32`); `e = 254` similarly gives ±∞ for codes of magnitude ≥ 4 (doubled). This
//! module matches ggml in all of these cases.
//!
//! # Worked example
//!
//! ```
//! use kiln_quant::mxfp4;
//!
//! let mut block = [0u8; 17];
//! block[0] = 128;  // scale 2^(128 − 127) = 2
//! block[1] = 0x92; // value 0: code 2 (+1.0) → 2;    value 16: code 9 (−0.5) → −1
//! block[2] = 0x7f; // value 1: code 15 (−6.0) → −12; value 17: code 7 (+6.0) → 12
//! block[3] = 0x08; // value 2: code 8 (−0) → +0;     value 18: code 0 (+0) → +0
//! let mut y = [0f32; 32];
//! mxfp4::dequantize(&block, &mut y);
//! assert_eq!((y[0], y[16], y[1], y[17]), (2.0, -1.0, -12.0, 12.0));
//! // ggml's doubled table holds the integer 0 for code 8, so both zeros are +0.
//! assert_eq!((y[2].to_bits(), y[18].to_bits()), (0, 0));
//! ```
//!
//! # Quantizing
//!
//! [`quantize`] is ggml's `quantize_row_mxfp4_ref`: `e = (uint8)(floor(log2(amax)) − 2 + 127)`
//! (0 for an all-zero block): the OCP spec's choice, scale = 2^(floor(log2 amax) − 2), which puts
//! the largest magnitude at 4–8 times the scale, at the top of the E2M1 range (magnitudes between
//! 6 and 8 times the scale saturate to 6). Then each value takes the code whose `KVALUES[i] · d`
//! (`d` = 2^(e − 128)) is nearest, the lowest code winning ties (so small negative values round
//! to +0, code 0, not −0, and 0.75, 1.75, 3.5 times the scale go down to 0.5, 1.5, 3 where
//! round-to-nearest-even would go up). `log2` is the C library's `log2f` (correctly rounded on glibc, which
//! rounds values just below a power of two up to the integer), and the float-to-`uint8` cast
//! follows x86-64 compilers: blocks whose largest magnitude is below 2^−125 get a wrapped-around
//! scale byte (e.g. 232 for 2^−149) and all-zero codes.
//!
//! The dot product takes Q8_0 activations (`vec_dot_type` = Q8_0), as ggml's
//! `ggml_vec_dot_mxfp4_q8_0`.

use crate::formats::common::{c_cast_i32, f16_le, isa_kernel};
use crate::{Dot, GgmlType, TypeTraits, UnsafeDotFn};

/// Values per block.
pub const QK: usize = 32;
/// Bytes per block: one scale byte and 16 bytes of codes.
pub const BLOCK_BYTES: usize = 1 + QK / 2;

/// ggml's `kvalues_mxfp4`: the E2M1 values doubled, indexed by the 4-bit code.
pub const KVALUES: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// The E2M1 value of each 4-bit code (OCP MX spec, table "FP4 E2M1"): `KVALUES / 2`.
pub const E2M1: [f32; 16] = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0];

/// `ggml_e8m0_to_fp32_half(e)`: 2^(e − 128) built from bits (subnormal for `e` = 0 and 1,
/// 2^127 for `e` = 255; never NaN).
pub const fn e8m0_to_f32_half(e: u8) -> f32 {
    let bits = if e < 2 { 0x0020_0000u32 << e } else { ((e as u32) - 1) << 23 };
    f32::from_bits(bits)
}

/// [`KVALUES`] as `f32` (exact), so dequantizing is one lookup and one multiply per value.
const KVALUES_F32: [f32; 16] = {
    let mut t = [0f32; 16];
    let mut i = 0;
    while i < 16 {
        t[i] = KVALUES[i] as f32;
        i += 1;
    }
    t
};

/// [`e8m0_to_f32_half`] for every scale byte.
const E8M0_HALF: [f32; 256] = {
    let mut t = [0f32; 256];
    let mut e = 0;
    while e < 256 {
        t[e] = e8m0_to_f32_half(e as u8);
        e += 1;
    }
    t
};

/// The MXFP4 table entry.
pub const TRAITS: TypeTraits = TypeTraits {
    ty: GgmlType::MXFP4,
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

/// `dequantize_row_mxfp4`: `KVALUES[code] · 2^(e − 128)` for every value of whole blocks.
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.as_chunks::<BLOCK_BYTES>().0.iter().zip(dst.as_chunks_mut::<QK>().0) {
        let [e, qs @ ..] = b;
        let d = E8M0_HALF[*e as usize];
        let (lo, hi) = y.split_at_mut(QK / 2);
        for ((q, a), b) in qs.iter().zip(lo).zip(hi) {
            *a = KVALUES_F32[(q & 0x0f) as usize] * d;
            *b = KVALUES_F32[(q >> 4) as usize] * d;
        }
    }
}

/// ggml's `best_index_mxfp4`: the code minimizing `|KVALUES[i]·d − x|`, lowest on ties (0 for
/// NaN).
fn best_index(x: f32, d: f32) -> u8 {
    let mut best = 0u8;
    let mut best_err = (KVALUES[0] as f32 * d - x).abs();
    for (i, k) in KVALUES.iter().enumerate().skip(1) {
        let err = (*k as f32 * d - x).abs();
        if err < best_err {
            best = i as u8;
            best_err = err;
        }
    }
    best
}

/// The scale byte `quantize_row_mxfp4_ref` picks for a block whose largest magnitude is `amax`.
pub fn scale_for_amax(amax: f32) -> u8 {
    if amax > 0.0 { c_cast_i32(amax.log2().floor() - 2.0 + 127.0) as u8 } else { 0 }
}

/// `quantize_row_mxfp4_ref`: the scale from the block's largest magnitude
/// ([`scale_for_amax`]), then the nearest code for each value.
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.as_chunks::<QK>().0.iter().zip(dst.as_chunks_mut::<BLOCK_BYTES>().0) {
        let mut amax = 0f32;
        for v in x {
            if amax < v.abs() {
                amax = v.abs();
            }
        }
        let [e, qs @ ..] = b;
        *e = scale_for_amax(amax);
        let d = E8M0_HALF[*e as usize];
        for (j, q) in qs.iter_mut().enumerate() {
            *q = best_index(x[j], d) | (best_index(x[j + QK / 2], d) << 4);
        }
    }
}

/// Portable MXFP4 · Q8_0 dot product, as `ggml_vec_dot_mxfp4_q8_0_generic`: per block
/// `sumf += (d_y · 2^(e−128)) · Σ KVALUES[code]·q_y` in `f32`.
pub fn dot_scalar(w: &[u8], act: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in w.as_chunks::<BLOCK_BYTES>().0.iter().zip(act.as_chunks::<34>().0) {
        let [e, xq @ ..] = x;
        let [yd0, yd1, yq @ ..] = y;
        let d = f16_le([*yd0, *yd1]) * E8M0_HALF[*e as usize];
        let (mut sumi1, mut sumi2) = (0i32, 0i32);
        for (j, q) in xq.iter().enumerate() {
            sumi1 += yq[j] as i8 as i32 * KVALUES[(q & 0x0f) as usize] as i32;
            sumi2 += yq[j + QK / 2] as i8 as i32 * KVALUES[(q >> 4) as usize] as i32;
        }
        sumf += d * (sumi1 + sumi2) as f32;
    }
    sumf
}

isa_kernel! {
    /// Eight rows of MXFP4 weights against one Q8_0 activation row, each summed exactly as
    /// [`crate::TypeTraits::dot`] sums it (the same result for every row, bit for bit), computed the
    /// way ggml's repacked GEMV computes eight columns at once: with AVX2, one vector lane per row,
    /// so that the eight per-block fused multiply-add chains run side by side.
    pub fn dot_rows8(w: [&[u8]; 8], act: &[u8]) -> [f32; 8] = x86::rows8 else w.map(|r| dot_scalar(r, act))
}

/// Rows in a packed group ([`pack8`]).
pub const PACK_ROWS: usize = 8;
/// Bytes of one block of a packed group: the eight rows' 128 bytes of codes, then their eight
/// scale bytes (the same 8 × 17 bytes as the rows' blocks, rearranged).
pub const PACKED_BLOCK_BYTES: usize = PACK_ROWS * BLOCK_BYTES;

/// Rearranges `rows` rows of MXFP4 blocks (`src`, `rows × row_bytes`, `rows` a multiple of
/// [`PACK_ROWS`]) into groups of eight rows for [`gemv_packed8`] and [`gemm_packed8x4`]: group `g`
/// (rows `8g..8g + 8`) takes `row_bytes × 8` bytes at `dst[g · 8 · row_bytes..]`, one
/// [`PACKED_BLOCK_BYTES`] entry per block, in block order. An entry holds, for `a` = 0..4 and then
/// row `r` = 0..8, bytes `4a..4a + 4` of row `r`'s 16 code bytes, followed by the eight rows'
/// scale bytes. So a 32-byte load of part `a` holds codes `4a..4a + 4` (low nibbles) and
/// `16 + 4a..16 + 4a + 4` (high nibbles) of all eight rows, one row per 32-bit lane: one
/// `vpdpbusd` against four activation bytes broadcast to every lane sums four products for eight
/// rows. The bits are the same, only their places change (the layout is kiln's own; ggml's
/// `block_mxfp4x8` interleaves eight bytes at a time).
///
/// # Panics
/// If `rows` is not a multiple of 8, `row_bytes` not a whole number of blocks, or the slices do not
/// hold `rows × row_bytes` bytes.
pub fn pack8(src: &[u8], rows: usize, row_bytes: usize, dst: &mut [u8]) {
    assert!(rows.is_multiple_of(PACK_ROWS) && row_bytes.is_multiple_of(BLOCK_BYTES));
    assert!(src.len() == rows * row_bytes && dst.len() == src.len());
    let nb = row_bytes / BLOCK_BYTES;
    let group_bytes = PACK_ROWS * row_bytes;
    for (g, out) in dst.chunks_exact_mut(group_bytes).enumerate() {
        let rows = &src[g * group_bytes..(g + 1) * group_bytes];
        for (b, entry) in out.as_chunks_mut::<PACKED_BLOCK_BYTES>().0.iter_mut().enumerate().take(nb) {
            for r in 0..PACK_ROWS {
                let block = &rows[r * row_bytes + b * BLOCK_BYTES..][..BLOCK_BYTES];
                for a in 0..4 {
                    entry[(a * PACK_ROWS + r) * 4..][..4].copy_from_slice(&block[1 + 4 * a..5 + 4 * a]);
                }
                entry[128 + r] = block[0];
            }
        }
    }
}

/// The offset term of the packed kernels for one Q8_0 activation row: per block, `12 · Σ q_y`
/// (the kernels multiply codes looked up as `KVALUES + 12`, unsigned, and take this back off).
/// Computed once per activation row and shared by every weight group.
pub fn packed_offsets(act: &[u8]) -> Vec<i32> {
    act.as_chunks::<34>().0.iter().map(|y| 12 * y[2..].iter().map(|&q| q as i8 as i32).sum::<i32>()).collect()
}

isa_kernel! {
    /// Eight rows of a packed group ([`pack8`]; `w` is the group's `8 · row_bytes` bytes) against
    /// one Q8_0 activation row and its [`packed_offsets`]: the same eight results, bit for bit, as
    /// [`dot_rows8`] and [`crate::TypeTraits::dot`] give on the rows before packing (each
    /// block's exact integer sum, then `acc = fma(sumi, e8m0_half(e) · d_y, acc)` over the blocks
    /// in order, as ggml's repacked GEMV). Without AVX2, [`dot_scalar`]'s arithmetic, as
    /// `vec_dot` has there.
    pub fn gemv_packed8(w: &[u8], act: &[u8], offsets: &[i32]) -> [f32; 8] = x86::gemv_packed1 else packed_scalar(w, [act], [offsets])[0]
}

isa_kernel! {
    /// [`gemv_packed8`] for four activation rows at once (each weight block unpacked once for the
    /// four): `out[i]` is bit for bit `gemv_packed8(w, acts[i], offsets[i])`.
    pub fn gemm_packed8x4(w: &[u8], acts: [&[u8]; 4], offsets: [&[i32]; 4]) -> [[f32; 8]; 4] = x86::gemm_packed4 else packed_scalar(w, acts, offsets)
}

/// The packed kernels without SIMD (CPUs without AVX2): each row's exact block sums from the
/// packed layout, added as [`dot_scalar`] adds them (`sumf += (d_y · 2^(e−128)) · sumi`, not
/// fused), so that they equal `vec_dot` there too.
fn packed_scalar<const R: usize>(w: &[u8], acts: [&[u8]; R], offsets: [&[i32]; R]) -> [[f32; 8]; R] {
    let wb = w.as_chunks::<PACKED_BLOCK_BYTES>().0;
    let mut out = [[0f32; 8]; R];
    for (i, (act, offs)) in acts.iter().zip(offsets).enumerate() {
        for (b, (entry, y)) in wb.iter().zip(act.as_chunks::<34>().0).enumerate() {
            let dy = f16_le([y[0], y[1]]);
            for (r, acc) in out[i].iter_mut().enumerate() {
                let mut sumi = -offs[b];
                for a in 0..4 {
                    for t in 0..4 {
                        let q = entry[(a * PACK_ROWS + r) * 4 + t];
                        let lo = KVALUES[(q & 0x0f) as usize] as i32 + 12;
                        let hi = KVALUES[(q >> 4) as usize] as i32 + 12;
                        sumi += lo * y[2 + 4 * a + t] as i8 as i32 + hi * y[18 + 4 * a + t] as i8 as i32;
                    }
                }
                *acc += dy * E8M0_HALF[entry[128 + r] as usize] * sumi as f32;
            }
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{BLOCK_BYTES, E8M0_HALF, KVALUES, PACKED_BLOCK_BYTES};
    use crate::formats::common::dot_entry_points;
    use crate::formats::common::x86::{Isa, f16_le, f16_splat8, halves8, load16, load32, sum_lanes8, unpack_nibbles};

    /// [`KVALUES`] plus 12: the doubled E2M1 values as unsigned bytes 0..24.
    const KVALUES_PLUS_12: [u8; 16] = {
        let mut t = [0u8; 16];
        let mut i = 0;
        while i < 16 {
            t[i] = (KVALUES[i] + 12) as u8;
            i += 1;
        }
        t
    };

    /// Per-lane integer sums of one block's products; `table` holds [`KVALUES_PLUS_12`] in both
    /// 128-bit lanes, and a byte shuffle through it turns codes into (doubled) values plus 12,
    /// which `I::dot_offset` multiplies as unsigned bytes and takes the 12 back off: exact in
    /// both implementations for every activation byte.
    ///
    /// # Safety
    /// As [`dot`].
    #[inline(always)]
    unsafe fn ints<I: Isa>(x: &[u8; BLOCK_BYTES], y: &[u8; 34], table: __m256i) -> __m256i {
        let ([_, xq @ ..], [_, _, yq @ ..]) = (x, y);
        // SAFETY: the caller's features (this function's contract).
        unsafe {
            let q = _mm256_shuffle_epi8(table, unpack_nibbles(xq));
            I::dot_offset(q, _mm256_set1_epi8(12), load32(yq))
        }
    }

    /// `ggml_e8m0_to_fp32_half` of eight scale bytes at once, by the same bit construction:
    /// `(e − 1) << 23` for `e ≥ 2`, `0x0020_0000 << e` for `e` = 0 and 1.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn e8m0_half8(e: [u8; 8]) -> __m256 {
        let e = _mm256_cvtepu8_epi32(_mm_set_epi64x(0, u64::from_le_bytes(e) as i64));
        let normal = _mm256_slli_epi32::<23>(_mm256_sub_epi32(e, _mm256_set1_epi32(1)));
        let tiny = _mm256_sllv_epi32(_mm256_set1_epi32(0x0020_0000), e);
        let is_tiny = _mm256_cmpgt_epi32(_mm256_set1_epi32(2), e);
        _mm256_castsi256_ps(_mm256_blendv_epi8(normal, tiny, is_tiny))
    }

    /// SIMD MXFP4 · Q8_0 in the order of llama.cpp's x86 CPU path for MXFP4 weights: ggml-cpu
    /// repacks MXFP4 matrices whose row count is a multiple of 8 (every gpt-oss expert matrix)
    /// and multiplies them with `ggml_gemv_mxfp4_8x8_q8_0`, which per output takes each block's
    /// exact integer dot product and chains `acc = fma(sumi, e8m0_half(e) · d_y, acc)` over the
    /// blocks in order. Eight blocks' integer sums are made at once (lane k = block k's exact
    /// `sumi`) and their eight scales converted together; the chain itself is scalar.
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
            let table = _mm256_broadcastsi128_si256(load16(&KVALUES_PLUS_12));
            let mut acc = 0f32;
            let (mut sumi, mut scale) = ([0f32; 8], [0f32; 8]);
            for (x, y) in x8.iter().zip(y8) {
                let dx = e8m0_half8(x.each_ref().map(|b| b[0]));
                let dy = halves8(y.each_ref().map(|b| [b[0], b[1]]));
                // A loop, not `array::from_fn`: a closure would not be compiled with the entry
                // point's target features, and LLVM does not always inline it.
                let mut p = [_mm256_setzero_si256(); 8];
                for (k, p) in p.iter_mut().enumerate() {
                    *p = ints::<I>(&x[k], &y[k], table);
                }
                _mm256_storeu_ps(sumi.as_mut_ptr(), _mm256_cvtepi32_ps(sum_lanes8(p)));
                _mm256_storeu_ps(scale.as_mut_ptr(), _mm256_mul_ps(dx, dy));
                for (s, d) in sumi.iter().zip(&scale) {
                    acc = s.mul_add(*d, acc);
                }
            }
            let done = x8.len().min(y8.len()) * 8;
            for (x, y) in xb.iter().zip(yb).skip(done) {
                let d = E8M0_HALF[x[0] as usize] * f16_le([y[0], y[1]]);
                let lanes = ints::<I>(x, y, table);
                let s = _mm256_extract_epi32::<0>(sum_lanes8([lanes; 8]));
                acc = (s as f32).mul_add(d, acc);
            }
            acc
        }
    }

    dot_entry_points!(dot);

    /// [`super::dot_rows8`]'s body: per block, the eight rows' exact integer sums reduced into
    /// one vector (lane r = row r), their scales `e8m0_half(e_r) · d_y`, and one fused
    /// multiply-add into the eight running sums, as `ggml_gemv_mxfp4_8x8_q8_0`.
    ///
    /// # Safety
    /// As [`dot`].
    #[inline(always)]
    pub(super) unsafe fn rows8<I: Isa>(w: [&[u8]; 8], act: &[u8]) -> [f32; 8] {
        let (yb, _) = act.as_chunks::<34>();
        let xb = w.map(|r| r.as_chunks::<BLOCK_BYTES>().0);
        let n = xb.iter().map(|r| r.len()).min().unwrap_or(0).min(yb.len());
        // SAFETY: the entry point this body is inlined into enables AVX2, FMA, F16C and `I`'s
        // features, and its caller checked them at run time.
        unsafe {
            let table = _mm256_broadcastsi128_si256(load16(&KVALUES_PLUS_12));
            let mut acc = _mm256_setzero_ps();
            for (k, y) in yb[..n].iter().enumerate() {
                let [_, _, yq @ ..] = y;
                let yq = load32(yq);
                // `ints`' offset term (12 · the activations), the same for every row: once.
                let c = I::dot_u8_i8(_mm256_set1_epi8(12), yq);
                let mut p = [_mm256_setzero_si256(); 8];
                for (r, p) in p.iter_mut().enumerate() {
                    let [_, xq @ ..] = &xb[r][k];
                    let q = _mm256_shuffle_epi8(table, unpack_nibbles(xq));
                    *p = _mm256_sub_epi32(I::dot_u8_i8(q, yq), c);
                }
                let sumi = _mm256_cvtepi32_ps(sum_lanes8(p));
                let dx = e8m0_half8(std::array::from_fn(|r| xb[r][k][0]));
                let dy = _mm256_set1_ps(f16_le([y[0], y[1]]));
                acc = _mm256_fmadd_ps(sumi, _mm256_mul_ps(dx, dy), acc);
            }
            let mut out = [0f32; 8];
            _mm256_storeu_ps(out.as_mut_ptr(), acc);
            out
        }
    }

    /// [`super::gemv_packed8`]'s body.
    ///
    /// # Safety
    /// As [`dot`].
    #[inline(always)]
    pub(super) unsafe fn gemv_packed1<I: Isa>(w: &[u8], act: &[u8], offsets: &[i32]) -> [f32; 8] {
        // SAFETY: as this function's own contract.
        unsafe { packed::<I, 1>(w, [act], [offsets])[0] }
    }

    /// [`super::gemm_packed8x4`]'s body.
    ///
    /// # Safety
    /// As [`dot`].
    #[inline(always)]
    pub(super) unsafe fn gemm_packed4<I: Isa>(w: &[u8], acts: [&[u8]; 4], offsets: [&[i32]; 4]) -> [[f32; 8]; 4] {
        // SAFETY: as this function's own contract.
        unsafe { packed::<I, 4>(w, acts, offsets) }
    }

    /// A packed group of eight rows against `R` activation rows. Per block: four 32-byte loads
    /// hold all the codes; masking and shifting the nibbles and one byte shuffle through
    /// [`KVALUES_PLUS_12`] give eight registers of values + 12 (register `t` = values
    /// `4t..4t + 4` of each row, one row per lane). For each activation row, eight `dpbusd`
    /// against its four bytes `4t..4t + 4` broadcast, starting from `−12 · Σ q_y`, leave each row's
    /// exact block sum in its lane; then one fused multiply-add by `e8m0_half(e_r) · d_y` (lane r).
    ///
    /// # Safety
    /// As [`dot`].
    #[inline(always)]
    unsafe fn packed<I: Isa, const R: usize>(w: &[u8], acts: [&[u8]; R], offsets: [&[i32]; R]) -> [[f32; 8]; R] {
        let (wb, _) = w.as_chunks::<PACKED_BLOCK_BYTES>();
        let yb = acts.map(|a| a.as_chunks::<34>().0);
        let n = yb.iter().zip(&offsets).fold(wb.len(), |n, (y, o)| n.min(y.len()).min(o.len()));
        // SAFETY: the entry point this body is inlined into enables AVX2, FMA, F16C and `I`'s
        // features, and its caller checked them at run time.
        unsafe {
            let table = _mm256_broadcastsi128_si256(load16(&KVALUES_PLUS_12));
            let low = _mm256_set1_epi8(0x0f);
            let mut acc = [_mm256_setzero_ps(); R];
            for b in 0..n {
                let entry = &wb[b];
                let mut q = [_mm256_setzero_si256(); 8];
                for a in 0..4 {
                    let raw = load32(entry[32 * a..32 * a + 32].try_into().expect("32 bytes"));
                    q[a] = _mm256_shuffle_epi8(table, _mm256_and_si256(raw, low));
                    q[4 + a] = _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16::<4>(raw), low));
                }
                let dx = e8m0_half8(entry[128..136].try_into().expect("8 bytes"));
                for i in 0..R {
                    let y = &yb[i][b];
                    let mut sumi = _mm256_set1_epi32(-offsets[i][b]);
                    for (t, q) in q.iter().enumerate() {
                        let four = i32::from_le_bytes(y[2 + 4 * t..6 + 4 * t].try_into().expect("4 bytes"));
                        sumi = I::dpbusd(sumi, *q, _mm256_set1_epi32(four));
                    }
                    let dy = f16_splat8([y[0], y[1]]);
                    acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_mul_ps(dx, dy), acc[i]);
                }
            }
            acc.map(|a| {
                let mut out = [0f32; 8];
                _mm256_storeu_ps(out.as_mut_ptr(), a);
                out
            })
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn vector_scales_match_the_table() {
            if !crate::simd::has_avx2_fma() {
                return;
            }
            for start in (0..256).step_by(8) {
                let e: [u8; 8] = std::array::from_fn(|k| (start + k) as u8);
                let mut got = [0f32; 8];
                // SAFETY: AVX2, FMA and F16C were detected above; `got` is 32 writable bytes.
                unsafe { _mm256_storeu_ps(got.as_mut_ptr(), e8m0_half8(e)) };
                for (k, v) in got.iter().enumerate() {
                    assert_eq!(v.to_bits(), E8M0_HALF[start + k].to_bits(), "e={}", start + k);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_doubled_e2m1() {
        for (k, v) in KVALUES.iter().zip(E2M1) {
            assert_eq!(*k as f32, 2.0 * v);
        }
        // Sign bit: codes 8..15 mirror 0..7.
        for i in 0..8 {
            assert_eq!(KVALUES[i + 8], -KVALUES[i]);
        }
    }

    #[test]
    fn scale_bytes_match_ggml_bit_construction() {
        // Hand-derived: 2^(e − 128).
        assert_eq!(e8m0_to_f32_half(0), 2f32.powi(-128));
        assert_eq!(e8m0_to_f32_half(0).to_bits(), 0x0020_0000); // subnormal
        assert_eq!(e8m0_to_f32_half(1), 2f32.powi(-127));
        assert_eq!(e8m0_to_f32_half(2), 2f32.powi(-126)); // smallest normal
        assert_eq!(e8m0_to_f32_half(127), 0.5);
        assert_eq!(e8m0_to_f32_half(128), 1.0);
        assert_eq!(e8m0_to_f32_half(254), 2f32.powi(126));
        assert_eq!(e8m0_to_f32_half(255), 2f32.powi(127)); // not NaN, unlike the OCP spec
        for e in 0..=255u8 {
            assert!(e8m0_to_f32_half(e).is_finite());
        }
    }

    #[test]
    fn edge_scale_bytes_dequantize_like_ggml() {
        // Codes 0 (+0), 8 (−0), 1 (±0.5 → doubled 1), 7 (6 → doubled 12).
        let mut b = [0u8; BLOCK_BYTES];
        b[1] = 0x80; // value 0: +0, value 16: −0
        b[2] = 0x71; // value 1: 1, value 17: 12
        b[3] = 0x9f; // value 2: −12, value 18: −1
        let mut y = [0f32; 32];
        for (e, one, twelve) in [
            (0u8, 2f32.powi(-128), 12.0 * 2f32.powi(-128)),
            (1, 2f32.powi(-127), 12.0 * 2f32.powi(-127)),
            (127, 0.5, 6.0),
            (254, 2f32.powi(126), f32::INFINITY),
            (255, 2f32.powi(127), f32::INFINITY),
        ] {
            b[0] = e;
            dequantize(&b, &mut y);
            // Code 8 is −0 in E2M1, but ggml's integer table gives +0 for both.
            assert_eq!(y[0].to_bits(), 0, "e={e}");
            assert_eq!(y[16].to_bits(), 0, "e={e}");
            assert_eq!((y[1], y[17], y[2], y[18]), (one, twelve, -twelve, -one), "e={e}");
        }
    }

    #[test]
    fn quantizer_scale_and_ties() {
        // amax = 6 → floor(log2 6) = 2 → e = 127, d = 0.5: values are E2M1 exactly.
        let mut x = [0f32; 32];
        x[0] = 6.0;
        x[1] = -0.5;
        x[2] = 0.25; // halfway between 0 and 0.5: lowest code (0) wins
        x[3] = -0.25; // halfway between −0.5 and 0: code 0 (+0) wins over 8 and 9
        x[4] = 2.5; // halfway between 2 (code 4) and 3 (code 5): 4
        x[16] = 5.0; // halfway between 4 and 6: code 6
        x[17] = -1.25; // halfway between −1 (10) and −1.5 (11): 10
        x[18] = 0.75; // halfway between 0.5 (1) and 1 (2): 1, where ties-to-even would give 1.0
        x[19] = -3.5; // halfway between −3 (13) and −4 (14): 13, where ties-to-even gives −4
        let mut b = [0u8; BLOCK_BYTES];
        quantize(&x, &mut b);
        assert_eq!(b[0], 127);
        assert_eq!(b[1], 0x67); // value 0 → 7, value 16 → 6
        assert_eq!(b[2], 0xa9); // value 1 → 9, value 17 → 10
        assert_eq!(&b[3..6], &[0x10, 0xd0, 0x04]);
        // All zero: e = 0, codes 0.
        quantize(&[0.0; 32], &mut b);
        assert_eq!(b, [0; BLOCK_BYTES]);
        // Scale bytes: 4 → 127 + 0 (floor(log2 4) − 2 = 0); 8 → 128; 1 → 125; 2^-149 wraps.
        assert_eq!(scale_for_amax(4.0), 127);
        assert_eq!(scale_for_amax(7.99), 127);
        assert_eq!(scale_for_amax(8.0), 128);
        assert_eq!(scale_for_amax(1.0), 125);
        assert_eq!(scale_for_amax(f32::from_bits(1)), 232);
        // log2f(f32::MAX) = 128 − 2^-24/ln 2 rounds to 128.0 in f32: floor gives 128, not 127.
        assert_eq!(scale_for_amax(f32::MAX), 253);
        assert_eq!(scale_for_amax(f32::INFINITY), 0); // (uint8)inf on x86
    }

    #[test]
    fn eight_rows_at_once_equal_row_by_row() {
        // Weights and activations from a splitmix64 stream: every code and a spread of scales.
        let mut next = crate::test_rng::splitmix64(0x1234_5678_9abc_def0);
        for blocks in [1usize, 7, 8, 9, 90] {
            let rows: Vec<Vec<u8>> = (0..8)
                .map(|_| {
                    let mut r: Vec<u8> = (0..blocks * BLOCK_BYTES).map(|_| next() as u8).collect();
                    for b in r.chunks_mut(BLOCK_BYTES) {
                        b[0] = 110 + (b[0] % 30); // scales 2^-18 .. 2^11
                    }
                    r
                })
                .collect();
            let x: Vec<f32> = (0..blocks * QK).map(|_| (next() % 2001) as f32 / 1000.0 - 1.0).collect();
            let act = crate::quantize_activations(GgmlType::MXFP4, &x).unwrap();
            let w: [&[u8]; 8] = std::array::from_fn(|r| rows[r].as_slice());
            let got = dot_rows8(w, &act);
            for r in 0..8 {
                let want = crate::traits(GgmlType::MXFP4).unwrap().dot(&rows[r], &act).unwrap();
                assert_eq!(got[r].to_bits(), want.to_bits(), "{blocks} blocks, row {r}");
            }
        }
    }

    #[test]
    fn packed_groups_equal_row_by_row() {
        // Sixteen rows (two groups) of random blocks with every scale byte, the edge ones (0, 1,
        // 254, 255) included, against activations with −128 bytes: every kernel gives `dot`'s bits.
        let mut next = crate::test_rng::splitmix64(0x0fed_cba9_8765_4321);
        let dot = crate::traits(GgmlType::MXFP4).unwrap();
        for blocks in [1usize, 2, 9, 90] {
            let rb = blocks * BLOCK_BYTES;
            let mut w: Vec<u8> = (0..16 * rb).map(|_| next() as u8).collect();
            for (i, b) in w.chunks_mut(BLOCK_BYTES).enumerate() {
                b[0] = if i % 7 == 3 { [0, 1, 254, 255][i % 4] } else { 100 + (b[0] % 50) };
            }
            let mut packed = vec![0u8; w.len()];
            pack8(&w, 16, rb, &mut packed);
            let acts: Vec<Vec<u8>> = (0..4)
                .map(|_| {
                    let x: Vec<f32> = (0..blocks * QK).map(|_| (next() % 2001) as f32 / 1000.0 - 1.0).collect();
                    let mut a = crate::quantize_activations(GgmlType::MXFP4, &x).unwrap();
                    a[2] = 0x80; // a −128 activation byte
                    a
                })
                .collect();
            let offs: Vec<Vec<i32>> = acts.iter().map(|a| packed_offsets(a)).collect();
            for g in 0..2 {
                let pw = &packed[g * 8 * rb..(g + 1) * 8 * rb];
                let four = gemm_packed8x4(
                    pw,
                    std::array::from_fn(|i| acts[i].as_slice()),
                    std::array::from_fn(|i| offs[i].as_slice()),
                );
                let scalar = packed_scalar(
                    pw,
                    std::array::from_fn::<_, 4, _>(|i| acts[i].as_slice()),
                    std::array::from_fn(|i| offs[i].as_slice()),
                );
                for (i, act) in acts.iter().enumerate() {
                    let one = gemv_packed8(pw, act, &offs[i]);
                    for r in 0..8 {
                        let row = &w[(g * 8 + r) * rb..(g * 8 + r + 1) * rb];
                        let want = dot.dot(row, act).unwrap().to_bits();
                        let what = format!("{blocks} blocks, group {g}, row {r}, activation {i}");
                        assert_eq!(one[r].to_bits(), want, "gemv: {what}");
                        assert_eq!(four[i][r].to_bits(), want, "gemm: {what}");
                        let portable = dot_scalar(row, act).to_bits();
                        assert_eq!(scalar[i][r].to_bits(), portable, "scalar: {what}");
                    }
                }
            }
        }
    }

    #[test]
    fn nan_and_inf_do_not_panic() {
        let mut x = [1.0f32; 32];
        x[5] = f32::NAN;
        x[6] = f32::INFINITY;
        let mut b = [0u8; BLOCK_BYTES];
        quantize(&x, &mut b);
        // amax = ∞ → (uint8)∞ = 0 on x86 → d = 2^−128. In f32, |k·2^−128 − 1| rounds to 1 for
        // every code, so no code beats code 0 for the 1.0s; NaN and ∞ take code 0 as well.
        assert_eq!(b, [0; BLOCK_BYTES]);
        let mut y = [0f32; 32];
        dequantize(&b, &mut y);
        let act = [0x7fu8; 34];
        let _ = dot_scalar(&b, &act);
        let _ = TRAITS.dot(&b, &act);
    }
}
