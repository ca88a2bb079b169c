//! Pieces shared by the 32-element block formats (F16, BF16, Q4_0 … Q8_1, MXFP4), usable by any
//! format: ggml's scalar conversions (half, bfloat16, the C float-to-integer casts its reference
//! quantizers rely on) and, in the crate-private `x86` module, the SIMD building blocks of the
//! dot product kernels: float and layout helpers (`hsum_f32x8`, `halves8`, `half_pair`,
//! `f16_splat8`, `sum_lanes8`, `unpack_nibbles`, `expand_bits`, loads) and the `x86::Isa` trait whose two
//! implementations, `x86::Avx2` (`maddubs` + `madd`) and `x86::Vnni` (AVX-512 VNNI
//! `vpdpbusd` / `vpdpwssd` on 256-bit registers), supply the integer dot products.
//!
//! # One kernel body, two instruction sets
//!
//! Each quantized format writes its SIMD dot product once, as an `#[inline(always)] unsafe fn`
//! generic over `I: Isa`, and `dot_entry_points!` instantiates it twice: `dot_avx2` with
//! `#[target_feature(enable = "avx2,fma,f16c")]` and `dot_vnni` with those plus
//! `avx512f,avx512vl,avx512bw,avx512vnni`. The body is inlined into each entry point, so the
//! `Isa` methods (and every `#[target_feature]` helper here) compile to the entry point's
//! instructions. The two instances run the same float operations in the same order, and their
//! integer sums are exact and therefore equal wherever the AVX2 path is exact (see `x86::Isa`
//! for the one case it is not), so they return bit-identical results there.
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
    if x.is_nan() { ((x.to_bits() >> 16) as u16 & 0x8000) | 0x7e00 } else { half::f16::from_f32(x).to_bits() }
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

