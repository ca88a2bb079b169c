//! The kernels' decoders and per-thread index math, checked on the CPU without a GPU.
//!
//! `decode_host.cpp` includes `kernels/matmul.cu` (and so `quant.cuh`) as plain C++ and runs it
//! with the system `g++` (the test skips, saying so, when there is none). For every type and
//! several shapes (one row, odd row counts, n = 1..8 and beyond a tile, float rows that are not
//! whole 16-element chunks) it checks, against kiln-quant:
//!
//! - every chunk decoder over the device layout (`layout::fill`) equals `kiln_quant::dequantize`
//!   of the GGUF bytes **bit for bit**, covering each element exactly once (random raw bytes,
//!   NaN and infinite scales included);
//! - the mv kernel's lanes (32 per weight row, NX = 1 or 8 activation rows per pass), the mm
//!   kernel's tiles (every thread, both phases of every k step, edge tiles) and get_rows give the
//!   product/rows of the dequantized weights (f64 reference, relative bound 1e-5 of Σ|w·x|;
//!   get_rows bit for bit);
//! - mv_ids' slot arithmetic and mm_ids' tiles of one expert's slots (the serial form of its
//!   slot gather; more slots per expert than a tile), (expert slab, shared or own activation row, bias stride, negative
//!   ids) with every lane/thread, against the same reference.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use kiln_cuda::layout;
use kiln_quant::GgmlType;

fn driver() -> Option<&'static PathBuf> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("decode_host");
        let status = Command::new("g++")
            .args(["-std=c++17", "-O1", "-Wall", "-Wextra", "-Wno-unknown-pragmas", "-Werror", "-I"])
            .arg(root.join("../../kernels"))
            .arg("-o")
            .arg(&out)
            .arg(root.join("tests/decode_host.cpp"))
            .status();
        match status {
            Ok(s) if s.success() => Some(out),
            Ok(s) => panic!("g++ failed to compile the kernels as host C++ ({s})"),
            Err(e) => {
                eprintln!("skipped: no g++ ({e}); these checks need a host C++ compiler");
                None
            }
        }
    })
    .as_ref()
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

struct Out {
    dec: Vec<f32>,
    mv: Vec<f32>,
    mm: Vec<f32>,
    rows: Vec<f32>,
}

#[allow(clippy::too_many_arguments)]
fn run(bin: &Path, ty: GgmlType, m: usize, k: usize, x: &[f32], n: usize, img: &[u8], ids: &[i32]) -> Out {
    let mut input = Vec::new();
    for v in [0, ty.id() as i32, m as i32, k as i32, n as i32, ids.len() as i32] {
        input.extend_from_slice(&v.to_le_bytes());
    }
    input.extend_from_slice(&(img.len() as u64).to_le_bytes());
    input.extend_from_slice(img);
    for v in x {
        input.extend_from_slice(&v.to_le_bytes());
    }
    for v in ids {
        input.extend_from_slice(&v.to_le_bytes());
    }
    let mut child = Command::new(bin).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "{ty} m={m} k={k} n={n}: host driver failed ({})", out.status);
    let f: Vec<f32> = out.stdout.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    assert_eq!(f.len(), m * k + 2 * n * m + ids.len() * k, "{ty}");
    let (dec, rest) = f.split_at(m * k);
    let (mv, rest) = rest.split_at(n * m);
    let (mm, rows) = rest.split_at(n * m);
    Out { dec: dec.to_vec(), mv: mv.to_vec(), mm: mm.to_vec(), rows: rows.to_vec() }
}

fn image(ty: GgmlType, k: usize, m: usize, gguf: &[u8]) -> Vec<u8> {
    let mut img = vec![0u8; layout::device_bytes(ty, k, m)];
    assert_eq!(img.len(), gguf.len());
    layout::fill(ty, k, m, gguf, 0, &mut img);
    img
}

fn shapes(ty: GgmlType) -> Vec<(usize, usize, usize)> {
    let b = ty.block_elems();
    let mut s = if b == 1 {
        vec![(1, 16, 1), (3, 37, 2), (17, 50, 5), (65, 64, 8), (33, 100, 9), (70, 48, 67)]
    } else {
        vec![(1, b, 1), (3, 2 * b, 2), (17, b * 3, 5), (65, b, 8), (33, 2 * b, 9), (70, b, 67)]
    };
    if b == 32 {
        s.push((9, 32 * 9, 3));
    }
    s
}

#[test]
fn decoders_are_bit_exact_on_random_bytes() {
    let Some(bin) = driver() else { return };
    for ty in layout::TYPES {
        for (m, k, _) in shapes(ty) {
            let mut rng = Rng(0x1234_5678 ^ ty.id() as u64 ^ ((m * 1000 + k) as u64) << 20);
            let bytes = layout::device_bytes(ty, k, m);
            let gguf: Vec<u8> = (0..bytes).map(|_| rng.next() as u8).collect();
            let mut want = vec![0f32; m * k];
            kiln_quant::dequantize(ty, &gguf, &mut want).unwrap();
            let img = image(ty, k, m, &gguf);
            let got = run(bin, ty, m, k, &[], 0, &img, &[]);
            for (i, (g, w)) in got.dec.iter().zip(&want).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    w.to_bits(),
                    "{ty} m={m} k={k}: element {i} (row {}, col {}): {g} vs {w}",
                    i / k,
                    i % k
                );
            }
        }
    }
}

