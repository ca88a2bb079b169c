//! Gated activations computed the way llama.cpp's CPU backend computes them (ggml-cpu `vec.h`),
//! because the reference's rounding is what kiln is tested against, and in a 30-layer model a
//! last-bit difference does not stay in the last bit (see `attention.rs`).

use std::sync::OnceLock;

use half::f16;

/// Row elements per SIMD step in ggml's `ggml_vec_swiglu_f32` on AVX-512 (16 lanes); the rest of a
/// row goes through the scalar `ggml_silu_f32`.
const SILU_LANES: usize = 16;

/// `out[i] = silu(gate[i]) · up[i]` for one row, as `ggml_vec_swiglu_f32` (AVX-512 build).
pub(super) fn swiglu_row(gate: &[f32], up: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if kiln_quant::simd::has_avx2_fma() {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { swiglu_row_fma(gate, up, out) };
    }
    swiglu_row_body(gate, up, out)
}

/// [`swiglu_row`] compiled with FMA (`mul_add` as an instruction, not an `fmaf` call).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn swiglu_row_fma(gate: &[f32], up: &[f32], out: &mut [f32]) {
    swiglu_row_body(gate, up, out)
}

#[inline(always)]
fn swiglu_row_body(gate: &[f32], up: &[f32], out: &mut [f32]) {
    let simd = gate.len() / SILU_LANES * SILU_LANES;
    for ((o, &g), &u) in out[..simd].iter_mut().zip(&gate[..simd]).zip(&up[..simd]) {
        *o = g / (1.0 + expf_v(-g)) * u;
    }
    for ((o, &g), &u) in out[simd..].iter_mut().zip(&gate[simd..]).zip(&up[simd..]) {
        *o = g / (1.0 + (-g).exp()) * u;
    }
}

/// One lane of ggml's AVX-512 `ggml_v_expf` (ARM's optimized-routines algorithm: round to an
/// integer power of two, degree-5 polynomial, `scalef`), to the bit.
#[inline(always)]
pub(super) fn expf_v(x: f32) -> f32 {
    let r = f32::from_bits(0x4b40_0000); // 0x1.8p23
    let z = x.mul_add(f32::from_bits(0x3fb8_aa3b), r); // 0x1.715476p+0 = log2(e)
    let n = z - r;
    let b = (-n).mul_add(f32::from_bits(0x35bf_be8e), (-n).mul_add(f32::from_bits(0x3f31_7200), x)); // ln2 hi/lo
    let u = b * b;
    let p = f32::from_bits(0x3c07_2010).mul_add(b, f32::from_bits(0x3d2b_9f17)); // 0x1.0e4020p-7, 0x1.573e2ep-5
    let q = f32::from_bits(0x3e2a_af33).mul_add(b, f32::from_bits(0x3eff_fedb)); // 0x1.555e66p-3, 0x1.fffdb6p-2
    let j = p.mul_add(u, q).mul_add(u, f32::from_bits(0x3f7f_fff6).mul_add(b, 1.0)); // 0x1.ffffecp-1
    if n.abs() > 192.0 {
        return if n <= 0.0 { 0.0 } else { f32::INFINITY };
    }
    // `_mm512_scalef_ps(j, n)`: j · 2^n rounded once (n is an integer here).
    let pow2 = f64::from_bits(((n as i64 + 1023) as u64) << 52); // 2^n, exact for |n| ≤ 192
    (j as f64 * pow2) as f32
}

/// `out[i] = gelu(gate[i]) · up[i]` for one row, as `ggml_vec_geglu_f32` with `GGML_GELU_FP16`:
/// the gate is rounded to f16 and looked up in a table of f16 GELU values; ±10 and beyond are
/// clamped to 0 and to the identity.
pub(super) fn geglu_row(gate: &[f32], up: &[f32], out: &mut [f32]) {
    let table = gelu_table();
    let n = out.len().min(gate.len()).min(up.len());
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if kiln_quant::simd::has_avx2_fma() {
        // SAFETY: AVX2, FMA and F16C were detected at run time.
        done = unsafe { geglu_f16c(&gate[..n], &up[..n], &mut out[..n], table) };
    }
    for ((o, &g), &u) in out[done..n].iter_mut().zip(&gate[done..n]).zip(&up[done..n]) {
        *o = if g <= -10.0 {
            0.0
        } else if g >= 10.0 {
            g * u
        } else {
            table[f16::from_f32(g).to_bits() as usize].to_f32() * u
        };
    }
}

