//! Pieces shared by the 32-element block formats (F16, BF16, Q4_0 … Q8_1, MXFP4), usable by any
//! format: ggml's scalar conversions (half, bfloat16, the C float-to-integer casts its reference
//! quantizers rely on) and, in the crate-private `x86` module, the AVX2 building blocks of the
//! dot product kernels (`hsum_f32x8`, `halves8`, `sum_lanes8`, `unpack_nibbles`, `expand_bits`,
//! `dot_u8_i8`, `dot_i8_i8`, loads).
//!
//! Every conversion here reproduces what ggml computes bit for bit, including NaN, infinities and
//! subnormals; the tests at the bottom check them exhaustively or against hand-derived bits.

/// `GGML_FP16_TO_FP32`: the exact value of an IEEE half (`bits`, little-endian as stored).
///
/// NaNs keep their sign and payload and come back quiet (the `0x0040_0000` bit set), as ggml's
/// portable conversion (a float multiply of the shifted bits) and the F16C instruction both give.
#[inline]
pub fn f16_to_f32(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}

/// `GGML_FP32_TO_FP16`, as ggml-base (and so every reference quantizer) computes it: round to
/// nearest, ties to even, overflow to infinity, subnormal halves where the value falls below
/// 2^-14; every NaN becomes the quiet NaN `0x7e00` with the input's sign (ggml's portable
/// conversion drops the payload; the F16C instruction would keep part of it).
#[inline]
pub fn f32_to_f16(x: f32) -> u16 {
    if x.is_nan() {
        ((x.to_bits() >> 16) as u16 & 0x8000) | 0x7e00
    } else {
        half::f16::from_f32(x).to_bits()
    }
}

/// `GGML_BF16_TO_FP32`: bfloat16 is the top half of an `f32`, so this is a plain shift (NaNs
/// stay exactly as they are, signalling ones included).
#[inline]
pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

/// `ggml_compute_fp32_to_bf16`: round to nearest, ties to even, on the bits (so values above the
/// largest bfloat16 round to infinity and subnormals round like normals); a NaN keeps its top 16
/// bits with the quiet bit (`0x0040`) forced on.
#[inline]
pub fn f32_to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return ((u >> 16) | 0x40) as u16;
    }
    // Cannot overflow: the largest non-NaN pattern is 0xff80_0000 (−∞).
    ((u + (0x7fff + ((u >> 16) & 1))) >> 16) as u16
}

/// The half at `b[0..2]` (little-endian) as `f32`.
#[inline]
pub fn f16_le(b: [u8; 2]) -> f32 {
    f16_to_f32(u16::from_le_bytes(b))
}

/// A C cast of `x` from `float` to a 32-bit (or narrower, by truncating this result) integer as
/// x86-64 compilers emit it (`cvttss2si`): truncation toward zero, and the "integer indefinite"
/// `i32::MIN` for NaN and for values outside the `i32` range. C leaves those cases undefined;
/// ggml's reference quantizers hit them only for non-finite or extreme inputs, and this is what
/// ggml built for x86-64 produces there. Narrower casts (`(int8_t)`, `(uint8_t)`) keep the low
/// bits: `c_cast_i32(x) as i8`.
#[inline]
pub fn c_cast_i32(x: f32) -> i32 {
    // 2^31 is exactly representable; every f32 in [-2^31, 2^31) converts without overflow.
    if (-2_147_483_648.0..2_147_483_648.0).contains(&x) { x as i32 } else { i32::MIN }
}

