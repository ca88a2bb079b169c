//! Every CUDA kernel against the CPU backend and a float64 reference, on fresh random inputs at
//! several shapes (one row, odd sizes, many rows, long rows). Needs a GPU: run on the GPU host
//! (`cargo xtask gpu-test`); built, not run, by CI (`--features cuda`).
//!
//! Bounds, stated per check:
//! - activation rounding (`act_round`): equal, bit for bit, to the CPU's quantization of the
//!   activations into the weight type's `vec_dot_type` (Q8_0, Q8_1, Q8_K, F16, BF16) and back.
//! - matrix products: both backends round the activations that way (as llama.cpp does) and sum
//!   exact products of the rounded values; the GPU must be within `5e-5 · Σ|w·x|` of the float64
//!   product of the rounded activations and the decoded weights, and within `5e-5 · Σ|w·x|` of the
//!   CPU (`5e-4` for Q4_1/Q5_1, whose CPU dot takes the activation block sums from the Q8_1
//!   block's f16 `s`, one rounding more).
//! - elementwise and per-row ops: within a few f32 ulps of the CPU (`1e-5` relative to the
//!   values' scale; `2e-6` for exact-arithmetic ops).
//! - embedding rows: equal to the CPU's dequantization, bit for bit.
//! - attention: from 64 rows on (all f32 on both backends) within `1e-4 · max|v|` of a float64
//!   softmax over the f16-rounded cache; below 64 rows both backends follow ggml's f16 path (f16
//!   query, values accumulated in f16), within `4e-3 · max|v|` of float64, and the GPU within
//!   `2e-3 · max|v|` (a few f16 steps of the accumulator) of the CPU.
//! - mixture of experts: both backends within `3e-2` of the output's scale of a float64 forward of
//!   the same routing and decoded weights on unrounded activations (the Q8 rounding of the
//!   activations), and the GPU within `1e-3` of the CPU.
#![cfg(feature = "cuda")]

use std::sync::{Arc, OnceLock};

use half::f16;
use kiln_gguf::{GgufFile, GgufWriter};
use kiln_model::backend::{AttnParams, Backend, Glu, Moe, Rope, RowKv, WeightData, Yarn};
use kiln_model::config::RopeStyle;
use kiln_model::kv::KvLayout;
use kiln_model::{CpuBackend, CudaBackend};
use kiln_quant::GgmlType;

/// Test inputs from kiln-synth's splitmix64 stream.
struct Rng(kiln_synth::Rng);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(kiln_synth::Rng::new(seed))
    }
    /// Uniform in [-1, 1).
    fn f(&mut self) -> f32 {
        (self.0.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.f() * scale).collect()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.0.next_u64() % n as u64) as usize
    }
}

fn device() -> Arc<kiln_cuda::Device> {
    static DEV: OnceLock<Arc<kiln_cuda::Device>> = OnceLock::new();
    DEV.get_or_init(|| {
        kiln_cuda::Device::new(Default::default()).expect("a CUDA device (these tests run on the GPU host)")
    })
    .clone()
}

/// A GGUF file holding the given tensors (the CPU backend binds tensors of its own file).
struct Tensors {
    file: Arc<GgufFile>,
}

impl Tensors {
    fn new(list: &[(&str, GgmlType, Vec<u64>, Vec<u8>)]) -> Tensors {
        let mut w = GgufWriter::new();
        w.add("general.architecture", "test").unwrap();
        for (name, ty, shape, bytes) in list {
            w.add_tensor(*name, *ty, shape, bytes.clone()).unwrap();
        }
        Tensors { file: Arc::new(GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap()) }
    }

    fn bind<B: Backend>(&self, be: &B, name: &str) -> B::Weight {
        let t = self.file.tensor(name).unwrap();
        be.weight(WeightData { name, ty: t.ty, shape: &t.shape, bytes: self.file.tensor_data(t) }).unwrap()
    }
}

fn backends(t: &Tensors) -> (CpuBackend, CudaBackend) {
    (CpuBackend::new(t.file.clone(), 0), CudaBackend::new(device(), None))
}

