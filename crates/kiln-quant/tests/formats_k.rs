//! The K-quant formats (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and the Q8_K activation format) against
//! independent references.
//!
//! | test | checks | against |
//! | --- | --- | --- |
//! | `dequantize_matches_gguf_py` | [`dequantize`] of random blocks (random bytes, finite f16 super-scales) and edge blocks, bit for bit | gguf-py 0.19.0 `gguf.quants.dequantize` (numpy ports of ggml's `dequantize_row_q*_K`) |
//! | `q8k_dequantize_by_hand` | Q8_K [`dequantize`] of random blocks | `d · q` decoded in the test |
//! | `q8k_quantize_properties` | Q8_K [`quantize`]: `bsums` are the sums of `qs`, the largest magnitude maps to ∓127, every value within half a step | the definition of the format |
//! | `dot_*` | [`vec_dot`], `Dot::scalar`, `Dot::avx2` and `Dot::vnni` (called directly), and the tiled / repacked summation orders (`dot_tiled`, `dot_repacked`) on rows of 1, 3, 6, 11 and 16 blocks, with quantized and with raw full-range activations | an `f64` sum over the dequantized weights and activations decoded in the test; SIMD also against scalar, and `Dot::vnni` bit for bit against `Dot::avx2` |
//! | `quantize_picks_nearest_level` | Q2_K…Q6_K [`quantize`]: every value comes back as the level of its block's stored grid nearest to it | the grid read back through [`dequantize`] with the quants overwritten |
//! | `quantize_error_is_near_uniform_quantizer` | RMS error of quantize → dequantize on normal data | the RMS error of an ideal uniform quantizer with the same number of levels over each sub-block's range |
//! | `arbitrary_bytes_do_not_panic` | every kernel on random bytes (NaN/inf scales included), short slices, and quantize on NaN/inf/huge/tiny inputs | — (must not panic) |
//!
//! Bit-exactness of the quantizers and dots against ggml's own C code is checked by
//! `ggml_oracle.rs` from fixtures; the tests here do not depend on those fixtures.

use std::path::PathBuf;

use kiln_quant::{GgmlType, QK_K, dequantize, quantize, quantize_activations, traits, vec_dot};

const K_TYPES: [GgmlType; 5] = [GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K];

// ---------------------------------------------------------------------------------------------
// Helpers

/// splitmix64: small and seedable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Roughly normal (sum of four uniforms, centred, σ ≈ 1).
    fn normal(&mut self) -> f32 {
        (self.unit() + self.unit() + self.unit() + self.unit() - 2.0) * 1.7
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    /// Any finite half (subnormals, zeros and both signs included), as stored bytes.
    fn finite_f16(&mut self) -> [u8; 2] {
        let mut h = self.next() as u16;
        if h & 0x7c00 == 0x7c00 {
            h &= !0x4000;
        }
        h.to_le_bytes()
    }
    /// A half of moderate size, ±[2^-12, 2), for dot products whose magnitudes stay readable.
    fn moderate_f16(&mut self) -> [u8; 2] {
        let v = (1.0 + self.unit()) * 2f32.powi(-(self.below(12) as i32) - 1);
        let v = if self.next() & 1 == 0 { v } else { -v };
        half::f16::from_f32(v).to_bits().to_le_bytes()
    }
}

/// Offsets of the f16 super-block scales (d, and dmin where the format has one).
fn scale_fields(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q6_K => &[208],
        _ => unreachable!(),
    }
}

/// Writes `bytes` into every block's f16 scale fields, one call per field.
fn set_scales(ty: GgmlType, row: &mut [u8], mut f16: impl FnMut() -> [u8; 2]) {
    for blk in row.chunks_exact_mut(ty.block_bytes()) {
        for &o in scale_fields(ty) {
            blk[o..o + 2].copy_from_slice(&f16());
        }
    }
}

