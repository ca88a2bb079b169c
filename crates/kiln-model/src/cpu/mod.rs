//! The CPU backend: weights borrowed from the GGUF memory map in their own type (MXFP4 matrices
//! packed into eight-row groups at load, the same bits rearranged: [`CpuBackend::with_packing`]),
//! f32 activations, quantized matrix products on its own thread pool (activations quantized to
//! each weight type's `vec_dot_type`, as ggml does), f16 paged KV cache.
//!
//! On x86-64 with AVX2 + FMA its results are bit-identical to llama.cpp's CPU backend (commit
//! 0c1e570, x86 build, 2 threads) for the supported models, because each operation rounds as
//! ggml-cpu's does: the activation quantizers and the kernel choice and summation order of every
//! matrix product (`matmul.rs`, kiln-quant), flash attention (`attention.rs`), SwiGLU/GeGLU
//! (`unary.rs`), RoPE with GCC's fused multiply-add, RMS norm with an f64 sum. That is what lets
//! the model tests demand 1% of the logit range against llama.cpp: a last-bit difference anywhere
//! grows through the layers to a few percent.

pub(crate) mod attention;
mod matmul;
mod pool;
mod unary;

pub use pool::Pool;

use std::sync::Arc;

use half::f16;
use half::slice::HalfFloatSliceExt;
use kiln_gguf::GgufFile;
use kiln_quant::GgmlType;

use crate::backend::{AttnParams, Backend, Glu, Moe, Product, Rope, RowKv, WeightData};
use crate::config::RopeStyle;
use crate::kv::KvLayout;
use crate::{ModelError, Result};

/// The CPU backend. It keeps the file alive so weights can borrow its bytes.
pub struct CpuBackend {
    file: Arc<GgufFile>,
    pool: Pool,
    /// Batch-invariant mode: see [`CpuBackend::with_batch_invariant`].
    batch_invariant: bool,
    /// What the bound weights hold, by name: see [`CpuBackend::resident`].
    resident: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    /// Bytes MXFP4 matrices may still take when packed: see [`CpuBackend::with_packing`].
    pack_budget: std::sync::atomic::AtomicU64,
}

/// Elements below which an elementwise op runs on the calling thread (a parallel loop costs more).
const SERIAL: usize = 1 << 15;

impl CpuBackend {
    /// A backend over `file` using `threads` threads (0: one per available core).
    pub fn new(file: Arc<GgufFile>, threads: usize) -> CpuBackend {
        let threads = if threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { threads };
        CpuBackend {
            file,
            pool: Pool::new(threads),
            batch_invariant: false,
            resident: Default::default(),
            pack_budget: pack_budget().into(),
        }
    }

    /// Whether MXFP4 matrices are packed at load (on by default). Packed, each group of eight
    /// rows is copied into owned memory in the layout of [`kiln_quant::mxfp4::pack8`], which the
    /// products read several times faster than the file's blocks (the same bits, the same
    /// results), and the file's pages of those rows are released: resident memory stays about
    /// the model's size, but the copy is anonymous memory, not page cache that the kernel can drop
    /// and share. By default only what fits under the machine's available memory less 2 GiB
    /// (Linux `MemAvailable` when the backend is made) is packed; the rest is read in place. Off,
    /// every matrix is read in place from the memory map.
    pub fn with_packing(self, on: bool) -> CpuBackend {
        self.pack_budget.store(if on { pack_budget() } else { 0 }, std::sync::atomic::Ordering::Relaxed);
        self
    }

