// Decoders of every weight type over its device layout (crates/kiln-cuda/src/layout.rs): one
// struct per type, written once and used by every matrix kernel (matmul.cu). Each decodes
// values exactly as kiln-quant's reference dequantizer does (same formulas, same f32 operation
// order, never an FMA).
//
// A row of k elements is cut into *chunks*; chunk c of a row decodes NG groups of 16 values,
// group g holding the contiguous elements off(c, g) .. off(c, g) + 16 of the row:
//
//   BLK   elements per block (16 for the float types: a "block" is one chunk there)
//   CPB   chunks per block; chunk c is sub-chunk c % CPB of block c / CPB
//   NG    groups of 16 values per chunk
//   SPAN  CPB consecutive-chunk runs of SPAN/(16·NG) chunks cover SPAN contiguous elements
//         (used by the tiled kernel to decode one k-tile)
//   PB/MB payload / meta bytes per block (the split of layout.rs)
//
// A chunk's payload is 16 bytes (32 for Q8_0; 16 + 16 for Q5_K and Q6_K, 16 + 16 for Q3_K),
// read with 16-byte loads, so a warp reading consecutive chunks reads contiguous memory.
//
// Compiles as plain C++ on the host too (common.cuh).
#pragma once
#include "common.cuh"

// One 2-D slab of a weight in its device layout.
struct Slab {
    const u8* w;     // payload region (the slab's first byte)
    const u8* meta;  // meta region: w + rows * nb * PB
    int k;           // elements per row
    int nb;          // blocks per row (float types: whole 16-element chunks per row)
    bool al;         // payload loads may be 16 bytes wide
};

template <class T>
KDEV Slab make_slab(const u8* w, int m, int k) {
    Slab s;
    s.w = w;
    s.k = k;
    s.nb = k / T::BLK;
    s.meta = w + (i64)m * s.nb * T::PB;
    s.al = aligned16(w) && T::aligned_rows(k);
    return s;
}

// ---- float types: stored as they are ---------------------------------------------------------

struct TF32 {
    static const int BLK = 16, CPB = 1, NG = 1, SPAN = 16, PB = 64, MB = 0, FLOAT = 1;
    static KDEV bool aligned_rows(int k) { return (k & 3) == 0; }
    static KDEV int off(int c, int g) { return 16 * c + 16 * g; }
    static KDEV float one(const Slab& s, int r, int c) {
        const u8* p = s.w + ((i64)r * s.k + c) * 4;
#ifdef KILN_GPU
        return __ldg(reinterpret_cast<const float*>(p));
#else
        float f;
        std::memcpy(&f, p, 4);
        return f;
#endif
    }
    static KDEV void decode(const Slab& s, int r, int c, float* v) {
        const u8* p = s.w + ((i64)r * s.k + 16 * c) * 4;
        if (!s.al) {
            for (int t = 0; t < 16; t++) v[t] = one(s, r, 16 * c + t);
            return;
        }
#pragma unroll
        for (int i = 0; i < 4; i++) {
            W4 q = ld16(p + 16 * i, true);
#pragma unroll
            for (int j = 0; j < 4; j++) v[4 * i + j] = bits_f32(q.w[j]);
        }
    }
};

template <int BF>
struct THalf {
    static const int BLK = 16, CPB = 1, NG = 1, SPAN = 16, PB = 32, MB = 0, FLOAT = 1;
    static KDEV bool aligned_rows(int k) { return (k & 7) == 0; }
    static KDEV int off(int c, int g) { return 16 * c + 16 * g; }
    static KDEV float cvt(u32 h) { return BF ? bf16_to_f32((u16)h) : f16_to_f32((u16)h); }
    static KDEV float one(const Slab& s, int r, int c) { return cvt(ld_u16(s.w + ((i64)r * s.k + c) * 2)); }
    static KDEV void decode(const Slab& s, int r, int c, float* v) {
        const u8* p = s.w + ((i64)r * s.k + 16 * c) * 2;
        if (!s.al) {
            for (int t = 0; t < 16; t++) v[t] = one(s, r, 16 * c + t);
            return;
        }
#pragma unroll
        for (int i = 0; i < 2; i++) {
            W4 q = ld16(p + 16 * i, true);
#pragma unroll
            for (int j = 0; j < 4; j++) {
                v[8 * i + 2 * j] = cvt(q.w[j] & 0xffff);
                v[8 * i + 2 * j + 1] = cvt(q.w[j] >> 16);
            }
        }
    }
};
typedef THalf<0> TF16;
typedef THalf<1> TBF16;

// ---- 32-element blocks: one chunk per block, values j (low nibble / byte j) and j + 16 --------

