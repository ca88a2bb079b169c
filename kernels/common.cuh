// Shared helpers for every kernel: no system headers on the device (NVRTC compiles these
// without the CUDA toolkit's headers). The same text compiles as plain C++ on the host (for the
// decode tests in crates/kiln-cuda/tests/decode_host.rs): device-only pieces sit behind KILN_GPU.
#pragma once

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define KILN_GPU 1
#define KDEV __device__ __forceinline__
#define KRESTRICT __restrict__
#else
#include <cstring>
#define KDEV inline
#define KRESTRICT
#endif

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef long long i64;
typedef unsigned long long u64;

// Exact IEEE half -> float (NaN payloads, infinities and subnormals included).
KDEV float f16_to_f32(u16 h) {
#ifdef KILN_GPU
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
#else
    u32 sign = (u32)(h & 0x8000) << 16;
    u32 e = (h >> 10) & 0x1f, m = h & 0x3ff, bits;
    if (e == 0x1f) {
        bits = sign | 0x7f800000u | (m << 13) | (m ? 0x00400000u : 0);
    } else if (e != 0) {
        bits = sign | ((e + 112) << 23) | (m << 13);
    } else if (m == 0) {
        bits = sign;
    } else {
        // Subnormal half: normalise.
        int sh = 0;
        while (!(m & 0x400)) { m <<= 1; sh++; }
        m &= 0x3ff;
        bits = sign | ((u32)(113 - sh) << 23) | (m << 13);
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
#endif
}

KDEV float bits_f32(u32 b) {
#ifdef KILN_GPU
    return __int_as_float((int)b);
#else
    float f;
    std::memcpy(&f, &b, 4);
    return f;
#endif
}

// bfloat16 is the top half of an f32.
KDEV float bf16_to_f32(u16 h) { return bits_f32((u32)h << 16); }

// ggml_e8m0_to_fp32_half: 2^(e - 128) built from bits (subnormal for e = 0, 1).
KDEV float e8m0_half(u32 e) { return bits_f32(e < 2 ? (0x00200000u << e) : ((e - 1) << 23)); }

// Arithmetic that is never contracted into an FMA, so decoded values equal the CPU reference's
// bit for bit (the reference multiplies, then adds, in f32).
KDEV float mul_rn(float a, float b) {
#ifdef KILN_GPU
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}
KDEV float add_rn(float a, float b) {
#ifdef KILN_GPU
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}
KDEV float sub_rn(float a, float b) {
#ifdef KILN_GPU
    return __fsub_rn(a, b);
#else
    return a - b;
#endif
}

// 16 bytes as four little-endian words.
struct W4 {
    u32 w[4];
};

KDEV u32 byte_of(const W4& q, int j) { return (q.w[j >> 2] >> (8 * (j & 3))) & 0xffu; }

// 16 bytes at p: one 16-byte load when `al` (p is 16-byte aligned), else byte loads.
KDEV W4 ld16(const u8* p, bool al) {
    W4 r;
#ifdef KILN_GPU
    if (al) {
        uint4 v = __ldg(reinterpret_cast<const uint4*>(p));
        r.w[0] = v.x;
        r.w[1] = v.y;
        r.w[2] = v.z;
        r.w[3] = v.w;
        return r;
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        r.w[i] = (u32)__ldg(p + 4 * i) | ((u32)__ldg(p + 4 * i + 1) << 8) | ((u32)__ldg(p + 4 * i + 2) << 16) |
                 ((u32)__ldg(p + 4 * i + 3) << 24);
    }
#else
    (void)al;
    std::memcpy(r.w, p, 16);
#endif
    return r;
}

KDEV u32 ld8(const u8* p) {
#ifdef KILN_GPU
    return __ldg(p);
#else
    return *p;
#endif
}

// Little-endian u16 at an even address.
KDEV u32 ld_u16(const u8* p) {
#ifdef KILN_GPU
    return __ldg(reinterpret_cast<const unsigned short*>(p));
#else
    u16 v;
    std::memcpy(&v, p, 2);
    return v;
#endif
}

// Four floats at p: one 16-byte load when `al`, else four.
struct F4 {
    float v[4];
};
KDEV F4 ld_f4(const float* p, bool al) {
    F4 r;
#ifdef KILN_GPU
    if (al) {
        float4 v = __ldg(reinterpret_cast<const float4*>(p));
        r.v[0] = v.x;
        r.v[1] = v.y;
        r.v[2] = v.z;
        r.v[3] = v.w;
        return r;
    }
#pragma unroll
    for (int i = 0; i < 4; i++) r.v[i] = __ldg(p + i);
#else
    (void)al;
    std::memcpy(r.v, p, 16);
#endif
    return r;
}

KDEV bool aligned16(const void* p) { return ((u64)p & 15) == 0; }
