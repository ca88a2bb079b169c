//! Runtime CPU feature detection for the dot product kernels.
//!
//! Two environment variables, read once (the first time a kernel is chosen), turn paths off:
//! `KILN_NO_SIMD` disables every SIMD kernel (scalar only), `KILN_NO_VNNI` only the AVX-512 ones
//! (the VNNI kernels and [`has_avx512f`]'s users; so the AVX2 kernels can be run and benchmarked
//! on a CPU that has AVX-512).

/// True when the CPU has AVX2, FMA and F16C (checked once; `std` caches the answer) and the
/// `KILN_NO_SIMD` environment variable was not set when first asked. Every AVX2 kernel in this
/// crate may use all three (F16C converts the half-precision block scales and F16 rows); every
/// x86-64 CPU with AVX2 also has F16C.
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            std::env::var_os("KILN_NO_SIMD").is_none()
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// True when [`has_avx2_fma`] is, the CPU (and the OS, which must save the AVX-512 registers)
/// supports AVX512F, and `KILN_NO_VNNI` was not set when first asked: kernels on 512-bit
/// registers with AVX2 and FMA besides (kiln-model's f32 attention for grouped heads).
pub fn has_avx512f() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            has_avx2_fma()
                && std::env::var_os("KILN_NO_VNNI").is_none()
                && std::arch::is_x86_feature_detected!("avx512f")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// True when [`has_avx512f`] is and the CPU also supports AVX512VL, AVX512BW and AVX512VNNI
/// (so neither `KILN_NO_VNNI` nor `KILN_NO_SIMD` was set when first asked). The VNNI kernels
/// (`Dot::vnni`) are compiled with all of these features plus AVX2, FMA and F16C. Checked once.
pub fn has_avx512_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            has_avx512f()
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vnni")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
