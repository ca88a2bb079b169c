//! Throughput of kiln-quant's dequantization and dot product kernels, for every type kiln
//! computes with.
//!
//! Run (about 3 minutes on 2 cores):
//!
//! ```text
//! cargo bench -p kiln-quant --bench quant -- --warm-up-time 1 --measurement-time 2
//! ```
//!
//! (Those two settings are also the defaults this file sets; the command-line flags override them.
//! Filter with a regex as usual: `-- dot/q4_0`.)
//!
//! The working set is a weight matrix of `ROWS` = 256 rows × `N` = 4096 elements (one row length of
//! a 4096-wide model), stored in the type under test:
//!
//! - `dequant/{type}`: dequantize the whole matrix into f32, one `dequantize` call per row.
//!   Criterion's throughput is `Throughput::Bytes` of the **quantized input** read (so "GiB/s" is
//!   the rate the weights are consumed, comparable with memory bandwidth); elements per second are
//!   that times `block_elems / block_bytes` (docs/PERFORMANCE.md lists both).
//! - `dot/{type}/dispatch`: one activation row (quantized once, outside the timing, with
//!   `quantize_activations`) against every weight row, through `TypeTraits::dot`, the runtime-
//!   dispatching entry the inference path uses (the AVX-512 VNNI kernel where one exists and the
//!   CPU has it, else the AVX2+FMA one, else scalar). `dot/{type}/scalar`, `dot/{type}/avx2` and
//!   `dot/{type}/vnni`: the same through `Dot::scalar`, `Dot::avx2` and `Dot::vnni` called
//!   directly; `scalar` is benched only for types that have a SIMD kernel (otherwise dispatch
//!   *is* scalar), `avx2` and `vnni` only where the kernel exists and the CPU supports it
//!   (`KILN_NO_VNNI` / `KILN_NO_SIMD` turn them off like the dispatch). Throughput is
//!   `Throughput::Elements(2 · N · ROWS)`, one multiply and one add per weight, so criterion's
//!   "elem/s" reads as FLOP/s.
//!
//! Weights are kiln's own quantization of normally distributed values where kiln has a quantizer,
//! else random blocks whose f16/f32 scale fields are finite and in a normal range (speed does not
//! depend on the values, but denormal or NaN scales could).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kiln_quant::{GgmlType, quantize, quantize_activations, supported_types, traits};

const N: usize = 4096;
const ROWS: usize = 256;

/// splitmix64: deterministic inputs, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unif(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f32 {
        ((0..12).map(|_| self.unif()).sum::<f64>() - 6.0) as f32
    }
}

/// Offsets of the f16 scale fields (and the f32 one of Q8_K) in one block (ggml-common.h).
fn scale_fields(ty: GgmlType) -> (&'static [usize], Option<usize>) {
    use GgmlType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 => (&[0], None),
        Q4_1 | Q5_1 | Q8_1 | Q4_K | Q5_K => (&[0, 2], None),
        Q2_K => (&[80, 82], None),
        Q3_K => (&[108], None),
        Q6_K => (&[208], None),
        Q8_K => (&[], Some(0)),
        _ => (&[], None),
    }
}

/// `rows` rows of `n` elements of `ty`.
fn weights(ty: GgmlType, rows: usize, n: usize, rng: &mut Rng) -> Vec<u8> {
    let row_bytes = ty.row_bytes(n as u64).unwrap() as usize;
    let t = traits(ty).unwrap();
    let mut out = vec![0u8; rows * row_bytes];
    if t.quantize.is_some() {
        let mut x = vec![0f32; n];
        for r in 0..rows {
            x.iter_mut().for_each(|v| *v = rng.normal());
            quantize(ty, &x, &mut out[r * row_bytes..(r + 1) * row_bytes]).unwrap();
        }
        return out;
    }
    if ty == GgmlType::F32 {
        for c in out.chunks_exact_mut(4) {
            c.copy_from_slice(&rng.normal().to_le_bytes());
        }
        return out;
    }
    // random blocks, scale fields overwritten with f16 values in [2^-8, 2^-4) or an f32 ~ 1e-3
    out.iter_mut().for_each(|b| *b = rng.next() as u8);
    let (f16s, f32_at) = scale_fields(ty);
    for blk in out.chunks_exact_mut(ty.block_bytes()) {
        for &at in f16s {
            let h: u16 = ((7 + (rng.next() % 4) as u16) << 10) | (rng.next() as u16 & 0x3ff);
            blk[at..at + 2].copy_from_slice(&h.to_le_bytes());
        }
        if let Some(at) = f32_at {
            blk[at..at + 4].copy_from_slice(&(1e-3f32 * (1.0 + rng.unif() as f32)).to_le_bytes());
        }
    }
    out
}

/// Whether `f` runs without panicking (the table may hold placeholder entries while formats are
/// being written; those are skipped with a note rather than aborting the whole run).
fn works(f: impl FnOnce() + std::panic::UnwindSafe) -> bool {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let ok = std::panic::catch_unwind(f).is_ok();
    std::panic::set_hook(hook);
    ok
}