/// SIMD building blocks for the dot product kernels (x86_64 only), for every format in this
/// crate. The helpers are safe functions that require `avx2`, `fma` and `f16c` to be enabled in
/// the caller: call them from a `#[target_feature(enable = "avx2,fma,f16c")]` kernel (or one
/// with more features), which [`crate::TypeTraits::dot`] only runs after
/// [`crate::simd::has_avx2_fma`] checked all three. The [`Isa`] trait's methods are `unsafe`
/// for the same reason: they are only called from kernels compiled with the implementing type's
/// features, after the matching runtime check.
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    /// The integer dot products a kernel body is generic over: one zero-sized implementation per
    /// instruction set, every method `#[inline(always)]` so that it compiles to the instructions
    /// of the `#[target_feature]` entry point the body is inlined into (see the module docs).
    ///
    /// All results are per 32-bit lane `k` of a 256-bit register; "groups of four" means lane `k`
    /// covers bytes `4k..4k + 4` of the byte operands, the same grouping in both
    /// implementations, so wherever both are exact their lanes hold the same integers.
    ///
    /// Exactness: [`Vnni`] is exact for every input (`vpdpbusd` / `vpdpwssd` widen each product
    /// and accumulate in `i32` without saturating). [`Avx2`] goes through `vpmaddubsw`, which
    /// saturates each sum of two adjacent `u8 × i8` products to `i16`; each method states when
    /// that cannot happen. The only kernel whose AVX2 path can lose exactness on valid bytes is
    /// Q8_0's: see [`Isa::dot_i8_i8`].
    ///
    /// # Safety
    /// Every method requires the CPU features of its implementation ([`Avx2`]: AVX2; [`Vnni`]:
    /// AVX2, AVX512F, AVX512VL, AVX512BW, AVX512VNNI), which the entry points made by
    /// [`dot_entry_points!`] enable and their callers check at run time.
    pub(crate) trait Isa {
        /// `acc` plus, in lane `k`, `Σ_{i=4k}^{4k+3} a_i · b_i` with `a` read as `u8` and `b` as
        /// `i8`. [`Avx2`]: exact while each pair `a_{2i}·b_{2i} + a_{2i+1}·b_{2i+1}` fits `i16`
        /// (always for `a ≤ 127`); [`Vnni`]: always exact.
        unsafe fn dpbusd(acc: __m256i, a: __m256i, b: __m256i) -> __m256i;

        /// `acc` plus, in lane `k`, `a_{2k}·b_{2k} + a_{2k+1}·b_{2k+1}` over `i16` lanes (wrapping
        /// like `vpmaddwd` + `vpaddd`; neither implementation saturates): the step that applies
        /// K-quant sub-block scales to the `i16` pair sums of `maddubs`.
        unsafe fn dpwssd(acc: __m256i, a: __m256i, b: __m256i) -> __m256i;

        /// `Σ_{i=4k}^{4k+3} (a_i − c_i) · b_i` in lane `k`, `a` and `c` read as `u8`, `b` as `i8`:
        /// unsigned codes with an offset (`c` is usually a splat: 8 for Q4_0, 16 for Q5_0) times
        /// signed activations, exact for every `b` (−128 included). [`Avx2`]: two `maddubs`
        /// subtracted in `i16`, exact for `a, c ≤ 63` (each pair sum is at most 2·63·128 = 16128
        /// in magnitude, so their difference fits `i16`); [`Vnni`]: two `vpdpbusd`, always exact.
        unsafe fn dot_offset(a: __m256i, c: __m256i, b: __m256i) -> __m256i;

        /// Signed × signed bytes in groups of four: lane `k` = `Σ_{i=4k}^{4k+3} a_i · b_i`.
        ///
        /// [`Avx2`] uses ggml's sign trick, `|a| · (b · sign a)` through `maddubs`: exact for
        /// every `a` (−128 included) unless `b` holds −128 where `a < 0` (then `b · sign a`
        /// wraps back to −128 and that product comes out negated); pass the operand that may
        /// hold −128 as `a`. [`Vnni`] computes `Σ (a + 128) · b − 128 · Σ b` (the `+ 128` is an
        /// XOR of the sign bit, making `a` unsigned) with two `vpdpbusd`: exact for every input.
        #[inline(always)]
        unsafe fn dot_i8_i8(a: __m256i, b: __m256i) -> __m256i {
            // SAFETY: the caller guarantees this implementation's features (trait contract).
            unsafe {
                let bias = _mm256_set1_epi8(-128);
                Self::dot_offset(_mm256_xor_si256(a, bias), bias, b)
            }
        }

        /// `dpbusd` from zero: lane `k` = `Σ_{i=4k}^{4k+3} a_i · b_i`, `a` as `u8`, `b` as `i8`.
        #[inline(always)]
        unsafe fn dot_u8_i8(a: __m256i, b: __m256i) -> __m256i {
            // SAFETY: the caller guarantees this implementation's features (trait contract).
            unsafe { Self::dpbusd(_mm256_setzero_si256(), a, b) }
        }
    }

    /// AVX2: `vpmaddubsw` (`u8 × i8` pairs summed to saturating `i16`) then `vpmaddwd` by ones.
    pub(crate) struct Avx2;

    impl Isa for Avx2 {
        #[inline(always)]
        unsafe fn dpbusd(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
            // SAFETY: AVX2 is enabled in the caller (trait contract).
            unsafe {
                let pairs = _mm256_maddubs_epi16(a, b);
                _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
            }
        }

        #[inline(always)]
        unsafe fn dpwssd(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
            // SAFETY: AVX2 is enabled in the caller (trait contract).
            unsafe { _mm256_add_epi32(acc, _mm256_madd_epi16(a, b)) }
        }

        #[inline(always)]
        unsafe fn dot_offset(a: __m256i, c: __m256i, b: __m256i) -> __m256i {
            // SAFETY: AVX2 is enabled in the caller (trait contract).
            unsafe {
                let d = _mm256_sub_epi16(_mm256_maddubs_epi16(a, b), _mm256_maddubs_epi16(c, b));
                _mm256_madd_epi16(d, _mm256_set1_epi16(1))
            }
        }

        #[inline(always)]
        unsafe fn dot_i8_i8(a: __m256i, b: __m256i) -> __m256i {
            // SAFETY: AVX2 is enabled in the caller (trait contract).
            unsafe { Self::dot_u8_i8(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a)) }
        }
    }

    /// AVX-512 VNNI on 256-bit registers (AVX512VL encodings): `vpdpbusd` sums four `u8 × i8`
    /// products into each `i32` lane and `vpdpwssd` two `i16 × i16` products, both exactly and
    /// added to the accumulator in the same instruction.
    pub(crate) struct Vnni;

    impl Isa for Vnni {
        #[inline(always)]
        unsafe fn dpbusd(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
            // SAFETY: AVX512VNNI and AVX512VL are enabled in the caller (trait contract).
            unsafe { _mm256_dpbusd_epi32(acc, a, b) }
        }

        #[inline(always)]
        unsafe fn dpwssd(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
            // SAFETY: AVX512VNNI and AVX512VL are enabled in the caller (trait contract).
            unsafe { _mm256_dpwssd_epi32(acc, a, b) }
        }

        #[inline(always)]
        unsafe fn dot_offset(a: __m256i, c: __m256i, b: __m256i) -> __m256i {
            // SAFETY: AVX512VNNI and AVX512VL are enabled in the caller (trait contract).
            unsafe {
                let z = _mm256_setzero_si256();
                _mm256_sub_epi32(_mm256_dpbusd_epi32(z, a, b), _mm256_dpbusd_epi32(z, c, b))
            }
        }
    }

    /// The two halves at `b[0..4]` (two little-endian IEEE halves, e.g. Q4_1's `d` and `m`)
    /// converted to `f32` in lanes 0 and 1 (lanes 2 and 3 are zero). One 32-bit load that
    /// zeroes the rest of the register: unlike a 16-bit insert, it does not depend on the
    /// register's previous contents, which would chain one block's conversion to the previous
    /// block's arithmetic in a per-block loop.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn half_pair(b: &[u8; 4]) -> __m128 {
        _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from_le_bytes(*b)))
    }

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
    ///
    /// Not for per-block loops: LLVM loads the half with a 16-bit insert (`vpinsrw`) whose other
    /// lanes come from whatever register it picks, often the loop's float accumulator, which
    /// chains each block to the previous block's multiply-add. Use [`f16_splat8`] there.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn f16_le(b: [u8; 2]) -> f32 {
        let v = _mm_cvtsi32_si128(u16::from_le_bytes(b) as i32);
        _mm_cvtss_f32(_mm_cvtph_ps(v))
    }

    /// A half (two little-endian bytes) as `f32` in all eight lanes: a 16-bit broadcast load
    /// (`vpbroadcastw`, which writes the whole register) and one conversion. For per-block
    /// loops: `_mm256_mul_ps(f16_splat8(d_x), f16_splat8(d_y))` is `d_x·d_y` in every lane (the
    /// same `f32` product as the scalar one, as ggml's `_mm256_set1_ps(d0) * _mm256_set1_ps(d1)`)
    /// with no dependency on earlier iterations, unlike a scalar conversion through
    /// [`f16_le`], whose insert merges into an arbitrary register (in a per-block loop, often
    /// the accumulator: measured 2.6× slower on Q4_1). Every lane must be used, or LLVM
    /// narrows the load back to such an insert.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn f16_splat8(b: [u8; 2]) -> __m256 {
        _mm256_cvtph_ps(_mm_set1_epi16(u16::from_le_bytes(b) as i16))
    }

    /// Eight halves (each given as its two little-endian bytes) converted to `f32` at once. The
    /// halves are packed into two 64-bit integers first, which costs far fewer vector shuffles
    /// than inserting them one by one.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn halves8(h: [[u8; 2]; 8]) -> __m256 {
        let pack =
            |q: &[[u8; 2]]| q.iter().rev().fold(0u64, |acc, b| (acc << 16) | u16::from_le_bytes(*b) as u64) as i64;
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
            _mm256_set_epi64x(0x0303_0303_0303_0303, 0x0202_0202_0202_0202, 0x0101_0101_0101_0101, 0),
        );
        // ... and keeps bit j % 8 of it.
        let select = _mm256_set1_epi64x(0x8040_2010_0804_0201_u64 as i64);
        _mm256_cmpeq_epi8(_mm256_and_si256(spread, select), select)
    }
}

