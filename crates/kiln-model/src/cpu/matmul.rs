//! Quantized matrix products on the CPU.

use super::pool::SyncPtr;
use super::{CpuAct, Pool};
use kiln_quant::GgmlType;
use kiln_quant::formats::{q4_k, q5_0, q6_k};

/// Activation rows a task keeps hot while it sweeps its weight rows.
const ACT_TILE: usize = 16;

/// Weight rows per parallel task: a few tasks per thread to balance, each with enough work
/// (≥ ~32k multiply-adds) to pay for handing it out.
fn rows_per_task(threads: usize, m: usize, n: usize, k: usize) -> usize {
    let by_balance = m.div_ceil(threads * 4);
    let by_work = (1usize << 15).div_ceil(n * k);
    by_balance.max(by_work).clamp(1, m.max(1))
}

/// How ggml-cpu sums a product, when it is not its plain `vec_dot` for the type. llama.cpp's x86
/// build chooses between three kernels; they compute the same exact integer sums but add the
/// block terms in different orders, and kiln follows the choice so that its results are
/// bit-identical (a last-bit difference grows through a deep network):
/// - Q4_K weights whose row count is a multiple of 8 are repacked (`ggml-cpu/repack.cpp`,
///   `ggml_repack_get_optimal_repack_type`) and multiplied by their GEMM kernel (activation rows
///   in groups of four) or GEMV kernel (the rest);
/// - other K-quant weights, with 8 or more activation rows, take the tiled K-quant product
///   (`ggml-cpu/tiled`);
/// - F32, F16 and BF16 weights, with 2 or more activation rows, a row length that is a multiple
///   of 16 (BF16: 32) and a row count that is a multiple of 4, take llamafile's tinyBLAS
///   (gpt-oss's router).
///
/// MXFP4 weights are repacked too; their `vec_dot` in kiln already sums in the repacked GEMV's
/// order (`kiln_quant::mxfp4`), and with a row count that is a multiple of 8 they are multiplied
/// eight rows at a time as that GEMV does: from kiln's own packed layout when the backend packed
/// them at load (`Order::Packed`), else from the file's blocks. Both give the same bits, at any
/// batch size. Q4_0 weights whose row count is a multiple of 8 are repacked as well, and their
/// GEMV and GEMM chain the blocks the same way (`q4_0::dot_repacked`).
#[derive(Clone, Copy)]
enum Order {
    VecDot,
    /// Another per-output summation order (`dot(w, x)`).
    Kernel(fn(&[u8], &[u8]) -> f32),
    /// Eight weight rows at a time (`dot(rows, x)`), each summed as `vec_dot` sums it.
    Rows8(fn([&[u8]; 8], &[u8]) -> [f32; 8]),
    /// MXFP4 packed in groups of eight rows (`kiln_quant::mxfp4::pack8`): one group against one
    /// or four activation rows per call.
    Packed,
    /// Q5_0 by `vec_dot`'s order, its weight rows decoded four at a time once per task and
    /// multiplied by four activation rows at a time ([`grouped_task`], the same bits).
    Q5_0Groups,
    /// Q4_K repacked (rows a multiple of 8) with four or more activation rows: the GEMM's order
    /// for each group of four activation rows, the weight rows decoded eight at a time once per
    /// task (`q4_k::decode8`, `gemm_group8x4`), and the GEMV's for the last `n % 4` rows
    /// ([`grouped_task`]). With fewer rows, or batch-invariant, every row takes the GEMV's
    /// (`Order::Kernel`).
    Q4KGroups,
    /// Q6_K in the tiled order (8 or more activation rows), the weight rows decoded eight at a
    /// time once per task (`q6_k::decode8`) against four activation rows at a time
    /// (`gemm_group8x4`; [`grouped_task`], the same bits).
    Q6KGroups,
}

