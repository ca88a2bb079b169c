// gen_fixtures.c — writes the ggml oracle fixtures that tests/ggml_oracle.rs reads.
//
// Everything expected in a fixture is computed by ggml (llama.cpp commit 0c1e570, as vendored in
// llama-cpp-python 0.3.36) through its public API; this program only chooses the inputs and
// writes the files. See README.md next to it for the build command and the file format.
//
//   dequant: ggml_get_type_traits(t)->to_float            (libggml-base; Q8_K: dequantize_row_q8_K)
//   quant:   ggml_get_type_traits(t)->from_float_ref      (libggml-base; Q8_K: quantize_row_q8_K_ref)
//   actq:    ggml_get_type_traits_cpu(t)->from_float       (libggml-cpu) and the _ref bytes beside it
//   dot:     ggml_get_type_traits_cpu(t)->vec_dot          (libggml-cpu), activations quantized by
//            ggml_get_type_traits_cpu(vec_dot_type)->from_float
//
// Inputs come from a fixed-seed splitmix64 generator and only IEEE +,-,*,/ and exact scalings (no
// libm), so the inputs, and the dequant/quant/actq outputs, are the same on every x86-64 machine.
// The dot results come from whatever SIMD path libggml-cpu was compiled for (-march=native in
// build_llamacpp.sh), so dot.bin files may differ in low bits on another CPU; the Rust test
// compares dots with a tolerance for that reason.
//
// usage: gen_fixtures OUT_DIR

#include "ggml.h"
#include "ggml-cpu.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Exported by libggml-base (declared in the internal ggml-quants.h, GGML_API); Q8_K has no entry
// in the public type_traits table, so it is called by name.
void quantize_row_q8_K_ref(const float * x, void * y, int64_t k);
void dequantize_row_q8_K(const void * x, float * y, int64_t k);

enum { KIND_DEQUANT = 1, KIND_QUANT = 2, KIND_DOT = 3, KIND_ACTQ = 4 };
static const char * KIND_NAME[] = { "", "dequant", "quant", "dot", "actq" };

// ---------------------------------------------------------------------------------------------
// deterministic random numbers (splitmix64), no libm