fn bench_dequant(c: &mut Criterion) {
    let mut g = c.benchmark_group("dequant");
    for ty in supported_types() {
        let t = traits(ty).unwrap();
        let seed = 0x6b69_6c6e_0000_0001 ^ ty.id() as u64;
        let Some(w) = std::panic::catch_unwind(move || weights(ty, ROWS, N, &mut Rng(seed))).ok() else {
            eprintln!("dequant/{ty}: skipped (could not build weights: quantize panicked)");
            continue;
        };
        let row_bytes = w.len() / ROWS;
        let probe = w[..row_bytes].to_vec();
        if !works(move || (t.dequantize)(&probe, &mut vec![0f32; N])) {
            eprintln!("dequant/{ty}: skipped (dequantize panicked: placeholder?)");
            continue;
        }
        let mut out = vec![0f32; N * ROWS];
        g.throughput(Throughput::Bytes(w.len() as u64));
        g.bench_function(BenchmarkId::from_parameter(ty.name()), |b| {
            b.iter(|| {
                for (src, dst) in w.chunks_exact(row_bytes).zip(out.chunks_exact_mut(N)) {
                    kiln_quant::dequantize(ty, black_box(src), dst).unwrap();
                }
                black_box(&mut out);
            })
        });
    }
    g.finish();
}

fn bench_dot(c: &mut Criterion) {
    let mut g = c.benchmark_group("dot");
    g.throughput(Throughput::Elements((2 * N * ROWS) as u64));
    for ty in supported_types() {
        let t = traits(ty).unwrap();
        let Some(d) = t.vec_dot else { continue };
        let seed = 0x6b69_6c6e_0000_0002 ^ ty.id() as u64;
        let mut rng = Rng(seed ^ 0xffff);
        let Some(w) = std::panic::catch_unwind(move || weights(ty, ROWS, N, &mut Rng(seed))).ok() else {
            eprintln!("dot/{ty}: skipped (could not build weights: quantize panicked)");
            continue;
        };
        let x: Vec<f32> = (0..N).map(|_| rng.normal()).collect();
        let Ok(Ok(act)) = std::panic::catch_unwind(|| quantize_activations(ty, &x)) else {
            eprintln!("dot/{ty}: skipped (quantize_activations into {} failed)", t.vec_dot_type);
            continue;
        };
        let row_bytes = w.len() / ROWS;
        let (w0, a0) = (w[..row_bytes].to_vec(), act.clone());
        if !works(move || {
            t.dot(&w0, &a0);
            (d.scalar)(&w0, &a0);
        }) {
            eprintln!("dot/{ty}: skipped (vec_dot panicked: placeholder?)");
            continue;
        }
        g.bench_function(BenchmarkId::new(ty.name(), "dispatch"), |b| {
            b.iter(|| {
                let mut s = 0f32;
                for row in w.chunks_exact(row_bytes) {
                    s += t.dot(black_box(row), black_box(&act)).unwrap();
                }
                black_box(s)
            })
        });
        if d.avx2.is_some() || d.vnni.is_some() {
            g.bench_function(BenchmarkId::new(ty.name(), "scalar"), |b| {
                b.iter(|| {
                    let mut s = 0f32;
                    for row in w.chunks_exact(row_bytes) {
                        s += (d.scalar)(black_box(row), black_box(&act));
                    }
                    black_box(s)
                })
            });
        }
        let simd = [
            ("avx2", d.avx2.filter(|_| kiln_quant::simd::has_avx2_fma())),
            ("vnni", d.vnni.filter(|_| kiln_quant::simd::has_avx512_vnni())),
        ];
        for (name, f) in simd {
            let Some(f) = f else { continue };
            g.bench_function(BenchmarkId::new(ty.name(), name), |b| {
                b.iter(|| {
                    let mut s = 0f32;
                    for row in w.chunks_exact(row_bytes) {
                        // SAFETY: the kernel's CPU features were detected at run time (the
                        // `has_*` filter above).
                        s += unsafe { f(black_box(row), black_box(&act)) };
                    }
                    black_box(s)
                })
            });
        }
        if ty == GgmlType::MXFP4 {
            // Eight rows per call, as kiln-model multiplies MXFP4 matrices.
            g.bench_function(BenchmarkId::new(ty.name(), "rows8"), |b| {
                b.iter(|| {
                    let mut s = 0f32;
                    for rows in w.chunks_exact(8 * row_bytes) {
                        let r: [&[u8]; 8] = std::array::from_fn(|i| &rows[i * row_bytes..(i + 1) * row_bytes]);
                        s += kiln_quant::mxfp4::dot_rows8(black_box(r), black_box(&act)).iter().sum::<f32>();
                    }
                    black_box(s)
                })
            });
        }
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = bench_dequant, bench_dot }
criterion_main!(benches);