fn order(ty: GgmlType, packed: bool, rows: usize, batch: usize, k: usize) -> Order {
    use kiln_quant::formats::{bf16, f16, f32, q3_k, q4_0, q5_k};
    let tinyblas = batch >= 2 && k.is_multiple_of(16) && rows.is_multiple_of(4);
    match ty {
        GgmlType::MXFP4 if packed => {
            assert!(rows.is_multiple_of(8), "packed matrices have whole groups of eight rows");
            Order::Packed
        }
        GgmlType::F32 if tinyblas => Order::Kernel(f32::dot_tinyblas),
        GgmlType::F16 if tinyblas => Order::Kernel(f16::dot_tinyblas),
        GgmlType::BF16 if tinyblas && k.is_multiple_of(32) => Order::Kernel(bf16::dot_tinyblas),
        GgmlType::MXFP4 if rows.is_multiple_of(8) => Order::Rows8(kiln_quant::mxfp4::dot_rows8),
        GgmlType::Q4_0 if rows.is_multiple_of(8) => Order::Kernel(q4_0::dot_repacked),
        GgmlType::Q4_K if rows.is_multiple_of(8) && batch >= 4 => Order::Q4KGroups,
        GgmlType::Q4_K if rows.is_multiple_of(8) => Order::Kernel(|w, x| q4_k::dot_repacked(w, x, false)),
        GgmlType::Q4_K if batch >= 8 => Order::Kernel(q4_k::dot_tiled),
        GgmlType::Q6_K if batch >= 8 => Order::Q6KGroups,
        GgmlType::Q5_K if batch >= 8 => Order::Kernel(q5_k::dot_tiled),
        GgmlType::Q3_K if batch >= 8 => Order::Kernel(q3_k::dot_tiled),
        GgmlType::Q5_0 if batch >= 4 => Order::Q5_0Groups,
        _ => Order::VecDot,
    }
}

/// Activation rows in a weight type's dot format (its `vec_dot_type`), quantized as ggml-cpu
/// quantizes them; one quantization can serve every product of the same input and activation
/// type.
pub(super) struct Quantized {
    pub ty: GgmlType,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    data: Vec<u8>,
}

/// The activation type products with `ty` weights take.
pub(super) fn act_type(ty: GgmlType) -> GgmlType {
    kiln_quant::traits(ty).expect("checked at bind").vec_dot_type
}

/// `x`'s rows into `act_ty` (an activation type, [`act_type`]), in parallel.
pub(super) fn quantize(pool: &Pool, x: &CpuAct, act_ty: GgmlType) -> Quantized {
    let (n, k) = (x.rows, x.cols);
    let act_traits = kiln_quant::traits(act_ty).expect("activation types are supported");
    // ggml-cpu's activation quantizer, so products round exactly as llama.cpp's do.
    let quantize = act_traits.from_float.or(act_traits.quantize).expect("activation types have quantizers");
    let xrb = act_ty.row_bytes(k as u64).expect("whole blocks") as usize;
    let mut xq = vec![0u8; n * xrb];
    let per = rows_per_pass(pool, n, k);
    pool.chunks_mut(&mut xq, per * xrb, |ci, q| {
        for (r, q) in q.chunks_mut(xrb).enumerate() {
            let i = ci * per + r;
            quantize(&x.data[i * k..(i + 1) * k], q);
        }
    });
    Quantized { ty: act_ty, rows: n, cols: k, row_bytes: xrb, data: xq }
}

/// Rows per task of a pass over `n` activation rows of `k` values: all in one where it is small.
fn rows_per_pass(pool: &Pool, n: usize, k: usize) -> usize {
    if n * k <= 1 << 15 { n } else { n.div_ceil(pool.threads() * 4) }
}