#[test]
fn products_and_rows_match_the_dequantized_weights() {
    let Some(bin) = driver() else { return };
    for ty in layout::TYPES {
        for (m, k, n) in shapes(ty) {
            let mut rng = Rng(0x9e37_79b9 ^ ty.id() as u64 ^ ((m * 7919 + k * 31 + n) as u64) << 16);
            let w: Vec<f32> = (0..m * k).map(|_| rng.f32()).collect();
            let mut gguf = vec![0u8; layout::device_bytes(ty, k, m)];
            kiln_quant::quantize(ty, &w, &mut gguf).unwrap();
            let mut wd = vec![0f32; m * k];
            kiln_quant::dequantize(ty, &gguf, &mut wd).unwrap();
            let x: Vec<f32> = (0..n * k).map(|_| rng.f32()).collect();
            let ids: Vec<i32> = (0..5).map(|i| ((i * 7 + 3) % m) as i32).collect();
            let img = image(ty, k, m, &gguf);
            let got = run(bin, ty, m, k, &x, n, &img, &ids);
            for i in 0..n {
                for j in 0..m {
                    let (mut exact, mut mag) = (0f64, 0f64);
                    for c in 0..k {
                        let p = wd[j * k + c] as f64 * x[i * k + c] as f64;
                        exact += p;
                        mag += p.abs();
                    }
                    let tol = 1e-5 * mag + 1e-30;
                    for (what, v) in [("mv", got.mv[i * m + j]), ("mm", got.mm[i * m + j])] {
                        assert!(
                            (v as f64 - exact).abs() <= tol,
                            "{ty} m={m} k={k} n={n}: {what} Y[{i}][{j}] = {v}, exact {exact} (bound {tol})"
                        );
                    }
                }
            }
            for (i, &r) in ids.iter().enumerate() {
                for c in 0..k {
                    let want = wd[r as usize * k + c] * 0.5;
                    let g = got.rows[i * k + c];
                    assert_eq!(g.to_bits(), want.to_bits(), "{ty} get_rows row {r} col {c}: {g} vs {want}");
                }
            }
        }
    }
}

fn run_ids(bin: &Path, ty: GgmlType, dims: [usize; 7], img: &[u8], x: &[f32], ids: &[i32], bias: &[f32]) -> Vec<f32> {
    let mut input = Vec::new();
    input.extend_from_slice(&1i32.to_le_bytes());
    input.extend_from_slice(&(ty.id() as i32).to_le_bytes());
    for v in dims {
        input.extend_from_slice(&(v as i32).to_le_bytes());
    }
    input.extend_from_slice(&(img.len() as u64).to_le_bytes());
    input.extend_from_slice(img);
    for v in x {
        input.extend_from_slice(&v.to_le_bytes());
    }
    for v in ids {
        input.extend_from_slice(&v.to_le_bytes());
    }
    for v in bias {
        input.extend_from_slice(&v.to_le_bytes());
    }
    let mut child = Command::new(bin).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "{ty} ids: host driver failed ({})", out.status);
    out.stdout.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

#[test]
fn mv_ids_reads_the_chosen_experts() {
    let Some(bin) = driver() else { return };
    for ty in layout::TYPES {
        let (m, n_exp) = (9, 5);
        let k = if ty.block_elems() == 1 { 40 } else { 2 * ty.block_elems() };
        let mut rng = Rng(0xabcdef ^ ty.id() as u64);
        let w: Vec<f32> = (0..n_exp * m * k).map(|_| rng.f32()).collect();
        let bytes = layout::device_bytes(ty, k, m) * n_exp;
        let mut gguf = vec![0u8; bytes];
        kiln_quant::quantize(ty, &w, &mut gguf).unwrap();
        let mut wd = vec![0f32; n_exp * m * k];
        kiln_quant::dequantize(ty, &gguf, &mut wd).unwrap();
        // The 3-D tensor as n_exp slabs of m rows; chunked like an upload.
        let mut img = vec![0u8; bytes];
        for (i, c) in img.chunks_mut(1000).enumerate() {
            layout::fill(ty, k, m, &gguf, i * 1000, c);
        }
        let bias_stride = m + 3;
        let bias: Vec<f32> = (0..n_exp * bias_stride).map(|_| rng.f32()).collect();
        // Gate/up style: 3 tokens x 2 experts share their token's row; down style: own rows.
        for (n_slots, x_div) in [(6usize, 2usize), (7, 1), (300, 4)] {
            let ids: Vec<i32> = (0..n_slots).map(|s| if s == 3 { -1 } else { ((s * 3 + 1) % n_exp) as i32 }).collect();
            let nx = (n_slots - 1) / x_div + 1;
            let x: Vec<f32> = (0..nx * k).map(|_| rng.f32()).collect();
            let both = run_ids(bin, ty, [m, k, n_exp, n_slots, x_div, bias_stride, nx], &img, &x, &ids, &bias);
            assert_eq!(both.len(), 2 * n_slots * m);
            for (what, y) in [("mv_ids", &both[..n_slots * m]), ("mm_ids", &both[n_slots * m..])] {
                for s in 0..n_slots {
                    for j in 0..m {
                        let got = y[s * m + j];
                        if ids[s] < 0 {
                            assert_eq!(got, 0.0, "{ty} {what} slot {s}");
                            continue;
                        }
                        let e = ids[s] as usize;
                        let (mut exact, mut mag) = (bias[e * bias_stride + j] as f64, 0f64);
                        for c in 0..k {
                            let p = wd[(e * m + j) * k + c] as f64 * x[(s / x_div) * k + c] as f64;
                            exact += p;
                            mag += p.abs();
                        }
                        let tol = 1e-5 * (mag + 1.0);
                        assert!(
                            (got as f64 - exact).abs() <= tol,
                            "{ty} {what} x_div={x_div} slot {s} row {j}: {got} vs {exact}"
                        );
                    }
                }
            }
        }
    }
}
