//! The CUDA backend (cargo feature `cuda`): weights resident on the GPU in their quantized form
//! (the device image of `kiln_cuda::layout`: the same bits, some types rearranged for wide loads),
//! f32 activations drawn from a workspace that is reused across steps, an f16 paged KV cache, and a
//! kernel per operation (`kernels/*.cu`). Every device allocation is counted in the device's
//! ledger under a name; one that does not fit is a typed error for the request that asked.
//!
//! Numerics: the roundings of the CPU backend, so that the two agree closely (a rounding step that
//! one backend takes and the other does not grows through a deep network): activations are
//! rounded as the CPU quantizes them before each product with quantized weights (Q8_0/Q8_1/Q8_K
//! codes, or f16/bf16) and the product sums those values in f32; attention takes the CPU's path
//! for the batch (below 64 rows: f16 query and f16 accumulation of the values; from 64 rows: all
//! f32) over f16 K/V. What still differs is the order of f32 additions and `expf`'s last bit, so
//! the two agree to a stated tolerance, not to the bit (`tests/cuda_e2e.rs`).

mod pool;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kiln_cuda::{Arg, DevBuf, Device, Launch, layout, matmul as mm};
use kiln_quant::GgmlType;

use crate::backend::{AttnParams, Backend, Glu, Moe, Rope, RowKv, WeightData};
use crate::config::RopeStyle;
use crate::kv::KvLayout;
use crate::{ModelError, Result};

use pool::{ActPool, Pooled};

/// Bytes per host-to-device copy when uploading weights.
const UPLOAD_CHUNK: usize = 64 << 20;
/// Elementwise kernels' block size.
const EW: u32 = 256;

/// Called during weight upload with (bytes uploaded so far, tensor name).
pub type Progress = Box<dyn Fn(u64, &str) + Send + Sync>;

/// The CUDA backend over one device.
pub struct CudaBackend {
    dev: Arc<Device>,
    /// Weights already uploaded, by tensor name: a tied embedding/output is uploaded once.
    uploaded: Mutex<HashMap<String, Arc<DevBuf>>>,
    pool: Arc<ActPool>,
    /// Small per-step inputs (token ids, positions, KV slots, block tables), by content: the same
    /// rows are used by every layer of a pass, so each is uploaded once per pass.
    inputs: Mutex<Vec<(Vec<i32>, Arc<Pooled>)>>,
    progress: Option<Progress>,
    uploaded_bytes: Mutex<u64>,
    /// Batch-invariant mode: see [`CudaBackend::with_batch_invariant`].
    batch_invariant: bool,
}

/// A weight on the GPU.
pub struct CudaWeight {
    ty: GgmlType,
    /// Elements per row.
    k: usize,
    /// Rows per slab (a 3-D expert tensor has one slab per expert).
    m: usize,
    slabs: usize,
    /// The device image (quantized), or an f32 vector for norms, biases and sinks.
    buf: Arc<DevBuf>,
    vector: bool,
}

impl CudaWeight {
    fn slab_bytes(&self) -> u64 {
        layout::device_bytes(self.ty, self.k, self.m) as u64
    }
}

/// A row-major f32 matrix in device memory (from the workspace).
pub struct CudaAct {
    pub rows: usize,
    pub cols: usize,
    buf: Pooled,
}

impl CudaAct {
    fn ptr(&self) -> Arg {
        self.buf.arg()
    }

    fn len(&self) -> usize {
        self.rows * self.cols
    }
}

/// K and V of every layer, f16, `[slot][kv head][dim]`.
pub struct CudaKv {
    layout: KvLayout,
    k: Vec<DevBuf>,
    v: Vec<DevBuf>,
}

fn err(e: kiln_cuda::CudaError) -> ModelError {
    ModelError::Cuda(e)
}

fn grid1(n: usize, block: u32) -> Launch {
    Launch { grid: ((n as u64).div_ceil(block as u64).max(1) as u32, 1, 1), block: (block, 1, 1), shared_bytes: 0 }
}