/// Weights of `ty` from random values: (GGUF bytes, their decoded values).
fn quantized(ty: GgmlType, values: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let mut bytes = vec![0u8; ty.row_bytes(values.len() as u64).unwrap() as usize];
    kiln_quant::quantize(ty, values, &mut bytes).unwrap();
    let mut dec = vec![0f32; values.len()];
    kiln_quant::dequantize(ty, &bytes, &mut dec).unwrap();
    (bytes, dec)
}

fn report(kernel: &str, shape: &str, err: f64, bound: f64) {
    let verdict = if err <= bound { "ok" } else { "FAIL" };
    println!("CASE {kernel:<14} {shape:<40} err {err:.3e} bound {bound:.3e} {verdict}");
    assert!(err <= bound, "{kernel} {shape}: error {err:e} over the bound {bound:e}");
}

const MATMUL_TYPES: [GgmlType; 14] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::MXFP4,
];

#[test]
fn matmul_every_type_against_cpu_and_f64() {
    let mut rng = Rng::new(1);
    // (m, k, n): one row, odd row counts, decode batches up to 8 and past it, long rows.
    let shapes = [
        (1, 256, 1),
        (67, 256, 1),
        (96, 512, 3),
        (300, 256, 8),
        (130, 768, 9),
        (64, 256, 64),
        (257, 1024, 130),
        (33, 4096, 2),
    ];
    for ty in MATMUL_TYPES {
        for &(m, k, n) in &shapes {
            let (bytes, wdec) = quantized(ty, &rng.vec(m * k, 1.0));
            let bias = rng.vec(m, 0.5);
            let t = Tensors::new(&[
                ("w", ty, vec![k as u64, m as u64], bytes),
                ("b.bias", GgmlType::F32, vec![m as u64], bias.iter().flat_map(|v| v.to_le_bytes()).collect()),
            ]);
            let (cpu, gpu) = backends(&t);
            let x = rng.vec(n * k, 2.0);
            let y_cpu = {
                let (w, b) = (t.bind(&cpu, "w"), t.bind(&cpu, "b.bias"));
                let xa = cpu.act_from_host(n, k, &x).unwrap();
                let mut y = cpu.act(n, m).unwrap();
                cpu.matmul(&xa, &w, Some(&b), &mut y).unwrap();
                cpu.to_host(&y).unwrap()
            };
            let y_gpu = {
                let (w, b) = (t.bind(&gpu, "w"), t.bind(&gpu, "b.bias"));
                let xa = gpu.act_from_host(n, k, &x).unwrap();
                let mut y = gpu.act_from_host(n, m, &vec![f32::NAN; n * m]).unwrap();
                gpu.matmul(&xa, &w, Some(&b), &mut y).unwrap();
                gpu.to_host(&y).unwrap()
            };
            // The activations as the CPU rounds them.
            let x_round: Vec<f32> = x
                .chunks(k)
                .flat_map(|row| {
                    let q = kiln_quant::quantize_activations(ty, row).unwrap();
                    let act_ty = kiln_quant::traits(ty).unwrap().vec_dot_type;
                    let mut d = vec![0f32; k];
                    kiln_quant::dequantize(act_ty, &q, &mut d).unwrap();
                    d
                })
                .collect();
            let (mut e_gpu, mut e_cpu, mut gap) = (0f64, 0f64, 0f64);
            for i in 0..n {
                for j in 0..m {
                    let w = &wdec[j * k..(j + 1) * k];
                    let (xr, xq) = (&x[i * k..(i + 1) * k], &x_round[i * k..(i + 1) * k]);
                    let rounded: f64 =
                        w.iter().zip(xq).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() + bias[j] as f64;
                    let mag: f64 = w.iter().zip(xr).map(|(&a, &b)| (a as f64 * b as f64).abs()).sum::<f64>() + 1.0;
                    let (g, c) = (y_gpu[i * m + j] as f64, y_cpu[i * m + j] as f64);
                    assert!(g.is_finite(), "{ty} {m}x{k}x{n}: output ({i}, {j}) not written");
                    e_gpu = e_gpu.max((g - rounded).abs() / mag);
                    e_cpu = e_cpu.max((c - rounded).abs() / mag);
                    gap = gap.max((g - c).abs() / mag);
                }
            }
            let shape = format!("{ty} m={m} k={k} n={n}");
            report(if n <= 8 { "mv" } else { "mm" }, &shape, e_gpu, 5e-5);
            // The CPU's Q4_1/Q5_1 dots take the activation block sums from the Q8_1 block (its `s`),
            // which rounds once more than this reference.
            report("cpu-matmul", &shape, e_cpu, 5e-4);
            let s_rounding = matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1);
            report("gpu-vs-cpu", &shape, gap, if s_rounding { 5e-4 } else { 5e-5 });
        }
    }
}

