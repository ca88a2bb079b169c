//! Q8_K: ggml's `block_q8_K`, the activation format every K-quant dot product takes.
//!
//! A block holds 256 values in 292 bytes: `f32 d` (little-endian), `i8 qs[256]`, and
//! `i16 bsums[16]`, the sums of `qs` in groups of 16 (the K-quant dots use them for the terms that
//! multiply a sub-block's min or offset). A value is `d · q`. ggml has no dot product with Q8_K
//! as the weight type, so neither does this entry.

use super::kquant_common::{Q8kBlock, nearest_int};
use crate::{GgmlType, QK_K, TypeTraits};

/// Bytes per 256-element block.
pub const BLOCK_BYTES: usize = 4 + QK_K + 2 * (QK_K / 16);

/// The Q8_K table entry.
pub const TRAITS: TypeTraits = TypeTraits {
    ty: GgmlType::Q8_K,
    dequantize,
    quantize: Some(quantize),
    from_float: None,
    vec_dot_type: GgmlType::Q8_K,
    vec_dot: None,
};

/// ggml's `dequantize_row_q8_K`: `y = d · q` for whole blocks (`src.len() / 292` of them, as
/// many as fit `dst`).
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let blk = Q8kBlock::new(b);
        for (i, v) in y.iter_mut().enumerate() {
            *v = blk.d * blk.q(i) as f32;
        }
    }
}

/// ggml's `quantize_row_q8_K_ref`, bit for bit: `d = max / -127` where `max` is the value of
/// largest magnitude (sign kept), `q = min(127, nearest_int(x · -127 / max))`, plus the group sums.
///
/// An all-zero block (or one whose only non-zero values are NaN) gets `d = 0`, zero quants and zero
/// sums; ggml writes `d` and `qs` and leaves `bsums` as they were, which for a zero-initialised
/// buffer is the same.
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    for (x, y) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(BLOCK_BYTES)) {
        let mut max = 0f32;
        let mut amax = 0f32;
        for &v in x {
            let ax = v.abs();
            if ax > amax {
                amax = ax;
                max = v;
            }
        }
        if amax == 0.0 {
            y.fill(0);
            continue;
        }
        let iscale = -127.0 / max;
        let (qs, bsums) = y[4..].split_at_mut(QK_K);
        for (q, &v) in qs.iter_mut().zip(x) {
            *q = nearest_int(iscale * v).min(127) as i8 as u8;
        }
        for (s, g) in bsums.chunks_exact_mut(2).zip(qs.chunks_exact(16)) {
            let sum: i32 = g.iter().map(|&q| q as i8 as i32).sum();
            s.copy_from_slice(&(sum as i16).to_le_bytes());
        }
        y[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_worked_block() {
        // The largest magnitude is x[3] = −127, so iscale = −127 / −127 = 1 and d = 1: the quants
        // are the inputs rounded half to even.
        let mut x = [0f32; QK_K];
        x[0] = 50.0;
        x[1] = -49.0;
        x[3] = -127.0;
        x[17] = 0.5; // → 0
        x[18] = 1.5; // → 2
        x[19] = 2.5; // → 2
        x[20] = -3.5; // → −4
        x[255] = 126.6; // → 127
        let mut q = [0u8; BLOCK_BYTES];
        quantize(&x, &mut q);
        assert_eq!(f32::from_le_bytes(q[..4].try_into().unwrap()), 1.0);
        let qs: Vec<i8> = q[4..4 + QK_K].iter().map(|&b| b as i8).collect();
        assert_eq!(&qs[..4], &[50, -49, 0, -127]);
        assert_eq!(&qs[17..21], &[0, 2, 2, -4]);
        assert_eq!(qs[255], 127);
        let bsum = |j: usize| i16::from_le_bytes([q[4 + QK_K + 2 * j], q[5 + QK_K + 2 * j]]);
        assert_eq!(bsum(0), 50 - 49 - 127);
        assert_eq!(bsum(1), 2 + 2 - 4);
        assert_eq!(bsum(15), 127);
        let mut y = [0f32; QK_K];
        dequantize(&q, &mut y);
        assert_eq!(&y[..4], &[50.0, -49.0, 0.0, -127.0]);
        assert_eq!(y[18], 2.0);
    }

    #[test]
    fn zero_block_is_all_zero_bytes() {
        let x = [0f32; QK_K];
        let mut q = [0xAAu8; BLOCK_BYTES];
        quantize(&x, &mut q);
        assert!(q.iter().all(|&b| b == 0));
    }

    #[test]
    fn positive_max_gives_negative_scale() {
        // Largest magnitude 4.0 (positive): iscale = −127/4 = −31.75, so 4.0 → −127 and
        // d = 1/iscale < 0; −2.0 → 63.5 → ties to even → 64; 0.5 → −15.875 → −16.
        let mut x = [0f32; QK_K];
        x[5] = 4.0;
        x[6] = -2.0;
        x[7] = 0.5;
        let mut q = [0u8; BLOCK_BYTES];
        quantize(&x, &mut q);
        let d = f32::from_le_bytes(q[..4].try_into().unwrap());
        assert_eq!(d, 1.0 / -31.75);
        assert_eq!([q[4 + 5] as i8, q[4 + 6] as i8, q[4 + 7] as i8], [-127, 64, -16]);
    }
}