impl CudaBackend {
    /// A backend on `dev`. `progress`, if given, is told how the weight upload advances.
    pub fn new(dev: Arc<Device>, progress: Option<Progress>) -> CudaBackend {
        CudaBackend {
            pool: Arc::new(ActPool::new(dev.clone())),
            dev,
            uploaded: Mutex::default(),
            inputs: Mutex::default(),
            progress,
            uploaded_bytes: Mutex::new(0),
            batch_invariant: false,
        }
    }

    /// Batch-invariant mode: every matrix product takes the decode kernels (`mv_T`, `mv_ids_T`),
    /// whose per-row summation order does not depend on how many rows share the launch, instead of
    /// the tiled prefill kernels; the other kernels already compute each row on its own. A row's
    /// results then do not depend on what else is in its batch. It costs prefill speed.
    pub fn with_batch_invariant(mut self, on: bool) -> CudaBackend {
        self.batch_invariant = on;
        self
    }

    /// Whether batch-invariant mode is on.
    pub fn batch_invariant(&self) -> bool {
        self.batch_invariant
    }

    /// The device, for its ledger and memory figures.
    pub fn device(&self) -> &Arc<Device> {
        &self.dev
    }

    /// Compiles and loads every kernel module now (otherwise the first use of each does), so that
    /// loading reports compile errors and counts the modules in the ledger before serving.
    pub fn warm_up(&self) -> Result<()> {
        for file in kiln_cuda::nvrtc::modules() {
            self.dev.load(file).map_err(err)?;
        }
        Ok(())
    }

    /// Returns idle workspace buffers to the device.
    pub fn trim(&self) {
        self.inputs.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.pool.trim();
    }

    fn launch(&self, file: &'static str, name: &str, l: Launch, args: &[Arg]) -> Result<()> {
        let f = self.dev.func(file, name).map_err(err)?;
        self.dev.launch(f, l, args).map_err(err)
    }

