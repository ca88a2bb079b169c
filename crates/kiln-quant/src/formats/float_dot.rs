//! The summation orders of llama.cpp's float dot products (F32 and F16 weights), as its AVX-512
//! build runs them — the reference build here — computed with AVX2: a 16-lane vector is two
//! 8-lane halves, and every lane rounds the same.
//!
//! - `ggml_vec_dot_f32` / `ggml_vec_dot_f16` (one activation row): steps of 64 values in four
//!   16-lane fused multiply-add accumulators, reduced pairwise (0 + 2, 1 + 3, then 0 + 1) and
//!   across lanes by `_mm512_reduce_add_ps`; the callers add the last n mod 64 products.
//! - llamafile's tinyBLAS (batches): one 16-lane fused multiply-add chain over the row, then
//!   `_mm512_reduce_add_ps`.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::common::x86::hsum_f32x8;

/// A float format read eight values at a time as `f32` lanes.
pub(crate) trait Widen8 {
    /// Bytes of eight values.
    const BYTES8: usize;
    /// # Safety
    /// `b` holds at least `BYTES8` bytes and the CPU supports AVX2, FMA and F16C.
    unsafe fn load8(b: &[u8]) -> __m256;
}

pub(crate) struct F32s;
pub(crate) struct F16s;

impl Widen8 for F32s {
    const BYTES8: usize = 32;
    #[inline(always)]
    unsafe fn load8(b: &[u8]) -> __m256 {
        debug_assert!(b.len() >= 32);
        // SAFETY: the caller's contract: 32 readable bytes; `loadu` needs no alignment.
        unsafe { _mm256_loadu_ps(b.as_ptr().cast()) }
    }
}

impl Widen8 for F16s {
    const BYTES8: usize = 16;
    #[inline(always)]
    unsafe fn load8(b: &[u8]) -> __m256 {
        debug_assert!(b.len() >= 16);
        // SAFETY: the caller's contract: 16 readable bytes, F16C.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(b.as_ptr().cast())) }
    }
}

/// A 16-lane vector as two 8-lane halves.
type V16 = [__m256; 2];

#[inline(always)]
unsafe fn fma16<T: Widen8>(x: &[u8], y: &[u8], acc: V16) -> V16 {
    let h = T::BYTES8;
    // SAFETY: the caller's contract (2 × BYTES8 bytes each, AVX2 + FMA + F16C).
    unsafe {
        [
            _mm256_fmadd_ps(T::load8(x), T::load8(y), acc[0]),
            _mm256_fmadd_ps(T::load8(&x[h..]), T::load8(&y[h..]), acc[1]),
        ]
    }
}

/// `_mm512_reduce_add_ps`: lanes i + i+8, then i + i+4, then (0 + 2) + (1 + 3).
#[inline(always)]
unsafe fn reduce16(v: V16) -> f32 {
    // SAFETY: AVX2 (the caller's contract).
    unsafe { hsum_f32x8(_mm256_add_ps(v[1], v[0])) }
}

/// `ggml_vec_dot_*`'s vector part over the first n − n mod 64 values; returns it and the number
/// of values it covered.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[inline(always)]
pub(crate) unsafe fn vec_dot<T: Widen8>(w: &[u8], act: &[u8]) -> (f32, usize) {
    let step = 8 * T::BYTES8;
    // SAFETY: AVX (the caller's contract).
    let z = unsafe { [_mm256_setzero_ps(); 2] };
    let mut acc = [z; 4];
    let mut steps = 0;
    for (x, y) in w.chunks_exact(step).zip(act.chunks_exact(step)) {
        for (j, acc) in acc.iter_mut().enumerate() {
            let o = j * 2 * T::BYTES8;
            // SAFETY: x and y hold `step` bytes; the caller's CPU features.
            *acc = unsafe { fma16::<T>(&x[o..], &y[o..], *acc) };
        }
        steps += 1;
    }
    let add = |a: V16, b: V16| -> V16 {
        // SAFETY: AVX (the caller's contract).
        unsafe { [_mm256_add_ps(a[0], b[0]), _mm256_add_ps(a[1], b[1])] }
    };
    let v = add(add(acc[0], acc[2]), add(acc[1], acc[3]));
    // SAFETY: the caller's CPU features.
    (unsafe { reduce16(v) }, steps * 64)
}

/// tinyBLAS's per-output sum over a row that is a multiple of 16 values long.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[inline(always)]
pub(crate) unsafe fn tinyblas<T: Widen8>(w: &[u8], act: &[u8]) -> f32 {
    let step = 2 * T::BYTES8;
    // SAFETY: AVX (the caller's contract).
    let mut acc = unsafe { [_mm256_setzero_ps(); 2] };
    for (x, y) in w.chunks_exact(step).zip(act.chunks_exact(step)) {
        // SAFETY: x and y hold `step` bytes; the caller's CPU features.
        acc = unsafe { fma16::<T>(x, y, acc) };
    }
    // SAFETY: the caller's CPU features.
    unsafe { reduce16(acc) }
}