#[test]
fn activation_rounding_equals_the_cpu_quantizers() {
    let mut rng = Rng::new(8);
    let dev = device();
    let f = dev.func("ops.cu", "act_round").unwrap();
    // One weight type per activation format: Q8_0, Q8_1, Q8_K, F16, BF16.
    for (ty, mode) in
        [(GgmlType::Q8_0, 0), (GgmlType::Q4_1, 0), (GgmlType::Q4_K, 1), (GgmlType::F16, 2), (GgmlType::BF16, 3)]
    {
        for (rows, k) in [(1usize, 256usize), (3, 3072), (17, 768), (2, 2880)] {
            if mode == 1 && k % 256 != 0 {
                continue; // K-quant rows are whole 256-blocks
            }
            // Random values with an all-zero block, a block of one value, ties at the half and
            // magnitudes far apart.
            let mut x = rng.vec(rows * k, 4.0);
            x[..32].fill(0.0);
            x[32..64].fill(-1.5);
            for (i, v) in x[64..96].iter_mut().enumerate() {
                *v = (i as f32 - 16.0) * 0.5;
            }
            x[100] = 1e-30;
            x[rows * k - 1] = -3e4;
            let want: Vec<f32> = x
                .chunks(k)
                .flat_map(|row| {
                    let q = kiln_quant::quantize_activations(ty, row).unwrap();
                    let mut d = vec![0f32; k];
                    kiln_quant::dequantize(kiln_quant::traits(ty).unwrap().vec_dot_type, &q, &mut d).unwrap();
                    d
                })
                .collect();
            let n = x.len();
            let (xb, yb) = (dev.alloc("test", (n * 4) as u64).unwrap(), dev.alloc("test", (n * 4) as u64).unwrap());
            dev.upload_slice(&xb, &x).unwrap();
            let l = kiln_cuda::Launch { grid: (n.div_ceil(256) as u32, 1, 1), block: (256, 1, 1), shared_bytes: 0 };
            let args = [
                kiln_cuda::Arg::from(&xb),
                kiln_cuda::Arg::from(&yb),
                kiln_cuda::Arg::I64(n as i64),
                kiln_cuda::Arg::I32(mode),
            ];
            dev.launch(f, l, &args).unwrap();
            let mut got = vec![0f32; n];
            dev.download(&yb, &mut got).unwrap();
            let differ = got.iter().zip(&want).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
            report("act_round", &format!("{ty} activations {rows}x{k}"), differ as f64, 0.0);
        }
    }
}

#[test]
fn embedding_rows_equal_the_cpu_dequantization() {
    let mut rng = Rng::new(2);
    for ty in MATMUL_TYPES {
        let (vocab, k) = (77, 512);
        let (bytes, _) = quantized(ty, &rng.vec(vocab * k, 1.0));
        let t = Tensors::new(&[("token_embd.weight", ty, vec![k as u64, vocab as u64], bytes)]);
        let (cpu, gpu) = backends(&t);
        let ids: Vec<u32> = (0..19).map(|_| rng.below(vocab) as u32).chain([0, vocab as u32 - 1]).collect();
        let c = {
            let w = t.bind(&cpu, "token_embd.weight");
            let mut o = cpu.act(ids.len(), k).unwrap();
            cpu.embed(&w, &ids, 1.5, &mut o).unwrap();
            cpu.to_host(&o).unwrap()
        };
        let g = {
            let w = t.bind(&gpu, "token_embd.weight");
            let mut o = gpu.act(ids.len(), k).unwrap();
            gpu.embed(&w, &ids, 1.5, &mut o).unwrap();
            gpu.to_host(&o).unwrap()
        };
        let diff = c.iter().zip(&g).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        report("get_rows", &format!("{ty} {} rows of {k}", ids.len()), diff as f64, 0.0);
    }
}