    /// `v` in device memory as i32, reusing an identical upload of this pass.
    fn ints(&self, v: Vec<i32>) -> Result<Arc<Pooled>> {
        let mut cache = self.inputs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, b)) = cache.iter().find(|(k, _)| *k == v) {
            return Ok(b.clone());
        }
        let buf = self.pool.take("step inputs", (v.len().max(1) * 4) as u64)?;
        self.dev.upload_slice(buf.buf(), &v).map_err(err)?;
        let buf = Arc::new(buf);
        if cache.len() >= 8 {
            cache.remove(0);
        }
        cache.push((v, buf.clone()));
        Ok(buf)
    }

    fn check_act(&self, what: &str, a: &CudaAct, rows: usize, cols: usize) -> Result<()> {
        if a.rows != rows || a.cols != cols {
            return Err(ModelError::Batch(format!("{what}: {}×{} activation, expected {rows}×{cols}", a.rows, a.cols)));
        }
        Ok(())
    }

    fn upload_weight(&self, w: &WeightData<'_>, k: usize, m: usize, slabs: usize) -> Result<DevBuf> {
        let slab = layout::device_bytes(w.ty, k, m);
        let total = slab * slabs;
        let buf = self.dev.alloc(&format!("weights {}", w.ty), total as u64).map_err(err)?;
        let mut staging = vec![0u8; UPLOAD_CHUNK.min(total)];
        let mut off = 0;
        while off < total {
            let n = UPLOAD_CHUNK.min(total - off);
            layout::fill(w.ty, k, m, w.bytes, off, &mut staging[..n]);
            self.dev.upload(&buf, off as u64, &staging[..n]).map_err(err)?;
            off += n;
            self.advance(n as u64, w.name);
        }
        Ok(buf)
    }

    fn advance(&self, n: u64, name: &str) {
        let mut done = self.uploaded_bytes.lock().unwrap_or_else(|p| p.into_inner());
        *done += n;
        if let Some(p) = &self.progress {
            p(*done, name);
        }
    }

    /// `x` rounded as the CPU backend rounds activations before a product with weights of type
    /// `ty` (`act_round` in ops.cu); `None` when it does not (f32 weights).
    fn round_acts(&self, x: &CudaAct, ty: GgmlType) -> Result<Option<CudaAct>> {
        let act_ty = kiln_quant::traits(ty).map(|t| t.vec_dot_type);
        let mode = match act_ty {
            Some(GgmlType::Q8_0 | GgmlType::Q8_1) => 0,
            Some(GgmlType::Q8_K) => 1,
            Some(GgmlType::F16) => 2,
            Some(GgmlType::BF16) => 3,
            _ => return Ok(None),
        };
        let y = self.act(x.rows, x.cols)?;
        self.elementwise("act_round", x.len(), &[x.ptr(), y.ptr(), Arg::I64(x.len() as i64), Arg::I32(mode)])?;
        Ok(Some(y))
    }

    /// `out = x · Wᵀ (+ bias)` for one slab of `w` (`slab` 0 for a 2-D weight).
    fn product(&self, x: &CudaAct, w: &CudaWeight, bias: Option<Arg>, out: &CudaAct) -> Result<()> {
        let (n, k, m) = (x.rows, x.cols, out.cols);
        if w.vector || w.k != k || w.m != m || out.rows != n {
            return Err(ModelError::Batch(format!(
                "matmul: {n}×{k} by a {}×{} weight into {}×{m}",
                w.m, w.k, out.rows
            )));
        }
        let ty = w.ty.name();
        let bias = bias.unwrap_or(Arg::Ptr(0));
        let rounded = self.round_acts(x, w.ty)?;
        let x = rounded.as_ref().unwrap_or(x);
        let args =
            [Arg::from(&*w.buf), x.ptr(), bias, out.ptr(), Arg::I32(m as i32), Arg::I32(k as i32), Arg::I32(n as i32)];
        if n <= mm::MV_MAX_N || self.batch_invariant {
            self.launch("matmul.cu", &format!("mv_{ty}"), mm::mv_launch(m, n), &args)
        } else {
            self.launch("matmul.cu", &format!("mm_{ty}"), mm::mm_launch(w.ty, m, n), &args)
        }
    }

    /// Expert products: slot `s` of `ids` multiplies row `s / x_div` of `x` by expert `ids[s]`.
    fn product_ids(
        &self,
        x: &CudaAct,
        x_div: usize,
        w: &CudaWeight,
        bias: &CudaWeight,
        ids: &Pooled,
        out: &CudaAct,
    ) -> Result<()> {
        let (k, m, slots) = (x.cols, out.cols, out.rows);
        if w.k != k || w.m != m || slots != x.rows * x_div {
            return Err(ModelError::Batch(format!(
                "expert product: {}×{k} (÷{x_div}) by {}×{} into {slots}×{m}",
                x.rows, w.m, w.k
            )));
        }
        let rounded = self.round_acts(x, w.ty)?;
        let x = rounded.as_ref().unwrap_or(x);
        let args = [
            Arg::from(&*w.buf),
            Arg::I64(w.slab_bytes() as i64),
            x.ptr(),
            Arg::I32(x_div as i32),
            ids.arg(),
            Arg::I32(slots as i32),
            Arg::from(&*bias.buf),
            Arg::I32(m as i32),
            out.ptr(),
            Arg::I32(m as i32),
            Arg::I32(k as i32),
        ];
        let ty = w.ty.name();
        if slots <= mm::MV_MAX_N || self.batch_invariant {
            self.launch("matmul.cu", &format!("mv_ids_{ty}"), mm::mv_ids_launch(m, slots), &args)
        } else {
            // Prefill: a block per (weight-row tile, expert) over the slots routed to it.
            self.launch("matmul.cu", &format!("mm_ids_{ty}"), mm::mm_ids_launch(w.ty, m, w.slabs), &args)
        }
    }

    fn elementwise(&self, name: &str, n: usize, args: &[Arg]) -> Result<()> {
        self.launch("ops.cu", name, grid1(n, EW), args)
    }
}

impl Backend for CudaBackend {
    type Weight = CudaWeight;
    type Act = CudaAct;
    type Kv = CudaKv;

