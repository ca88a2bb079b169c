//! Portable, vectorizable `exp` for non-positive arguments and fixed-order sums.
//!
//! Sampling needs `exp(logit - max)` for every candidate, up to 262,144 of them per token. The
//! platform `exp` differs between C libraries, and `libm::exp` is portable but branchy; this one
//! is a few dozen IEEE-754 `f64` operations with no branches or tables, so it gives the same bits
//! on every machine (Rust never contracts `a * b + c` into an FMA on its own) and the compiler can
//! vectorize loops over it.

/// `e^x` for `x <= 0`, within a few ulps of the exact value (the tests compare with `f64::exp`).
/// `x = 0` gives exactly `1.0`; `x < -708` (including `-inf`) and NaN give `0.0` — far below any
/// weight that can matter next to the best candidate's `1.0`. Positive `x` is not supported
/// (callers subtract the maximum first); it returns a value, never panics.
#[inline(always)]
pub(crate) fn exp_nonpos(x: f64) -> f64 {
    const LOG2E: f64 = std::f64::consts::LOG2_E;
    // ln 2 split so that k * LN2_HI is exact for |k| < 2^11 (fdlibm's constants).
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000); // 6.93147180369123816490e-01
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76); // 1.90821492927058770002e-10
    // Adding 1.5 · 2^52 rounds to an integer (ties to even) and leaves it in the low mantissa bits.
    const SHIFT: f64 = 6_755_399_441_055_744.0;

    let t = x * LOG2E + SHIFT;
    let kf = t - SHIFT;
    let k = (t.to_bits() as i64).wrapping_sub(SHIFT.to_bits() as i64);
    let r = (x - kf * LN2_HI) - kf * LN2_LO; // |r| <= ln2 / 2
    // Taylor series to r^13: truncation error below 2^-56 relative for |r| <= ln2 / 2.
    let mut p = 1.0 / 6_227_020_800.0; // 1/13!
    p = p * r + 1.0 / 479_001_600.0;
    p = p * r + 1.0 / 39_916_800.0;
    p = p * r + 1.0 / 3_628_800.0;
    p = p * r + 1.0 / 362_880.0;
    p = p * r + 1.0 / 40_320.0;
    p = p * r + 1.0 / 5_040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    // 2^k for k in [-1022, 0] (other k only reach here for arguments that are discarded below).
    let scale = f64::from_bits((k.wrapping_add(1023) as u64) << 52);
    let v = p * scale;
    if x >= -708.0 { v } else { 0.0 }
}

/// Sum of `xs` in a fixed order: eight interleaved partial sums, then those in order, then the
/// remainder. Deterministic for a given slice, and not limited by one addition's latency.
#[inline]
pub(crate) fn sum_fixed(xs: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let mut it = xs.chunks_exact(8);
    for c in &mut it {
        for j in 0..8 {
            acc[j] += c[j];
        }
    }
    let mut s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for &x in it.remainder() {
        s += x;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_within_a_few_ulps() {
        // std's exp (the platform's, correctly rounded or nearly) is the independent reference.
        let mut worst = 0.0f64;
        let mut x = 0.0f64;
        while x > -708.0 {
            let want = x.exp();
            let got = exp_nonpos(x);
            worst = worst.max(((got - want) / want).abs());
            x -= 0.001_234_567;
        }
        assert!(worst < 4.0 * f64::EPSILON, "worst relative error {worst:e}");
        for x in [-1e-300, -f64::MIN_POSITIVE, -0.5 * std::f64::consts::LN_2, -std::f64::consts::LN_2, -707.9] {
            let rel = ((exp_nonpos(x) - x.exp()) / x.exp()).abs();
            assert!(rel < 4.0 * f64::EPSILON, "x = {x}: {rel:e}");
        }
    }

    #[test]
    fn exp_edges() {
        assert_eq!(exp_nonpos(0.0), 1.0);
        assert_eq!(exp_nonpos(-0.0), 1.0);
        assert_eq!(exp_nonpos(-708.5), 0.0);
        assert_eq!(exp_nonpos(-1e300), 0.0);
        assert_eq!(exp_nonpos(f64::NEG_INFINITY), 0.0);
        assert_eq!(exp_nonpos(f64::NAN), 0.0);
    }

    #[test]
    fn fixed_sum_is_the_sum() {
        let xs: Vec<f64> = (0..1003).map(|i| i as f64 * 0.5).collect();
        assert_eq!(sum_fixed(&xs), 1002.0 * 1003.0 / 4.0); // exact in binary
        assert_eq!(sum_fixed(&[]), 0.0);
        assert_eq!(sum_fixed(&[1.5, 2.0]), 3.5);
    }
}
