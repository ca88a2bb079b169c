//! GGML tensor block formats: layouts, dequantization, ggml's reference quantizers, and the CPU dot
//! products the inference path uses.
//!
//! Every format is one [`TypeTraits`] entry in a single table, as ggml keeps its `type_traits`:
//! adding a format is adding one entry. [`GgmlType`] and its [`Layout`] cover every type a GGUF
//! file may name; [`traits`] returns the arithmetic for the types this crate computes with.
//!
//! ```
//! use kiln_quant::{GgmlType, dequantize, quantize, vec_dot, quantize_activations};
//!
//! // One Q8_0 block: 32 values, 34 bytes.
//! let x: Vec<f32> = (0..32).map(|i| i as f32 - 16.0).collect();
//! let mut q = vec![0u8; GgmlType::Q8_0.row_bytes(32).unwrap() as usize];
//! quantize(GgmlType::Q8_0, &x, &mut q).unwrap();
//! let mut back = vec![0f32; 32];
//! dequantize(GgmlType::Q8_0, &q, &mut back).unwrap();
//! assert!(back.iter().zip(&x).all(|(a, b)| (a - b).abs() <= 16.0 / 127.0));
//!
//! // Dot product of the Q8_0 row with activations in the format Q8_0 pairs with.
//! let act = quantize_activations(GgmlType::Q8_0, &x).unwrap();
//! let dot = vec_dot(GgmlType::Q8_0, &q, &act).unwrap();
//! let exact: f32 = x.iter().map(|v| v * v).sum();
//! assert!((dot - exact).abs() / exact < 1e-2);
//! ```

mod error;
pub mod formats;
pub mod mxfp4;
pub mod simd;
mod types;

/// Random test inputs shared by the unit tests.
#[cfg(test)]
pub(crate) mod test_rng {
    /// A splitmix64 stream: test bytes that reach every code and scale.
    pub(crate) fn splitmix64(mut state: u64) -> impl FnMut() -> u64 {
        move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let z = (state ^ (state >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
    }

    /// `count` rows of `values` values from `next` (times `scale`), each quantized by `quantize`
    /// into `row_bytes` bytes.
    pub(crate) fn quantized_rows(
        next: &mut impl FnMut() -> f32,
        count: usize,
        values: usize,
        scale: f32,
        row_bytes: usize,
        quantize: fn(&[f32], &mut [u8]),
    ) -> Vec<Vec<u8>> {
        (0..count)
            .map(|_| {
                let x: Vec<f32> = (0..values).map(|_| next() * scale).collect();
                let mut q = vec![0u8; row_bytes];
                quantize(&x, &mut q);
                q
            })
            .collect()
    }

    /// Uniform values in [−1, 1) from [`splitmix64`].
    pub(crate) fn uniform(seed: u64) -> impl FnMut() -> f32 {
        let mut next = splitmix64(seed);
        move || (next() >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0
    }
}

pub use error::QuantError;
pub use types::{GgmlType, Layout, QK_K};

/// A dot product kernel: `(weight row bytes, activation row bytes) -> f32`. Both slices hold the
/// same number of elements as whole blocks of their own types; callers go through [`vec_dot`] or
/// [`TypeTraits::dot`], which check that.
pub type DotFn = fn(&[u8], &[u8]) -> f32;

/// The same kernel compiled for a set of CPU features (see [`Dot`]). Calling it on a CPU without
/// them is undefined behaviour; [`TypeTraits::dot`] only calls it after runtime detection.
pub type UnsafeDotFn = unsafe fn(&[u8], &[u8]) -> f32;

/// Dot product kernels of one weight type against its activation type.
///
/// The quantized formats write their SIMD kernel once, generic over the integer dot-product
/// instructions, and instantiate it for both x86 feature sets (`formats::common` explains how).
/// On inputs where the AVX2 kernel's integer sums are exact (every input, except Q8_0 weights
/// `< 0` against activation bytes of −128, which no quantizer writes for finite values) the VNNI
/// kernel returns the same bits as the AVX2 one; it is exact on every input.
#[derive(Clone, Copy)]
pub struct Dot {
    /// Portable implementation; always present and always tested.
    pub scalar: DotFn,
    /// AVX2 + FMA + F16C implementation, where one exists (x86_64 only); requires
    /// [`simd::has_avx2_fma`].
    pub avx2: Option<UnsafeDotFn>,
    /// AVX-512 VNNI implementation (`vpdpbusd` / `vpdpwssd` on 256-bit registers, compiled with
    /// AVX2, FMA, F16C, AVX512F, AVX512VL, AVX512BW and AVX512VNNI), where one exists (x86_64,
    /// the integer-quantized formats); requires [`simd::has_avx512_vnni`].
    pub vnni: Option<UnsafeDotFn>,
}

/// A quantizer: `f32` values (whole blocks) into the bytes of a type.
pub type QuantizeFn = fn(&[f32], &mut [u8]);

/// Everything kiln knows how to compute for one type: one row of ggml's `type_traits`.
pub struct TypeTraits {
    pub ty: GgmlType,
    /// Dequantize whole blocks: `src.len() == n / block_elems * block_bytes`, `dst.len() == n`.
    pub dequantize: fn(&[u8], &mut [f32]),
    /// ggml's reference quantizer (`quantize_row_*_ref`), bit for bit, where one exists.
    pub quantize: Option<QuantizeFn>,
    /// ggml-cpu's activation quantizer (`type_traits_cpu[t].from_float`), where it rounds
    /// differently from the reference one: for Q8_0 and Q8_1 the x86 SIMD code computes
    /// `id = 127 / amax` and rounds ties to even. `None`: `from_float` is `quantize`.
    pub from_float: Option<QuantizeFn>,
    /// The format activations are quantized to before a dot product with this type (ggml's
    /// `vec_dot_type`: Q8_0 for Q4_0/Q5_0/Q8_0/MXFP4, Q8_1 for Q4_1/Q5_1, Q8_K for K-quants,
    /// the type itself for F32/F16/BF16).
    pub vec_dot_type: GgmlType,
    /// Dot product of a row of this type with a row of `vec_dot_type`, where one exists.
    pub vec_dot: Option<Dot>,
}

impl TypeTraits {
    /// Runs the fastest dot kernel this CPU supports: VNNI, else AVX2, else scalar. Slices must
    /// be validated by the caller (see [`vec_dot`] for the checked entry point).
    #[inline]
    pub fn dot(&self, w: &[u8], act: &[u8]) -> Option<f32> {
        let d = self.vec_dot.as_ref()?;
        if let Some(f) = d.vnni
            && simd::has_avx512_vnni()
        {
            // SAFETY: AVX2, FMA, F16C, AVX512F/VL/BW and AVX512VNNI were detected at run time.
            return Some(unsafe { f(w, act) });
        }
        if let Some(f) = d.avx2
            && simd::has_avx2_fma()
        {
            // SAFETY: AVX2, FMA and F16C were detected at run time.
            return Some(unsafe { f(w, act) });
        }
        Some((d.scalar)(w, act))
    }
}

static TABLE: &[&TypeTraits] = &[
    &formats::f32::TRAITS,
    &formats::f16::TRAITS,
    &formats::bf16::TRAITS,
    &formats::q4_0::TRAITS,
    &formats::q4_1::TRAITS,
    &formats::q5_0::TRAITS,
    &formats::q5_1::TRAITS,
    &formats::q8_0::TRAITS,
    &formats::q8_1::TRAITS,
    &formats::q2_k::TRAITS,
    &formats::q3_k::TRAITS,
    &formats::q4_k::TRAITS,
    &formats::q5_k::TRAITS,
    &formats::q6_k::TRAITS,
    &formats::q8_k::TRAITS,
    &mxfp4::TRAITS,
];

/// The arithmetic for `ty`, or `None` if kiln does not compute with that type.
pub fn traits(ty: GgmlType) -> Option<&'static TypeTraits> {
    TABLE.iter().copied().find(|t| t.ty == ty)
}

/// All types kiln computes with.
pub fn supported_types() -> impl Iterator<Item = GgmlType> {
    TABLE.iter().map(|t| t.ty)
}

fn checked_traits(ty: GgmlType) -> Result<&'static TypeTraits, QuantError> {
    traits(ty).ok_or(QuantError::Unsupported { ty, op: "arithmetic" })
}

/// Checks that `bytes` holds exactly `n` elements of `ty`.
fn check_row(ty: GgmlType, n: usize, bytes: usize) -> Result<(), QuantError> {
    let want = ty.row_bytes(n as u64)?;
    if want != bytes as u64 {
        return Err(QuantError::Length { ty, n, expected: want, actual: bytes as u64 });
    }
    Ok(())
}

/// Dequantizes `src` (whole blocks of `ty`) into `dst`; `dst.len()` gives the element count.
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    let t = checked_traits(ty)?;
    check_row(ty, dst.len(), src.len())?;
    (t.dequantize)(src, dst);
    Ok(())
}

