//! Q8_1: ggml's `block_q8_1`, 32 values in 36 bytes; the activation format that Q4_1 and Q5_1
//! weights take in a dot product.
//!
//! Layout: `f16 d`, `f16 s` (little-endian), then `qs[32]` as `i8`. A value is `q · d`; `s` is
//! `d · Σ q` (computed with the unrounded `d` and then rounded to a half), which lets the Q4_1 /
//! Q5_1 dot products add a block's offset `m` as one product `m · s`.
//!
//! ggml has no `dequantize_row_q8_1` (it never reads Q8_1 back as floats); this crate's
//! dequantizer is the obvious `q · d`, ignoring `s`, the same as Q8_0's. Like ggml
//! (`type_traits_cpu[GGML_TYPE_Q8_1]`), there is no dot product with Q8_1 weights.
//!
//! ```
//! use kiln_quant::formats::q8_1;
//! let x: Vec<f32> = (0..32).map(|i| if i == 0 { 127.0 } else { 1.0 }).collect();
//! let mut block = [0u8; 36];
//! q8_1::quantize(&x, &mut block);
//! // d = 127/127 = 1 (0x3c00); s = 1 · (127 + 31) = 158 (0x58f0).
//! assert_eq!(&block[..4], &[0x00, 0x3c, 0xf0, 0x58]);
//! assert_eq!((block[4], block[5]), (127, 1));
//! ```

use super::common::{f16_le, f32_to_f16};
use super::q8_0::quantize_block;
use crate::{GgmlType, TypeTraits};

/// Values per block.
pub const QK: usize = 32;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 4 + QK;

/// The Q8_1 table entry.
pub const TRAITS: TypeTraits = TypeTraits {
    ty: GgmlType::Q8_1,
    dequantize,
    quantize: Some(quantize),
    from_float: Some(quantize_cpu),
    vec_dot_type: GgmlType::Q8_1,
    vec_dot: None,
};

/// `q · d` for every value (ggml has no Q8_1 dequantizer; `s` is not used).
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.as_chunks::<BLOCK_BYTES>().0.iter().zip(dst.as_chunks_mut::<QK>().0) {
        let [d0, d1, _, _, qs @ ..] = b;
        let d = f16_le([*d0, *d1]);
        for (q, y) in qs.iter().zip(y) {
            *y = *q as i8 as f32 * d;
        }
    }
}

/// ggml-cpu's activation quantizer for Q8_1: codes and `d` as
/// [`super::q8_0::quantize_block_cpu`], `s = d · Σq`.
pub fn quantize_cpu(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.as_chunks::<QK>().0.iter().zip(dst.as_chunks_mut::<BLOCK_BYTES>().0) {
        let [d0, d1, s0, s1, qs @ ..] = b;
        let d = super::q8_0::quantize_block_cpu(x, qs);
        let sum: i32 = qs.iter().map(|q| *q as i8 as i32).sum();
        [*d0, *d1] = f32_to_f16(d).to_le_bytes();
        [*s0, *s1] = f32_to_f16(d * sum as f32).to_le_bytes();
    }
}

/// `quantize_row_q8_1_ref`: codes and `d` as Q8_0 (`d = amax / 127`, `q = roundf(x / d)`), and
/// `s = (float)Σq · d` with the unrounded `d`.
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.as_chunks::<QK>().0.iter().zip(dst.as_chunks_mut::<BLOCK_BYTES>().0) {
        let [d0, d1, s0, s1, qs @ ..] = b;
        let d = quantize_block(x, qs);
        let sum: i32 = qs.iter().map(|q| *q as i8 as i32).sum();
        [*d0, *d1] = f32_to_f16(d).to_le_bytes();
        [*s0, *s1] = f32_to_f16(sum as f32 * d).to_le_bytes();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_uses_unrounded_d() {
        // amax = 1 → d = 1/127 (not a half); s = Σq · d with that d, then rounded.
        let mut x = [0.5f32; 32];
        x[0] = -1.0;
        let mut b = [0u8; BLOCK_BYTES];
        quantize(&x, &mut b);
        let d = 1.0f32 / 127.0;
        // 0.5 · 127 = 63.5 → 64; −1 → −127: Σq = 31·64 − 127 = 1857.
        assert_eq!((b[4], b[5]), (0x81, 64));
        assert_eq!(u16::from_le_bytes([b[2], b[3]]), f32_to_f16(1857.0 * d));
        assert_eq!(u16::from_le_bytes([b[0], b[1]]), f32_to_f16(d));
        let mut y = [0f32; 32];
        dequantize(&b, &mut y);
        assert_eq!(y[1], 64.0 * f16_le([b[0], b[1]]));
    }
}