static uint64_t rng_state;
static void seed(uint64_t s) { rng_state = s; }
static uint64_t next_u64(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static uint32_t next_u32(void) { return (uint32_t)(next_u64() >> 32); }
static uint32_t below(uint32_t n) { return (uint32_t)(((next_u64() >> 32) * (uint64_t)n) >> 32); }
// uniform in [0, 1)
static double unif(void) { return (double)(next_u64() >> 11) * (1.0 / 9007199254740992.0); }
// approximately standard normal: Irwin-Hall sum of 12 uniforms minus 6 (no libm)
static double normal(void) {
    double s = 0;
    for (int i = 0; i < 12; i++) s += unif();
    return s - 6.0;
}
// exact power of two
static double pow2(int e) { return ldexp(1.0, e); }
// 10^(integer in [lo, hi]) as a product of exact decimals; deterministic
static double pow10i(int e) {
    double r = 1.0;
    if (e >= 0) for (int i = 0; i < e; i++) r *= 10.0;
    else for (int i = 0; i < -e; i++) r /= 10.0;
    return r;
}

static float f32_from_bits(uint32_t b) { float f; memcpy(&f, &b, 4); return f; }
static uint32_t f32_bits(float f) { uint32_t b; memcpy(&b, &f, 4); return b; }

// a random finite f16 bit pattern (any sign, normal or subnormal or zero)
static uint16_t rand_finite_f16(void) {
    for (;;) {
        uint16_t h = (uint16_t)next_u32();
        if ((h & 0x7C00) != 0x7C00) return h;
    }
}
// a random finite f16 in a "sane" range: |x| in [2^-14, 2^2), random sign
static uint16_t rand_sane_f16(void) {
    // exponent field 1..16 (2^-14 .. 2^1), random mantissa
    uint16_t e = (uint16_t)(1 + below(16));
    return (uint16_t)(((next_u32() & 1) << 15) | (e << 10) | (next_u32() & 0x3FF));
}
// a random finite f32 bit pattern
static uint32_t rand_finite_f32_bits(void) {
    for (;;) {
        uint32_t b = next_u32();
        if ((b & 0x7F800000u) != 0x7F800000u) return b;
    }
}
static void put_u16(uint8_t * p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put_u32(uint8_t * p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }

// ---------------------------------------------------------------------------------------------
// fixture writer: see README.md for the format

typedef struct {
    FILE * f;
    char path[1024];
    long count_pos;
    uint32_t n_records, n_fields;
} writer;

static void w_u32(FILE * f, uint32_t v) { uint8_t b[4]; put_u32(b, v); fwrite(b, 1, 4, f); }

static void w_open(writer * w, const char * dir, enum ggml_type t, int kind, enum ggml_type aux, uint32_t n_fields) {
    snprintf(w->path, sizeof w->path, "%s/%s.%s.bin", dir, ggml_type_name(t), KIND_NAME[kind]);
    w->f = fopen(w->path, "wb");
    if (!w->f) { perror(w->path); exit(1); }
    fwrite("KILNGGML", 1, 8, w->f);
    w_u32(w->f, 1);            // version
    w_u32(w->f, (uint32_t)kind);
    w_u32(w->f, (uint32_t)t);
    w_u32(w->f, (uint32_t)aux);
    w->count_pos = ftell(w->f);
    w_u32(w->f, 0);            // n_records, patched on close
    w_u32(w->f, n_fields);
    w->n_records = 0;
    w->n_fields = n_fields;
}
// fields: n_fields pairs of (pointer, byte length)
static void w_record(writer * w, const char * label, uint32_t n_elems, const void * const * ptrs, const size_t * lens) {
    uint32_t ll = (uint32_t)strlen(label);
    w_u32(w->f, ll);
    fwrite(label, 1, ll, w->f);
    w_u32(w->f, n_elems);
    for (uint32_t i = 0; i < w->n_fields; i++) {
        w_u32(w->f, (uint32_t)lens[i]);
        fwrite(ptrs[i], 1, lens[i], w->f);
    }
    w->n_records++;
}
static void w_close(writer * w) {
    fseek(w->f, w->count_pos, SEEK_SET);
    w_u32(w->f, w->n_records);
    fseek(w->f, 0, SEEK_END);
    long sz = ftell(w->f);
    fclose(w->f);
    printf("  %-40s %4u records %8ld bytes\n", w->path, w->n_records, sz);
}

// ---------------------------------------------------------------------------------------------
// ggml entry points, with the two Q8_K gaps filled by the exported row functions

static void ggml_to_float(enum ggml_type t, const void * src, float * dst, int64_t n) {
    if (t == GGML_TYPE_F32) { memcpy(dst, src, (size_t)n * 4); return; } // ggml has no to_float for F32: bytes are the values
    if (t == GGML_TYPE_Q8_K) { dequantize_row_q8_K(src, dst, n); return; }
    if (t == GGML_TYPE_Q8_1) { // ggml defines no dequantize for Q8_1; d * q as its vec_dot reads it
        const uint8_t * p = src;
        for (int64_t b = 0; b < n / 32; b++, p += 36) {
            uint16_t h; memcpy(&h, p, 2);
            float d = ggml_fp16_to_fp32(h);
            for (int j = 0; j < 32; j++) dst[b * 32 + j] = (float)(int8_t)p[4 + j] * d;
        }
        return;
    }
    const struct ggml_type_traits * tr = ggml_get_type_traits(t);
    if (!tr->to_float) { fprintf(stderr, "no to_float for %s\n", ggml_type_name(t)); exit(1); }
    tr->to_float(src, dst, n);
}
static void ggml_from_float_ref(enum ggml_type t, const float * src, void * dst, int64_t n) {
    if (t == GGML_TYPE_Q8_K) { quantize_row_q8_K_ref(src, dst, n); return; }
    const struct ggml_type_traits * tr = ggml_get_type_traits(t);
    if (!tr->from_float_ref) { fprintf(stderr, "no from_float_ref for %s\n", ggml_type_name(t)); exit(1); }
    tr->from_float_ref(src, dst, n);
}


// Runs a quantizer twice, into a buffer pre-filled with 0xAA and into one pre-filled with 0x00,
// and keeps the second. Bytes that differ between the two were not written by ggml (quantize_row_
// q8_K_ref leaves bsums unwritten in an all-zero block); they are counted and reported, and the
// fixture holds 0 there (the sum of that block's zero quants).
static long unwritten_bytes[GGML_TYPE_COUNT];
typedef void (*quant_fn)(enum ggml_type t, const float * x, void * y, int64_t n);
static void q_ref(enum ggml_type t, const float * x, void * y, int64_t n) { ggml_from_float_ref(t, x, y, n); }
static void q_cpu(enum ggml_type t, const float * x, void * y, int64_t n) { ggml_get_type_traits_cpu(t)->from_float(x, y, n); }
static void quantize_checked(quant_fn f, enum ggml_type t, const float * x, uint8_t * y, int64_t n) {
    size_t rs = ggml_row_size(t, n);
    uint8_t * tmp = malloc(rs);
    memset(tmp, 0xAA, rs);
    f(t, x, tmp, n);
    memset(y, 0x00, rs);
    f(t, x, y, n);
    for (size_t i = 0; i < rs; i++) unwritten_bytes[t] += tmp[i] != y[i];
    free(tmp);
}

// ---------------------------------------------------------------------------------------------
// f32 row generators for quant / actq / dot weights

enum dist {
    D_NORMAL, D_NORMAL_SCALED, D_UNIFORM, D_POSITIVE, D_NEGATIVE, D_HEAVY, D_OUTLIERS, D_SPARSE,
    D_ZERO_BLOCKS, D_ALL_ZERO, D_CONSTANT, D_TINY, D_HUGE, D_HALVES, D_RAMP, D_GRID, D_ID_SPLIT, D_COUNT
};
static const char * DIST_NAME[D_COUNT] = {
    "normal", "normal-scaled", "uniform", "positive", "negative", "heavy-tailed", "outliers", "sparse",
    "zero-blocks", "all-zero", "constant", "tiny", "huge", "halves", "ramp", "grid", "id-split",
};

// x * id1 and x * id2 round to different integers, and neither product is an exact .5 tie
static int id_split(float x, float id1, float id2) {
    float p1 = x * id1, p2 = x * id2;
    return roundf(p1) != rintf(p2) && p1 != floorf(p1) + 0.5f && p2 != floorf(p2) + 0.5f;
}

// fills x[0..n) following dist d; blk is the block size of the target type (for zero-blocks)
static void gen_row(enum dist d, float * x, int n, int blk, enum ggml_type t) {
    double s = 1.0;
    switch (d) {
    case D_NORMAL: for (int i = 0; i < n; i++) x[i] = (float)normal(); break;
    case D_NORMAL_SCALED:
        for (int b = 0; b < n; b += blk) {   // a different scale per block, 1e-3 .. 1e3
            s = pow10i((int)below(7) - 3) * (0.5 + unif());
            for (int i = b; i < b + blk && i < n; i++) x[i] = (float)(normal() * s);
        }
        break;
    case D_UNIFORM: for (int i = 0; i < n; i++) x[i] = (float)(2.0 * unif() - 1.0); break;
    case D_POSITIVE: for (int i = 0; i < n; i++) x[i] = (float)(unif() * 3.0); break;
    case D_NEGATIVE: for (int i = 0; i < n; i++) x[i] = (float)(-unif() * 0.25 - 0.01); break;
    case D_HEAVY:    // normal / uniform: a Cauchy-like tail, capped at 1e4
        for (int i = 0; i < n; i++) {
            double v = normal() / (0.02 + unif());
            if (v > 1e4) v = 1e4;
            if (v < -1e4) v = -1e4;
            x[i] = (float)v;
        }
        break;
    case D_OUTLIERS:
        for (int i = 0; i < n; i++) x[i] = (float)(normal() * 0.05);
        for (int k = 0; k < n / 64 + 1; k++) x[below((uint32_t)n)] = (float)((next_u32() & 1 ? 1 : -1) * (20.0 + 80.0 * unif()));
        break;
    case D_SPARSE:
        for (int i = 0; i < n; i++) x[i] = below(10) < 7 ? 0.0f : (float)normal();
        break;
    case D_ZERO_BLOCKS:   // every other block all zero (and some -0.0), the rest normal
        for (int i = 0; i < n; i++) {
            int b = i / blk;
            x[i] = (b & 1) ? ((i & 3) == 0 ? -0.0f : 0.0f) : (float)normal();
        }
        break;
    case D_ALL_ZERO: for (int i = 0; i < n; i++) x[i] = 0.0f; break;
    case D_CONSTANT: {
        float c = (float)(0.37 * (1 + below(4)));
        for (int i = 0; i < n; i++) x[i] = (i / blk) & 1 ? -c : c;
        break;
    }
    case D_TINY:    // 2^-60 scale: f16 scales underflow to 0 / subnormals while 1/d stays finite
        s = pow2(-60);
        if (t == GGML_TYPE_F16 || t == GGML_TYPE_BF16 || t == GGML_TYPE_F32) s = pow2(-20);
        for (int i = 0; i < n; i++) x[i] = (float)(normal() * s);
        break;
    case D_HUGE:    // 2^20 scale: f16 scales of the 32-element formats overflow to inf
        s = pow2(20);
        for (int i = 0; i < n; i++) x[i] = (float)(normal() * s);
        break;
    case D_HALVES:  // each block: one element +-127, the rest k + 0.5 (rounding ties for 8-bit quants)
        for (int b = 0; b < n; b += blk) {
            for (int i = b; i < b + blk && i < n; i++) x[i] = (float)((int)below(253) - 126) + 0.5f;
            x[b + (int)below((uint32_t)blk)] = (next_u32() & 1) ? 127.0f : -127.0f;
        }
        break;
    case D_RAMP: for (int i = 0; i < n; i++) x[i] = (float)(i - n / 2) / (float)n; break;
    case D_GRID:   // values on the grids the 4-bit formats snap to, and their midpoints
        for (int b = 0; b < n; b += blk) {
            static const float e2m1[] = { 0, 0.5f, 1, 1.5f, 2, 3, 4, 6, 0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5 };
            float sc = (float)pow2((int)below(20) - 10);
            for (int i = b; i < b + blk && i < n; i++) {
                float v = (t == GGML_TYPE_MXFP4) ? e2m1[below(15)] : (float)((int)below(17) - 8) * 0.5f;
                x[i] = (next_u32() & 1 ? v : -v) * sc;
            }
        }
        break;
    case D_ID_SPLIT:
        // Q8_0/Q8_1 blocks where x * (1 / (amax / 127)) (ggml's _ref) and x * (127 / amax) (ggml-cpu's
        // AVX from_float) round to different integers without being exact .5 ties
        for (int b = 0; b < n; b += 32) {
            float amax, id1, id2;
            do {
                amax = (float)((0.5 + unif()) * pow2((int)below(10) - 5));
                id1 = 1.0f / (amax / 127.0f);
                id2 = 127.0f / amax;
            } while (id1 == id2);
            for (int i = b; i < b + 32 && i < n; i++) {
                float k = (float)((int)below(253) - 126);
                float xv = (k + 0.5f) / id1;
                float lo = xv, hi = xv;
                for (int s = 0; s < 64; s++) {   // walk ulps outwards from the midpoint
                    lo = nextafterf(lo, -INFINITY);
                    hi = nextafterf(hi, INFINITY);
                    if (id_split(lo, id1, id2)) { xv = lo; break; }
                    if (id_split(hi, id1, id2)) { xv = hi; break; }
                }
                x[i] = xv;
            }
            x[b + (int)below(32)] = (next_u32() & 1) ? amax : -amax;
        }
        break;
    default: break;
    }
}

// MXFP4 scale exponent edge cases: block maxima just below / at powers of two, where
// floorf(log2f(amax)) (which ggml uses) and the exponent bits of amax can disagree.
static void gen_mxfp4_pow2_edges(float * x, int n) {
    for (int b = 0; b < n / 32; b++) {
        int k = (int)below(200) - 100;                  // 2^-100 .. 2^99
        float p = (float)pow2(k);
        float amax = (b % 3 == 0) ? p : (b % 3 == 1) ? nextafterf(p, 0.0f) : nextafterf(p, INFINITY);
        for (int j = 0; j < 32; j++) x[b * 32 + j] = (float)(amax * (2.0 * unif() - 1.0));
        x[b * 32 + (int)below(32)] = (next_u32() & 1) ? amax : -amax;
    }
}

// F16 / BF16 quantize specials: NaNs, infinities, overflow / underflow / tie boundaries
static int gen_float_specials(float * x, int n, enum ggml_type t) {
    static const uint32_t bits[] = {
        0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001,
        0x7FBFFFFF, 0x7FFFFFFF, 0x7FA00000, 0x7F812345, 0x00000001, 0x80000001, 0x007FFFFF, 0x00800000,
        0x7F7FFFFF, 0xFF7FFFFF, 0x3F800000, 0xBF800000, 0x33800000, 0x33000000, 0x33000001, 0x337FFFFF,
        0x387FC000, 0x387FE000, 0x38800000, 0x477FE000, 0x477FEFFF, 0x477FF000, 0x477FF001, 0x47800000,
        0x3F808000, 0x3F818000, 0x3F80C000, 0x3F817FFF, 0x3F808001, 0x3F807FFF, 0x7F7F8000, 0x7F7F7FFF,
        0x3F801000, 0x3F803000, 0x3F802000, 0x3F800FFF, 0x3F801001, 0x00400000, 0x80400000, 0x00008000,
    };
    (void)t;
    int m = (int)(sizeof bits / sizeof bits[0]);
    int i = 0;
    for (; i < m && i < n; i++) x[i] = f32_from_bits(bits[i]);
    // random bit patterns of every class for the rest
    for (; i < n; i++) x[i] = f32_from_bits(next_u32());
    return n;
}

// ---------------------------------------------------------------------------------------------
// dequant inputs: random blocks with every float field written as a finite value

typedef struct { enum ggml_type t; int f16_at[2]; int n_f16; int f32_at; } scale_fields;

static scale_fields fields_of(enum ggml_type t) {
    scale_fields s = { t, { -1, -1 }, 0, -1 };
    switch (t) {
    case GGML_TYPE_Q4_0: case GGML_TYPE_Q5_0: case GGML_TYPE_Q8_0: s.f16_at[0] = 0; s.n_f16 = 1; break;
    case GGML_TYPE_Q4_1: case GGML_TYPE_Q5_1: case GGML_TYPE_Q8_1: s.f16_at[0] = 0; s.f16_at[1] = 2; s.n_f16 = 2; break;
    case GGML_TYPE_Q2_K: s.f16_at[0] = 80; s.f16_at[1] = 82; s.n_f16 = 2; break;
    case GGML_TYPE_Q3_K: s.f16_at[0] = 108; s.n_f16 = 1; break;
    case GGML_TYPE_Q4_K: case GGML_TYPE_Q5_K: s.f16_at[0] = 0; s.f16_at[1] = 2; s.n_f16 = 2; break;
    case GGML_TYPE_Q6_K: s.f16_at[0] = 208; s.n_f16 = 1; break;
    case GGML_TYPE_Q8_K: s.f32_at = 0; break;
    default: break;
    }
    return s;
}

// mode 0: fully random finite scale fields; 1: sane-range scales (MXFP4: E8M0 2^-10..2^9);
// 2: zero scales; 3: extreme f16
static void fill_random_blocks(enum ggml_type t, uint8_t * p, int nblocks, int mode) {
    size_t bb = ggml_type_size(t);
    scale_fields sf = fields_of(t);
    for (size_t i = 0; i < bb * (size_t)nblocks; i++) p[i] = (uint8_t)next_u32();
    for (int b = 0; b < nblocks; b++) {
        uint8_t * q = p + (size_t)b * bb;
        for (int k = 0; k < sf.n_f16; k++) {
            uint16_t h;
            if (mode == 0) h = rand_finite_f16();
            else if (mode == 1) h = rand_sane_f16();
            else if (mode == 2) h = (next_u32() & 1) ? 0x8000 : 0x0000;
            else { static const uint16_t ex[] = { 0x7BFF, 0xFBFF, 0x0001, 0x8001, 0x03FF, 0x0400, 0x3C00, 0xBC00 }; h = ex[below(8)]; }
            put_u16(q + sf.f16_at[k], h);
        }
        if (t == GGML_TYPE_MXFP4 && mode == 1) q[0] = (uint8_t)(117 + below(20)); // E8M0 scale 2^-10 .. 2^9
        if (sf.f32_at >= 0) {
            uint32_t v;
            if (mode == 0) v = rand_finite_f32_bits();
            else if (mode == 1) v = f32_bits((float)(normal() * pow2((int)below(40) - 30)));
            else if (mode == 2) v = (next_u32() & 1) ? 0x80000000u : 0;
            else { static const uint32_t ex[] = { 0x7F7FFFFF, 0xFF7FFFFF, 0x00000001, 0x80000001, 0x00800000, 0x3F800000 }; v = ex[below(6)]; }
            put_u32(q + sf.f32_at, v);
        }
    }
}

// ---------------------------------------------------------------------------------------------

static const char * out_dir;

static void write_dequant_blocks(enum ggml_type t) {
    writer w; w_open(&w, out_dir, t, KIND_DEQUANT, t, 2);
    int qk = (int)ggml_blck_size(t);
    size_t bb = ggml_type_size(t);
    int per = qk == 256 ? 4 : 16;                       // blocks per record
    int nrec = qk == 256 ? 10 : 16;                     // 40 super-blocks / 256 blocks
    uint8_t * src = malloc(bb * per);
    float * dst = malloc(sizeof(float) * per * qk);
    for (int r = 0; r < nrec; r++) {
        int mode = r < nrec - 4 ? (r & 1) : (r == nrec - 4 ? 2 : 3);
        static const char * lab[] = { "random-finite-scales", "random-sane-scales", "zero-scales", "extreme-scales" };
        fill_random_blocks(t, src, per, mode);
        if (r == 0) memset(src, 0, bb); // first block all zero bytes
        ggml_to_float(t, src, dst, (int64_t)per * qk);
        const void * ptrs[2] = { src, dst };
        size_t lens[2] = { bb * per, sizeof(float) * per * qk };
        w_record(&w, lab[mode], (uint32_t)(per * qk), ptrs, lens);
    }
    free(src); free(dst);
    w_close(&w);
}

static void write_dequant_mxfp4(void) {
    enum ggml_type t = GGML_TYPE_MXFP4;
    writer w; w_open(&w, out_dir, t, KIND_DEQUANT, t, 2);
    uint8_t src[17 * 16];
    float dst[32 * 16];
    // every scale byte 0..255 once, random codes (16 records of 16 blocks)
    for (int r = 0; r < 16; r++) {
        for (int b = 0; b < 16; b++) {
            uint8_t * q = src + 17 * b;
            q[0] = (uint8_t)(r * 16 + b);
            for (int j = 0; j < 16; j++) q[1 + j] = (uint8_t)next_u32();
        }
        ggml_to_float(t, src, dst, 32 * 16);
        const void * ptrs[2] = { src, dst };
        size_t lens[2] = { sizeof src, sizeof dst };
        w_record(&w, "every-scale-byte", 32 * 16, ptrs, lens);
    }
    // every code incl. +0 (0x0) and -0 (0x8) under the edge scales
    static const uint8_t edge_e[] = { 0, 1, 2, 126, 127, 128, 253, 254, 255, 0, 1, 127, 254, 255, 64, 192 };
    for (int b = 0; b < 16; b++) {
        uint8_t * q = src + 17 * b;
        q[0] = edge_e[b];
        for (int j = 0; j < 16; j++) {
            uint8_t lo = (uint8_t)((j + b) & 15), hi = (uint8_t)((15 - j + b) & 15);
            if (b >= 9) { lo = (j & 1) ? 0x8 : 0x0; hi = (j & 2) ? 0x8 : 0x0; } // only +-0 codes
            q[1 + j] = (uint8_t)(lo | (hi << 4));
        }
    }
    ggml_to_float(t, src, dst, 32 * 16);
    {
        const void * ptrs[2] = { src, dst };
        size_t lens[2] = { sizeof src, sizeof dst };
        w_record(&w, "all-codes-and-signed-zeros-at-edge-scales", 32 * 16, ptrs, lens);
    }
    w_close(&w);
}

static void write_dequant_scalar(enum ggml_type t) {
    writer w; w_open(&w, out_dir, t, KIND_DEQUANT, t, 2);
    size_t es = ggml_type_size(t);
    enum { N = 1024 };
    uint8_t src[N * 4];
    float dst[N];
    for (int r = 0; r < (t == GGML_TYPE_F32 ? 1 : 4); r++) {
        const char * lab = "random-bits";
        if (t == GGML_TYPE_F32) {
            static const uint32_t sp[] = { 0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000, 0x7F800001, 0x7FBFFFFF,
                                           0xFFFFFFFF, 0x00000001, 0x807FFFFF, 0x00800000, 0x7F7FFFFF, 0x3F800000 };
            for (int i = 0; i < N; i++) put_u32(src + 4 * i, i < (int)(sizeof sp / 4) ? sp[i] : next_u32());
            lab = "specials-then-random-bits";
        } else if (r == 0) {
            // specials first: zeros, subnormals, normals at the edges, infinities, quiet / signalling NaNs
            static const uint16_t sp[] = { 0x0000, 0x8000, 0x0001, 0x8001, 0x0002, 0x03FF, 0x83FF, 0x0200, 0x0400, 0x8400,
                                           0x3C00, 0xBC00, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00, 0x7C01, 0xFC01, 0x7DFF, 0x7E00,
                                           0xFE00, 0x7E01, 0x7FFF, 0xFFFF, 0x7F80, 0xFF80, 0x7F81, 0x7FC0, 0xFFC1, 0x0080,
                                           0x007F, 0x8080, 0x3F80, 0x4000, 0x7F7F, 0xFF7F };
            int m = (int)(sizeof sp / 2);
            for (int i = 0; i < N; i++) put_u16(src + 2 * i, i < m ? sp[i] : (uint16_t)i /* 0x0024..0x03FF: subnormal f16 */);
            lab = "specials-then-low-patterns";
        } else if (r == 1) {
            // 0x7C00..0x7FFF: every f16 Inf/NaN pattern; for bf16 the top of the finite range,
            // then every bf16 Inf/NaN pattern (0x7F80..0x7FFF)
            for (int i = 0; i < N; i++) put_u16(src + 2 * i, (uint16_t)(0x7C00 + i));
            lab = "positive-exponent-all-ones";
        } else if (r == 2) {
            // the same with the sign bit set: 0xFC00..0xFFFF
            for (int i = 0; i < N; i++) put_u16(src + 2 * i, (uint16_t)(0xFC00 + i));
            lab = "negative-exponent-all-ones";
        } else {
            for (int i = 0; i < N; i++) put_u16(src + 2 * i, (uint16_t)next_u32());
        }
        ggml_to_float(t, src, dst, N);
        const void * ptrs[2] = { src, dst };
        size_t lens[2] = { es * N, sizeof dst };
        w_record(&w, lab, N, ptrs, lens);
    }
    w_close(&w);
}

static void write_quant(enum ggml_type t) {
    writer w; w_open(&w, out_dir, t, KIND_QUANT, t, 2);
    int qk = (int)ggml_blck_size(t);
    int blk = qk == 1 ? 32 : qk;
    int n = qk == 256 ? 512 : 256;
    size_t rs = ggml_row_size(t, n);
    float * x = malloc(sizeof(float) * n);
    uint8_t * q = malloc(rs);
    uint8_t * q2 = malloc(rs);
    int reps = 2;
    for (int d = 0; d < D_ID_SPLIT; d++) {   // id-split is for actq only
        int r_here = (d == D_ALL_ZERO || d == D_RAMP) ? 1 : reps;
        for (int r = 0; r < r_here; r++) {
            gen_row((enum dist)d, x, n, blk, t);
            quantize_checked(q_ref, t, x, q, n);
            // cross-check: ggml_quantize_chunk without an importance matrix takes the same _ref path
            if (t != GGML_TYPE_Q8_1 && t != GGML_TYPE_Q8_K) {
                size_t got = ggml_quantize_chunk(t, x, q2, 0, 1, n, NULL);
                if (got != rs || memcmp(q, q2, rs) != 0) { fprintf(stderr, "%s: ggml_quantize_chunk != from_float_ref (%s)\n", ggml_type_name(t), DIST_NAME[d]); exit(1); }
            }
            const void * ptrs[2] = { x, q };
            size_t lens[2] = { sizeof(float) * n, rs };
            w_record(&w, DIST_NAME[d], (uint32_t)n, ptrs, lens);
        }
    }
    if (t == GGML_TYPE_MXFP4) {
        for (int r = 0; r < 4; r++) {
            gen_mxfp4_pow2_edges(x, n);
            quantize_checked(q_ref, t, x, q, n);
            const void * ptrs[2] = { x, q };
            size_t lens[2] = { sizeof(float) * n, rs };
            w_record(&w, "pow2-edge-maxima", (uint32_t)n, ptrs, lens);
        }
    }
    if (t == GGML_TYPE_F16 || t == GGML_TYPE_BF16) {
        for (int r = 0; r < 4; r++) {
            gen_float_specials(x, n, t);
            if (r > 0) for (int i = 0; i < n; i++) x[i] = f32_from_bits(next_u32()); // all random bit patterns
            quantize_checked(q_ref, t, x, q, n);
            const void * ptrs[2] = { x, q };
            size_t lens[2] = { sizeof(float) * n, rs };
            w_record(&w, r == 0 ? "specials" : "random-bits", (uint32_t)n, ptrs, lens);
        }
    }
    free(x); free(q); free(q2);
    w_close(&w);
}

// activation quantization: ggml-cpu's from_float (what llama.cpp's matmul uses) next to _ref
static void write_actq(enum ggml_type t) {
    writer w; w_open(&w, out_dir, t, KIND_ACTQ, t, 3);
    int n = 256;
    size_t rs = ggml_row_size(t, n);
    float * x = malloc(sizeof(float) * n);
    uint8_t * qc = malloc(rs), * qr = malloc(rs);
    long diff_blocks = 0, diff_bytes = 0, total_blocks = 0;
    static const enum dist ds[] = { D_NORMAL, D_NORMAL_SCALED, D_UNIFORM, D_HEAVY, D_OUTLIERS, D_SPARSE, D_ZERO_BLOCKS,
                                    D_CONSTANT, D_TINY, D_HUGE, D_HALVES, D_RAMP, D_ID_SPLIT };
    for (size_t k = 0; k < sizeof ds / sizeof ds[0]; k++) {
        for (int r = 0; r < 2; r++) {
            gen_row(ds[k], x, n, (int)ggml_blck_size(t), t);
            quantize_checked(q_cpu, t, x, qc, n);
            quantize_checked(q_ref, t, x, qr, n);
            size_t bb = ggml_type_size(t);
            long rec_diff = 0;
            for (size_t b = 0; b < rs / bb; b++) {
                int dif = 0;
                for (size_t i = 0; i < bb; i++) if (qc[b * bb + i] != qr[b * bb + i]) { dif = 1; diff_bytes++; }
                diff_blocks += dif; total_blocks++; rec_diff += dif;
            }
            if (rec_diff) printf("    record %u (%s): %ld blocks differ\n", w.n_records, DIST_NAME[ds[k]], rec_diff);
            const void * ptrs[3] = { x, qc, qr };
            size_t lens[3] = { sizeof(float) * n, rs, rs };
            w_record(&w, DIST_NAME[ds[k]], (uint32_t)n, ptrs, lens);
        }
    }
    printf("  %s: ggml-cpu from_float vs from_float_ref: %ld of %ld blocks differ (%ld bytes)\n",
           ggml_type_name(t), diff_blocks, total_blocks, diff_bytes);
    free(x); free(qc); free(qr);
    w_close(&w);
}

static double max_rel_err_seen[GGML_TYPE_COUNT];

// byte ranges holding the quant bits of the formats with an offset term (see weight_offsets)
static int quant_range(enum ggml_type t, int * lo, int * hi) {
    switch (t) {
    case GGML_TYPE_Q4_1: *lo = 4;  *hi = 20;  return 1;
    case GGML_TYPE_Q5_1: *lo = 4;  *hi = 24;  return 1;
    case GGML_TYPE_Q2_K: *lo = 16; *hi = 80;  return 1;
    case GGML_TYPE_Q4_K: *lo = 16; *hi = 144; return 1;
    case GGML_TYPE_Q5_K: *lo = 16; *hi = 176; return 1;
    default: return 0;
    }
}
// o_i: what ggml's to_float gives for element i once every quant of its block is zero, i.e. the
// block's offset term (m for Q4_1/Q5_1, -dmin*m_j for Q2_K/Q4_K/Q5_K); 0 for the other formats
static void weight_offsets(enum ggml_type t, const uint8_t * wq, int n, float * od) {
    int lo, hi;
    if (!quant_range(t, &lo, &hi)) { for (int i = 0; i < n; i++) od[i] = 0; return; }
    size_t bb = ggml_type_size(t), rs = ggml_row_size(t, n);
    uint8_t * z = malloc(rs);
    memcpy(z, wq, rs);
    for (size_t b = 0; b < rs / bb; b++) memset(z + b * bb + lo, 0, (size_t)(hi - lo));
    ggml_to_float(t, z, od, n);
    free(z);
}

static void write_dot(enum ggml_type t) {
    const struct ggml_type_traits_cpu * cpu = ggml_get_type_traits_cpu(t);
    enum ggml_type vt = cpu->vec_dot_type;
    writer w; w_open(&w, out_dir, t, KIND_DOT, vt, 4);
    int qk = (int)ggml_blck_size(t);
    static const int ns_small[] = { 32, 64, 256, 512, 512, 512, 4096 };
    static const int ns_k[] = { 256, 512, 512, 1024, 4096 };
    const int * ns = qk == 256 ? ns_k : ns_small;
    int nn = qk == 256 ? 5 : 7;
    int nmax = 4096;
    float * wf = malloc(sizeof(float) * nmax), * af = malloc(sizeof(float) * nmax);
    float * wd = malloc(sizeof(float) * nmax), * ad = malloc(sizeof(float) * nmax), * od = malloc(sizeof(float) * nmax);
    uint8_t * wq = malloc(ggml_row_size(t, nmax) + 64), * aq = malloc(ggml_row_size(vt, nmax) + 64);
    static const enum dist wdist[] = { D_NORMAL, D_NORMAL_SCALED, D_UNIFORM, D_HEAVY, D_OUTLIERS, D_POSITIVE, D_SPARSE, D_ZERO_BLOCKS };
    static const enum dist adist[] = { D_NORMAL, D_NORMAL_SCALED, D_OUTLIERS, D_UNIFORM, D_HEAVY, D_NEGATIVE, D_SPARSE, D_NORMAL };
    int rec = 0;
    for (int ni = 0; ni < nn; ni++) {
        int n = ns[ni];
        int reps = n >= 4096 ? 1 : 4;
        for (int r = 0; r < reps; r++, rec++) {
            char label[128];
            enum dist dw = wdist[rec % 8], da = adist[(rec * 3 + 1) % 8];
            int random_bytes = (qk > 1) && (rec % 4 == 3);
            if (random_bytes) {
                fill_random_blocks(t, wq, n / qk, 1);
                snprintf(label, sizeof label, "w:random-blocks a:%s", DIST_NAME[da]);
            } else {
                gen_row(dw, wf, n, qk == 1 ? 32 : qk, t);
                if (t == GGML_TYPE_F32) memcpy(wq, wf, sizeof(float) * n);
                else quantize_checked(q_ref, t, wf, wq, n);
                snprintf(label, sizeof label, "w:%s a:%s", DIST_NAME[dw], DIST_NAME[da]);
            }
            gen_row(da, af, n, 32, vt);
            quantize_checked(q_cpu, vt, af, aq, n);
            float s = 0;
            cpu->vec_dot(n, &s, 0, wq, 0, aq, 0, 1);
            ggml_to_float(t, wq, wd, n);
            ggml_to_float(vt, aq, ad, n);
            // scale = sum_i (|w_i - o_i| + |o_i|) * |a_i|, where o_i is the block offset ("min") term
            // of the formats that have one: ggml sums the scaled-quant and offset parts separately.
            // exact = the f64 dot of ggml's dequantized values; for Q8_1 activations ggml uses the
            // stored s = f16(d * sum q) in place of sum a_i, so exact does the same.
            weight_offsets(t, wq, n, od);
            double sabs = 0, exact = 0;
            for (int i = 0; i < n; i++) {
                double p = (double)wd[i] * (double)ad[i];
                sabs += (fabs((double)wd[i] - (double)od[i]) + fabs((double)od[i])) * fabs((double)ad[i]);
                exact += p;
            }
            if (vt == GGML_TYPE_Q8_1) {
                size_t wb = ggml_type_size(t);
                for (int b = 0; b < n / 32; b++) {
                    uint16_t mh, sh; memcpy(&mh, wq + b * wb + 2, 2); memcpy(&sh, aq + b * 36 + 2, 2);
                    double suma = 0;
                    for (int j = 0; j < 32; j++) suma += (double)ad[b * 32 + j];
                    exact += (double)ggml_fp16_to_fp32(mh) * ((double)ggml_fp16_to_fp32(sh) - suma);
                }
            }
            double rel = sabs > 0 ? fabs((double)s - exact) / sabs : fabs((double)s - exact);
            if (rel > max_rel_err_seen[t]) max_rel_err_seen[t] = rel;
            double meta[2] = { sabs, exact };
            const void * ptrs[4] = { wq, aq, &s, meta };
            size_t lens[4] = { ggml_row_size(t, n), ggml_row_size(vt, n), 4, 16 };
            w_record(&w, label, (uint32_t)n, ptrs, lens);
        }
    }
    free(wf); free(af); free(wd); free(ad); free(od); free(wq); free(aq);
    w_close(&w);
    printf("  %s x %s: max |ggml-cpu vec_dot - f64 dot| / scale = %.3g\n",
           ggml_type_name(t), ggml_type_name(vt), max_rel_err_seen[t]);
}

int main(int argc, char ** argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]); return 2; }
    out_dir = argv[1];
    ggml_cpu_init();

    static const enum ggml_type blocks[] = {
        GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q5_0, GGML_TYPE_Q5_1, GGML_TYPE_Q8_0,
        GGML_TYPE_Q2_K, GGML_TYPE_Q3_K, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K, GGML_TYPE_Q8_K,
    };
    static const enum ggml_type quants[] = {
        GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q5_0, GGML_TYPE_Q5_1,
        GGML_TYPE_Q8_0, GGML_TYPE_Q8_1, GGML_TYPE_Q2_K, GGML_TYPE_Q3_K, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K,
        GGML_TYPE_Q6_K, GGML_TYPE_Q8_K, GGML_TYPE_MXFP4,
    };
    static const enum ggml_type dots[] = {
        GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q5_0,
        GGML_TYPE_Q5_1, GGML_TYPE_Q8_0, GGML_TYPE_Q2_K, GGML_TYPE_Q3_K, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K,
        GGML_TYPE_Q6_K, GGML_TYPE_MXFP4,
    };
    static const enum ggml_type acts[] = { GGML_TYPE_Q8_0, GGML_TYPE_Q8_1, GGML_TYPE_Q8_K };

    printf("dequant\n");
    seed(0x6b696c6e00000001ull);
    write_dequant_scalar(GGML_TYPE_F32);
    write_dequant_scalar(GGML_TYPE_F16);
    write_dequant_scalar(GGML_TYPE_BF16);
    for (size_t i = 0; i < sizeof blocks / sizeof blocks[0]; i++) write_dequant_blocks(blocks[i]);
    write_dequant_mxfp4();

    printf("quant (from_float_ref; ggml_quantize_chunk(imatrix=NULL) checked identical where it applies)\n");
    for (size_t i = 0; i < sizeof quants / sizeof quants[0]; i++) { seed(0x6b696c6e00000100ull + quants[i]); write_quant(quants[i]); }

    printf("actq\n");
    for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++) { seed(0x6b696c6e00000200ull + acts[i]); write_actq(acts[i]); }

    printf("dot\n");
    for (size_t i = 0; i < sizeof dots / sizeof dots[0]; i++) { seed(0x6b696c6e00000300ull + dots[i]); write_dot(dots[i]); }
    for (int t = 0; t < GGML_TYPE_COUNT; t++)
        if (unwritten_bytes[t]) printf("note: %s: %ld output bytes not written by ggml (stored as 0)\n", ggml_type_name((enum ggml_type)t), unwritten_bytes[t]);
    return 0;
}