    /// Bytes of the weights bound so far, by name: "mapped TYPE" for matrices read in place from
    /// the file's memory map (page cache, not copied), "packed TYPE (owned copies)" for matrices
    /// packed at load ([`CpuBackend::with_packing`]), "f32 vectors (dequantized copies)" for
    /// norms, biases and other 1-D tensors, which are dequantized once into owned memory.
    pub fn resident(&self) -> Vec<(String, u64)> {
        self.resident.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Batch-invariant mode: every row of a batch is computed with the kernels and summation order
    /// a batch of that one row gets (matrix products by `vec_dot` or the one-row GEMV order,
    /// attention by the small-batch kernel with a single row's key split), so a row's results do
    /// not depend on what else is in its batch. It costs the batched kernels' speed (prefill and
    /// many-sequence decode); it does not change a one-row batch.
    pub fn with_batch_invariant(mut self, on: bool) -> CpuBackend {
        self.batch_invariant = on;
        self
    }

    /// Whether batch-invariant mode is on.
    pub fn batch_invariant(&self) -> bool {
        self.batch_invariant
    }

    /// Threads used for parallel loops.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Rows of `cols` elements per parallel task for an elementwise op over `rows` rows.
    fn rows_per_task(&self, rows: usize, cols: usize) -> usize {
        if rows * cols <= SERIAL { rows.max(1) } else { rows.div_ceil(self.pool.threads() * 4).max(1) }
    }

    /// `out = x · wᵀ` over `bytes`: all of `w` or one expert's slice of it, `rows` rows of `w`'s
    /// type and layout; `x` quantized for `w` ([`Self::quantized`]).
    fn product(&self, w: &CpuWeight, bytes: &[u8], rows: usize, x: &matmul::Quantized, out: &mut CpuAct) {
        matmul::matmul(&self.pool, self.batch_invariant, bytes, w.ty, w.packed.is_some(), rows, x, out);
    }

    /// `x` quantized for products with `w`: from `done` (quantizations of the same `x`) where it
    /// is there, else made and added to it.
    fn quantized<'q>(&self, x: &CpuAct, w: &CpuWeight, done: &'q mut Vec<matmul::Quantized>) -> &'q matmul::Quantized {
        let ty = matmul::act_type(w.ty);
        let i = done.iter().position(|q| q.ty == ty).unwrap_or_else(|| {
            done.push(matmul::quantize(&self.pool, x, ty));
            done.len() - 1
        });
        &done[i]
    }

    /// The weight's bytes: its packed copy, or its range of the memory map.
    fn bytes<'a>(&'a self, w: &'a CpuWeight) -> &'a [u8] {
        w.packed.as_deref().unwrap_or(&self.file.bytes()[w.offset..w.offset + w.len])
    }

    /// `w`'s bytes in [`kiln_quant::mxfp4::pack8`]'s layout, or `None` if it does not apply (not
    /// MXFP4, or a matrix — an expert's, for 3-D tensors — whose row count is not a multiple of 8,
    /// so that no group spans two experts) or does not fit in the packing budget.
    fn pack(&self, w: &WeightData<'_>) -> Option<memmap2::MmapMut> {
        use kiln_quant::mxfp4::{PACK_ROWS, pack8};
        use std::sync::atomic::Ordering;
        let (bytes, matrix_rows) = (w.bytes, w.shape.get(1).copied().unwrap_or(0) as usize);
        if w.ty != GgmlType::MXFP4 || !matrix_rows.is_multiple_of(PACK_ROWS) || matrix_rows == 0 {
            return None;
        }
        let rows = w.shape.iter().skip(1).product::<u64>() as usize;
        let len = bytes.len() as u64;
        self.pack_budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(len)).ok()?;
        // Fresh anonymous pages, first touched by the packing threads below (each faults in its
        // own part), in 2 MiB pages where the kernel allows: a few faults per tensor instead of
        // one per 4 KiB. Where the map is refused, the matrix is read in place.
        let Ok(mut out) = memmap2::MmapOptions::new().len(bytes.len()).map_anon() else {
            self.pack_budget.fetch_add(len, Ordering::Relaxed);
            return None;
        };
        #[cfg(target_os = "linux")]
        let _ = out.advise(memmap2::Advice::HugePage);
        let rb = bytes.len() / rows;
        // Groups of eight rows per task, a few tasks per thread.
        let groups = rows / PACK_ROWS;
        let per = groups.div_ceil(self.pool.threads() * 4) * PACK_ROWS * rb;
        self.pool.chunks_mut(&mut out, per, |ci, dst| {
            let src = &bytes[ci * per..ci * per + dst.len()];
            pack8(src, dst.len() / rb, rb, dst);
        });
        Some(out)
    }
}

