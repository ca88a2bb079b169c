//! Names and launch shapes of the matrix kernels of `kernels/matmul.cu` (module `"matmul.cu"`).
//!
//! Weights are device images made by [`crate::layout::fill`]; activations and outputs are
//! row-major `f32`. Each kernel exists once per type suffix (`f32`, `q8_0`, `mxfp4`, …, the
//! [`suffix`] of a [`GgmlType`]):
//!
//! | kernel | arguments | launch |
//! | --- | --- | --- |
//! | `mv_T` | `W, X, bias\|null, Y, int m, int k, int n` | [`mv_launch`]: grid `ceil(m/8)`, block `(32, 8)` |
//! | `mm_T` | same | [`mm_launch`]: grid `(ceil(m/T), ceil(n/T))`, block 256, T = [`mm_tile`] |
//! | `mv_ids_T` | `W, long long slab_bytes, X, int x_div, const int* ids, int n_slots, bias\|null, int bias_stride, Y, int m, int k` | [`mv_ids_launch`]: grid `(ceil(m/8), n_slots)`, block `(32, 8)` |
//! | `mm_ids_T` | same as `mv_ids_T` | [`mm_ids_launch`]: grid `(ceil(m/T), n_expert)`, block 256, T = [`mm_tile`] |
//! | `get_rows_T` | `W, const int* ids, float scale, Y, int n, int k, int m` | [`get_rows_launch`]: grid `(n, ceil(chunks/128))`, block 128 |
//!
//! `Y[i*m + j] = Σ_c X[i*k + c]·W[j][c] (+ bias[j])`. `mv_T` is the decode kernel (one warp per
//! weight row, every activation row in the same pass for `n ≤ 8`; larger `n` stays correct but
//! re-reads the weights per 8 rows, so use `mm_T` there). No kernel uses dynamic shared memory.
//! `k` must be a whole number of blocks of the type ([`check_k`]); `get_rows_T` takes the table's
//! row count `m` (to find the scales of its layout) and skips ids outside `0..m`.

use kiln_quant::GgmlType;

use crate::{CudaError, Result, layout};

/// A launch configuration: grid and block dimensions and dynamic shared memory bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub shared_bytes: u32,
}

/// Weight rows per `mv_T` / `mv_ids_T` block (one warp each).
pub const MV_ROWS: u32 = 8;
/// Activation rows `mv_T` serves in one pass over the weights.
pub const MV_MAX_N: usize = 8;

/// The kernel name suffix of a type (`"q4_K"`, `"mxfp4"`, …), or `None` if no kernel reads it.
pub fn suffix(ty: GgmlType) -> Option<&'static str> {
    if layout::supported(ty) { Some(ty.name()) } else { None }
}

/// The five kernels of a type: `[mv, mm, mv_ids, mm_ids, get_rows]`.
pub fn kernel_names(ty: GgmlType) -> Option<[String; 5]> {
    let s = suffix(ty)?;
    Some([format!("mv_{s}"), format!("mm_{s}"), format!("mv_ids_{s}"), format!("mm_ids_{s}"), format!("get_rows_{s}")])
}

/// Checks that the kernels can run on rows of `k` elements of `ty`.
pub fn check_k(ty: GgmlType, k: usize) -> Result<()> {
    if suffix(ty).is_none() {
        return Err(CudaError::Launch { kernel: format!("matmul {ty}"), msg: "no CUDA kernel reads this type".into() });
    }
    let b = ty.block_elems();
    if k == 0 || !k.is_multiple_of(b) || k > i32::MAX as usize / 16 {
        return Err(CudaError::Launch {
            kernel: format!("matmul {ty}"),
            msg: format!("row length {k} is not a positive whole number of {b}-element blocks"),
        });
    }
    Ok(())
}

fn blocks(a: usize, b: usize) -> u32 {
    a.div_ceil(b).min(u32::MAX as usize) as u32
}

/// `mv_T`: one warp per weight row, 8 rows per block.
pub fn mv_launch(m: usize, _n: usize) -> Launch {
    Launch { grid: (blocks(m, MV_ROWS as usize), 1, 1), block: (32, MV_ROWS, 1), shared_bytes: 0 }
}

