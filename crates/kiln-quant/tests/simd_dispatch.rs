//! Every dot kernel of every type, called through its own function pointer, and the runtime
//! selection between them.
//!
//! | test | checks | against |
//! | --- | --- | --- |
//! | `every_kernel_pointer_agrees` | `Dot::scalar`, `Dot::avx2` and `Dot::vnni` called directly (no environment switch needed to reach the AVX2 kernel on a VNNI CPU), and `TypeTraits::dot` | the scalar kernel within an `f64`-derived tolerance; `Dot::vnni` bit for bit against `Dot::avx2`; the dispatch bit for bit against the kernel it should pick |
//! | `environment_switches_select_kernels` | `KILN_NO_VNNI` and `KILN_NO_SIMD`, each in a child process of this test binary (the detection is cached per process) | the kernel each switch should leave, called directly in the child |

use std::process::Command;

use kiln_quant::{GgmlType, TypeTraits, dequantize, quantize, quantize_activations, simd};

/// splitmix64.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn normal(&mut self) -> f32 {
        let u = |r: &mut Self| (r.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((0..12).map(|_| u(self)).sum::<f64>() - 6.0) as f32
    }
}

/// Types with a dot kernel.
fn dot_types() -> Vec<(GgmlType, &'static TypeTraits)> {
    kiln_quant::supported_types()
        .map(|ty| (ty, kiln_quant::traits(ty).unwrap()))
        .filter(|(_, t)| t.vec_dot.is_some())
        .collect()
}

/// A weight row (quantized from normal values) and an activation row for `ty`, `blocks` blocks
/// of 256 elements (a multiple of every block size).
fn rows(ty: GgmlType, rng: &mut Rng, blocks: usize) -> (Vec<u8>, Vec<u8>) {
    let n = 256 * blocks;
    let x: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
    let mut w = vec![0u8; ty.row_bytes(n as u64).unwrap() as usize];
    quantize(ty, &x, &mut w).unwrap();
    let a: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
    (w, quantize_activations(ty, &a).unwrap())
}

/// Σ |w_i · a_i| over the dequantized rows: the scale of the rounding error of any kernel.
fn abs_scale(ty: GgmlType, t: &TypeTraits, w: &[u8], act: &[u8]) -> f64 {
    let n = w.len() / ty.block_bytes() * ty.block_elems();
    let (mut wf, mut af) = (vec![0f32; n], vec![0f32; n]);
    dequantize(ty, w, &mut wf).unwrap();
    dequantize(t.vec_dot_type, act, &mut af).unwrap();
    wf.iter().zip(&af).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum()
}

#[test]
fn every_kernel_pointer_agrees() {
    let (has_avx2, has_vnni) = (simd::has_avx2_fma(), simd::has_avx512_vnni());
    if !has_vnni {
        eprintln!("Dot::vnni kernels not run: this CPU lacks AVX-512 VNNI (or KILN_NO_VNNI/KILN_NO_SIMD is set)");
    }
    let mut rng = Rng(0x6b69_6c6e_5349_4d44);
    let mut vnni_checked = 0;
    for (ty, t) in dot_types() {
        let d = t.vec_dot.unwrap();
        if cfg!(target_arch = "x86_64") {
            assert!(d.avx2.is_some(), "{ty}: no AVX2 kernel");
        }
        for blocks in [1, 3, 5] {
            let (w, act) = rows(ty, &mut rng, blocks);
            let scalar = (d.scalar)(&w, &act);
            let tol = (256.0 * blocks as f64) * f32::EPSILON as f64 * abs_scale(ty, t, &w, &act);
            let mut chosen = scalar;
            if let (Some(f), true) = (d.avx2, has_avx2) {
                // SAFETY: AVX2, FMA and F16C were detected at run time.
                let v = unsafe { f(&w, &act) };
                assert!((v - scalar).abs() as f64 <= tol, "{ty} x{blocks}: avx2 {v} vs scalar {scalar}");
                chosen = v;
            }
            if let (Some(f), true) = (d.vnni, has_vnni) {
                // SAFETY: AVX2, FMA, F16C and AVX-512 F/VL/BW/VNNI were detected at run time.
                let v = unsafe { f(&w, &act) };
                assert!((v - scalar).abs() as f64 <= tol, "{ty} x{blocks}: vnni {v} vs scalar {scalar}");
                assert_eq!(v.to_bits(), chosen.to_bits(), "{ty} x{blocks}: vnni {v} vs avx2 {chosen}");
                chosen = v;
                vnni_checked += 1;
            }
            let dispatched = t.dot(&w, &act).unwrap();
            assert_eq!(dispatched.to_bits(), chosen.to_bits(), "{ty} x{blocks}: dispatch picked another kernel");
        }
    }
    if has_vnni {
        // Q4_0 … Q8_0, MXFP4 and the five K-quants.
        assert_eq!(vnni_checked, 11 * 3, "every integer-quantized type has a VNNI kernel");
    }
}

/// The child half of `environment_switches_select_kernels`: reports what this process detects
/// and checks that the dispatch runs the kernel the detection allows. Does nothing unless the
/// parent set `KILN_DISPATCH_CHILD`.
#[test]
fn dispatch_child() {
    if std::env::var_os("KILN_DISPATCH_CHILD").is_none() {
        return;
    }
    let (has_avx2, has_vnni) = (simd::has_avx2_fma(), simd::has_avx512_vnni());
    let mut rng = Rng(7);
    for (ty, t) in dot_types() {
        let d = t.vec_dot.unwrap();
        let (w, act) = rows(ty, &mut rng, 2);
        let want = match (d.vnni, d.avx2) {
            // SAFETY: each kernel only after its features were detected in this process.
            (Some(f), _) if has_vnni => unsafe { f(&w, &act) },
            // SAFETY: as above.
            (_, Some(f)) if has_avx2 => unsafe { f(&w, &act) },
            _ => (d.scalar)(&w, &act),
        };
        assert_eq!(t.dot(&w, &act).unwrap().to_bits(), want.to_bits(), "{ty}");
    }
    println!("DETECTED avx2={has_avx2} vnni={has_vnni}");
}

#[test]
fn environment_switches_select_kernels() {
    if std::env::var_os("KILN_DISPATCH_CHILD").is_some() {
        return;
    }
    let run = |var: Option<&str>| -> (bool, bool) {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "dispatch_child", "--nocapture", "--test-threads=1"])
            .env("KILN_DISPATCH_CHILD", "1")
            .env_remove("KILN_NO_VNNI")
            .env_remove("KILN_NO_SIMD");
        if let Some(v) = var {
            cmd.env(v, "1");
        }
        let out = cmd.output().expect("run this test binary as a child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "child with {var:?} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        // The test harness may print "test dispatch_child ... " on the same line.
        let line = stdout.lines().find(|l| l.contains("DETECTED ")).expect("child report");
        (line.contains("avx2=true"), line.contains("vnni=true"))
    };
    let (avx2, vnni) = run(None);
    if !cfg!(target_arch = "x86_64") {
        assert!(!avx2 && !vnni);
        return;
    }
    if !vnni {
        eprintln!("this CPU lacks AVX-512 VNNI: KILN_NO_VNNI has nothing to turn off here");
    }
    assert_eq!(run(Some("KILN_NO_VNNI")), (avx2, false), "KILN_NO_VNNI leaves AVX2, drops VNNI");
    assert_eq!(run(Some("KILN_NO_SIMD")), (false, false), "KILN_NO_SIMD drops both");
}