    fn weight(&self, w: WeightData<'_>) -> Result<CudaWeight> {
        let k = w.shape.first().copied().unwrap_or(1) as usize;
        let m = w.shape.get(1).copied().unwrap_or(1) as usize;
        let slabs = w.shape.iter().skip(2).product::<u64>() as usize;
        let vector = w.shape.len() == 1 || w.name.ends_with(".bias");
        let cached = self.uploaded.lock().unwrap_or_else(|p| p.into_inner()).get(w.name).cloned();
        let buf = match cached {
            Some(b) => b,
            None if vector => {
                let traits = kiln_quant::traits(w.ty).ok_or(ModelError::TensorType {
                    name: w.name.to_string(),
                    ty: w.ty,
                    role: "a weight",
                })?;
                let mut v = vec![0f32; k * m * slabs];
                (traits.dequantize)(w.bytes, &mut v);
                let b =
                    self.dev.alloc("weights f32 vectors (norms, biases, sinks)", (v.len() * 4) as u64).map_err(err)?;
                self.dev.upload_slice(&b, &v).map_err(err)?;
                self.advance(w.bytes.len() as u64, w.name);
                Arc::new(b)
            }
            None => {
                if !layout::supported(w.ty) {
                    return Err(ModelError::TensorType {
                        name: w.name.to_string(),
                        ty: w.ty,
                        role: "the CUDA backend",
                    });
                }
                Arc::new(self.upload_weight(&w, k, m, slabs)?)
            }
        };
        self.uploaded.lock().unwrap_or_else(|p| p.into_inner()).insert(w.name.to_string(), buf.clone());
        Ok(CudaWeight { ty: if vector { GgmlType::F32 } else { w.ty }, k, m, slabs, buf, vector })
    }

    fn act(&self, rows: usize, cols: usize) -> Result<CudaAct> {
        let buf = self.pool.take("activations", (rows * cols * 4) as u64)?;
        Ok(CudaAct { rows, cols, buf })
    }

    fn act_from_host(&self, rows: usize, cols: usize, data: &[f32]) -> Result<CudaAct> {
        if data.len() != rows * cols {
            return Err(ModelError::Batch(format!("{} values for a {rows}×{cols} activation", data.len())));
        }
        let a = self.act(rows, cols)?;
        self.dev.upload_slice(a.buf.buf(), data).map_err(err)?;
        Ok(a)
    }

    fn kv(&self, layout: &KvLayout) -> Result<CudaKv> {
        let slots = layout.n_blocks.checked_mul(layout.block_size).and_then(|s| s.checked_mul(layout.n_head_kv));
        let bytes = |dim: usize| slots.and_then(|s| s.checked_mul(dim)).and_then(|s| s.checked_mul(2));
        let (Some(kb), Some(vb)) = (bytes(layout.head_dim), bytes(layout.head_dim_v)) else {
            return Err(ModelError::OutOfMemory { what: "the KV cache", bytes: u64::MAX });
        };
        let total = (kb as u64 + vb as u64).saturating_mul(layout.n_layer as u64);
        let what =
            format!("the KV cache ({} positions × {} layers)", layout.n_blocks * layout.block_size, layout.n_layer);
        self.dev.check_fits(&what, total).map_err(err)?;
        let (mut k, mut v) = (Vec::with_capacity(layout.n_layer), Vec::with_capacity(layout.n_layer));
        for _ in 0..layout.n_layer {
            k.push(self.dev.alloc("KV cache", kb as u64).map_err(err)?);
            v.push(self.dev.alloc("KV cache", vb as u64).map_err(err)?);
        }
        Ok(CudaKv { layout: layout.clone(), k, v })
    }