/// `$vis fn $name($args) -> $ret` that runs `$body` compiled with AVX2 + FMA where the CPU has
/// them (`mul_add` an instruction instead of an `fmaf` call, and room to vectorize), and as it is
/// elsewhere: for the scalar kernels that follow one of llama.cpp's summation orders.
macro_rules! fma_kernel {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty = $body:ident) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            if crate::simd::has_avx2_fma() {
                #[target_feature(enable = "avx2,fma")]
                fn with_fma($($arg: $ty),*) -> $ret {
                    $body($($arg),*)
                }
                // SAFETY: AVX2 and FMA were detected at run time.
                return unsafe { with_fma($($arg),*) };
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use fma_kernel;

/// `$vis fn $name($args) -> $ret` that runs the generic SIMD body `x86::$body::<I: Isa>` (an
/// `#[inline(always)] unsafe fn` the invoking module's `x86` module makes visible to it) compiled
/// for AVX-512 VNNI or for AVX2 + FMA + F16C, the best the CPU has, and `$fallback` elsewhere: for
/// the kernels that take several rows per call besides each format's `dot_entry_points!`.
macro_rules! isa_kernel {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty = x86::$body:ident else $fallback:expr) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                use $crate::formats::common::x86::{Avx2, Vnni};
                #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
                fn vnni($($arg: $ty),*) -> $ret {
                    // SAFETY: this function's features (`Vnni`'s and the helpers' requirements).
                    unsafe { x86::$body::<Vnni>($($arg),*) }
                }
                #[target_feature(enable = "avx2,fma,f16c")]
                fn avx2($($arg: $ty),*) -> $ret {
                    // SAFETY: this function's features (`Avx2`'s and the helpers' requirements).
                    unsafe { x86::$body::<Avx2>($($arg),*) }
                }
                if $crate::simd::has_avx512_vnni() {
                    // SAFETY: AVX2, FMA, F16C, AVX512F/VL/BW and AVX512VNNI were detected at run time.
                    return unsafe { vnni($($arg),*) };
                }
                if $crate::simd::has_avx2_fma() {
                    // SAFETY: AVX2, FMA and F16C were detected at run time.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $fallback
        }
    };
}
pub(crate) use isa_kernel;