struct Q32Base {
    static const int BLK = 32, CPB = 1, NG = 2, SPAN = 32, FLOAT = 0;
    static KDEV bool aligned_rows(int) { return true; }
    static KDEV int off(int c, int g) { return 32 * c + 16 * g; }
};

struct TQ4_0 : Q32Base {
    static const int PB = 16, MB = 2;
    static KDEV void decode(const Slab& s, int r, int c, float* v) {
        i64 b = (i64)r * s.nb + c;
        W4 q = ld16(s.w + b * PB, s.al);
        float d = f16_to_f32((u16)ld_u16(s.meta + b * MB));
#pragma unroll
        for (int j = 0; j < 16; j++) {
            u32 x = byte_of(q, j);
            v[j] = mul_rn((float)((int)(x & 15) - 8), d);
            v[j + 16] = mul_rn((float)((int)(x >> 4) - 8), d);
        }
    }
};

struct TQ4_1 : Q32Base {
    static const int PB = 16, MB = 4;
    static KDEV void decode(const Slab& s, int r, int c, float* v) {
        i64 b = (i64)r * s.nb + c;
        W4 q = ld16(s.w + b * PB, s.al);
        float d = f16_to_f32((u16)ld_u16(s.meta + b * MB));
        float m = f16_to_f32((u16)ld_u16(s.meta + b * MB + 2));
#pragma unroll
        for (int j = 0; j < 16; j++) {
            u32 x = byte_of(q, j);
            v[j] = add_rn(mul_rn((float)(x & 15), d), m);
            v[j + 16] = add_rn(mul_rn((float)(x >> 4), d), m);
        }
    }
};

// Q5_0 / Q5_1: the fifth bit of value j is bit j of qh, of value j + 16 bit j + 16.
template <int HAS_MIN>
struct TQ5 : Q32Base {
    static const int PB = 16, MB = HAS_MIN ? 8 : 6;
    static KDEV void decode(const Slab& s, int r, int c, float* v) {
        i64 b = (i64)r * s.nb + c;
        W4 q = ld16(s.w + b * PB, s.al);
        const u8* mp = s.meta + b * MB;
        float d = f16_to_f32((u16)ld_u16(mp));
        float m = HAS_MIN ? f16_to_f32((u16)ld_u16(mp + 2)) : 0.0f;
        const u8* hp = mp + (HAS_MIN ? 4 : 2);
        u32 qh = ld_u16(hp) | (ld_u16(hp + 2) << 16);
#pragma unroll
        for (int j = 0; j < 16; j++) {
            u32 x = byte_of(q, j);
            int x0 = (int)((x & 15) | (((qh >> j) << 4) & 0x10));
            int x1 = (int)((x >> 4) | ((qh >> (j + 12)) & 0x10));
            if (HAS_MIN) {
                v[j] = add_rn(mul_rn((float)x0, d), m);
                v[j + 16] = add_rn(mul_rn((float)x1, d), m);
            } else {
                v[j] = mul_rn((float)(x0 - 16), d);
                v[j + 16] = mul_rn((float)(x1 - 16), d);
            }
        }
    }
};
typedef TQ5<0> TQ5_0;
typedef TQ5<1> TQ5_1;

struct TQ8_0 : Q32Base {
    static const int PB = 32, MB = 2;
    static KDEV void decode(const Slab& s, int r, int c, float* v) {
        i64 b = (i64)r * s.nb + c;
        W4 q0 = ld16(s.w + b * PB, s.al);
        W4 q1 = ld16(s.w + b * PB + 16, s.al);
        float d = f16_to_f32((u16)ld_u16(s.meta + b * MB));
#pragma unroll
        for (int j = 0; j < 16; j++) {
            v[j] = mul_rn((float)(int)(signed char)byte_of(q0, j), d);
            v[j + 16] = mul_rn((float)(int)(signed char)byte_of(q1, j), d);
        }
    }
};

// MXFP4: ggml's doubled E2M1 table {0,1,2,3,4,6,8,12} (negated for codes 8..15, code 8 is +0)
// times 2^(e − 128).
KDEV int mxfp4_val(u32 code) {
    int mag = (int)((0xC8643210u >> ((code & 7) << 2)) & 15);
    return (code & 8) ? -mag : mag;
}

struct TMXFP4 : Q32Base {
    static const int PB = 16, MB = 1;
    static KDEV void decode(const Slab& s, int r, int c, float* v) {
        i64 b = (i64)r * s.nb + c;
        W4 q = ld16(s.w + b * PB, s.al);
        float d = e8m0_half(ld8(s.meta + b * MB));
#pragma unroll
        for (int j = 0; j < 16; j++) {
            u32 x = byte_of(q, j);
            v[j] = mul_rn((float)mxfp4_val(x & 15), d);
            v[j + 16] = mul_rn((float)mxfp4_val(x >> 4), d);
        }
    }
};

