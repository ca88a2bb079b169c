//! The device image of a weight tensor: the same bits as the GGUF file, repacked per 2-D slab so
//! the kernels read them with aligned 16-byte loads. Nothing is dequantized.
//!
//! # The layout
//!
//! Every quantized block is cut into two parts: its **payload**, one contiguous byte range of the
//! block that holds the quants (always a multiple of 16 bytes), and its **meta**, the bytes before
//! and after the payload (scales, mins, high-bit masks), concatenated in block order. A slab of
//! `rows` rows of `nb` blocks each becomes
//!
//! ```text
//! [payload of block 0][payload of block 1] … [payload of block rows·nb − 1]   (rows·nb·P bytes)
//! [meta of block 0][meta of block 1] …       [meta of block rows·nb − 1]      (rows·nb·M bytes)
//! ```
//!
//! with blocks in row-major order (block `b` of row `r` is number `r·nb + b`). When the slab starts
//! on a 16-byte boundary every payload does too. F32, F16 and BF16 are stored as they are. A 3-D
//! expert tensor is `n_expert` slabs, each laid out on its own, so expert `e` starts at
//! `e · device_bytes(ty, row_len, rows)`; the image has exactly the GGUF size.
//!
//! | type | block bytes | payload (offset, bytes) | meta bytes |
//! | --- | --- | --- | --- |
//! | Q4_0 | 18 | 2, 16 (`qs`) | 2 (`d`) |
//! | Q4_1 | 20 | 4, 16 | 4 (`d`, `m`) |
//! | Q5_0 | 22 | 6, 16 | 6 (`d`, `qh`) |
//! | Q5_1 | 24 | 8, 16 | 8 (`d`, `m`, `qh`) |
//! | Q8_0 | 34 | 2, 32 | 2 (`d`) |
//! | MXFP4 | 17 | 1, 16 | 1 (`e`) |
//! | Q2_K | 84 | 16, 64 (`qs`) | 20 (`scales`, `d`, `dmin`) |
//! | Q3_K | 110 | 0, 96 (`hmask`, `qs`) | 14 (`scales`, `d`) |
//! | Q4_K | 144 | 16, 128 (`qs`) | 16 (`d`, `dmin`, `scales`) |
//! | Q5_K | 176 | 16, 160 (`qh`, `qs`) | 16 (`d`, `dmin`, `scales`) |
//! | Q6_K | 210 | 0, 192 (`ql`, `qh`) | 18 (`scales`, `d`) |
//!
//! `kernels/quant.cuh` reads exactly this layout (its `Split` constants repeat the table).

use kiln_quant::GgmlType;

/// Where a block's payload sits: `(block bytes, payload offset, payload bytes)`, or `None` for
/// the plain float types (stored as they are) and the types the GPU does not run.
pub fn split(ty: GgmlType) -> Option<(usize, usize, usize)> {
    use GgmlType::*;
    Some(match ty {
        Q4_0 => (18, 2, 16),
        Q4_1 => (20, 4, 16),
        Q5_0 => (22, 6, 16),
        Q5_1 => (24, 8, 16),
        Q8_0 => (34, 2, 32),
        MXFP4 => (17, 1, 16),
        Q2_K => (84, 16, 64),
        Q3_K => (110, 0, 96),
        Q4_K => (144, 16, 128),
        Q5_K => (176, 16, 160),
        Q6_K => (210, 0, 192),
        _ => return None,
    })
}

/// Whether the GPU kernels read this type.
pub fn supported(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) || split(ty).is_some()
}

/// Bytes of the device image of `rows` rows of `row_len` elements: the GGUF size (the same bits).
/// Returns 0 for a `row_len` that is not a whole number of blocks (the caller checks that first).
pub fn device_bytes(ty: GgmlType, row_len: usize, rows: usize) -> usize {
    let l = ty.layout();
    if !row_len.is_multiple_of(l.block_elems) {
        return 0;
    }
    row_len / l.block_elems * l.block_bytes * rows
}

/// Writes bytes `dst_start .. dst_start + dst.len()` of the device image of the tensor whose GGUF
/// bytes are `src` (rows of `row_len` elements, grouped in slabs of `slab_rows` rows; a 2-D tensor
/// is one slab of all its rows). Bytes past the end of the image are left as they are.
///
/// Any byte range can be asked for, so the upload can stream the file through a staging buffer.
/// For an unsupported type, or a `row_len` that is not whole blocks, the bytes are copied as they
/// are (the caller rejects those tensors before it uploads them).
pub fn fill(ty: GgmlType, row_len: usize, slab_rows: usize, src: &[u8], dst_start: usize, dst: &mut [u8]) {
    let l = ty.layout();
    let sp = split(ty);
    let identity = sp.is_none() || !row_len.is_multiple_of(l.block_elems) || slab_rows == 0 || row_len == 0;
    if identity {
        let end = (dst_start + dst.len()).min(src.len());
        if dst_start < end {
            dst[..end - dst_start].copy_from_slice(&src[dst_start..end]);
        }
        return;
    }
    let (bb, p_off, p_len) = sp.unwrap_or((1, 0, 1));
    let m_len = bb - p_len;
    let slab_blocks = row_len / l.block_elems * slab_rows;
    let slab_bytes = slab_blocks * bb;
    let payload_bytes = slab_blocks * p_len;
    let mut pos = dst_start;
    let end = (dst_start + dst.len()).min(src.len());
    while pos < end {
        let slab = pos / slab_bytes;
        let within = pos - slab * slab_bytes;
        let base = slab * slab_bytes;
        // One contiguous run of the destination that maps to one contiguous run of the source.
        let (src_pos, run) = if within < payload_bytes {
            let blk = within / p_len;
            let o = within % p_len;
            (base + blk * bb + p_off + o, p_len - o)
        } else {
            let w = within - payload_bytes;
            let blk = w / m_len;
            let o = w % m_len;
            // Meta byte o of a block: the bytes before the payload, then those after it.
            if o < p_off { (base + blk * bb + o, p_off - o) } else { (base + blk * bb + p_len + o, m_len - o) }
        };
        let n = run.min(end - pos);
        dst[pos - dst_start..pos - dst_start + n].copy_from_slice(&src[src_pos..src_pos + n]);
        pos += n;
    }
}