/// AVX2 building blocks for the dot product kernels (x86_64 only), for every format in this
/// crate. They are safe functions that require `avx2`, `fma` and `f16c` to be enabled in the
/// caller: call them from a `#[target_feature(enable = "avx2,fma,f16c")]` kernel, which
/// [`crate::TypeTraits::dot`] only runs after [`crate::simd::has_avx2_fma`] checked all three.
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    /// Sum of the eight lanes: upper half plus lower half, then pairs, then the last two.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn hsum_f32x8(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_extractf128_ps::<1>(v), _mm256_castps256_ps128(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// A half (two little-endian bytes) as `f32`, with the F16C instruction.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn f16_le(b: [u8; 2]) -> f32 {
        let v = _mm_cvtsi32_si128(u16::from_le_bytes(b) as i32);
        _mm_cvtss_f32(_mm_cvtph_ps(v))
    }

    /// Eight halves (each given as its two little-endian bytes) converted to `f32` at once. The
    /// halves are packed into two 64-bit integers first, which costs far fewer vector shuffles
    /// than inserting them one by one.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn halves8(h: [[u8; 2]; 8]) -> __m256 {
        let pack = |q: &[[u8; 2]]| {
            q.iter().rev().fold(0u64, |acc, b| (acc << 16) | u16::from_le_bytes(*b) as u64) as i64
        };
        _mm256_cvtph_ps(_mm_set_epi64x(pack(&h[4..]), pack(&h[..4])))
    }

    /// Lane `k` of the result is the sum of the eight `i32` lanes of `p[k]` (exact while the
    /// sums fit `i32`): eight horizontal reductions done together.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn sum_lanes8(p: [__m256i; 8]) -> __m256i {
        // Within each 128-bit half: after two rounds of pairwise adds, half h of t0123 holds
        // the sums of half h of p0, p1, p2, p3 (in that order), and likewise for t4567.
        let t01 = _mm256_hadd_epi32(p[0], p[1]);
        let t23 = _mm256_hadd_epi32(p[2], p[3]);
        let t45 = _mm256_hadd_epi32(p[4], p[5]);
        let t67 = _mm256_hadd_epi32(p[6], p[7]);
        let t0123 = _mm256_hadd_epi32(t01, t23);
        let t4567 = _mm256_hadd_epi32(t45, t67);
        // Add the two halves: low halves of both, plus high halves of both.
        _mm256_add_epi32(
            _mm256_permute2x128_si256::<0x20>(t0123, t4567),
            _mm256_permute2x128_si256::<0x31>(t0123, t4567),
        )
    }

    /// Loads 32 bytes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn load32(b: &[u8; 32]) -> __m256i {
        // SAFETY: `b` is 32 readable bytes; `loadu` has no alignment requirement.
        unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
    }

    /// Loads 16 bytes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn load16(b: &[u8; 16]) -> __m128i {
        // SAFETY: `b` is 16 readable bytes; `loadu` has no alignment requirement.
        unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
    }

    /// Unpacks 16 bytes of 4-bit codes into 32 bytes, one code each: the low nibbles (values
    /// 0–15 of a ggml block) in bytes 0–15, the high nibbles (values 16–31) in bytes 16–31.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn unpack_nibbles(qs: &[u8; 16]) -> __m256i {
        // Both lanes load the same 16 bytes (a broadcast load, no shuffle); the upper lane is
        // then shifted right by 4 bits (a per-64-bit-lane variable shift).
        let both = _mm256_broadcastsi128_si256(load16(qs));
        let shifted = _mm256_srlv_epi64(both, _mm256_set_epi64x(4, 4, 0, 0));
        _mm256_and_si256(shifted, _mm256_set1_epi8(0x0f))
    }

    /// Byte `j` is `0xff` where bit `j` of `bits` is set and `0` elsewhere (the fifth bits of
    /// Q5_0 / Q5_1, bit `j` belonging to value `j`).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn expand_bits(bits: u32) -> __m256i {
        // Byte j of the result looks at byte j / 8 of `bits` ...
        let spread = _mm256_shuffle_epi8(
            _mm256_set1_epi32(bits as i32),
            _mm256_set_epi64x(
                0x0303_0303_0303_0303,
                0x0202_0202_0202_0202,
                0x0101_0101_0101_0101,
                0,
            ),
        );
        // ... and keeps bit j % 8 of it.
        let select = _mm256_set1_epi64x(0x8040_2010_0804_0201_u64 as i64);
        _mm256_cmpeq_epi8(_mm256_and_si256(spread, select), select)
    }

    /// Unsigned × signed byte dot product in groups of four: lane `k` of the result is
    /// `Σ_{i=4k}^{4k+3} a_i · b_i` with `a` read as `u8` and `b` as `i8`. Exact while each pair
    /// `a_{2i}·b_{2i} + a_{2i+1}·b_{2i+1}` fits an `i16` (it does for `a ≤ 127`, or for
    /// `a ≤ 255` with `|b| ≤ 64`).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn dot_u8_i8(a: __m256i, b: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1))
    }

    /// Signed × signed byte dot product in groups of four (lane `k` = `Σ_{i=4k}^{4k+3} a_i · b_i`),
    /// through `|a| · (b · sign a)`. Exact for every `a` (including −128) as long as `b` holds no
    /// −128 where `a < 0`; the kernels pass the operand that may hold −128 as `a`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn dot_i8_i8(a: __m256i, b: __m256i) -> __m256i {
        dot_u8_i8(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_to_f32_hand_values() {
        // Hand-derived from the IEEE half layout (1 sign, 5 exponent, 10 fraction bits).
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24)); // smallest subnormal
        assert_eq!(f16_to_f32(0x03ff), 1023.0 * 2f32.powi(-24)); // largest subnormal
        assert_eq!(f16_to_f32(0x0400), 2f32.powi(-14)); // smallest normal
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert_eq!(f16_to_f32(0xfc00), f32::NEG_INFINITY);
        assert_eq!(f16_to_f32(0x8000).to_bits(), 0x8000_0000);
    }

    #[test]
    fn f16_nans_come_back_quiet_with_payload() {
        // ggml: the half's bits shifted into an f32 NaN, then a float multiply quiets it.
        for h in 0..=u16::MAX {
            if h & 0x7c00 == 0x7c00 && h & 0x03ff != 0 {
                let want = ((h as u32 & 0x8000) << 16) | 0x7fc0_0000 | ((h as u32 & 0x03ff) << 13);
                assert_eq!(f16_to_f32(h).to_bits(), want, "{h:#06x}");
            }
        }
    }

    #[test]
    fn f16_round_trip_and_rounding() {
        // Every non-NaN half survives f32 and back.
        for h in 0..=u16::MAX {
            let f = f16_to_f32(h);
            if !f.is_nan() {
                assert_eq!(f32_to_f16(f), h, "{h:#06x}");
            }
        }
        // Ties to even: 1 + 2^-11 lies halfway between 1 and 1 + 2^-10.
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11)), 0x3c00);
        assert_eq!(f32_to_f16(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02);
        assert_eq!(f32_to_f16(65520.0), 0x7c00); // halfway to 2^16 rounds up to infinity
        assert_eq!(f32_to_f16(65519.996), 0x7bff);
        assert_eq!(f32_to_f16(2f32.powi(-25)), 0x0000); // tie between 0 and the smallest subnormal
        assert_eq!(f32_to_f16(1.5 * 2f32.powi(-25)), 0x0001);
        assert_eq!(f32_to_f16(-1e-30), 0x8000);
        // NaNs: ggml writes 0x7e00 with the sign, dropping the payload.
        assert_eq!(f32_to_f16(f32::from_bits(0x7f80_0001)), 0x7e00);
        assert_eq!(f32_to_f16(f32::from_bits(0xffc1_2345)), 0xfe00);
    }

    #[test]
    fn bf16_conversions() {
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        assert_eq!(bf16_to_f32(0x7f81).to_bits(), 0x7f81_0000); // signalling NaN kept as is
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even.
        assert_eq!(f32_to_bf16(1.0 + 2f32.powi(-8)), 0x3f80);
        assert_eq!(f32_to_bf16(1.0 + 3.0 * 2f32.powi(-8)), 0x3f82);
        assert_eq!(f32_to_bf16(f32::MAX), 0x7f80); // rounds up to infinity
        assert_eq!(f32_to_bf16(f32::NEG_INFINITY), 0xff80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x0000_8000)), 0x0000); // subnormal tie to even
        assert_eq!(f32_to_bf16(f32::from_bits(0x0001_8000)), 0x0002);
        // NaN: top bits kept, quiet bit forced.
        assert_eq!(f32_to_bf16(f32::from_bits(0x7f80_0001)), 0x7fc0);
        assert_eq!(f32_to_bf16(f32::from_bits(0xff81_ffff)), 0xffc1);
    }

    #[test]
    fn c_cast_matches_x86() {
        assert_eq!(c_cast_i32(8.9), 8);
        assert_eq!(c_cast_i32(-0.7), 0);
        assert_eq!(c_cast_i32(-24.0) as u8, 232);
        assert_eq!(c_cast_i32(f32::NAN), i32::MIN);
        assert_eq!(c_cast_i32(f32::INFINITY), i32::MIN);
        assert_eq!(c_cast_i32(-2_147_483_648.0), i32::MIN);
        assert_eq!(c_cast_i32(2_147_483_520.0), 2_147_483_520);
        assert_eq!(c_cast_i32(2_147_483_648.0), i32::MIN);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn f16c_agrees_with_scalar_on_every_half() {
        if !crate::simd::has_avx2_fma() {
            return;
        }
        for h in 0..=u16::MAX {
            // SAFETY: AVX2, FMA and F16C were detected above.
            let v = unsafe { f16c_convert(h.to_le_bytes()) };
            assert_eq!(v.to_bits(), f16_to_f32(h).to_bits(), "{h:#06x}");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn f16c_convert(b: [u8; 2]) -> f32 {
        x86::f16_le(b)
    }
}