/// Quantizes `src` into `dst` with ggml's reference quantizer for `ty`.
pub fn quantize(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    let t = checked_traits(ty)?;
    let q = t.quantize.ok_or(QuantError::Unsupported { ty, op: "quantize" })?;
    check_row(ty, src.len(), dst.len())?;
    q(src, dst);
    Ok(())
}

/// Quantizes activations `x` into the format that weights of type `weight_ty` take in a dot
/// product (their `vec_dot_type`), the way ggml-cpu does it before a matrix product
/// ([`TypeTraits::from_float`], else the reference quantizer).
pub fn quantize_activations(weight_ty: GgmlType, x: &[f32]) -> Result<Vec<u8>, QuantError> {
    let act_ty = checked_traits(weight_ty)?.vec_dot_type;
    let t = checked_traits(act_ty)?;
    let q = t.from_float.or(t.quantize).ok_or(QuantError::Unsupported { ty: act_ty, op: "quantize" })?;
    let mut out = vec![0u8; act_ty.row_bytes(x.len() as u64)? as usize];
    check_row(act_ty, x.len(), out.len())?;
    q(x, &mut out);
    Ok(out)
}

/// Dot product of one weight row of `ty` with activations already in `ty`'s `vec_dot_type`.
pub fn vec_dot(ty: GgmlType, w: &[u8], act: &[u8]) -> Result<f32, QuantError> {
    let t = checked_traits(ty)?;
    let l = ty.layout();
    if !w.len().is_multiple_of(l.block_bytes) {
        return Err(QuantError::Length {
            ty,
            n: w.len() / l.block_bytes * l.block_elems,
            expected: (w.len() / l.block_bytes * l.block_bytes) as u64,
            actual: w.len() as u64,
        });
    }
    let n = w.len() / l.block_bytes * l.block_elems;
    check_row(t.vec_dot_type, n, act.len())?;
    t.dot(w, act).ok_or(QuantError::Unsupported { ty, op: "vec_dot" })
}