    fn embed(&self, table: &CudaWeight, ids: &[u32], scale: f32, out: &mut CudaAct) -> Result<()> {
        self.check_act("embed", out, ids.len(), table.k)?;
        if ids.iter().any(|&i| i as usize >= table.m) {
            return Err(ModelError::Batch("token id outside the embedding table".into()));
        }
        let idb = self.ints(ids.iter().map(|&i| i as i32).collect())?;
        let args = [
            Arg::from(&*table.buf),
            idb.arg(),
            Arg::F32(scale),
            out.ptr(),
            Arg::I32(ids.len() as i32),
            Arg::I32(table.k as i32),
            Arg::I32(table.m as i32),
        ];
        self.launch(
            "matmul.cu",
            &format!("get_rows_{}", table.ty.name()),
            mm::get_rows_launch(table.ty, ids.len(), table.k),
            &args,
        )
    }

    fn rms_norm(&self, x: &CudaAct, w: &CudaWeight, group: usize, eps: f32, out: &mut CudaAct) -> Result<()> {
        self.check_act("rms_norm", out, x.rows, x.cols)?;
        let groups = x.len() / group.max(1);
        let l = Launch { grid: (groups as u32, 1, 1), block: (256, 1, 1), shared_bytes: 0 };
        self.launch(
            "ops.cu",
            "rms_norm",
            l,
            &[x.ptr(), Arg::from(&*w.buf), out.ptr(), Arg::I32(group as i32), Arg::F32(eps)],
        )
    }

    fn matmul(&self, x: &CudaAct, w: &CudaWeight, bias: Option<&CudaWeight>, out: &mut CudaAct) -> Result<()> {
        self.product(x, w, bias.map(|b| Arg::from(&*b.buf)), out)
    }

    fn add(&self, x: &mut CudaAct, y: &CudaAct) -> Result<()> {
        self.check_act("add", y, x.rows, x.cols)?;
        self.elementwise("add", x.len(), &[x.ptr(), y.ptr(), Arg::I64(x.len() as i64)])
    }

    fn glu(&self, kind: Glu, gate: &CudaAct, up: &CudaAct, out: &mut CudaAct) -> Result<()> {
        self.check_act("glu", up, gate.rows, gate.cols)?;
        self.check_act("glu", out, gate.rows, gate.cols)?;
        let name = match kind {
            Glu::Silu => "swiglu",
            Glu::Gelu => "geglu",
        };
        self.elementwise(name, out.len(), &[gate.ptr(), up.ptr(), out.ptr(), Arg::I64(out.len() as i64)])
    }

    fn rope(&self, x: &mut CudaAct, head_dim: usize, pos: &[usize], rope: &Rope) -> Result<()> {
        if pos.len() != x.rows || head_dim == 0 || !x.cols.is_multiple_of(head_dim) || rope.n_rot > head_dim {
            return Err(ModelError::Batch(format!(
                "rope: {} positions for {}×{} (head {head_dim})",
                pos.len(),
                x.rows,
                x.cols
            )));
        }
        let posb = self.ints(pos.iter().map(|&p| p as i32).collect())?;
        let (yarn, (low, high, ext, mscale)) = match rope.yarn_terms() {
            Some(t) => (1, t),
            None => (0, (0.0, 0.0, 0.0, 1.0)),
        };
        let pairs = x.cols / head_dim * (rope.n_rot / 2);
        let l = Launch { grid: (x.rows as u32, 1, 1), block: (pairs.clamp(32, 256) as u32, 1, 1), shared_bytes: 0 };
        let args = [
            x.ptr(),
            posb.arg(),
            Arg::I32(x.cols as i32),
            Arg::I32(head_dim as i32),
            Arg::I32(rope.n_rot as i32),
            Arg::I32((rope.style == RopeStyle::Neox) as i32),
            Arg::F32(rope.freq_scale),
            Arg::F32(rope.theta_scale()),
            Arg::I32(yarn),
            Arg::F32(low),
            Arg::F32(high),
            Arg::F32(ext),
            Arg::F32(mscale),
        ];
        self.launch("ops.cu", "rope", l, &args)
    }

