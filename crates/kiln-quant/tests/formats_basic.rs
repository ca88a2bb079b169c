//! The 32-element block formats (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, MXFP4)
//! against independent references.
//!
//! | test | checks | against |
//! | --- | --- | --- |
//! | `dequantize_matches_gguf_py` | [`dequantize`] on random bytes (every scale byte and code for MXFP4), bit for bit | gguf-py 0.19.0 `gguf.quants.dequantize` (numpy ports of ggml's `dequantize_row_*`) |
//! | `quantize_matches_gguf_py` | [`quantize`] on rows built to hit ties, clamps, zero/constant blocks, tiny and huge magnitudes, bit for bit | gguf-py `gguf.quants.quantize` (ports of ggml's `quantize_row_*_ref`); Q8_1, which gguf-py lacks, from gguf-py's Q8_0 plus `s` computed in numpy |
//! | `mxfp4_scale_follows_libm_log2f` | the MXFP4 scale byte for magnitudes just below and at powers of two | the C library's `log2f` called through Python `ctypes` (what ggml calls) |
//! | `dot_*` | [`vec_dot`], `Dot::scalar`, `Dot::avx2` and `Dot::vnni` on rows of 1, 2, 3, 7, 8, 90 and 128 blocks | an `f64` sum over the dequantized weights and activations; `Dot::vnni` also bit for bit against `Dot::avx2` (same float order, exact integer sums) |
//!
//! The Python oracle is `kiln_testkit::oracle_python()`; inputs go to it through files.

use std::path::PathBuf;

use kiln_quant::{GgmlType, dequantize, quantize, quantize_activations, traits, vec_dot};

// ---------------------------------------------------------------------------------------------
// Helpers