/// Random blocks of `ty` with finite f16 super-scales.
fn random_blocks(rng: &mut Rng, ty: GgmlType, blocks: usize) -> Vec<u8> {
    let mut row = rng.bytes(blocks * ty.block_bytes());
    set_scales(ty, &mut row, || rng.finite_f16());
    row
}

/// Fills every block's quant bytes with the pattern that makes every quant take level `which`:
/// 0 = lowest, 1 = the level one step above the "zero" of the grid, 2 = highest.
fn set_quants(ty: GgmlType, row: &mut [u8], which: usize) {
    // (byte range, fill byte for lowest / one step / highest)
    let parts: &[(usize, usize, [u8; 3])] = match ty {
        // q = 0, 1, 3
        GgmlType::Q2_K => &[(16, 80, [0x00, 0x55, 0xFF])],
        // hmask clear → q − 4; set → q. Lowest −4, "+1" = 1 (bit set, low 01), highest 3.
        GgmlType::Q3_K => &[(0, 32, [0x00, 0xFF, 0xFF]), (32, 96, [0x00, 0x55, 0xFF])],
        // q = 0, 1, 15
        GgmlType::Q4_K => &[(16, 144, [0x00, 0x11, 0xFF])],
        // q = 0, 1, 31
        GgmlType::Q5_K => &[(16, 48, [0x00, 0x00, 0xFF]), (48, 176, [0x00, 0x11, 0xFF])],
        // stored q = 0, 33, 63 (values −32, 1, 31): ql nibble 1 with qh bits 0b10
        GgmlType::Q6_K => &[(0, 128, [0x00, 0x11, 0xFF]), (128, 192, [0x00, 0xAA, 0xFF])],
        _ => unreachable!(),
    };
    for blk in row.chunks_exact_mut(ty.block_bytes()) {
        for &(lo, hi, fill) in parts {
            blk[lo..hi].fill(fill[which]);
        }
    }
}

/// Zero level of the grid (all quants at the level whose value is the offset alone).
fn set_quants_zero(ty: GgmlType, row: &mut [u8]) {
    match ty {
        // Symmetric formats: quant 0 is hmask set / low bits 0 (Q3_K), stored 32 (Q6_K).
        GgmlType::Q3_K => {
            for blk in row.chunks_exact_mut(ty.block_bytes()) {
                blk[0..32].fill(0xFF);
                blk[32..96].fill(0);
            }
        }
        GgmlType::Q6_K => {
            for blk in row.chunks_exact_mut(ty.block_bytes()) {
                blk[0..128].fill(0);
                blk[128..192].fill(0xAA);
            }
        }
        _ => set_quants(ty, row, 0),
    }
}

/// Q8_K activations decoded by hand: `d · q`.
fn decode_q8k(act: &[u8]) -> Vec<f64> {
    act.chunks_exact(GgmlType::Q8_K.block_bytes())
        .flat_map(|b| {
            let d = f32::from_le_bytes(b[..4].try_into().unwrap());
            b[4..4 + QK_K].iter().map(move |&q| (d * q as i8 as f32) as f64)
        })
        .collect()
}

/// Q8_K bytes from quants and a scale, with the sums written as the format defines them.
fn q8k_from_quants(d: f32, qs: &[i8]) -> Vec<u8> {
    let mut out = Vec::new();
    for blk in qs.chunks_exact(QK_K) {
        out.extend_from_slice(&d.to_le_bytes());
        out.extend(blk.iter().map(|&q| q as u8));
        for g in blk.chunks_exact(16) {
            let s: i32 = g.iter().map(|&q| q as i32).sum();
            out.extend_from_slice(&(s as i16).to_le_bytes());
        }
    }
    out
}