/// `mm_T`'s square tile (weight rows = activation rows per block): 32 for the types whose k-step
/// is 128 elements (Q2_K, Q3_K, Q6_K), 64 otherwise.
pub fn mm_tile(ty: GgmlType) -> usize {
    match ty {
        GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::Q6_K => 32,
        _ => 64,
    }
}

/// `mm_T`: a block of 256 threads per `tile × tile` outputs.
pub fn mm_launch(ty: GgmlType, m: usize, n: usize) -> Launch {
    let t = mm_tile(ty);
    Launch { grid: (blocks(m, t), blocks(n, t), 1), block: (256, 1, 1), shared_bytes: 0 }
}

/// `mv_ids_T`: as `mv_T`, one grid row per slot.
pub fn mv_ids_launch(m: usize, n_slots: usize) -> Launch {
    Launch {
        grid: (blocks(m, MV_ROWS as usize), n_slots.min(65535) as u32, 1),
        block: (32, MV_ROWS, 1),
        shared_bytes: 0,
    }
}

/// `mm_ids_T` (prefill MoE): block `(x, e)` computes weight rows `x·T ..` of expert `e` against
/// every slot routed to `e`, `T` slots at a time (it finds them by scanning `ids` with one warp),
/// so each expert's weights are decoded once per `T` of its slots. Same arguments as `mv_ids_T`;
/// `n_expert` is the number of expert slabs (ids must lie in `0..n_expert`; negative ids give
/// zeros).
pub fn mm_ids_launch(ty: GgmlType, m: usize, n_expert: usize) -> Launch {
    let t = mm_tile(ty);
    Launch { grid: (blocks(m, t), n_expert.min(65535) as u32, 1), block: (256, 1, 1), shared_bytes: 0 }
}

/// Decode chunks per row of `k` elements (`get_rows_T` runs one thread per chunk).
pub fn chunks_per_row(ty: GgmlType, k: usize) -> usize {
    use GgmlType::*;
    match ty {
        F32 | F16 | BF16 => k / 16 + usize::from(!k.is_multiple_of(16)),
        Q2_K | Q3_K => k / 64,
        _ => k / 32,
    }
}

/// `get_rows_T`: a grid row per id, 128 threads (chunks) per block.
pub fn get_rows_launch(ty: GgmlType, n: usize, k: usize) -> Launch {
    Launch {
        grid: (n.min(i32::MAX as usize) as u32, blocks(chunks_per_row(ty, k), 128).max(1), 1),
        block: (128, 1, 1),
        shared_bytes: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launch_shapes() {
        assert_eq!(mv_launch(2880, 1).grid, (360, 1, 1));
        assert_eq!(mv_launch(17, 8).grid, (3, 1, 1));
        assert_eq!(mm_launch(GgmlType::Q4_K, 130, 65).grid, (3, 2, 1));
        assert_eq!(mm_launch(GgmlType::Q6_K, 130, 65).grid, (5, 3, 1));
        assert_eq!(mv_ids_launch(5760, 4).grid, (720, 4, 1));
        assert_eq!(get_rows_launch(GgmlType::F32, 3, 37).grid, (3, 1, 1));
        assert_eq!(chunks_per_row(GgmlType::F16, 37), 3);
        assert_eq!(chunks_per_row(GgmlType::Q3_K, 512), 8);
        assert_eq!(chunks_per_row(GgmlType::Q6_K, 512), 16);
        assert_eq!(get_rows_launch(GgmlType::Q8_0, 2, 32 * 129).grid, (2, 2, 1));
    }

    #[test]
    fn k_checks() {
        assert!(check_k(GgmlType::Q4_K, 512).is_ok());
        assert!(check_k(GgmlType::Q4_K, 500).is_err());
        assert!(check_k(GgmlType::F32, 37).is_ok());
        assert!(check_k(GgmlType::IQ2_XS, 256).is_err());
        assert_eq!(kernel_names(GgmlType::MXFP4).unwrap()[2], "mv_ids_mxfp4");
        assert_eq!(kernel_names(GgmlType::Q6_K).unwrap()[3], "mm_ids_q6_K");
        assert_eq!(mm_ids_launch(GgmlType::MXFP4, 5760, 32).grid, (90, 32, 1));
    }
}