/// splitmix64: small, seedable, good enough to pick test data.
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
    /// Roughly normal (sum of four uniforms, centred).
    fn normal(&mut self) -> f32 {
        (self.unit() + self.unit() + self.unit() + self.unit() - 2.0) * 1.7
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A fresh scratch folder under `target/`.
fn scratch(tag: &str) -> PathBuf {
    let dir = kiln_testkit::target_dir().join("tmp-kiln-quant-formats").join(format!("{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const ORACLE: &str = r#"
import sys
import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import quantize, dequantize

args = sys.argv[1:]
for i in range(0, len(args), 4):
    op, ty, inp, out = args[i:i + 4]
    raw = np.fromfile(inp, dtype=np.uint8)
    if op == "dequant":
        if ty == "Q8_1":
            # gguf-py has no Q8_1; its values are q·d, as Q8_0's: drop s and reuse Q8_0.
            b = raw.reshape(-1, 36)
            y = dequantize(np.concatenate([b[:, :2], b[:, 4:]], axis=1).reshape(-1), T.Q8_0)
        else:
            y = dequantize(raw, T[ty])
        np.ascontiguousarray(y, dtype=np.float32).tofile(out)
    else:
        x = raw.view(np.float32)
        if ty == "Q8_1":
            xb = x.reshape(-1, 32)
            q = quantize(x, T.Q8_0).reshape(-1, 34)
            d = np.abs(xb).max(axis=1, keepdims=True) / np.float32(127)   # unrounded f32 d
            s = q[:, 2:].view(np.int8).astype(np.int32).sum(axis=1, keepdims=True)
            s = (s.astype(np.float32) * d).astype(np.float16).view(np.uint8)
            q = np.concatenate([q[:, :2], s, q[:, 2:]], axis=1)
        else:
            q = quantize(x, T[ty])
        np.ascontiguousarray(q).view(np.uint8).tofile(out)
"#;

/// Runs the oracle on `(op, type, input bytes)` jobs; returns each job's output bytes.
fn oracle(tag: &str, jobs: &[(&str, GgmlType, Vec<u8>)]) -> Vec<Vec<u8>> {
    let dir = scratch(tag);
    let mut args = Vec::new();
    for (i, (op, ty, input)) in jobs.iter().enumerate() {
        let inp = dir.join(format!("{i}.in"));
        let out = dir.join(format!("{i}.out"));
        std::fs::write(&inp, input).unwrap();
        args.push(op.to_string().into());
        args.push(format!("{ty:?}").into());
        args.push(inp.into_os_string());
        args.push(out.into_os_string());
    }
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a: &std::ffi::OsString| a.as_os_str()).collect();
    kiln_testkit::run_python(ORACLE, &refs);
    let outs = (0..jobs.len()).map(|i| std::fs::read(dir.join(format!("{i}.out"))).unwrap()).collect();
    std::fs::remove_dir_all(&dir).ok();
    outs
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

fn bytes_of(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn elems(ty: GgmlType, bytes: usize) -> usize {
    bytes / ty.block_bytes() * ty.block_elems()
}

const BLOCK_TYPES: [GgmlType; 7] =
    [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::MXFP4];

// ---------------------------------------------------------------------------------------------
// Dequantization

/// Random blocks of `ty`: fully random bytes, plus the same codes under ordinary finite scales.
fn random_blocks(ty: GgmlType, rng: &mut Rng, nb: usize) -> Vec<u8> {
    let bb = ty.block_bytes();
    let mut b = rng.bytes(nb * bb);
    if ty == GgmlType::MXFP4 {
        // Every scale byte once, the edge ones again with every code in both nibbles.
        for (i, blk) in b.chunks_exact_mut(bb).enumerate() {
            blk[0] = i as u8;
        }
        let tail: Vec<u8> = [0u8, 1, 2, 126, 127, 128, 253, 254, 255]
            .iter()
            .flat_map(|&e| {
                let mut blk = vec![e];
                blk.extend((0..16u8).map(|j| j | ((15 - j) << 4))); // codes 0..15 low, 15..0 high
                blk
            })
            .collect();
        b.extend(tail);
    } else if !matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
        // Half the blocks get finite, ordinary half scales (d, and m or s where present).
        for blk in b.chunks_exact_mut(bb).step_by(2) {
            let halves = if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q8_1) { 2 } else { 1 };
            for h in 0..halves {
                let v = half::f16::from_f32(rng.normal() * 0.1).to_bits().to_le_bytes();
                blk[2 * h..2 * h + 2].copy_from_slice(&v);
            }
        }
    }
    b
}

#[test]
fn dequantize_matches_gguf_py() {
    let mut rng = Rng(0x5eed_0001);
    let mut types = vec![GgmlType::F32, GgmlType::F16, GgmlType::BF16];
    types.extend(BLOCK_TYPES);
    let jobs: Vec<_> = types
        .iter()
        .map(|&ty| {
            let nb = if ty == GgmlType::MXFP4 { 256 } else { 4096 };
            ("dequant", ty, random_blocks(ty, &mut rng, nb))
        })
        .collect();
    let outs = oracle("dequant", &jobs);
    for ((_, ty, input), want) in jobs.iter().zip(outs) {
        let want = f32s(&want);
        let mut got = vec![0f32; elems(*ty, input.len())];
        dequantize(*ty, input, &mut got).unwrap();
        assert_eq!(got.len(), want.len(), "{ty}");
        let mut nans = 0;
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            if *ty == GgmlType::F16 && g.is_nan() && w.is_nan() {
                // numpy's half → float cast keeps a signalling NaN signalling; ggml (and kiln)
                // quiet it. The exact ggml bits are checked in `formats::common`'s unit tests.
                assert_eq!(g.to_bits() | 0x0040_0000, w.to_bits() | 0x0040_0000, "{ty} value {i}");
                nans += 1;
                continue;
            }
            assert_eq!(g.to_bits(), w.to_bits(), "{ty} value {i}: kiln {g:e}, gguf-py {w:e}");
        }
        if *ty == GgmlType::F16 {
            assert!(nans > 0, "random halves should include NaNs");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Quantization

/// Rows of floats, block by block, meant to hit every branch of the reference quantizers.
fn quant_inputs(ty: GgmlType, rng: &mut Rng) -> Vec<f32> {
    let mut x = Vec::new();
    let mut block = |f: &mut dyn FnMut(usize) -> f32| x.extend((0..32).map(&mut *f));
    for round in 0..600 {
        let scale = 10f32.powf(rng.unit() * 10.0 - 6.0); // 1e-6 … 1e4
        match round % 12 {
            0 => block(&mut |_| rng.normal() * scale),
            1 => block(&mut |_| rng.unit() * scale + scale), // all positive, offset
            // Halves and integers: exact ties for roundf and the +0.5 / +8.5 / +16.5 truncations.
            // Exact ties: an anchor value that makes 1/d a power of two (Q8_0/Q8_1: ±127·p,
            // Q4_0: −8·p, Q5_0: −16·p), the rest multiples of p/2, so x/d lands on halves.
            2 => {
                let a = [127.0f32, -127.0, -8.0, -16.0][rng.below(4) as usize];
                let p = 2f32.powi(rng.below(20) as i32 - 10);
                let at = rng.below(32) as usize;
                let k = 4 * a.abs() as u64 + 1;
                block(&mut |i| {
                    if i == at { a * p } else { (rng.below(k) as f32 - 2.0 * a.abs()) * 0.5 * p }
                })
            }
            // The same for the min/max formats: min 0 and max 15·p or 31·p give d = p.
            3 => {
                let m = [15.0f32, 31.0][rng.below(2) as usize];
                let p = 2f32.powi(rng.below(20) as i32 - 10);
                let off = rng.normal() * 8.0 * p; // shift everything: min = off
                block(&mut |i| match i {
                    0 => off,
                    1 => m * p + off,
                    _ => rng.below(2 * m as u64 + 1) as f32 * 0.5 * p + off,
                })
            }
            4 => block(&mut |i| if i == 5 { -scale } else { 0.0 }),
            5 => block(&mut |_| scale), // constant: max − min = 0
            6 => block(&mut |_| 0.0),
            7 => block(&mut |i| match i {
                // Equal magnitudes of both signs: the first one sets the sign of d.
                3 => -scale,
                9 => scale,
                _ => rng.normal() * scale * 0.3,
            }),
            8 => block(&mut |_| rng.normal() * 1e-39), // f32 subnormals, zero or tiny d
            9 => block(&mut |_| rng.normal() * 1e7),   // half overflow of d, m and s
            10 => block(&mut |_| {
                // E2M1 values and their midpoints under a random power-of-two scale.
                let v =
                    [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0][rng.below(14) as usize];
                let s = if rng.below(2) == 0 { 1.0 } else { -1.0 };
                s * v * 2f32.powi(rng.below(40) as i32 - 20)
            }),
            _ => block(&mut |_| {
                // Random finite bit patterns, magnitudes up to 1e30.
                loop {
                    let v = f32::from_bits(rng.next() as u32);
                    if v.is_finite() && v.abs() < 1e30 {
                        break v;
                    }
                }
            }),
        }
    }
    // Just below a half: x + 0.5 rounds up to the next integer in f32 (0.49999997 + 0.5 = 1),
    // so ggml's truncation of x + 0.5 (Q4_1, Q5_1) differs from rounding x. Anchors 15, 31,
    // −8, −16 and 127 make 1/d = 1.
    for anchor in [15.0f32, 31.0, -8.0, -16.0, 127.0] {
        let below_half = [0.49999997f32, 2.4999998, 6.4999995, -0.49999997, -3.4999998];
        block(&mut |i| match i {
            0 => anchor,
            1 => 0.0,
            // Min/max formats (anchors 15, 31) need min = 0: keep those blocks non-negative.
            2..=6 if anchor > 0.0 && anchor < 100.0 => below_half[i - 2].abs(),
            2..=6 => below_half[i - 2] * anchor.signum(),
            _ => (i % 7) as f32 * anchor.signum(),
        });
    }
    if ty == GgmlType::MXFP4 {
        // Largest magnitudes just below, at and above powers of two (log2f rounds up there).
        for k in [-140, -126, -125, -124, -100, -3, 0, 1, 2, 3, 20, 64, 100, 126, 127] {
            for ulps in [-3i32, -1, 0, 1] {
                let top = f32::from_bits((2f32.powi(k).to_bits() as i32 + ulps) as u32);
                block(&mut |i| if i == 7 { top } else { rng.normal() * top * 0.2 });
            }
        }
    }
    let n = x.len() / 32 * 32;
    x.truncate(n);
    if matches!(ty, GgmlType::F16 | GgmlType::BF16) {
        // The half / bfloat16 rounding boundaries and specials.
        x.extend([65504.0, 65519.99, 65520.0, 65536.0, 1e-8, 2f32.powi(-25), 2f32.powi(-24) * 1.5]);
        x.extend([f32::INFINITY, f32::NEG_INFINITY, f32::MAX, f32::MIN_POSITIVE, -0.0]);
        x.extend((0..20000).map(|_| f32::from_bits(rng.next() as u32)).filter(|v| !v.is_nan()));
        if ty == GgmlType::BF16 {
            // gguf-py's BF16 NaN handling is ggml's (quiet bit forced, top bits kept).
            x.extend([f32::from_bits(0x7f80_0001), f32::from_bits(0xffc1_2345), f32::NAN]);
        }
    }
    x
}

#[test]
fn quantize_matches_gguf_py() {
    let mut rng = Rng(0x5eed_0002);
    let mut types = vec![GgmlType::F32, GgmlType::F16, GgmlType::BF16];
    types.extend(BLOCK_TYPES);
    let jobs: Vec<_> = types.iter().map(|&ty| ("quant", ty, bytes_of(&quant_inputs(ty, &mut rng)))).collect();
    let outs = oracle("quant", &jobs);
    for ((_, ty, input), want) in jobs.iter().zip(outs) {
        let x = f32s(input);
        let mut got = vec![0u8; ty.row_bytes(x.len() as u64).unwrap() as usize];
        quantize(*ty, &x, &mut got).unwrap();
        assert_eq!(got.len(), want.len(), "{ty}");
        let bb = ty.block_bytes();
        for (i, (g, w)) in got.chunks(bb).zip(want.chunks(bb)).enumerate() {
            let n = ty.block_elems();
            assert_eq!(g, w, "{ty} block {i}, input {:?}", &x[i * n..(i + 1) * n]);
        }
    }
}

#[test]
fn mxfp4_scale_follows_libm_log2f() {
    // Magnitudes around every power of two; the expected byte comes from the C library's log2f
    // (what ggml calls) and C's float → uint8 cast as Python's ctypes sees it, computed in numpy.
    let mut amax = Vec::new();
    for k in -149..=127 {
        let p = 2f64.powi(k) as f32;
        for ulps in -4i64..=2 {
            let v = f32::from_bits((p.to_bits() as i64 + ulps) as u32);
            if v > 0.0 && v.is_finite() {
                amax.push(v);
            }
        }
    }
    let script = r#"
import sys, ctypes, math
import numpy as np
libm = ctypes.CDLL("libm.so.6")
libm.log2f.restype = ctypes.c_float
libm.log2f.argtypes = [ctypes.c_float]
x = np.fromfile(sys.argv[1], dtype=np.float32)
out = []
for v in x:
    f = np.float32(math.floor(libm.log2f(float(v))))   # floorf(log2f(amax)), exact in f32
    e = int(f - np.float32(2) + np.float32(127))       # in [-24, 253]: fits an int
    out.append(e & 0xff)                                # (uint8) keeps the low byte on x86-64
np.array(out, dtype=np.uint8).tofile(sys.argv[2])
"#;
    let dir = scratch("log2f");
    let (inp, out) = (dir.join("in"), dir.join("out"));
    std::fs::write(&inp, bytes_of(&amax)).unwrap();
    kiln_testkit::run_python(script, &[inp.as_os_str(), out.as_os_str()]);
    let want = std::fs::read(&out).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(want.len(), amax.len());
    let mut rounded_up = 0;
    for (v, w) in amax.iter().zip(want) {
        let got = kiln_quant::mxfp4::scale_for_amax(*v);
        assert_eq!(got, w, "amax {v:e} ({:#010x})", v.to_bits());
        // Where log2f rounds up to the next integer, the byte is one more than the exponent's.
        let exact = (v.to_bits() >> 23) as i32 - 127;
        if v.is_normal() && got as i32 != ((exact - 2 + 127) & 0xff) {
            rounded_up += 1;
        }
    }
    assert!(rounded_up > 0, "the set should include values where log2f rounds up");
}

// ---------------------------------------------------------------------------------------------
// Dot products

/// The `f64` reference of a dot product, and the scale of its terms (Σ|products|).
fn reference_dot(ty: GgmlType, w: &[u8], act: &[u8]) -> (f64, f64) {
    let act_ty = traits(ty).unwrap().vec_dot_type;
    let n = elems(ty, w.len());
    let mut wf = vec![0f32; n];
    let mut af = vec![0f32; n];
    dequantize(ty, w, &mut wf).unwrap();
    dequantize(act_ty, act, &mut af).unwrap();
    let mut sum = 0f64;
    let mut abs = 0f64;
    for (a, b) in wf.iter().zip(&af) {
        let p = *a as f64 * *b as f64;
        sum += p;
        abs += p.abs();
    }
    if act_ty == GgmlType::Q8_1 {
        // ggml's Q4_1 / Q5_1 dots add each block's offset m as m·s, with s the activation
        // block's stored half `d·Σq` rather than Σ of the dequantized activations. Swap one for
        // the other: m is the weight block's second half, s the activation block's.
        let (wb, ab) = (ty.block_bytes(), act_ty.block_bytes());
        for (i, (x, y)) in w.chunks(wb).zip(act.chunks(ab)).enumerate() {
            let m = half::f16::from_le_bytes([x[2], x[3]]).to_f64();
            let s = half::f16::from_le_bytes([y[2], y[3]]).to_f64();
            let exact: f64 = af[i * 32..(i + 1) * 32].iter().map(|v| *v as f64).sum();
            sum += m * (s - exact);
            abs += (m * s).abs();
        }
    }
    (sum, abs)
}

/// Weights of `ty` for a dot test: quantized from random rows, or random codes under sane
/// scales (every code value of the format, including Q8_0's −128).
fn random_weights(ty: GgmlType, rng: &mut Rng, n: usize, raw: bool) -> Vec<u8> {
    if raw && !matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
        let bb = ty.block_bytes();
        let mut b = rng.bytes(n / 32 * bb);
        for blk in b.chunks_exact_mut(bb) {
            if ty == GgmlType::MXFP4 {
                blk[0] = 110 + rng.below(30) as u8;
            } else {
                let d = half::f16::from_f32(rng.normal() * 0.01).to_le_bytes();
                blk[..2].copy_from_slice(&d);
                if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
                    let m = half::f16::from_f32(rng.normal() * 0.1).to_le_bytes();
                    blk[2..4].copy_from_slice(&m);
                }
            }
        }
        return b;
    }
    let scale = 10f32.powf(rng.unit() * 4.0 - 2.0);
    let x: Vec<f32> = (0..n).map(|_| rng.normal() * scale).collect();
    let mut b = vec![0u8; ty.row_bytes(n as u64).unwrap() as usize];
    quantize(ty, &x, &mut b).unwrap();
    b
}

/// Whether `ty` has a VNNI kernel on x86_64: every integer-quantized type does, the float
/// types (nothing for VNNI to do) do not.
fn expects_vnni(ty: GgmlType) -> bool {
    cfg!(target_arch = "x86_64") && !matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
}

/// The VNNI kernel of `dot`, if it exists and this CPU runs it (with a note when it exists but
/// cannot run here).
fn runnable_vnni(ty: GgmlType, dot: &kiln_quant::Dot) -> Option<kiln_quant::UnsafeDotFn> {
    let f = dot.vnni?;
    if kiln_quant::simd::has_avx512_vnni() {
        Some(f)
    } else {
        eprintln!("{ty}: Dot::vnni not run: this CPU lacks AVX-512 VNNI (or KILN_NO_VNNI/KILN_NO_SIMD is set)");
        None
    }
}

/// A dot product over raw weight and activation rows.
type DotFn = fn(&[u8], &[u8]) -> f32;

fn check_dot(ty: GgmlType, seed: u64) {
    let mut rng = Rng(seed);
    let t = traits(ty).unwrap();
    let dot = t.vec_dot.expect("dot kernel");
    let simd = kiln_quant::simd::has_avx2_fma();
    if cfg!(target_arch = "x86_64") {
        assert!(dot.avx2.is_some(), "{ty}: AVX2 kernel expected on x86_64");
    }
    assert_eq!(dot.vnni.is_some(), expects_vnni(ty), "{ty}: VNNI kernel presence");
    let vnni = runnable_vnni(ty, &dot);
    let mut checked = 0;
    let lengths: &[usize] =
        if ty.block_elems() == 1 { &[1, 7, 8, 31, 32, 33, 100, 2880, 4099] } else { &[1, 2, 3, 7, 8, 90, 128] };
    for &len in lengths {
        let n = if ty.block_elems() == 1 { len } else { len * 32 };
        for rep in 0..12 {
            let w = random_weights(ty, &mut rng, n, rep % 3 == 2);
            let a: Vec<f32> = (0..n).map(|_| rng.normal() * 10f32.powf(rng.unit() * 2.0 - 1.0)).collect();
            let act = quantize_activations(ty, &a).unwrap();
            let (want, abs) = reference_dot(ty, &w, &act);
            assert!(abs > 0.0 && want.is_finite(), "{ty}: degenerate test row");
            // Products are exact or rounded once in f32; the sums add ≤ 1 rounding per term
            // (per block for the block formats, per lane for the SIMD accumulators).
            let tol = (n as f64 / 8.0 + 16.0) * f32::EPSILON as f64 * abs;
            let scalar = (dot.scalar)(&w, &act) as f64;
            assert!((scalar - want).abs() <= tol, "{ty} n={n} rep={rep}: scalar {scalar} vs f64 {want} (tol {tol})");
            let checked_api = vec_dot(ty, &w, &act).unwrap() as f64;
            assert!((checked_api - want).abs() <= tol, "{ty} n={n}: vec_dot {checked_api} vs {want}");
            // The other summation orders kiln follows for llama.cpp's kernels (kiln-model's
            // matmul): the same sum, other roundings.
            use kiln_quant::formats::{bf16, f16, f32 as f32_, q4_0};
            let orders: &[(&str, DotFn)] = match ty {
                GgmlType::F32 if n % 16 == 0 => &[("tinyblas", f32_::dot_tinyblas)],
                GgmlType::F16 if n % 16 == 0 => &[("tinyblas", f16::dot_tinyblas)],
                GgmlType::BF16 if n % 32 == 0 => &[("tinyblas", bf16::dot_tinyblas)],
                GgmlType::Q4_0 => &[("repacked", q4_0::dot_repacked)],
                _ => &[],
            };
            for (name, f) in orders {
                let v = f(&w, &act) as f64;
                assert!((v - want).abs() <= tol, "{ty} n={n} rep={rep}: {name} {v} vs f64 {want} (tol {tol})");
            }
            let mut avx2 = None;
            if let (Some(f), true) = (dot.avx2, simd) {
                // SAFETY: AVX2, FMA and F16C were detected at run time.
                let v = unsafe { f(&w, &act) };
                avx2 = Some(v);
                let v = v as f64;
                assert!((v - want).abs() <= tol, "{ty} n={n} rep={rep}: avx2 {v} vs f64 {want} (tol {tol})");
                assert!((v - scalar).abs() <= tol, "{ty} n={n}: avx2 {v} vs scalar {scalar}");
            }
            if let Some(f) = vnni {
                // SAFETY: AVX2, FMA, F16C and AVX-512 F/VL/BW/VNNI were detected at run time.
                let v = unsafe { f(&w, &act) };
                // The weights hold any code (Q8_0's −128 included) but the activations come
                // from the quantizer (no −128 for finite inputs): the AVX2 integer sums are
                // exact, so the two kernels must agree to the bit.
                assert_eq!(
                    v.to_bits(),
                    avx2.expect("VNNI CPU runs AVX2").to_bits(),
                    "{ty} n={n} rep={rep}: vnni {v} vs avx2 {avx2:?}"
                );
                assert_eq!(
                    vec_dot(ty, &w, &act).unwrap().to_bits(),
                    v.to_bits(),
                    "{ty}: dispatch should pick the VNNI kernel"
                );
                let v = v as f64;
                assert!((v - want).abs() <= tol, "{ty} n={n} rep={rep}: vnni {v} vs f64 {want} (tol {tol})");
                assert!((v - scalar).abs() <= tol, "{ty} n={n}: vnni {v} vs scalar {scalar}");
            }
            checked += 1;
        }
    }
    assert!(checked > 50);
}

#[test]
fn dot_f32() {
    check_dot(GgmlType::F32, 11);
}

#[test]
fn dot_f16() {
    check_dot(GgmlType::F16, 12);
}

#[test]
fn dot_bf16() {
    check_dot(GgmlType::BF16, 13);
}

#[test]
fn dot_q4_0() {
    check_dot(GgmlType::Q4_0, 14);
}

#[test]
fn dot_q4_1() {
    check_dot(GgmlType::Q4_1, 15);
}

#[test]
fn dot_q5_0() {
    check_dot(GgmlType::Q5_0, 16);
}

#[test]
fn dot_q5_1() {
    check_dot(GgmlType::Q5_1, 17);
}

#[test]
fn dot_q8_0() {
    check_dot(GgmlType::Q8_0, 18);
}

#[test]
fn dot_mxfp4() {
    check_dot(GgmlType::MXFP4, 19);
}

#[test]
fn mxfp4_dot_with_extreme_scales_agrees_across_kernels() {
    // Scale bytes 0, 1, 2 (subnormal block scales), 254 and 255 (products near overflow; the
    // activations are made small enough to keep the sums finite). Both kernels must match the
    // f64 reference; near zero the f32 scale d_y·2^(e−128) is itself subnormal, so each block may
    // be off by |Σ q·k| · 2^-150 on top of the relative error.
    let mut rng = Rng(20);
    let dot = traits(GgmlType::MXFP4).unwrap().vec_dot.unwrap();
    for e in [0u8, 1, 2, 254, 255] {
        for _ in 0..20 {
            let nb = 1 + rng.below(8) as usize;
            let mut w = rng.bytes(17 * nb);
            for blk in w.chunks_exact_mut(17) {
                blk[0] = e;
            }
            let amp = if e >= 254 { 1e-5 } else { 1.0 };
            let a: Vec<f32> = (0..32 * nb).map(|_| rng.normal() * amp).collect();
            let act = quantize_activations(GgmlType::MXFP4, &a).unwrap();
            // Weights decoded in f64 from the format's definition (E2M1 value · 2^(e − 127)):
            // in f32 they overflow for e ≥ 254, while the kernels' d_y · 2^(e−128) does not.
            let mut af = vec![0f32; 32 * nb];
            dequantize(GgmlType::Q8_0, &act, &mut af).unwrap();
            let (mut want, mut abs) = (0f64, 0f64);
            for (i, a) in af.iter().enumerate() {
                let (blk, j) = (&w[17 * (i / 32)..], i % 32);
                let code = if j < 16 { blk[1 + j] & 0x0f } else { blk[1 + j - 16] >> 4 };
                let x = kiln_quant::mxfp4::E2M1[code as usize] as f64 * 2f64.powi(e as i32 - 127);
                want += x * *a as f64;
                abs += (x * *a as f64).abs();
            }
            assert!(abs > 0.0 && abs < 1e38, "e={e}: test row out of range ({abs:e})");
            let tol = 64.0 * f32::EPSILON as f64 * abs + nb as f64 * 48768.0 * 2f64.powi(-150);
            let scalar = (dot.scalar)(&w, &act) as f64;
            assert!((scalar - want).abs() <= tol, "e={e}: scalar {scalar:e} vs f64 {want:e}");
            if let (Some(f), true) = (dot.avx2, kiln_quant::simd::has_avx2_fma()) {
                // SAFETY: AVX2, FMA and F16C were detected at run time.
                let v = unsafe { f(&w, &act) } as f64;
                assert!((v - want).abs() <= tol, "e={e}: avx2 {v:e} vs f64 {want:e}");
            }
            if let Some(f) = runnable_vnni(GgmlType::MXFP4, &dot) {
                // SAFETY: AVX2, FMA, F16C and AVX-512 F/VL/BW/VNNI were detected at run time.
                let v = unsafe { f(&w, &act) } as f64;
                assert!((v - want).abs() <= tol, "e={e}: vnni {v:e} vs f64 {want:e}");
            }
        }
    }
}

#[test]
fn dot_kernels_are_panic_free_on_any_bytes() {
    // NaN / infinite half scales, every code: results may be NaN or infinite, but nothing panics
    // in the checked API, the portable kernel or the dequantizer.
    let mut rng = Rng(21);
    for ty in [
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::MXFP4,
    ] {
        let t = traits(ty).unwrap();
        let act_ty = t.vec_dot_type;
        for nb in [1usize, 3, 64] {
            let n = nb * 32;
            let w = rng.bytes(ty.row_bytes(n as u64).unwrap() as usize);
            let act = rng.bytes(act_ty.row_bytes(n as u64).unwrap() as usize);
            vec_dot(ty, &w, &act).unwrap();
            let d = t.vec_dot.unwrap();
            (d.scalar)(&w, &act);
            if let (Some(f), true) = (d.avx2, kiln_quant::simd::has_avx2_fma()) {
                // SAFETY: AVX2, FMA and F16C were detected at run time.
                unsafe { f(&w, &act) };
            }
            if let Some(f) = runnable_vnni(ty, &d) {
                // SAFETY: AVX2, FMA, F16C and AVX-512 F/VL/BW/VNNI were detected at run time.
                unsafe { f(&w, &act) };
                // Short and mismatched slices: a caller error, but no out-of-bounds read.
                // SAFETY: as above (the kernels read whole blocks present in both slices).
                unsafe { f(&w[..w.len() - 1], &act) };
                // SAFETY: as above.
                unsafe { f(&w, &act[..act.len() / 2]) };
            }
            let mut out = vec![0f32; n];
            dequantize(ty, &w, &mut out).unwrap();
        }
    }
}

#[test]
fn checked_api_rejects_bad_lengths() {
    let w = vec![0u8; 18 * 3];
    let act = vec![0u8; 34 * 2];
    assert!(vec_dot(GgmlType::Q4_0, &w, &act).is_err());
    assert!(vec_dot(GgmlType::Q4_0, &w[..17], &act).is_err());
    let mut out = vec![0f32; 95];
    assert!(dequantize(GgmlType::Q4_0, &w, &mut out).is_err());
    // The raw kernels take mismatched slices without reading out of bounds.
    let t = traits(GgmlType::Q4_0).unwrap();
    let _ = t.dot(&w, &act);
    let _ = (t.vec_dot.unwrap().scalar)(&w[..5], &act);
}