/// `out (n × m) = x (n × k) · wᵀ`, `w` = `m` rows of `k` elements of type `ty` (`packed`: in
/// groups of eight rows as `kiln_quant::mxfp4::pack8` lays them out), `x` quantized into
/// [`act_type`]`(ty)`. With `invariant`, every row takes the order a one-row product takes
/// (batch-invariant mode).
#[allow(clippy::too_many_arguments)]
pub(super) fn matmul(
    pool: &Pool,
    invariant: bool,
    w: &[u8],
    ty: GgmlType,
    packed: bool,
    m: usize,
    x: &Quantized,
    out: &mut CpuAct,
) {
    let (n, k, xrb, xq) = (x.rows, x.cols, x.row_bytes, &x.data);
    debug_assert_eq!(x.ty, act_type(ty));
    debug_assert_eq!(out.rows, n);
    debug_assert_eq!(out.cols, m);
    let t = kiln_quant::traits(ty).expect("checked at bind");
    let wrb = ty.row_bytes(k as u64).expect("whole blocks") as usize;
    let per = rows_per_pass(pool, n, k);

    // Each task takes a run of weight rows and computes them against every activation row, so a
    // weight row is read from memory once.
    let order = order(ty, packed, m, if invariant { 1 } else { n }, k);
    // The packed kernels' per-block offset terms, once per activation row.
    let offsets: Vec<Vec<i32>> = match order {
        Order::Packed => xq.chunks(xrb).map(kiln_quant::mxfp4::packed_offsets).collect(),
        _ => Vec::new(),
    };
    // Q5_0's prepared activation blocks, likewise.
    let nb = k / 32;
    let mut prep = Vec::new();
    if let Order::Q5_0Groups = order {
        prep = vec![q5_0::ActBlock::default(); n * nb];
        pool.chunks_mut(&mut prep, per * nb, |ci, p| {
            for (r, p) in p.chunks_mut(nb).enumerate() {
                let i = ci * per + r;
                q5_0::prepare_act(&xq[i * xrb..(i + 1) * xrb], p);
            }
        });
    }
    let mut chunk = rows_per_task(pool.threads(), m, n, k);
    match order {
        Order::Rows8(_) | Order::Packed => chunk = chunk.next_multiple_of(8),
        Order::Q5_0Groups => chunk = chunk.next_multiple_of(4),
        Order::Q4KGroups | Order::Q6KGroups => chunk = chunk.next_multiple_of(8),
        _ => {}
    }
    let tasks = m.div_ceil(chunk);
    let o = SyncPtr(out.data.as_mut_ptr());
    pool.run(tasks, |ci| {
        // Capture the whole `SyncPtr` (a closure would otherwise capture only its raw pointer,
        // which is not `Sync`).
        #[allow(clippy::redundant_locals)]
        let o = o;
        let rows = ci * chunk..((ci + 1) * chunk).min(m);
        let wr = |j: usize| &w[j * wrb..(j + 1) * wrb];
        let x = |i: usize| &xq[i * xrb..(i + 1) * xrb];
        match order {
            Order::Q5_0Groups => {
                let nb = wrb / q5_0::BLOCK_BYTES;
                let p = |i: usize| &prep[i * nb..(i + 1) * nb];
                let tile = |g: &[q5_0::Group4], i: usize| -> [[f32; 4]; 4] {
                    let t =
                        q5_0::gemm_group4x4(g, std::array::from_fn(|a| x(i + a)), std::array::from_fn(|a| p(i + a)));
                    std::array::from_fn(|a| std::array::from_fn(|r| t[r][a]))
                };
                let one = |j: usize, i: usize| q5_0::TRAITS.dot(wr(j), x(i)).unwrap_or(0.0);
                let decode = |j: usize, g: &mut [q5_0::Group4]| q5_0::decode4(std::array::from_fn(|r| wr(j + r)), g);
                return grouped_task(rows, n, nb, n, decode, tile, one, o, m);
            }
            Order::Q4KGroups => {
                // ggml's GEMM takes the activation rows in groups of four; the rest go through GEMV.
                let gemm_rows = n - n % 4;
                let tile = |g: &[q4_k::Group8], i: usize| q4_k::gemm_group8x4(g, std::array::from_fn(|a| x(i + a)));
                let one = |j: usize, i: usize| q4_k::dot_repacked(wr(j), x(i), i < gemm_rows);
                let decode = |j: usize, g: &mut [q4_k::Group8]| q4_k::decode8(std::array::from_fn(|r| wr(j + r)), g);
                return grouped_task(rows, n, wrb / q4_k::BLOCK_BYTES, gemm_rows, decode, tile, one, o, m);
            }
            Order::Q6KGroups => {
                let tile = |g: &[q6_k::Group8], i: usize| q6_k::gemm_group8x4(g, std::array::from_fn(|a| x(i + a)));
                let one = |j: usize, i: usize| q6_k::dot_tiled(wr(j), x(i));
                let decode = |j: usize, g: &mut [q6_k::Group8]| q6_k::decode8(std::array::from_fn(|r| wr(j + r)), g);
                return grouped_task(rows, n, wrb / q6_k::BLOCK_BYTES, n, decode, tile, one, o, m);
            }
            _ => {}
        }
        // Activation rows in tiles of ACT_TILE, so a tile stays in L1 while the task's weight
        // rows pass over it (each output is still one dot product: results do not change).
        for i0 in (0..n).step_by(ACT_TILE) {
            if let Order::Packed = order {
                use kiln_quant::mxfp4::{gemm_packed8x4, gemv_packed8};
                let rows = i0..(i0 + ACT_TILE).min(n);
                for j in (ci * chunk..((ci + 1) * chunk).min(m)).step_by(8) {
                    // The group of rows j..j + 8 is their 8 · wrb bytes, in place.
                    let wg = &w[j * wrb..(j + 8) * wrb];
                    let x = |i: usize| (&xq[i * xrb..(i + 1) * xrb], offsets[i].as_slice());
                    let mut i = rows.start;
                    // Four activation rows per call, each output still its own chain of blocks
                    // (the same bits as one row per call, so batch-invariant mode may use it too).
                    while i + 4 <= rows.end {
                        let xs: [_; 4] = std::array::from_fn(|r| x(i + r));
                        let d = gemm_packed8x4(wg, xs.map(|x| x.0), xs.map(|x| x.1));
                        for (r, d) in d.iter().enumerate() {
                            // SAFETY: columns j..j + 8 belong to this task alone; i + r < n, j + 8 ≤ m.
                            unsafe { std::ptr::copy_nonoverlapping(d.as_ptr(), o.0.add((i + r) * m + j), 8) };
                        }
                        i += 4;
                    }
                    for i in i..rows.end {
                        let (xr, offs) = x(i);
                        let d = gemv_packed8(wg, xr, offs);
                        // SAFETY: as above.
                        unsafe { std::ptr::copy_nonoverlapping(d.as_ptr(), o.0.add(i * m + j), 8) };
                    }
                }
                continue;
            }
            if let Order::Rows8(dot8) = order {
                for j in (ci * chunk..((ci + 1) * chunk).min(m)).step_by(8) {
                    let wr: [&[u8]; 8] = std::array::from_fn(|r| &w[(j + r) * wrb..(j + r + 1) * wrb]);
                    for i in i0..(i0 + ACT_TILE).min(n) {
                        let d = dot8(wr, &xq[i * xrb..(i + 1) * xrb]);
                        // SAFETY: columns j..j + 8 belong to this task alone; i < n, j + 8 ≤ m.
                        unsafe { std::ptr::copy_nonoverlapping(d.as_ptr(), o.0.add(i * m + j), 8) };
                    }
                }
                continue;
            }
            for j in ci * chunk..((ci + 1) * chunk).min(m) {
                let wr = &w[j * wrb..(j + 1) * wrb];
                for i in i0..(i0 + ACT_TILE).min(n) {
                    let xr = &xq[i * xrb..(i + 1) * xrb];
                    let d = match order {
                        Order::VecDot => t.dot(wr, xr).unwrap_or(0.0),
                        Order::Kernel(dot) => dot(wr, xr),
                        Order::Rows8(_) | Order::Packed | Order::Q5_0Groups | Order::Q4KGroups | Order::Q6KGroups => {
                            unreachable!("handled above")
                        }
                    };
                    // SAFETY: column j belongs to this task alone; i < n, j < m.
                    unsafe { *o.0.add(i * m + j) = d };
                }
            }
        }
    });
}