// ---- K-quants: 256-element super-blocks --------------------------------------------------------

// get_scale_min_k4 over the 12 packed bytes sc[] (as a W4 of meta bytes 4..16 offset by 4).
KDEV void scale_min_k4(int j, const W4& m, u32* sc, u32* mn) {
    // meta bytes: 0..1 d, 2..3 dmin, 4..15 scales; scale byte i is meta byte 4 + i.
    if (j < 4) {
        *sc = byte_of(m, 4 + j) & 63;
        *mn = byte_of(m, 8 + j) & 63;
    } else {
        *sc = (byte_of(m, 8 + j) & 0xF) | ((byte_of(m, j) >> 6) << 4);
        *mn = (byte_of(m, 8 + j) >> 4) | ((byte_of(m, 4 + j) >> 6) << 4);
    }
}

// Q4_K / Q5_K: chunk sub = 2i + h (i = 0..4, h = 0..2) takes qs[32i + 16h .. +16]: its low
// nibbles are values 64i + 16h + t of the block (sub-block 2i), its high nibbles 64i + 32 + 16h + t
// (sub-block 2i + 1). Q5_K's fifth bits are bits 2i and 2i + 1 of qh[16h + t].
template <int Q5>
struct TQK45 {
    static const int BLK = 256, CPB = 8, NG = 2, SPAN = 64, FLOAT = 0;
    static const int PB = Q5 ? 160 : 128, MB = 16;
    static KDEV bool aligned_rows(int) { return true; }
    static KDEV int off(int c, int g) {
        int sub = c & 7;
        return 256 * (c >> 3) + 64 * (sub >> 1) + 16 * (sub & 1) + 32 * g;
    }
    static KDEV void decode(const Slab& s, int r, int c, float* v) {
        i64 b = (i64)r * s.nb + (c >> 3);
        int sub = c & 7, i = sub >> 1, h = sub & 1;
        const u8* p = s.w + b * PB;
        W4 q = ld16(p + (Q5 ? 32 : 0) + 16 * sub, s.al);
        W4 qh;
        if (Q5) qh = ld16(p + 16 * h, s.al);
        W4 m = ld16(s.meta + b * MB, s.al);
        float d = f16_to_f32((u16)(m.w[0] & 0xffff));
        float dmin = f16_to_f32((u16)(m.w[0] >> 16));
        u32 sc0, m0, sc1, m1;
        scale_min_k4(2 * i, m, &sc0, &m0);
        scale_min_k4(2 * i + 1, m, &sc1, &m1);
        float d1 = mul_rn(d, (float)sc0), mm1 = mul_rn(dmin, (float)m0);
        float d2 = mul_rn(d, (float)sc1), mm2 = mul_rn(dmin, (float)m1);
#pragma unroll
        for (int t = 0; t < 16; t++) {
            u32 x = byte_of(q, t);
            u32 lo = x & 15, hi = x >> 4;
            if (Q5) {
                u32 hb = byte_of(qh, t);
                lo |= ((hb >> (2 * i)) & 1) << 4;
                hi |= ((hb >> (2 * i + 1)) & 1) << 4;
            }
            v[t] = sub_rn(mul_rn(d1, (float)lo), mm1);
            v[16 + t] = sub_rn(mul_rn(d2, (float)hi), mm2);
        }
    }
};
typedef TQK45<0> TQ4_K;
typedef TQK45<1> TQ5_K;