/// What [`CpuBackend::with_packing`] may pack by default: `MemAvailable` less 2 GiB (0 where it
/// cannot be read).
fn pack_budget() -> u64 {
    available_memory().unwrap_or(0).saturating_sub(2 << 30)
}

/// `b` added to every row of `a`.
fn add_bias(a: &mut CpuAct, b: &[f32]) {
    a.data.chunks_mut(a.cols).for_each(|r| r.iter_mut().zip(b).for_each(|(o, b)| *o += b));
}

/// Bytes the machine has available (Linux `MemAvailable`, the node's and not a cgroup's), where
/// known. The packing budget, the scheduler's default KV budget and the server's health report read
/// it.
pub fn available_memory() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = s.lines().find(|l| l.starts_with("MemAvailable:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A weight on the CPU: a byte range of the memory map, plus an f32 copy for 1-D tensors (norms,
/// biases) and for any `*.bias` tensor (gpt-oss's per-expert biases are 2-D), which are tiny and
/// used as vectors, or a packed copy for MXFP4 matrices that products read instead.
pub struct CpuWeight {
    ty: GgmlType,
    /// Number of rows (product of the other dimensions).
    rows: usize,
    offset: usize,
    len: usize,
    vec: Option<Vec<f32>>,
    /// The matrix packed at load (MXFP4, [`kiln_quant::mxfp4::pack8`]), read instead of the map.
    packed: Option<memmap2::MmapMut>,
}

/// A row-major f32 matrix.
#[derive(Clone, Debug)]
pub struct CpuAct {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

/// K and V for every layer: `[block][slot in block][kv head][dim]`, in f16 like llama.cpp's
/// default cache type (half the memory of f32, and the same rounding as the reference).
pub struct CpuKv {
    layout: KvLayout,
    k: Vec<Vec<f16>>,
    v: Vec<Vec<f16>>,
}

impl CpuKv {
    /// The cache slot of position `pos` of the sequence `r` belongs to.
    fn slot(&self, r: &RowKv<'_>, pos: usize) -> usize {
        let bs = self.layout.block_size;
        r.blocks[pos / bs - r.first_block] as usize * bs + pos % bs
    }
}

impl Backend for CpuBackend {
    type Weight = CpuWeight;
    type Act = CpuAct;
    type Kv = CpuKv;

    fn weight(&self, w: WeightData<'_>) -> Result<CpuWeight> {
        let base = self.file.bytes().as_ptr() as usize;
        let start = w.bytes.as_ptr() as usize;
        // The CPU backend only binds tensors of its own file.
        assert!(
            start >= base && start + w.bytes.len() <= base + self.file.bytes().len(),
            "weight {} is not from the backend's file",
            w.name
        );
        let cols = w.shape.first().copied().unwrap_or(1) as usize;
        let rows = w.shape.iter().skip(1).product::<u64>() as usize;
        let traits = kiln_quant::traits(w.ty).ok_or(ModelError::TensorType {
            name: w.name.to_string(),
            ty: w.ty,
            role: "a weight",
        })?;
        let vec = if w.shape.len() == 1 || w.name.ends_with(".bias") {
            let mut v = vec![0f32; cols * rows];
            (traits.dequantize)(w.bytes, &mut v);
            Some(v)
        } else {
            if traits.vec_dot.is_none() {
                return Err(ModelError::TensorType { name: w.name.to_string(), ty: w.ty, role: "a matrix product" });
            }
            None
        };
        let packed = if vec.is_none() { self.pack(&w) } else { None };
        if packed.is_some() {
            // The copy is what products read from now on: the file's pages can go.
            self.file.release(start - base, w.bytes.len());
        }
        {
            let mut r = self.resident.lock().unwrap_or_else(|e| e.into_inner());
            let (what, bytes) = match (&vec, &packed) {
                (Some(v), _) => ("f32 vectors (dequantized copies)".into(), v.len() * 4),
                (None, Some(p)) => (format!("packed {} (owned copies)", w.ty.name()), p.len()),
                (None, None) => (format!("mapped {}", w.ty.name()), w.bytes.len()),
            };
            *r.entry(what).or_default() += bytes as u64;
        }
        Ok(CpuWeight { ty: w.ty, rows, offset: start - base, len: w.bytes.len(), vec, packed })
    }

    fn act(&self, rows: usize, cols: usize) -> Result<CpuAct> {
        Ok(CpuAct { rows, cols, data: vec![0.0; rows * cols] })
    }

    fn act_from_host(&self, rows: usize, cols: usize, data: &[f32]) -> Result<CpuAct> {
        if data.len() != rows * cols {
            return Err(ModelError::Batch(format!("{} values for a {rows}×{cols} activation", data.len())));
        }
        Ok(CpuAct { rows, cols, data: data.to_vec() })
    }

    fn kv(&self, layout: &KvLayout) -> Result<CpuKv> {
        let len = |dim: usize| {
            let n = layout.n_blocks.checked_mul(layout.block_size)?.checked_mul(layout.n_head_kv)?;
            n.checked_mul(dim)
        };
        let (Some(k_len), Some(v_len)) = (len(layout.head_dim), len(layout.head_dim_v)) else {
            return Err(ModelError::OutOfMemory { what: "the KV cache", bytes: u64::MAX });
        };
        let mut k = Vec::new();
        let mut v = Vec::new();
        for _ in 0..layout.n_layer {
            k.push(try_zeroed(k_len)?);
            v.push(try_zeroed(v_len)?);
        }
        Ok(CpuKv { layout: layout.clone(), k, v })
    }

    fn embed(&self, table: &CpuWeight, ids: &[u32], scale: f32, out: &mut CpuAct) -> Result<()> {
        let t = kiln_quant::traits(table.ty).expect("checked at bind");
        let rb = table.len / table.rows;
        // Rows by token id from the file's own layout, even where the matrix is also packed for
        // products (a tied output matrix).
        let bytes = &self.file.bytes()[table.offset..table.offset + table.len];
        for (row, &id) in out.data.chunks_mut(out.cols).zip(ids) {
            let id = id as usize;
            (t.dequantize)(&bytes[id * rb..(id + 1) * rb], row);
            if scale != 1.0 {
                row.iter_mut().for_each(|v| *v *= scale);
            }
        }
        Ok(())
    }

    fn rms_norm(&self, x: &CpuAct, w: &CpuWeight, group: usize, eps: f32, out: &mut CpuAct) -> Result<()> {
        let wv = w.vec.as_deref().expect("norm weights are vectors");
        let groups = x.data.len() / group;
        let per = self.rows_per_task(groups, group) * group;
        self.pool.chunks_mut(&mut out.data, per, |ci, o| {
            let x = &x.data[ci * per..ci * per + o.len()];
            for (o, x) in o.chunks_mut(group).zip(x.chunks(group)) {
                // As ggml: sum of squares in f64, scale in f32.
                let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
                let mean = (sum / group as f64) as f32;
                let scale = 1.0 / (mean + eps).sqrt();
                for ((o, &x), &w) in o.iter_mut().zip(x).zip(wv) {
                    *o = x * scale * w;
                }
            }
        });
        Ok(())
    }

    fn matmul(&self, x: &CpuAct, w: &CpuWeight, bias: Option<&CpuWeight>, out: &mut CpuAct) -> Result<()> {
        self.matmuls(x, &mut [(w, bias, out)])
    }

    /// Each product as [`Self::matmul`] computes it, `x` quantized once per activation type.
    fn matmuls(&self, x: &CpuAct, products: &mut [Product<'_, CpuWeight, CpuAct>]) -> Result<()> {
        let mut xq = Vec::new();
        for (w, bias, out) in products.iter_mut() {
            self.product(w, self.bytes(w), w.rows, self.quantized(x, w, &mut xq), out);
            if let Some(b) = bias {
                add_bias(out, b.vec.as_deref().expect("biases are vectors"));
            }
        }
        Ok(())
    }

    fn add(&self, x: &mut CpuAct, y: &CpuAct) -> Result<()> {
        x.data.iter_mut().zip(&y.data).for_each(|(a, b)| *a += b);
        Ok(())
    }

    fn glu(&self, kind: Glu, gate: &CpuAct, up: &CpuAct, out: &mut CpuAct) -> Result<()> {
        let row: fn(&[f32], &[f32], &mut [f32]) = match kind {
            Glu::Silu => unary::swiglu_row,
            Glu::Gelu => unary::geglu_row,
        };
        let cols = out.cols;
        let per = self.rows_per_task(out.rows, cols) * cols;
        self.pool.chunks_mut(&mut out.data, per, |ci, o| {
            let g = &gate.data[ci * per..ci * per + o.len()];
            let u = &up.data[ci * per..ci * per + o.len()];
            for ((o, g), u) in o.chunks_mut(cols).zip(g.chunks(cols)).zip(u.chunks(cols)) {
                row(g, u, o);
            }
        });
        Ok(())
    }

    fn rope(&self, x: &mut CpuAct, head_dim: usize, pos: &[usize], rope: &Rope) -> Result<()> {
        let half = rope.n_rot / 2;
        let theta_scale = rope.theta_scale();
        // YaRN (ggml's `rope_yarn`): correction dimensions and magnitude, once per call.
        let yarn = rope.yarn_terms();
        let cols = x.cols;
        let per = self.rows_per_task(x.rows, cols);
        self.pool.chunks_mut(&mut x.data, per * cols, |ci, rows| {
            for (ri, row) in rows.chunks_mut(cols).enumerate() {
                let p = pos[ci * per + ri];
                // cos/sin of p·scale·base^(-2j/n_rot), the angle built by repeated multiplication as ggml does.
                let mut cs = Vec::with_capacity(half);
                match yarn {
                    None => {
                        let mut theta = p as f32 * rope.freq_scale;
                        for _ in 0..half {
                            cs.push((theta.cos(), theta.sin()));
                            theta *= theta_scale;
                        }
                    }
                    Some((low, high, ext, mscale)) => {
                        let mut extrap = p as f32;
                        for j in 0..half {
                            let interp = rope.freq_scale * extrap;
                            let y = (j as f32 - low) / (high - low).max(0.001);
                            let mix = (1.0 - y.clamp(0.0, 1.0)) * ext;
                            // `interp·(1 − mix) + extrap·mix` as GCC compiles it: the first product
                            // fused with the sum (checked bit for bit against llama.cpp's RoPE).
                            let theta = interp.mul_add(1.0 - mix, extrap * mix);
                            cs.push((theta.cos() * mscale, theta.sin() * mscale));
                            extrap *= theta_scale;
                        }
                    }
                }
                for head in row.chunks_mut(head_dim) {
                    for (j, &(c, s)) in cs.iter().enumerate() {
                        let (i0, i1) = match rope.style {
                            RopeStyle::Normal => (2 * j, 2 * j + 1),
                            RopeStyle::Neox => (j, j + half),
                        };
                        let (x0, x1) = (head[i0], head[i1]);
                        // ggml's `x0*cos - x1*sin`, `x0*sin + x1*cos` as GCC compiles them: the first
                        // product fused with the addition.
                        head[i0] = x0.mul_add(c, -(x1 * s));
                        head[i1] = x0.mul_add(s, x1 * c);
                    }
                }
            }
        });
        Ok(())
    }

    fn kv_write(&self, kv: &mut CpuKv, layer: usize, rows: &[RowKv<'_>], k: &CpuAct, v: &CpuAct) -> Result<()> {
        for (i, r) in rows.iter().enumerate() {
            let slot = kv.slot(r, r.pos);
            let (kw, vw) = (k.cols, v.cols);
            kv.k[layer][slot * kw..(slot + 1) * kw].convert_from_f32_slice(&k.data[i * kw..(i + 1) * kw]);
            kv.v[layer][slot * vw..(slot + 1) * vw].convert_from_f32_slice(&v.data[i * vw..(i + 1) * vw]);
        }
        Ok(())
    }

    fn attention(
        &self,
        kv: &CpuKv,
        layer: usize,
        rows: &[RowKv<'_>],
        q: &CpuAct,
        p: &AttnParams,
        sinks: Option<&CpuWeight>,
        out: &mut CpuAct,
    ) -> Result<()> {
        let sinks = sinks.map(|w| w.vec.as_deref().expect("sinks are vectors"));
        attention::attention(&self.pool, self.batch_invariant, kv, layer, rows, q, p, sinks, out);
        Ok(())
    }

    fn moe(&self, x: &CpuAct, m: &Moe<'_, CpuWeight>, out: &mut CpuAct) -> Result<()> {
        let (n, e) = (x.rows, x.cols);
        // Router: logits = W·x + b; the top `n_used` logits, softmax over those only.
        let mut logits = self.act(n, m.n_expert)?;
        self.matmul(x, m.router, m.router_b, &mut logits)?;
        let mut chosen: Vec<Vec<(usize, f32)>> = Vec::with_capacity(n);
        for row in logits.data.chunks(m.n_expert) {
            let mut idx: Vec<usize> = (0..m.n_expert).collect();
            idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            idx.truncate(m.n_used);
            let max = row[idx[0]];
            let ex: Vec<f32> = idx.iter().map(|&i| (row[i] - max).exp()).collect();
            let sum: f64 = ex.iter().map(|&v| v as f64).sum();
            let inv = (1.0 / sum) as f32;
            chosen.push(idx.into_iter().zip(ex).map(|(i, v)| (i, v * inv)).collect());
        }
        // Each expert over the rows routed to it; outputs kept per (row, slot) to sum in slot order.
        let mut slots = vec![0f32; n * m.n_used * e];
        let n_expert = m.n_expert;
        // Expert `ex`'s rows (a packed group never spans two experts: each has a multiple of 8 rows).
        fn expert<'a>(b: &'a CpuBackend, w: &'a CpuWeight, ex: usize, n_expert: usize) -> &'a [u8] {
            let per = w.len / n_expert;
            &b.bytes(w)[ex * per..(ex + 1) * per]
        }
        let slice = |w, ex| expert(self, w, ex, n_expert);
        fn bias(w: &CpuWeight, ex: usize, width: usize) -> &[f32] {
            &w.vec.as_deref().expect("expert biases are vectors")[ex * width..(ex + 1) * width]
        }
        for ex in 0..m.n_expert {
            let routed: Vec<(usize, usize, f32)> = chosen
                .iter()
                .enumerate()
                .filter_map(|(r, c)| c.iter().position(|&(i, _)| i == ex).map(|s| (r, s, c[s].1)))
                .collect();
            if routed.is_empty() {
                continue;
            }
            let rows: Vec<usize> = routed.iter().map(|&(r, _, _)| r).collect();
            let xs = self.gather_rows(x, &rows)?;
            let k = rows.len();
            let mut g = self.act(k, m.n_ff)?;
            let mut u = self.act(k, m.n_ff)?;
            let mut xq = Vec::new();
            self.product(m.gate, slice(m.gate, ex), m.n_ff, self.quantized(&xs, m.gate, &mut xq), &mut g);
            add_bias(&mut g, bias(m.gate_b, ex, m.n_ff));
            self.product(m.up, slice(m.up, ex), m.n_ff, self.quantized(&xs, m.up, &mut xq), &mut u);
            add_bias(&mut u, bias(m.up_b, ex, m.n_ff));
            // Clamped SwiGLU, as ggml's `swiglu_oai`.
            for (gv, &uv) in g.data.iter_mut().zip(&u.data) {
                let gx = gv.min(m.limit);
                let uy = uv.clamp(-m.limit, m.limit);
                *gv = gx / (1.0 + (m.alpha * -gx).exp()) * (uy + 1.0);
            }
            let mut d = self.act(k, e)?;
            self.product(m.down, slice(m.down, ex), e, self.quantized(&g, m.down, &mut Vec::new()), &mut d);
            add_bias(&mut d, bias(m.down_b, ex, e));
            for (i, &(r, s, wt)) in routed.iter().enumerate() {
                let dst = &mut slots[(r * m.n_used + s) * e..(r * m.n_used + s + 1) * e];
                dst.iter_mut().zip(&d.data[i * e..(i + 1) * e]).for_each(|(o, v)| *o = v * wt);
            }
        }
        for (r, o) in out.data.chunks_mut(e).enumerate() {
            o.copy_from_slice(&slots[r * m.n_used * e..(r * m.n_used + 1) * e]);
            for s in 1..m.n_used {
                let src = &slots[(r * m.n_used + s) * e..(r * m.n_used + s + 1) * e];
                o.iter_mut().zip(src).for_each(|(o, v)| *o += v);
            }
        }
        Ok(())
    }

    fn gather_rows(&self, x: &CpuAct, rows: &[usize]) -> Result<CpuAct> {
        let mut data = Vec::with_capacity(rows.len() * x.cols);
        for &r in rows {
            data.extend_from_slice(&x.data[r * x.cols..(r + 1) * x.cols]);
        }
        Ok(CpuAct { rows: rows.len(), cols: x.cols, data })
    }

    fn scale(&self, x: &mut CpuAct, s: f32) -> Result<()> {
        x.data.iter_mut().for_each(|v| *v *= s);
        Ok(())
    }

    fn softcap(&self, x: &mut CpuAct, cap: f32) -> Result<()> {
        x.data.iter_mut().for_each(|v| *v = cap * (*v / cap).tanh());
        Ok(())
    }

    fn to_host(&self, x: &CpuAct) -> Result<Vec<f32>> {
        Ok(x.data.clone())
    }
}

/// A zeroed vector, or a typed error instead of an abort when memory runs out.
fn try_zeroed(len: usize) -> Result<Vec<f16>> {
    let bytes = (len as u64).saturating_mul(std::mem::size_of::<f16>() as u64);
    let oom = || ModelError::OutOfMemory { what: "the KV cache", bytes };
    let layout = std::alloc::Layout::array::<f16>(len).map_err(|_| oom())?;
    if layout.size() == 0 {
        return Ok(Vec::new());
    }
    // Zeroed by the allocator (fresh pages from the OS for a large cache), so that the pages of
    // positions not reached yet are never touched: a long context costs memory as it fills.
    // SAFETY: `layout` has a non-zero size; all-zero bits are f16 0.0; `Vec::from_raw_parts`
    // takes the block with the layout `Vec<f16>` of capacity `len` uses (the global allocator's
    // `Layout::array::<f16>(len)`).
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<f16>();
    if ptr.is_null() {
        return Err(oom());
    }
    // SAFETY: see above; `ptr` is non-null and owns `len` zeroed values.
    Ok(unsafe { Vec::from_raw_parts(ptr, len, len) })
}