/// The types the layout covers, for tests and tools.
pub const TYPES: [GgmlType; 14] = {
    use GgmlType::*;
    [F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, MXFP4]
};

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: u64) -> impl FnMut() -> u64 {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        }
    }

    #[test]
    fn every_type_is_supported_and_sized_like_gguf() {
        for ty in TYPES {
            assert!(supported(ty), "{ty}");
            let k = ty.block_elems() * 3;
            assert_eq!(device_bytes(ty, k, 5) as u64, ty.row_bytes(k as u64).unwrap() * 5, "{ty}");
            if let Some((bb, off, len)) = split(ty) {
                assert_eq!(bb, ty.block_bytes(), "{ty}");
                assert!(off + len <= bb && len % 16 == 0, "{ty}");
            }
        }
        assert!(!supported(GgmlType::IQ2_XS));
    }

    /// The image is a permutation of the source: tag every source byte with its position (u32
    /// per byte, so the permutation is visible) and check each lands once, where the layout says.
    #[test]
    fn image_is_a_permutation_with_payload_first() {
        for ty in TYPES {
            let k = ty.block_elems() * 3;
            let (rows, slabs) = (5, 3);
            let slab_bytes = device_bytes(ty, k, rows);
            let total = slab_bytes * slabs;
            // Positions mod 251 as bytes, plus the full permutation computed by filling an index.
            let mut next = rng(ty.id() as u64);
            let src: Vec<u8> = (0..total).map(|_| next() as u8).collect();
            let mut img = vec![0u8; total];
            fill(ty, k, rows, &src, 0, &mut img);
            // Recover the permutation byte by byte: a source of all zeros but one marker.
            let mut seen = vec![false; total];
            let mut probe = vec![0u8; total];
            let mut out = vec![0u8; total];
            let mut probes: Vec<usize> = (0..total).step_by(7).chain([total - 1]).collect();
            probes.dedup();
            for i in probes {
                probe[i] = 1;
                fill(ty, k, rows, &probe, 0, &mut out);
                let at: Vec<usize> = out.iter().enumerate().filter(|(_, b)| **b == 1).map(|(j, _)| j).collect();
                assert_eq!(at.len(), 1, "{ty}: byte {i}");
                let j = at[0];
                assert!(!seen[j], "{ty}: two bytes land at {j}");
                seen[j] = true;
                assert_eq!(img[j], src[i], "{ty}");
                // Expected position from the table.
                let slab = i / slab_bytes;
                let w = i % slab_bytes;
                let expect = match split(ty) {
                    None => i,
                    Some((bb, off, len)) => {
                        let (blk, o) = (w / bb, w % bb);
                        let nblk = slab_bytes / bb;
                        slab * slab_bytes
                            + if (off..off + len).contains(&o) {
                                blk * len + (o - off)
                            } else {
                                nblk * len + blk * (bb - len) + if o < off { o } else { o - len }
                            }
                    }
                };
                assert_eq!(j, expect, "{ty}: byte {i}");
                probe[i] = 0;
            }
            // Multiset equality over the whole image.
            let mut a = src.clone();
            let mut b = img.clone();
            a.sort_unstable();
            b.sort_unstable();
            assert_eq!(a, b, "{ty}");
        }
    }

    #[test]
    fn chunked_fills_equal_a_whole_fill() {
        for ty in TYPES {
            let k = ty.block_elems() * 4;
            let rows = 3;
            let total = device_bytes(ty, k, rows) * 2;
            let mut next = rng(1000 + ty.id() as u64);
            let src: Vec<u8> = (0..total).map(|_| next() as u8).collect();
            let mut whole = vec![0u8; total];
            fill(ty, k, rows, &src, 0, &mut whole);
            for chunk in [1, 5, 16, 17, 33, 100, 1000] {
                let mut got = vec![0u8; total];
                let mut pos = 0;
                while pos < total {
                    let n = chunk.min(total - pos);
                    fill(ty, k, rows, &src, pos, &mut got[pos..pos + n]);
                    pos += n;
                }
                assert_eq!(got, whole, "{ty} chunk {chunk}");
            }
            // A range that runs past the end leaves the excess untouched.
            let mut tail = vec![0xAAu8; 8];
            fill(ty, k, rows, &src, total - 3, &mut tail);
            assert_eq!(&tail[..3], &whole[total - 3..]);
            assert_eq!(&tail[3..], &[0xAA; 5]);
        }
    }
}