fn max_rel(a: &[f32], b: &[f32]) -> f64 {
    let scale = a.iter().map(|v| v.abs() as f64).fold(1e-30, f64::max);
    a.iter()
        .zip(b)
        .map(|(&x, &y)| if y.is_finite() { (x as f64 - y as f64).abs() } else { f64::INFINITY })
        .fold(0.0, f64::max)
        / scale
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn elementwise_and_row_ops_match_the_cpu() {
    let mut rng = Rng::new(3);
    for &(rows, cols) in &[(1usize, 64usize), (7, 2880), (130, 576), (512, 640)] {
        let w = rng.vec(cols, 1.0);
        let t = Tensors::new(&[("norm", GgmlType::F32, vec![cols as u64], f32_bytes(&w))]);
        let (cpu, gpu) = backends(&t);
        let (x, y) = (rng.vec(rows * cols, 3.0), rng.vec(rows * cols, 3.0));
        let shape = format!("{rows}x{cols}");
        macro_rules! on {
            ($be:expr, $body:expr) => {{
                let be = &$be;
                let x_ = be.act_from_host(rows, cols, &x).unwrap();
                let y_ = be.act_from_host(rows, cols, &y).unwrap();
                let w_ = t.bind(be, "norm");
                let f = $body;
                be.to_host(&f(be, x_, y_, w_)).unwrap()
            }};
        }
        // RMS norm (whole rows, and 64-wide groups as per-head norms)
        for group in [cols, 64] {
            let c = on!(cpu, |be: &CpuBackend, x, _y, w| {
                let mut o = be.act(rows, cols).unwrap();
                be.rms_norm(&x, &w, group, 1e-6, &mut o).unwrap();
                o
            });
            let g = on!(gpu, |be: &CudaBackend, x, _y, w| {
                let mut o = be.act(rows, cols).unwrap();
                be.rms_norm(&x, &w, group, 1e-6, &mut o).unwrap();
                o
            });
            if group == cols || cols % 64 == 0 {
                report("rms_norm", &format!("{shape} group {group}"), max_rel(&c, &g), 2e-6);
            }
        }
        let c = on!(cpu, |be: &CpuBackend, mut x, y, _w| {
            be.add(&mut x, &y).unwrap();
            x
        });
        let g = on!(gpu, |be: &CudaBackend, mut x, y, _w| {
            be.add(&mut x, &y).unwrap();
            x
        });
        report("add", &shape, max_rel(&c, &g), 0.0);
        for (name, kind) in [("swiglu", Glu::Silu), ("geglu", Glu::Gelu)] {
            let c = on!(cpu, |be: &CpuBackend, x, y, _w| {
                let mut o = be.act(rows, cols).unwrap();
                be.glu(kind, &x, &y, &mut o).unwrap();
                o
            });
            let g = on!(gpu, |be: &CudaBackend, x, y, _w| {
                let mut o = be.act(rows, cols).unwrap();
                be.glu(kind, &x, &y, &mut o).unwrap();
                o
            });
            // GeGLU: both look GELU up at the f16-rounded gate and round it to f16; the formula's
            // tanh may differ by an ulp before that rounding (one f16 step, 2^-11 relative).
            report(name, &shape, max_rel(&c, &g), if kind == Glu::Gelu { 1e-3 } else { 1e-5 });
        }
        let c = on!(cpu, |be: &CpuBackend, mut x, _y, _w| {
            be.softcap(&mut x, 30.0).unwrap();
            be.scale(&mut x, 0.125).unwrap();
            x
        });
        let g = on!(gpu, |be: &CudaBackend, mut x, _y, _w| {
            be.softcap(&mut x, 30.0).unwrap();
            be.scale(&mut x, 0.125).unwrap();
            x
        });
        report("softcap+scale", &shape, max_rel(&c, &g), 1e-5);
        let pick: Vec<usize> = (0..rows.min(5)).map(|_| rng.below(rows)).collect();
        let c = on!(cpu, |be: &CpuBackend, x, _y, _w| be.gather_rows(&x, &pick).unwrap());
        let g = on!(gpu, |be: &CudaBackend, x, _y, _w| be.gather_rows(&x, &pick).unwrap());
        report("gather_rows", &shape, max_rel(&c, &g), 0.0);
    }
}

#[test]
fn rope_normal_neox_and_yarn_match_the_cpu() {
    let mut rng = Rng::new(4);
    let t = Tensors::new(&[]);
    let (cpu, gpu) = backends(&t);
    let yarn = Some(Yarn { ext_factor: 1.0, attn_factor: 1.0, n_ctx_orig: 4096, beta_fast: 32.0, beta_slow: 1.0 });
    for (style, n_rot, head_dim, freq_scale, yarn, base) in [
        (RopeStyle::Normal, 64, 64, 1.0, None, 10000.0),
        (RopeStyle::Neox, 64, 64, 1.0, None, 100000.0),
        (RopeStyle::Neox, 32, 64, 0.25, None, 10000.0),
        (RopeStyle::Neox, 64, 64, 1.0 / 32.0, yarn, 150000.0),
        (RopeStyle::Neox, 256, 256, 1.0, None, 1000000.0),
    ] {
        let rope = Rope { style, n_rot, base, freq_scale, yarn };
        for rows in [1usize, 9, 300] {
            let cols = head_dim * 5;
            let x = rng.vec(rows * cols, 2.0);
            let pos: Vec<usize> = (0..rows).map(|i| if rows == 1 { 131_000 } else { i * 37 % 5000 }).collect();
            let mut xc = cpu.act_from_host(rows, cols, &x).unwrap();
            cpu.rope(&mut xc, head_dim, &pos, &rope).unwrap();
            let mut xg = gpu.act_from_host(rows, cols, &x).unwrap();
            gpu.rope(&mut xg, head_dim, &pos, &rope).unwrap();
            let (c, g) = (cpu.to_host(&xc).unwrap(), gpu.to_host(&xg).unwrap());
            // cos/sin of angles up to ~1e5 rad: libm and CUDA's range reduction agree to a few
            // ulps of the angle's magnitude.
            let shape = format!("{style:?} rot {n_rot}/{head_dim} yarn {} rows {rows}", yarn.is_some());
            report("rope", &shape, max_rel(&c, &g), 2e-5);
        }
    }
}

/// Float64 attention of one query head over f16-rounded keys/values at positions `lo..=pos`.
#[allow(clippy::too_many_arguments)]
fn attend_f64(
    q: &[f32],
    keys: &[Vec<f32>],
    vals: &[Vec<f32>],
    lo: usize,
    pos: usize,
    scale: f32,
    sink: Option<f32>,
) -> Vec<f64> {
    let s: Vec<f64> = (lo..=pos)
        .map(|p| q.iter().zip(&keys[p]).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() * scale as f64)
        .collect();
    let m = s.iter().copied().fold(sink.map_or(f64::NEG_INFINITY, |v| v as f64), f64::max);
    let w: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
    let denom = w.iter().sum::<f64>() + sink.map_or(0.0, |v| (v as f64 - m).exp());
    let mut out = vec![0f64; vals[0].len()];
    for (i, p) in (lo..=pos).enumerate() {
        for (o, &v) in out.iter_mut().zip(&vals[p]) {
            *o += w[i] * v as f64 / denom;
        }
    }
    out
}

#[test]
fn attention_paged_gqa_window_sinks_against_f64() {
    let mut rng = Rng::new(5);
    let bs = 32;
    // (query heads, kv heads, head dim, window, sinks, lengths of the sequences, new rows each)
    type Case<'a> = (usize, usize, usize, Option<usize>, bool, &'a [usize], usize);
    let cases: &[Case<'_>] = &[
        (8, 8, 64, None, false, &[1], 1),
        (64, 8, 64, Some(128), true, &[300, 45], 1),
        (64, 8, 64, None, true, &[700], 70),
        (9, 3, 64, None, false, &[129, 64, 1], 40),
        (4, 1, 256, Some(512), false, &[600], 3),
        (5, 1, 64, Some(4), true, &[50], 20),
        (8, 2, 128, None, false, &[1000], 1),
        // One row over 512 cells: the CPU's two-chunk split, with the window cutting into the
        // first chunk, and leaving it empty but for the sink.
        (64, 8, 64, Some(600), true, &[900], 1),
        (8, 2, 64, Some(100), true, &[1000], 1),
    ];
    for &(nh, nkv, hd, window, with_sinks, lens, new_rows) in cases {
        let n_blocks = lens.iter().map(|l| l.div_ceil(bs)).sum::<usize>() + 3;
        let layout = KvLayout { n_layer: 1, n_head_kv: nkv, head_dim: hd, head_dim_v: hd, block_size: bs, n_blocks };
        let sinks = rng.vec(nh, 3.0);
        let t = Tensors::new(&[("sinks", GgmlType::F32, vec![nh as u64], f32_bytes(&sinks))]);
        let (cpu, gpu) = backends(&t);
        // Shuffled block tables.
        let mut free: Vec<u32> = (0..n_blocks as u32).collect();
        for i in (1..free.len()).rev() {
            free.swap(i, rng.below(i + 1));
        }
        let tables: Vec<Vec<u32>> =
            lens.iter().map(|l| (0..l.div_ceil(bs)).map(|_| free.pop().unwrap()).collect()).collect();
        let kw = nkv * hd;
        // Every position's K/V (rounded to f16, as stored), written in one batch; then the last
        // `new_rows` positions of each sequence attend.
        let mut rows_all = Vec::new();
        let (mut k_all, mut v_all) = (Vec::new(), Vec::new());
        type Rows = Vec<Vec<f32>>;
        let mut kv_host: Vec<(Rows, Rows)> = Vec::new();
        for (s, &len) in lens.iter().enumerate() {
            let (mut ks, mut vs) = (Vec::new(), Vec::new());
            for p in 0..len {
                rows_all.push(RowKv { blocks: &tables[s], first_block: 0, pos: p });
                let (k, v) = (rng.vec(kw, 1.0), rng.vec(kw, 1.0));
                ks.push(k.iter().map(|&x| f16::from_f32(x).to_f32()).collect::<Vec<_>>());
                vs.push(v.iter().map(|&x| f16::from_f32(x).to_f32()).collect::<Vec<_>>());
                k_all.extend(k);
                v_all.extend(v);
            }
            kv_host.push((ks, vs));
        }
        let mut rows_q = Vec::new();
        for (s, &len) in lens.iter().enumerate() {
            for p in len.saturating_sub(new_rows)..len {
                rows_q.push((s, RowKv { blocks: &tables[s], first_block: 0, pos: p }));
            }
        }
        let rq: Vec<RowKv<'_>> = rows_q.iter().map(|r| r.1).collect();
        let q = rng.vec(rq.len() * nh * hd, 1.0);
        let p = AttnParams {
            n_head: nh,
            n_head_kv: nkv,
            head_dim: hd,
            head_dim_v: hd,
            scale: 1.0 / (hd as f32).sqrt(),
            window,
        };
        let n_all = rows_all.len();
        macro_rules! run {
            ($be:expr) => {{
                let be = &$be;
                let mut kv = be.kv(&layout).unwrap();
                let (k, v) =
                    (be.act_from_host(n_all, kw, &k_all).unwrap(), be.act_from_host(n_all, kw, &v_all).unwrap());
                be.kv_write(&mut kv, 0, &rows_all, &k, &v).unwrap();
                let qa = be.act_from_host(rq.len(), nh * hd, &q).unwrap();
                let mut o = be.act_from_host(rq.len(), nh * hd, &vec![f32::NAN; rq.len() * nh * hd]).unwrap();
                let sk = t.bind(be, "sinks");
                be.attention(&kv, 0, &rq, &qa, &p, with_sinks.then_some(&sk), &mut o).unwrap();
                be.to_host(&o).unwrap()
            }};
        }
        let (c, g) = (run!(cpu), run!(gpu));
        let (mut e_gpu, mut e_cpu, mut gap) = (0f64, 0f64, 0f64);
        for (i, (s, r)) in rows_q.iter().enumerate() {
            let lo = window.map_or(0, |w| (r.pos + 1).saturating_sub(w));
            for h in 0..nh {
                let kvh = h / (nh / nkv);
                let keys: Vec<Vec<f32>> = kv_host[*s].0.iter().map(|k| k[kvh * hd..(kvh + 1) * hd].to_vec()).collect();
                let vals: Vec<Vec<f32>> = kv_host[*s].1.iter().map(|v| v[kvh * hd..(kvh + 1) * hd].to_vec()).collect();
                let qh = &q[(i * nh + h) * hd..(i * nh + h + 1) * hd];
                let want = attend_f64(qh, &keys, &vals, lo, r.pos, p.scale, with_sinks.then_some(sinks[h]));
                for (d, &w) in want.iter().enumerate() {
                    let idx = (i * nh + h) * hd + d;
                    e_gpu = e_gpu.max((g[idx] as f64 - w).abs());
                    e_cpu = e_cpu.max((c[idx] as f64 - w).abs());
                    gap = gap.max((g[idx] as f64 - c[idx] as f64).abs());
                    assert!(g[idx].is_finite(), "attention output ({i}, {h}, {d}) not written");
                }
            }
        }
        let shape = format!("{nh}/{nkv}x{hd} win {window:?} sinks {with_sinks} seqs {lens:?} rows {}", rq.len());
        // Values are within ±1, so max|v| ≤ 1.
        if rq.len() >= 64 {
            report("attention", &shape, e_gpu, 1e-4);
        } else {
            report("attention-f16", &shape, e_gpu, 4e-3);
        }
        report("cpu-attention", &shape, e_cpu, 4e-3);
        report("attn-gpu-vs-cpu", &shape, gap, 2e-3);
    }
}