/// One task of a product whose weight rows are decoded `R` at a time: weight rows `rows` against
/// the `n` activation rows, written into `out` (`n × m`). The task's whole groups of rows are
/// decoded once (`decode(first row, blocks)`, `nb` blocks a row), then each group passes over the
/// activation rows a tile at a time, four rows per `tile(group, first activation row)` call
/// (`[activation][row]`) below `quad_end`; what is left over (activation rows at or past
/// `quad_end` or short of four, the task's last rows short of a group) goes one output at a
/// time through `one(row, activation row)`. Each caller's `tile` gives `one`'s bits.
#[allow(clippy::too_many_arguments)]
fn grouped_task<const R: usize, B: Clone + Default>(
    rows: std::ops::Range<usize>,
    n: usize,
    nb: usize,
    quad_end: usize,
    decode: impl Fn(usize, &mut [B]),
    tile: impl Fn(&[B], usize) -> [[f32; R]; 4],
    one: impl Fn(usize, usize) -> f32,
    out: SyncPtr<f32>,
    m: usize,
) {
    let nb = nb.max(1);
    let groups = rows.len() / R;
    let mut decoded = vec![B::default(); groups * nb];
    for (g, d) in decoded.chunks_exact_mut(nb).enumerate() {
        decode(rows.start + R * g, d);
    }
    // SAFETY (every write below): columns `rows` belong to this task alone; i < n, j < m.
    let put = |i: usize, j: usize, v: f32| unsafe { *out.0.add(i * m + j) = v };
    for i0 in (0..n).step_by(ACT_TILE) {
        let act_tile = i0..(i0 + ACT_TILE).min(n);
        for (g, d) in decoded.chunks_exact(nb).enumerate() {
            let j = rows.start + R * g;
            let mut i = act_tile.start;
            while i + 4 <= act_tile.end.min(quad_end) {
                for (a, t) in tile(d, i).iter().enumerate() {
                    for (r, v) in t.iter().enumerate() {
                        put(i + a, j + r, *v);
                    }
                }
                i += 4;
            }
            for i in i..act_tile.end {
                for r in 0..R {
                    put(i, j + r, one(j + r, i));
                }
            }
        }
        for j in rows.start + R * groups..rows.end {
            for i in act_tile.clone() {
                put(i, j, one(j, i));
            }
        }
    }
}