    fn kv_write(&self, kv: &mut CudaKv, layer: usize, rows: &[RowKv<'_>], k: &CudaAct, v: &CudaAct) -> Result<()> {
        let bs = kv.layout.block_size;
        let (kw, vw) = (kv.layout.n_head_kv * kv.layout.head_dim, kv.layout.n_head_kv * kv.layout.head_dim_v);
        self.check_act("kv_write k", k, rows.len(), kw)?;
        self.check_act("kv_write v", v, rows.len(), vw)?;
        let slots: Vec<i32> = rows
            .iter()
            .map(|r| {
                let b = r.pos / bs - r.first_block;
                r.blocks.get(b).map(|&blk| (blk as usize * bs + r.pos % bs) as i32).ok_or(())
            })
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| ModelError::Batch("a row's position is outside its block table".into()))?;
        let sb = self.ints(slots)?;
        let l = Launch { grid: (rows.len() as u32, 1, 1), block: (128, 1, 1), shared_bytes: 0 };
        let args = [
            k.ptr(),
            v.ptr(),
            sb.arg(),
            Arg::from(&kv.k[layer]),
            Arg::from(&kv.v[layer]),
            Arg::I32(kw as i32),
            Arg::I32(vw as i32),
        ];
        self.launch("attention.cu", "kv_write", l, &args)
    }

    fn attention(
        &self,
        kv: &CudaKv,
        layer: usize,
        rows: &[RowKv<'_>],
        q: &CudaAct,
        p: &AttnParams,
        sinks: Option<&CudaWeight>,
        out: &mut CudaAct,
    ) -> Result<()> {
        if p.head_dim > 256 || p.head_dim_v > 256 || p.n_head_kv == 0 || !p.n_head.is_multiple_of(p.n_head_kv) {
            return Err(ModelError::Batch(format!(
                "attention: head dims {}/{} (at most 256) and {} heads over {} KV heads",
                p.head_dim, p.head_dim_v, p.n_head, p.n_head_kv
            )));
        }
        self.check_act("attention q", q, rows.len(), p.n_head * p.head_dim)?;
        self.check_act("attention out", out, rows.len(), p.n_head * p.head_dim_v)?;
        // The CPU backend's choice of path, so the two round alike: f16 accumulation below 64
        // rows (a single row's keys split in two past 512 cells), all-f32 from 64 rows on.
        let tiled = crate::cpu::attention::tiled(self.batch_invariant, rows.len());
        let split = |r: &RowKv<'_>| {
            let single = self.batch_invariant || rows.len() == 1;
            if single { crate::cpu::attention::split_chunk(r.pos).unwrap_or(0) as i32 } else { 0 }
        };
        // Per row: position, first visible position, block table offset, first block number,
        // split chunk; tables shared by the rows of one sequence.
        let (mut meta, mut tables) = (Vec::with_capacity(rows.len() * 5), Vec::new());
        let mut seen: Vec<(*const u32, usize, i32)> = Vec::new();
        for r in rows {
            let key = (r.blocks.as_ptr(), r.blocks.len());
            let off = match seen.iter().find(|s| (s.0, s.1) == key) {
                Some(s) => s.2,
                None => {
                    let off = tables.len() as i32;
                    tables.extend(r.blocks.iter().map(|&b| b as i32));
                    seen.push((key.0, key.1, off));
                    off
                }
            };
            let lo = p.window.map_or(0, |w| (r.pos + 1).saturating_sub(w));
            if lo / kv.layout.block_size < r.first_block
                || r.pos / kv.layout.block_size >= r.first_block + r.blocks.len()
            {
                return Err(ModelError::Batch("attention: a row sees positions outside its block table".into()));
            }
            meta.extend([r.pos as i32, lo as i32, off, r.first_block as i32, split(r)]);
        }
        tables.push(0);
        let (mb, tb) = (self.ints(meta)?, self.ints(tables)?);
        let l = Launch { grid: (rows.len() as u32, p.n_head as u32, 1), block: (128, 1, 1), shared_bytes: 0 };
        let kernel = if tiled { "attention" } else { "attention_f16" };
        let args = [
            q.ptr(),
            Arg::from(&kv.k[layer]),
            Arg::from(&kv.v[layer]),
            mb.arg(),
            tb.arg(),
            sinks.map_or(Arg::Ptr(0), |s| Arg::from(&*s.buf)),
            out.ptr(),
            Arg::I32(p.n_head as i32),
            Arg::I32(p.n_head_kv as i32),
            Arg::I32(p.head_dim as i32),
            Arg::I32(p.head_dim_v as i32),
            Arg::I32(kv.layout.block_size as i32),
            Arg::F32(p.scale),
        ];
        self.launch("attention.cu", kernel, l, &args)
    }