#[test]
fn moe_router_and_experts_against_f64() {
    let mut rng = Rng::new(6);
    for &(n, e, ff, n_exp, n_used, ty) in &[
        (1usize, 256usize, 256usize, 8usize, 2usize, GgmlType::MXFP4),
        (5, 512, 256, 32, 4, GgmlType::MXFP4),
        (70, 256, 512, 8, 4, GgmlType::Q8_0),
        (3, 256, 256, 4, 1, GgmlType::F16),
    ] {
        let router = rng.vec(e * n_exp, 1.0);
        let router_b = rng.vec(n_exp, 0.5);
        let (gate, gate_d) = quantized(ty, &rng.vec(e * ff * n_exp, 0.3));
        let (up, up_d) = quantized(ty, &rng.vec(e * ff * n_exp, 0.3));
        let (down, down_d) = quantized(ty, &rng.vec(ff * e * n_exp, 0.3));
        let (gb, ub, db) = (rng.vec(ff * n_exp, 0.5), rng.vec(ff * n_exp, 0.5), rng.vec(e * n_exp, 0.5));
        let (e64, ff64, nx64) = (e as u64, ff as u64, n_exp as u64);
        let t = Tensors::new(&[
            ("router", GgmlType::F32, vec![e64, nx64], f32_bytes(&router)),
            ("router.bias", GgmlType::F32, vec![nx64], f32_bytes(&router_b)),
            ("gate", ty, vec![e64, ff64, nx64], gate),
            ("gate.bias", GgmlType::F32, vec![ff64, nx64], f32_bytes(&gb)),
            ("up", ty, vec![e64, ff64, nx64], up),
            ("up.bias", GgmlType::F32, vec![ff64, nx64], f32_bytes(&ub)),
            ("down", ty, vec![ff64, e64, nx64], down),
            ("down.bias", GgmlType::F32, vec![e64, nx64], f32_bytes(&db)),
        ]);
        let (cpu, gpu) = backends(&t);
        let x = rng.vec(n * e, 1.0);
        macro_rules! run {
            ($be:expr) => {{
                let be = &$be;
                let w: Vec<_> = ["router", "router.bias", "gate", "gate.bias", "up", "up.bias", "down", "down.bias"]
                    .iter()
                    .map(|name| t.bind(be, name))
                    .collect();
                let m = Moe {
                    router: &w[0],
                    router_b: Some(&w[1]),
                    gate: &w[2],
                    gate_b: &w[3],
                    up: &w[4],
                    up_b: &w[5],
                    down: &w[6],
                    down_b: &w[7],
                    n_expert: n_exp,
                    n_used,
                    n_ff: ff,
                    alpha: 1.702,
                    limit: 7.0,
                };
                let xa = be.act_from_host(n, e, &x).unwrap();
                let mut o = be.act_from_host(n, e, &vec![f32::NAN; n * e]).unwrap();
                be.moe(&xa, &m, &mut o).unwrap();
                be.to_host(&o).unwrap()
            }};
        }
        let (c, g) = (run!(cpu), run!(gpu));
        // float64 reference.
        let mut want = vec![0f64; n * e];
        for r in 0..n {
            let xr = &x[r * e..(r + 1) * e];
            let logits: Vec<f64> = (0..n_exp)
                .map(|j| {
                    router[j * e..(j + 1) * e].iter().zip(xr).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>()
                        + router_b[j] as f64
                })
                .collect();
            let mut idx: Vec<usize> = (0..n_exp).collect();
            idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
            idx.truncate(n_used);
            let ex: Vec<f64> = idx.iter().map(|&i| (logits[i] - logits[idx[0]]).exp()).collect();
            let sum: f64 = ex.iter().sum();
            for (s, &ex_i) in idx.iter().enumerate() {
                let wt = ex[s] / sum;
                let mut act = vec![0f64; ff];
                for (j, a) in act.iter_mut().enumerate() {
                    let row = (ex_i * ff + j) * e;
                    let gv: f64 = gate_d[row..row + e].iter().zip(xr).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>()
                        + gb[ex_i * ff + j] as f64;
                    let uv: f64 = up_d[row..row + e].iter().zip(xr).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>()
                        + ub[ex_i * ff + j] as f64;
                    let gx = gv.min(7.0);
                    *a = gx / (1.0 + (-1.702 * gx).exp()) * (uv.clamp(-7.0, 7.0) + 1.0);
                }
                for c2 in 0..e {
                    let row = (ex_i * e + c2) * ff;
                    let dv: f64 = down_d[row..row + ff].iter().zip(&act).map(|(&a, &b)| a as f64 * b).sum::<f64>()
                        + db[ex_i * e + c2] as f64;
                    want[r * e + c2] += wt * dv;
                }
            }
        }
        let scale = want.iter().map(|v| v.abs()).fold(1e-30, f64::max);
        let e_gpu = g
            .iter()
            .zip(&want)
            .map(|(&a, &b)| if a.is_finite() { (a as f64 - b).abs() } else { f64::INFINITY })
            .fold(0.0, f64::max)
            / scale;
        let e_cpu = c.iter().zip(&want).map(|(&a, &b)| (a as f64 - b).abs()).fold(0.0, f64::max) / scale;
        let shape = format!("{ty} n={n} e={e} ff={ff} top {n_used}/{n_exp}");
        // Both backends round activations to Q8 (or F16) before each expert product.
        report("moe", &shape, e_gpu, 3e-2);
        report("cpu-moe", &shape, e_cpu, 3e-2);
        let gap = g.iter().zip(&c).map(|(&a, &b)| (a as f64 - b as f64).abs()).fold(0.0, f64::max) / scale;
        report("moe-gpu-vs-cpu", &shape, gap, 1e-3);
    }
}

