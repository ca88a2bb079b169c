//! Runtime CPU feature detection for the dot product kernels.

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