/// Defines `pub unsafe fn dot_avx2` and `pub unsafe fn dot_vnni`, the two `#[target_feature]`
/// instances of a dot product body `$body::<I: Isa>(w: &[u8], act: &[u8]) -> f32` (an
/// `#[inline(always)] unsafe fn` in the invoking module). See the module docs.
#[cfg(target_arch = "x86_64")]
macro_rules! dot_entry_points {
    ($body:ident) => {
        #[doc = concat!("This module's generic kernel body (`", stringify!($body), "`) compiled")]
        /// for AVX2 + FMA + F16C, with the `maddubs` + `madd` integer dot products.
        ///
        /// # Safety
        /// The CPU must support AVX2, FMA and F16C ([`crate::simd::has_avx2_fma`]).
        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn dot_avx2(w: &[u8], act: &[u8]) -> f32 {
            // SAFETY: this function is compiled with, and (by its contract) only called on a CPU
            // with, the features `Avx2`'s methods and the helpers require.
            unsafe { $body::<$crate::formats::common::x86::Avx2>(w, act) }
        }

        #[doc = concat!("This module's generic kernel body (`", stringify!($body), "`) compiled")]
        /// for AVX2 + FMA + F16C + AVX-512 (F, VL, BW, VNNI), with the `vpdpbusd` / `vpdpwssd`
        /// integer dot products on 256-bit registers. Same float operations in the same order
        /// as `dot_avx2`.
        ///
        /// # Safety
        /// The CPU must support AVX2, FMA, F16C, AVX512F, AVX512VL, AVX512BW and AVX512VNNI
        /// ([`crate::simd::has_avx512_vnni`]).
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
        pub unsafe fn dot_vnni(w: &[u8], act: &[u8]) -> f32 {
            // SAFETY: this function is compiled with, and (by its contract) only called on a CPU
            // with, the features `Vnni`'s methods and the helpers require.
            unsafe { $body::<$crate::formats::common::x86::Vnni>(w, act) }
        }
    };
}
#[cfg(target_arch = "x86_64")]
pub(crate) use dot_entry_points;

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

    /// The `Isa` building blocks against plain integer arithmetic, for both implementations.
    #[cfg(target_arch = "x86_64")]
    mod isa {
        use super::x86::{Avx2, Isa, Vnni};
        use std::arch::x86_64::*;

        /// `[dpbusd(acc, a, b), dpwssd(acc, a, b), dot_offset(a, c, b), dot_i8_i8(a, b)]`.
        type Out = [[i32; 8]; 4];

        #[inline(always)]
        unsafe fn ops<I: Isa>(acc: [i32; 8], a: [u8; 32], b: [u8; 32], c: [u8; 32]) -> Out {
            let mut out = [[0i32; 8]; 4];
            // SAFETY: called only from the two wrappers below, which enable `I`'s features and
            // are called after runtime detection; every load and store is of 32 bytes from or
            // into an array of 32 bytes.
            unsafe {
                let ld = |x: &[u8; 32]| _mm256_loadu_si256(x.as_ptr().cast());
                let acc = _mm256_loadu_si256(acc.as_ptr().cast());
                let (a, b, c) = (ld(&a), ld(&b), ld(&c));
                let r = [I::dpbusd(acc, a, b), I::dpwssd(acc, a, b), I::dot_offset(a, c, b), I::dot_i8_i8(a, b)];
                for (o, r) in out.iter_mut().zip(r) {
                    _mm256_storeu_si256(o.as_mut_ptr().cast(), r);
                }
            }
            out
        }

        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn ops_avx2(acc: [i32; 8], a: [u8; 32], b: [u8; 32], c: [u8; 32]) -> Out {
            // SAFETY: this function's features are Avx2's; its callers checked them.
            unsafe { ops::<Avx2>(acc, a, b, c) }
        }

        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
        unsafe fn ops_vnni(acc: [i32; 8], a: [u8; 32], b: [u8; 32], c: [u8; 32]) -> Out {
            // SAFETY: this function's features are Vnni's; its callers checked them.
            unsafe { ops::<Vnni>(acc, a, b, c) }
        }

        /// The exact results, in `i64` and then wrapped to `i32` as the instructions wrap.
        fn reference(acc: [i32; 8], a: [u8; 32], b: [u8; 32], c: [u8; 32]) -> Out {
            let mut out = [[0i32; 8]; 4];
            for k in 0..8 {
                let g = 4 * k..4 * k + 4;
                let busd: i64 = g.clone().map(|i| a[i] as i64 * b[i] as i8 as i64).sum();
                let ws = |x: &[u8; 32], i: usize| i16::from_le_bytes([x[2 * i], x[2 * i + 1]]);
                let wssd: i64 = (2 * k..2 * k + 2).map(|i| ws(&a, i) as i64 * ws(&b, i) as i64).sum();
                let off: i64 = g.clone().map(|i| (a[i] as i64 - c[i] as i64) * b[i] as i8 as i64).sum();
                let ii: i64 = g.map(|i| a[i] as i8 as i64 * b[i] as i8 as i64).sum();
                out[0][k] = (acc[k] as i64 + busd) as i32;
                out[1][k] = (acc[k] as i64 + wssd) as i32;
                out[2][k] = off as i32;
                out[3][k] = ii as i32;
            }
            out
        }

        struct Rng(u64);
        impl Rng {
            fn next(&mut self) -> u64 {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                self.0
            }
            fn bytes(&mut self, max: u8) -> [u8; 32] {
                // Extremes often, so saturation and −128 cases come up.
                std::array::from_fn(|_| match self.next() % 4 {
                    0 => max,
                    1 => 0x80,
                    _ => self.next() as u8,
                } & max)
            }
        }

        #[test]
        fn vnni_is_exact_and_avx2_exact_within_its_stated_ranges() {
            if !crate::simd::has_avx2_fma() {
                eprintln!("isa test skipped: no AVX2/FMA/F16C (or KILN_NO_SIMD)");
                return;
            }
            let vnni = crate::simd::has_avx512_vnni();
            if !vnni {
                eprintln!("Vnni building blocks not tested: CPU lacks AVX-512 VNNI (or KILN_NO_VNNI)");
            }
            let mut rng = Rng(0x5EED_1234_ABCD_0001);
            for round in 0..20_000 {
                let acc: [i32; 8] = std::array::from_fn(|_| rng.next() as i32 >> (round % 3 * 8));
                let (a, b, c) = (rng.bytes(0xff), rng.bytes(0xff), rng.bytes(0xff));
                let want = reference(acc, a, b, c);
                if vnni {
                    // SAFETY: VNNI features detected above.
                    let got = unsafe { ops_vnni(acc, a, b, c) };
                    assert_eq!(got, want, "vnni a={a:?} b={b:?} c={c:?} acc={acc:?}");
                }
                // AVX2 within its documented ranges: a ≤ 127 for dpbusd, a, c ≤ 63 for
                // dot_offset, and no b = −128 where a < 0 for dot_i8_i8.
                let a127 = a.map(|v| v & 0x7f);
                let (a63, c63) = (a.map(|v| v & 0x3f), c.map(|v| v & 0x3f));
                let b_ok: [u8; 32] = std::array::from_fn(|i| if a[i] >= 0x80 && b[i] == 0x80 { 0x81 } else { b[i] });
                // SAFETY: AVX2, FMA and F16C detected above.
                let (g1, g2, g3) =
                    unsafe { (ops_avx2(acc, a127, b, c), ops_avx2(acc, a63, b, c63), ops_avx2(acc, a, b_ok, c)) };
                let (r1, r2, r3) =
                    (reference(acc, a127, b, c), reference(acc, a63, b, c63), reference(acc, a, b_ok, c));
                assert_eq!(g1[0], r1[0], "avx2 dpbusd");
                // SAFETY: AVX2, FMA and F16C detected above.
                let full = unsafe { ops_avx2(acc, a, b, c) };
                assert_eq!(full[1], want[1], "avx2 dpwssd (exact for every input)");
                assert_eq!(g2[2], r2[2], "avx2 dot_offset");
                assert_eq!(g3[3], r3[3], "avx2 dot_i8_i8");
                // Where AVX2 is exact both give the same lanes.
                if vnni {
                    // SAFETY: VNNI features detected above.
                    let v = unsafe { ops_vnni(acc, a63, b_ok, c63) };
                    // SAFETY: AVX2, FMA and F16C detected above.
                    let w = unsafe { ops_avx2(acc, a63, b_ok, c63) };
                    assert_eq!(v, w, "avx2 vs vnni");
                }
            }
        }

        #[test]
        fn avx2_sign_trick_limit_and_vnni_exactness() {
            // a = −1, b = −128: the product is +128. ggml's sign trick computes
            // |a| · (b · sign a) = 1 · wrap(128) = −128; the VNNI form is exact.
            let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
            a[0] = 0xff;
            b[0] = 0x80;
            if crate::simd::has_avx2_fma() {
                // SAFETY: AVX2, FMA and F16C detected.
                assert_eq!(unsafe { ops_avx2([0; 8], a, b, [0; 32]) }[3][0], -128);
            }
            if crate::simd::has_avx512_vnni() {
                // SAFETY: VNNI features detected.
                assert_eq!(unsafe { ops_vnni([0; 8], a, b, [0; 32]) }[3][0], 128);
            } else {
                eprintln!("Vnni not tested: CPU lacks AVX-512 VNNI (or KILN_NO_VNNI)");
            }
        }
    }
}