// Q6_K: chunk sub = 4hh + g takes ql[64hh + 16g .. +16] and qh[32hh + 16(g & 1) .. +16]; with
// tl = g >> 1 and l = 16(g & 1) + t, the low nibbles are values 128hh + 32tl + l (high bits at
// bit 2tl of qh) and the high nibbles values 128hh + 32(tl + 2) + l (bits 2tl + 4).
struct TQ6_K {
    static const int BLK = 256, CPB = 8, NG = 2, SPAN = 128, PB = 192, MB = 18, FLOAT = 0;
    static KDEV bool aligned_rows(int) { return true; }
    static KDEV int off(int c, int g) {
        int sub = c & 7, hh = sub >> 2, gg = sub & 3;
        return 256 * (c >> 3) + 128 * hh + 32 * (gg >> 1) + 16 * (gg & 1) + 64 * g;
    }
    static KDEV void decode(const Slab& s, int r, int c, float* v) {
        i64 b = (i64)r * s.nb + (c >> 3);
        int sub = c & 7, hh = sub >> 2, gg = sub & 3, tl = gg >> 1;
        const u8* p = s.w + b * PB;
        W4 ql = ld16(p + 16 * sub, s.al);
        W4 qh = ld16(p + 128 + 32 * hh + 16 * (gg & 1), s.al);
        const u8* mp = s.meta + b * MB;
        int si = 8 * hh + 2 * tl + (gg & 1);
        float d = f16_to_f32((u16)ld_u16(mp + 16));
        float dl0 = mul_rn(d, (float)(int)(signed char)ld8(mp + si));
        float dl1 = mul_rn(d, (float)(int)(signed char)ld8(mp + si + 4));
#pragma unroll
        for (int t = 0; t < 16; t++) {
            u32 x = byte_of(ql, t), h = byte_of(qh, t);
            int lo = (int)((x & 15) | (((h >> (2 * tl)) & 3) << 4)) - 32;
            int hi = (int)((x >> 4) | (((h >> (2 * tl + 4)) & 3) << 4)) - 32;
            v[t] = mul_rn(dl0, (float)lo);
            v[16 + t] = mul_rn(dl1, (float)hi);
        }
    }
};

// Q2_K / Q3_K: chunk sub = 2n + h (n = 0..2, h = 0..2) takes qs[32n + 16h .. +16]; group j
// (0..4) is bits 2j..2j + 2 of those bytes: values 128n + 32j + 16h + t, scale 8n + 2j + h.
// Q3_K subtracts 4 unless bit 4n + j of hmask[16h + t] is set.
KDEV int q2q3_off(int c, int g) {
    int sub = c & 3;
    return 256 * (c >> 2) + 128 * (sub >> 1) + 32 * g + 16 * (sub & 1);
}

struct TQ2_K {
    static const int BLK = 256, CPB = 4, NG = 4, SPAN = 128, PB = 64, MB = 20, FLOAT = 0;
    static KDEV bool aligned_rows(int) { return true; }
    static KDEV int off(int c, int g) { return q2q3_off(c, g); }
    static KDEV void decode(const Slab& s, int r, int c, float* v) {
        i64 b = (i64)r * s.nb + (c >> 2);
        int sub = c & 3, n = sub >> 1, h = sub & 1;
        W4 q = ld16(s.w + b * PB + 16 * sub, s.al);
        const u8* mp = s.meta + b * MB;
        float d = f16_to_f32((u16)ld_u16(mp + 16));
        float dmin = f16_to_f32((u16)ld_u16(mp + 18));
#pragma unroll
        for (int j = 0; j < 4; j++) {
            u32 sc = ld8(mp + 8 * n + 2 * j + h);
            float dl = mul_rn(d, (float)(sc & 15));
            float ml = mul_rn(dmin, (float)(sc >> 4));
#pragma unroll
            for (int t = 0; t < 16; t++) v[16 * j + t] = sub_rn(mul_rn(dl, (float)((byte_of(q, t) >> (2 * j)) & 3)), ml);
        }
    }
};

struct TQ3_K {
    static const int BLK = 256, CPB = 4, NG = 4, SPAN = 128, PB = 96, MB = 14, FLOAT = 0;
    static KDEV bool aligned_rows(int) { return true; }
    static KDEV int off(int c, int g) { return q2q3_off(c, g); }
    static KDEV void decode(const Slab& s, int r, int c, float* v) {
        i64 b = (i64)r * s.nb + (c >> 2);
        int sub = c & 3, n = sub >> 1, h = sub & 1;
        const u8* p = s.w + b * PB;
        W4 q = ld16(p + 32 + 16 * sub, s.al);
        W4 hm = ld16(p + 16 * h, s.al);
        const u8* mp = s.meta + b * MB;
        float d = f16_to_f32((u16)ld_u16(mp + 12));
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int si = 8 * n + 2 * j + h;
            u32 lo4 = si < 8 ? (ld8(mp + si) & 15) : (ld8(mp + si - 8) >> 4);
            u32 hi2 = (ld8(mp + 8 + (si & 3)) >> (2 * (si >> 2))) & 3;
            float dl = mul_rn(d, (float)((int)(lo4 | (hi2 << 4)) - 32));
            int bit = 4 * n + j;
#pragma unroll
            for (int t = 0; t < 16; t++) {
                int x = (int)((byte_of(q, t) >> (2 * j)) & 3) - (((byte_of(hm, t) >> bit) & 1) ? 0 : 4);
                v[16 * j + t] = mul_rn(dl, (float)x);
            }
        }
    }
};