/// [`geglu_row`] eight values at a time with F16C (the same round-to-nearest-even f16 conversion
/// of the gate, the same table and products); returns how many values it did (whole groups of
/// eight).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn geglu_f16c(gate: &[f32], up: &[f32], out: &mut [f32], table: &[f16]) -> usize {
    use std::arch::x86_64::*;
    let (lo, hi) = (_mm256_set1_ps(-10.0), _mm256_set1_ps(10.0));
    let mut bits = [0u16; 8];
    let mut looked_up = [0u16; 8];
    for ((o, g), u) in out.as_chunks_mut::<8>().0.iter_mut().zip(gate.as_chunks::<8>().0).zip(up.as_chunks::<8>().0) {
        // SAFETY: each array is 8 floats (or halves) long; the unaligned forms need no alignment.
        unsafe {
            let gv = _mm256_loadu_ps(g.as_ptr());
            let uv = _mm256_loadu_ps(u.as_ptr());
            _mm_storeu_si128(bits.as_mut_ptr().cast(), _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(gv));
            for (l, b) in looked_up.iter_mut().zip(&bits) {
                *l = table[*b as usize].to_bits();
            }
            let gelu = _mm256_cvtph_ps(_mm_loadu_si128(looked_up.as_ptr().cast()));
            let mid = _mm256_mul_ps(gelu, uv);
            // g ≤ −10 → 0; g ≥ 10 → g·u; else the table's.
            let v = _mm256_blendv_ps(mid, _mm256_mul_ps(gv, uv), _mm256_cmp_ps::<_CMP_GE_OQ>(gv, hi));
            let v = _mm256_andnot_ps(_mm256_cmp_ps::<_CMP_LE_OQ>(gv, lo), v);
            _mm256_storeu_ps(o.as_mut_ptr(), v);
        }
    }
    out.len() / 8 * 8
}

/// ggml's `ggml_table_gelu_f16`: for every half `h`, `f16(gelu_f32(h))`.
fn gelu_table() -> &'static [f16] {
    static TABLE: OnceLock<Vec<f16>> = OnceLock::new();
    TABLE.get_or_init(|| (0..=u16::MAX).map(|b| f16::from_f32(gelu_f32(f16::from_bits(b).to_f32()))).collect())
}

/// `ggml_gelu_f32` (tanh approximation) as GCC compiles it: `1 + a·x·x` fused.
fn gelu_f32(x: f32) -> f32 {
    const GELU_COEF_A: f32 = 0.044715;
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let inner = (GELU_COEF_A * x).mul_add(x, 1.0);
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * inner).tanh())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_expf_is_close_to_exp() {
        // The approximation is within 2 ulps of expf on its range (ARM's routine: 1.45 + 0.5 ulp).
        for i in -2000..=2000 {
            let x = i as f32 * 0.0437;
            let (got, want) = (expf_v(x), x.exp());
            let ulp = (got.to_bits() as i64 - want.to_bits() as i64).abs();
            assert!(ulp <= 2, "x = {x}: {got} vs {want}");
        }
        assert_eq!(expf_v(-200.0), 0.0);
        assert_eq!(expf_v(200.0), f32::INFINITY);
    }

    #[test]
    fn gelu_table_matches_the_formula() {
        for x in [-3.0f32, -0.5, 0.0, 0.25, 1.0, 2.5] {
            let want = 0.5
                * x as f64
                * (1.0
                    + ((2.0 / std::f64::consts::PI).sqrt() * x as f64 * (1.0 + 0.044715 * (x as f64).powi(2))).tanh());
            let got = gelu_table()[f16::from_f32(x).to_bits() as usize].to_f64();
            assert!((got - want).abs() <= 1e-3 * want.abs().max(1e-3), "gelu({x}) = {got}, want {want}");
        }
    }

    #[test]
    fn geglu_in_groups_of_eight_equals_one_at_a_time() {
        let table = gelu_table();
        // Every clamp edge, values that round to an f16 tie, and a ramp; 37 values (a tail of 5).
        let mut gate =
            vec![-10.0f32, -10.000001, -9.999999, 10.0, 9.999999, 10.5, -0.0, 0.0, 1.0 + 2f32.powi(-11), 65504.0];
        gate.extend((0..27).map(|i| (i as f32 - 13.0) * 0.731));
        let up: Vec<f32> = (0..gate.len()).map(|i| 1.5 - i as f32 * 0.1).collect();
        let mut got = vec![0f32; gate.len()];
        geglu_row(&gate, &up, &mut got);
        for (i, ((&g, &u), &v)) in gate.iter().zip(&up).zip(&got).enumerate() {
            let want = if g <= -10.0 {
                0.0
            } else if g >= 10.0 {
                g * u
            } else {
                table[f16::from_f32(g).to_bits() as usize].to_f32() * u
            };
            assert_eq!(v.to_bits(), want.to_bits(), "value {i}: gate {g}");
        }
    }
}