fn scratch(tag: &str) -> PathBuf {
    let dir = kiln_testkit::target_dir().join("tmp-kiln-quant-formats-k").join(format!("{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const ORACLE: &str = r#"
import sys
import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

args = sys.argv[1:]
for i in range(0, len(args), 3):
    ty, inp, out = args[i:i + 3]
    raw = np.fromfile(inp, dtype=np.uint8)
    y = dequantize(raw, T[ty])
    np.ascontiguousarray(y, dtype=np.float32).tofile(out)
"#;

// ---------------------------------------------------------------------------------------------
// Dequantization

#[test]
fn dequantize_matches_gguf_py() {
    let dir = scratch("dequant");
    let mut rng = Rng(0x4b5f_7175_616e_7431);
    let mut cases = Vec::new();
    for ty in K_TYPES {
        let bb = ty.block_bytes();
        let mut row = random_blocks(&mut rng, ty, 300);
        // Edge blocks: largest, smallest subnormal, negative zero and negative super-scales, with
        // all-ones and all-zero payloads.
        for (h, payload) in [(0x7bffu16, 0xFFu8), (0x0001, 0xFF), (0x8000, 0xAA), (0xbc00, 0x00), (0xfbff, 0x5A)] {
            let mut blk = vec![payload; bb];
            set_scales(ty, &mut blk, || h.to_le_bytes());
            row.extend_from_slice(&blk);
        }
        let inp = dir.join(format!("{}.in", ty.name()));
        let out = dir.join(format!("{}.out", ty.name()));
        std::fs::write(&inp, &row).unwrap();
        cases.push((ty, row, inp, out));
    }
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    for (ty, _, inp, out) in &cases {
        args.push(format!("{ty:?}").into());
        args.push(inp.clone().into());
        args.push(out.clone().into());
    }
    let args_ref: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    kiln_testkit::run_python(ORACLE, &args_ref);
    for (ty, row, _, out) in &cases {
        let want: Vec<u32> =
            std::fs::read(out).unwrap().chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
        let n = row.len() / ty.block_bytes() * QK_K;
        assert_eq!(want.len(), n, "{ty}: oracle output length");
        let mut got = vec![0f32; n];
        dequantize(*ty, row, &mut got).unwrap();
        let bad: Vec<usize> = (0..n).filter(|&i| got[i].to_bits() != want[i]).collect();
        assert!(
            bad.is_empty(),
            "{ty}: {} of {n} values differ from gguf-py; first at {} (block {}): kiln {:e} ({:#010x}) vs gguf-py {:e} ({:#010x})",
            bad.len(),
            bad[0],
            bad[0] / QK_K,
            got[bad[0]],
            got[bad[0]].to_bits(),
            f32::from_bits(want[bad[0]]),
            want[bad[0]]
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn q8k_dequantize_by_hand() {
    let mut rng = Rng(7);
    let ty = GgmlType::Q8_K;
    let mut row = rng.bytes(20 * ty.block_bytes());
    for blk in row.chunks_exact_mut(ty.block_bytes()) {
        // Any finite f32 scale.
        let mut d = rng.next() as u32;
        if d & 0x7f80_0000 == 0x7f80_0000 {
            d &= !0x4000_0000;
        }
        blk[..4].copy_from_slice(&d.to_le_bytes());
    }
    let mut got = vec![0f32; 20 * QK_K];
    dequantize(ty, &row, &mut got).unwrap();
    let want = decode_q8k(&row);
    for i in 0..got.len() {
        assert_eq!(got[i].to_bits(), (want[i] as f32).to_bits(), "value {i}");
    }
}

// ---------------------------------------------------------------------------------------------
// Q8_K quantization

#[test]
fn q8k_quantize_properties() {
    let mut rng = Rng(99);
    let ty = GgmlType::Q8_K;
    for scale in [1e-30f32, 1e-3, 1.0, 7.5, 1e4, 1e30] {
        let n = 8 * QK_K;
        let x: Vec<f32> = (0..n).map(|_| rng.normal() * scale).collect();
        let mut q = vec![0u8; ty.row_bytes(n as u64).unwrap() as usize];
        quantize(ty, &x, &mut q).unwrap();
        for (b, xb) in q.chunks_exact(ty.block_bytes()).zip(x.chunks_exact(QK_K)) {
            let d = f32::from_le_bytes(b[..4].try_into().unwrap());
            let qs: Vec<i32> = b[4..4 + QK_K].iter().map(|&v| v as i8 as i32).collect();
            for j in 0..16 {
                let stored = i16::from_le_bytes([b[4 + QK_K + 2 * j], b[5 + QK_K + 2 * j]]);
                let sum: i32 = qs[16 * j..16 * j + 16].iter().sum();
                assert_eq!(stored as i32, sum, "bsums[{j}] at scale {scale}");
            }
            let (imax, &xmax) = xb.iter().enumerate().max_by(|a, b| a.1.abs().total_cmp(&b.1.abs())).unwrap();
            assert_eq!(qs[imax], -127, "the largest magnitude maps to −127 (d has the other sign)");
            assert!(qs.iter().all(|&v| (-127..=127).contains(&v)));
            assert!(((d as f64) * -127.0 - xmax as f64).abs() <= 1e-6 * (xmax as f64).abs());
            for (i, &v) in xb.iter().enumerate() {
                let err = (d as f64 * qs[i] as f64 - v as f64).abs();
                assert!(err <= (0.5 + 1e-4) * (d as f64).abs(), "value {i} at scale {scale}: err {err:e}, d {d:e}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Dot products

/// Blocks per row: 1, 3, 6, 11 (2816 values: 2880/256 is not whole) and 16.
const DOT_BLOCKS: [usize; 5] = [1, 3, 6, 11, 16];

/// Tolerance scale Σ (|w − o| + |o|)·|a|: the dot sums the scaled-quant part and the offset part
/// separately, so f32 rounding scales with both. `o` is the weight with every quant at level 0
/// of the grid.
fn tol_scale(ty: GgmlType, w: &[u8], wd: &[f32], a: &[f64]) -> f64 {
    let mut z = w.to_vec();
    set_quants_zero(ty, &mut z);
    let mut od = vec![0f32; wd.len()];
    dequantize(ty, &z, &mut od).unwrap();
    (0..wd.len()).map(|i| ((wd[i] - od[i]).abs() as f64 + od[i].abs() as f64) * a[i].abs()).sum()
}

fn check_dots(ty: GgmlType, seed: u64, raw_activations: bool) {
    let t = traits(ty).unwrap();
    let d = t.vec_dot.expect("K-quants have a dot product");
    let avx2 = d.avx2.filter(|_| kiln_quant::simd::has_avx2_fma());
    #[cfg(target_arch = "x86_64")]
    assert!(d.avx2.is_some() && d.vnni.is_some(), "{ty}: no AVX2 or VNNI kernel");
    let vnni = d.vnni.filter(|_| kiln_quant::simd::has_avx512_vnni());
    if d.vnni.is_some() && vnni.is_none() {
        eprintln!("{ty}: Dot::vnni not run: this CPU lacks AVX-512 VNNI (or KILN_NO_VNNI/KILN_NO_SIMD is set)");
    }
    let mut rng = Rng(seed);
    let mut checked = 0;
    for blocks in DOT_BLOCKS {
        for rep in 0..6 {
            let n = blocks * QK_K;
            let mut w = rng.bytes(blocks * ty.block_bytes());
            set_scales(ty, &mut w, || rng.moderate_f16());
            let act = if raw_activations {
                // Full-range quants, −128 included, with sums as the format defines them.
                let qs: Vec<i8> = (0..n).map(|_| rng.next() as i8).collect();
                q8k_from_quants(0.01 + rng.unit(), &qs)
            } else {
                let amp = [1e-3f32, 1.0, 300.0][rep % 3];
                let x: Vec<f32> = (0..n).map(|_| rng.normal() * amp).collect();
                quantize_activations(ty, &x).unwrap()
            };
            let mut wd = vec![0f32; n];
            dequantize(ty, &w, &mut wd).unwrap();
            let a = decode_q8k(&act);
            let exact: f64 = wd.iter().zip(&a).map(|(&w, &a)| w as f64 * a).sum();
            let scale = tol_scale(ty, &w, &wd, &a);
            assert!(scale > 0.0);
            let tol = 1e-5 * scale;
            let scalar = (d.scalar)(&w, &act);
            let mut paths = vec![("vec_dot", vec_dot(ty, &w, &act).unwrap()), ("scalar", scalar)];
            if let Some(f) = avx2 {
                // SAFETY: AVX2 and FMA were detected at run time.
                let v = unsafe { f(&w, &act) };
                assert!(
                    (v as f64 - scalar as f64).abs() <= tol,
                    "{ty} n={n}: avx2 {v:e} vs scalar {scalar:e} (tol {tol:e})"
                );
                paths.push(("avx2", v));
            }
            if let Some(f) = vnni {
                // SAFETY: AVX2, FMA, F16C and AVX-512 F/VL/BW/VNNI were detected at run time.
                let v = unsafe { f(&w, &act) };
                // Both kernels' integer sums are exact for every activation byte (−128
                // included) and their float operations are the same: equal bits.
                let a = paths.last().map(|p| p.1).unwrap_or(f32::NAN);
                assert_eq!(v.to_bits(), a.to_bits(), "{ty} n={n} raw={raw_activations}: vnni {v:e} vs avx2 {a:e}");
                paths.push(("vnni", v));
            }
            // The summation orders kiln follows for llama.cpp's other kernels (see
            // kiln-model's matmul): the same sum, other roundings.
            use kiln_quant::formats::{q3_k, q4_k, q5_k, q6_k};
            match ty {
                GgmlType::Q3_K => paths.push(("tiled", q3_k::dot_tiled(&w, &act))),
                GgmlType::Q4_K => {
                    let gemm = q4_k::dot_repacked(&w, &act, true);
                    paths.extend([
                        ("tiled", q4_k::dot_tiled(&w, &act)),
                        ("repacked gemv", q4_k::dot_repacked(&w, &act, false)),
                        ("repacked gemm", gemm),
                    ]);
                    // Eight rows decoded (this one and a second) against four activation rows
                    // (another among them): the GEMM's bits.
                    let other = q8k_from_quants(0.5, &(0..n).map(|_| rng.next() as i8).collect::<Vec<_>>());
                    let mut w2 = rng.bytes(w.len());
                    set_scales(ty, &mut w2, || rng.moderate_f16());
                    let rows: [&[u8]; 8] =
                        std::array::from_fn(|r| if r % 2 == 0 { w.as_slice() } else { w2.as_slice() });
                    let mut group = vec![q4_k::Group8::default(); n / 256];
                    q4_k::decode8(rows, &mut group);
                    let tile = q4_k::gemm_group8x4(&group, [&act, &other, &act, &other]);
                    for (i, a) in [&act, &other, &act, &other].into_iter().enumerate() {
                        for (r, w) in rows.iter().enumerate() {
                            let want = q4_k::dot_repacked(w, a, true);
                            assert_eq!(tile[i][r].to_bits(), want.to_bits(), "{ty} n={n} activation {i} row {r}");
                        }
                    }
                }
                GgmlType::Q5_K => paths.push(("tiled", q5_k::dot_tiled(&w, &act))),
                GgmlType::Q6_K => {
                    let tiled = q6_k::dot_tiled(&w, &act);
                    paths.push(("tiled", tiled));
                    // Eight rows decoded (this one and a second) against four activation rows
                    // (another among them): the tiled order's bits.
                    let other = q8k_from_quants(0.5, &(0..n).map(|_| rng.next() as i8).collect::<Vec<_>>());
                    let mut w2 = rng.bytes(w.len());
                    set_scales(ty, &mut w2, || rng.moderate_f16());
                    let rows: [&[u8]; 8] =
                        std::array::from_fn(|r| if r % 2 == 0 { w.as_slice() } else { w2.as_slice() });
                    let mut group = vec![q6_k::Group8::default(); n / 256];
                    q6_k::decode8(rows, &mut group);
                    let tile = q6_k::gemm_group8x4(&group, [&other, &act, &act, &other]);
                    for (i, a) in [&other, &act, &act, &other].into_iter().enumerate() {
                        for (r, w) in rows.iter().enumerate() {
                            let want = q6_k::dot_tiled(w, a);
                            assert_eq!(tile[i][r].to_bits(), want.to_bits(), "{ty} n={n} activation {i} row {r}");
                        }
                    }
                }
                _ => {}
            }
            for (name, v) in paths {
                let err = (v as f64 - exact).abs();
                assert!(
                    err <= tol,
                    "{ty} n={n} rep={rep} raw={raw_activations}: {name} {v:e} vs f64 {exact:e}: err {err:e} > tol {tol:e}"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, DOT_BLOCKS.len() * 6);
}

#[test]
fn dot_q2_k() {
    check_dots(GgmlType::Q2_K, 21, false);
    check_dots(GgmlType::Q2_K, 22, true);
}

#[test]
fn dot_q3_k() {
    check_dots(GgmlType::Q3_K, 31, false);
    check_dots(GgmlType::Q3_K, 32, true);
}

#[test]
fn dot_q4_k() {
    check_dots(GgmlType::Q4_K, 41, false);
    check_dots(GgmlType::Q4_K, 42, true);
}

#[test]
fn dot_q5_k() {
    check_dots(GgmlType::Q5_K, 51, false);
    check_dots(GgmlType::Q5_K, 52, true);
}

#[test]
fn dot_q6_k() {
    check_dots(GgmlType::Q6_K, 61, false);
    check_dots(GgmlType::Q6_K, 62, true);
}

/// A Q4_K row quantized from a known vector dotted with quantized activations lands near the
/// exact f32 dot of the original vectors (end to end through the public API).
#[test]
fn dot_end_to_end_q4_k_and_q6_k() {
    let mut rng = Rng(5);
    let n = 16 * QK_K;
    let w: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
    let x: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
    let exact: f64 = w.iter().zip(&x).map(|(&a, &b)| a as f64 * b as f64).sum();
    let norm = (w.iter().map(|&v| v as f64 * v as f64).sum::<f64>()
        * x.iter().map(|&v| v as f64 * v as f64).sum::<f64>())
    .sqrt();
    for (ty, rel) in [(GgmlType::Q4_K, 0.01), (GgmlType::Q6_K, 0.003)] {
        let mut q = vec![0u8; ty.row_bytes(n as u64).unwrap() as usize];
        quantize(ty, &w, &mut q).unwrap();
        let act = quantize_activations(ty, &x).unwrap();
        let got = vec_dot(ty, &q, &act).unwrap() as f64;
        // The error Σ e_w·x + Σ w_q·e_x is a sum of terms of random sign: about ‖e_w‖·σ_x, i.e.
        // ≈ 0.001·‖w‖‖x‖ for Q4_K (RMS relative error ≈ 0.07, n = 4096) and ≈ 0.0003 for Q6_K;
        // the bounds leave a factor of about 10.
        assert!((got - exact).abs() <= rel * norm, "{ty}: {got} vs {exact} (‖w‖‖x‖ = {norm})");
    }
}

// ---------------------------------------------------------------------------------------------
// Quantization

/// Inputs for the quantizer tests: normal, heavy-tailed, one-signed, sparse, constant and
/// integer-grid rows at several magnitudes.
fn quant_inputs(rng: &mut Rng) -> Vec<Vec<f32>> {
    let n = 12 * QK_K;
    let mut rows = Vec::new();
    for amp in [1e-6f32, 1.0, 50.0, 1e3] {
        rows.push((0..n).map(|_| rng.normal() * amp).collect());
        rows.push(
            (0..n)
                .map(|_| {
                    let v = rng.normal() * amp;
                    if rng.below(50) == 0 { v * 20.0 } else { v }
                })
                .collect(),
        );
        rows.push((0..n).map(|_| rng.unit() * amp).collect());
        rows.push((0..n).map(|_| -rng.unit() * amp).collect());
        rows.push((0..n).map(|_| if rng.below(10) == 0 { rng.normal() * amp } else { 0.0 }).collect());
    }
    rows.push(vec![0.37; n]);
    rows.push((0..n).map(|i| (i % 9) as f32 - 4.0).collect());
    rows
}

/// Every value comes back as the level of its block's stored grid nearest to it. The grid is read
/// back through `dequantize` with the quant bytes overwritten (lowest level, highest level, and
/// the level one step from zero), so this checks the final rounding of the quantizer against the
/// scales it stored, whatever those scales are.
#[test]
fn quantize_picks_nearest_level() {
    let mut rng = Rng(0x5eed);
    for ty in K_TYPES {
        for x in quant_inputs(&mut rng) {
            let n = x.len();
            let mut q = vec![0u8; ty.row_bytes(n as u64).unwrap() as usize];
            quantize(ty, &x, &mut q).unwrap();
            let deq = |bytes: &[u8]| {
                let mut y = vec![0f32; n];
                dequantize(ty, bytes, &mut y).unwrap();
                y
            };
            let y = deq(&q);
            let grid = |which: usize| {
                let mut b = q.clone();
                set_quants(ty, &mut b, which);
                deq(&b)
            };
            let (lo, one, hi) = (grid(0), grid(1), grid(2));
            let mut z = q.clone();
            set_quants_zero(ty, &mut z);
            let zero = deq(&z);
            for i in 0..n {
                let step = (one[i] - zero[i]).abs() as f64;
                let (a, b) = (lo[i].min(hi[i]) as f64, lo[i].max(hi[i]) as f64);
                let xi = x[i] as f64;
                let target = xi.clamp(a, b);
                let slack = 1e-4 * step + 4.0 * f32::EPSILON as f64 * (a.abs() + b.abs());
                let err = (y[i] as f64 - target).abs();
                let bound = if xi == target { 0.5 * step } else { 0.0 };
                assert!(
                    err <= bound + slack,
                    "{ty} value {i}: x {xi:e} → {:e}; grid [{a:e}, {b:e}] step {step:e}",
                    y[i]
                );
            }
        }
    }
}

/// On normal data the RMS error stays close to that of an ideal uniform quantizer with the same
/// number of levels spread over each sub-block's own range (`(range / (levels − 1)) / √12`),
/// which has neither the 6/4/8-bit quantization of the sub-block scales nor the f16 super-scales.
/// The reference quantizers search their scales, so they come in under it; the bound allows 10%.
#[test]
fn quantize_error_is_near_uniform_quantizer() {
    let mut rng = Rng(77);
    let n = 400 * QK_K;
    let x: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
    for (ty, group, levels, symmetric) in [
        (GgmlType::Q2_K, 16, 4, false),
        (GgmlType::Q3_K, 16, 8, true),
        (GgmlType::Q4_K, 32, 16, false),
        (GgmlType::Q5_K, 32, 32, false),
        (GgmlType::Q6_K, 16, 64, true),
        (GgmlType::Q8_K, 256, 255, true),
    ] {
        let mut q = vec![0u8; ty.row_bytes(n as u64).unwrap() as usize];
        quantize(ty, &x, &mut q).unwrap();
        let mut y = vec![0f32; n];
        dequantize(ty, &q, &mut y).unwrap();
        let err2: f64 = x.iter().zip(&y).map(|(&a, &b)| (a as f64 - b as f64).powi(2)).sum();
        let ideal2: f64 = x
            .chunks_exact(group)
            .map(|g| {
                let range = if symmetric {
                    2.0 * g.iter().fold(0f32, |m, v| m.max(v.abs()))
                } else {
                    g.iter().fold(0f32, |m, &v| m.max(v)) - g.iter().fold(0f32, |m, &v| m.min(v))
                } as f64;
                let step = range / (levels - 1) as f64;
                group as f64 * step * step / 12.0
            })
            .sum();
        let ratio = (err2 / ideal2).sqrt();
        assert!(ratio <= 1.1, "{ty}: RMS error {ratio:.3}× the ideal uniform quantizer's");
        // And it is an actual quantizer, not a copy: the error is not negligible either.
        assert!(ratio >= 0.5, "{ty}: RMS error only {ratio:.3}× the ideal uniform quantizer's");
    }
}

// ---------------------------------------------------------------------------------------------
// Robustness and wiring

#[test]
fn arbitrary_bytes_do_not_panic() {
    let mut rng = Rng(1234);
    let q8k = GgmlType::Q8_K.block_bytes();
    for ty in K_TYPES.into_iter().chain([GgmlType::Q8_K]) {
        let t = traits(ty).unwrap();
        let bb = ty.block_bytes();
        for blocks in [1, 2, 5] {
            let mut w = rng.bytes(blocks * bb);
            // Half of the rows get non-finite super-scales.
            if rng.below(2) == 0 && ty != GgmlType::Q8_K {
                set_scales(ty, &mut w, || [0x00, 0x7c | (rng.below(2) as u8) << 7]); // ±inf
                w[scale_fields(ty)[0] + 1] = 0x7e; // and a NaN
            }
            let act = rng.bytes(blocks * q8k);
            let mut y = vec![0f32; blocks * QK_K];
            (t.dequantize)(&w, &mut y);
            if let Some(d) = t.vec_dot {
                let _ = (d.scalar)(&w, &act);
                let _ = vec_dot(ty, &w, &act).unwrap();
                let simd = [
                    d.avx2.filter(|_| kiln_quant::simd::has_avx2_fma()),
                    d.vnni.filter(|_| kiln_quant::simd::has_avx512_vnni()),
                ];
                for f in simd.into_iter().flatten() {
                    // SAFETY: the kernel's features were detected at run time (filters above).
                    let _ = unsafe { f(&w, &act) };
                    // Short or mismatched slices are a caller error, but still no panic.
                    // SAFETY: as above.
                    let _ = unsafe { f(&w[..w.len() - 1], &act) };
                    // SAFETY: as above.
                    let _ = unsafe { f(&w, &act[..act.len() / 2]) };
                }
                let _ = (d.scalar)(&w[..w.len() - 1], &act);
                let _ = (d.scalar)(&w, &act[..3]);
            }
            (t.dequantize)(&w[..w.len() - 1], &mut y);
            (t.dequantize)(&w, &mut y[..QK_K - 1]);
        }
        let quant = t.quantize.expect("every K type has a reference quantizer");
        for special in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MAX, 1e-42, -0.0] {
            let mut x: Vec<f32> = (0..2 * QK_K).map(|_| rng.normal()).collect();
            for v in x.iter_mut().step_by(7) {
                *v = special;
            }
            let mut q = vec![0u8; 2 * bb];
            quant(&x, &mut q);
            let mut y = vec![0f32; 2 * QK_K];
            (t.dequantize)(&q, &mut y);
            let all_special = vec![special; QK_K];
            quant(&all_special, &mut q[..bb]);
        }
    }
}

#[test]
fn table_entries() {
    use kiln_quant::formats::*;
    let consts = [
        (GgmlType::Q2_K, q2_k::BLOCK_BYTES),
        (GgmlType::Q3_K, q3_k::BLOCK_BYTES),
        (GgmlType::Q4_K, q4_k::BLOCK_BYTES),
        (GgmlType::Q5_K, q5_k::BLOCK_BYTES),
        (GgmlType::Q6_K, q6_k::BLOCK_BYTES),
        (GgmlType::Q8_K, q8_k::BLOCK_BYTES),
    ];
    for (ty, bytes) in consts {
        assert_eq!(bytes, ty.block_bytes(), "{ty}");
        let t = traits(ty).unwrap();
        assert_eq!(t.ty, ty);
        assert_eq!(t.vec_dot_type, GgmlType::Q8_K, "{ty}");
        assert!(t.quantize.is_some(), "{ty}");
        assert_eq!(t.vec_dot.is_some(), ty != GgmlType::Q8_K, "{ty}");
    }
}