    fn moe(&self, x: &CudaAct, m: &Moe<'_, CudaWeight>, out: &mut CudaAct) -> Result<()> {
        let (n, e) = (x.rows, x.cols);
        self.check_act("moe out", out, n, e)?;
        if m.n_expert > 256 || m.n_used == 0 || m.n_used > m.n_expert {
            return Err(ModelError::Batch(format!("moe: {} of {} experts (at most 256)", m.n_used, m.n_expert)));
        }
        let mut logits = self.act(n, m.n_expert)?;
        self.matmul(x, m.router, m.router_b, &mut logits)?;
        let slots = n * m.n_used;
        let ids = self.pool.take("activations", (slots * 4) as u64)?;
        let wts = self.pool.take("activations", (slots * 4) as u64)?;
        let l = grid1(n, 128);
        let args = [
            logits.ptr(),
            Arg::I32(n as i32),
            Arg::I32(m.n_expert as i32),
            Arg::I32(m.n_used as i32),
            ids.arg(),
            wts.arg(),
        ];
        self.launch("ops.cu", "moe_topk", Launch { block: (128, 1, 1), ..l }, &args)?;
        let g = self.act(slots, m.n_ff)?;
        let u = self.act(slots, m.n_ff)?;
        self.product_ids(x, m.n_used, m.gate, m.gate_b, &ids, &g)?;
        self.product_ids(x, m.n_used, m.up, m.up_b, &ids, &u)?;
        let act = self.act(slots, m.n_ff)?;
        let len = act.len();
        let args = [g.ptr(), u.ptr(), act.ptr(), Arg::I64(len as i64), Arg::F32(m.alpha), Arg::F32(m.limit)];
        self.elementwise("swiglu_oai", len, &args)?;
        let d = self.act(slots, e)?;
        self.product_ids(&act, 1, m.down, m.down_b, &ids, &d)?;
        let l = Launch { grid: (n as u32, 1, 1), block: (256, 1, 1), shared_bytes: 0 };
        self.launch(
            "ops.cu",
            "moe_sum",
            l,
            &[d.ptr(), wts.arg(), out.ptr(), Arg::I32(m.n_used as i32), Arg::I32(e as i32)],
        )
    }

    fn gather_rows(&self, x: &CudaAct, rows: &[usize]) -> Result<CudaAct> {
        if rows.iter().any(|&r| r >= x.rows) {
            return Err(ModelError::Batch("gather_rows: row out of range".into()));
        }
        let out = self.act(rows.len(), x.cols)?;
        let rb = self.ints(rows.iter().map(|&r| r as i32).collect())?;
        let l = Launch { grid: (rows.len() as u32, 1, 1), block: (256, 1, 1), shared_bytes: 0 };
        self.launch("ops.cu", "gather_rows", l, &[x.ptr(), rb.arg(), out.ptr(), Arg::I32(x.cols as i32)])?;
        Ok(out)
    }

    fn softcap(&self, x: &mut CudaAct, cap: f32) -> Result<()> {
        self.elementwise("softcap", x.len(), &[x.ptr(), Arg::F32(cap), Arg::I64(x.len() as i64)])
    }

    fn scale(&self, x: &mut CudaAct, s: f32) -> Result<()> {
        self.elementwise("scale", x.len(), &[x.ptr(), Arg::F32(s), Arg::I64(x.len() as i64)])
    }

    fn to_host(&self, x: &CudaAct) -> Result<Vec<f32>> {
        let mut v = vec![0f32; x.len()];
        self.dev.download(x.buf.buf(), &mut v).map_err(err)?;
        // A pass ends here: its step inputs may be reused by the next only if identical.
        Ok(v)
    }
}