#[test]
fn batch_invariant_rows_equal_their_one_row_products() {
    let mut rng = Rng::new(7);
    for ty in [GgmlType::MXFP4, GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::F16] {
        let (m, k, n) = (200, 512, 37);
        let (bytes, _) = quantized(ty, &rng.vec(m * k, 1.0));
        let t = Tensors::new(&[("w", ty, vec![k as u64, m as u64], bytes)]);
        let gpu = CudaBackend::new(device(), None).with_batch_invariant(true);
        let w = t.bind(&gpu, "w");
        let x = rng.vec(n * k, 2.0);
        let xa = gpu.act_from_host(n, k, &x).unwrap();
        let mut y = gpu.act(n, m).unwrap();
        gpu.matmul(&xa, &w, None, &mut y).unwrap();
        let all = gpu.to_host(&y).unwrap();
        let mut differ = 0;
        for i in [0, 8, 9, 36] {
            let xi = gpu.act_from_host(1, k, &x[i * k..(i + 1) * k]).unwrap();
            let mut yi = gpu.act(1, m).unwrap();
            gpu.matmul(&xi, &w, None, &mut yi).unwrap();
            let one = gpu.to_host(&yi).unwrap();
            differ += one.iter().zip(&all[i * m..(i + 1) * m]).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        }
        report("batch-invariant", &format!("{ty} rows of a 37-row batch vs alone"), differ as f64, 0.0);
    }
}
