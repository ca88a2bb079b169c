// Elementwise and per-row operations of the forward pass: RMSNorm, RoPE (normal and NeoX, with
// YaRN), residual add, scale, soft-capping, SwiGLU / GeGLU / gpt-oss's clamped SwiGLU, row gather,
// and the mixture-of-experts router (top-k + softmax) and weighted sum. Activations are row-major
// f32. Each kernel's launch shape is written above it; the host side is
// crates/kiln-model/src/cuda/mod.rs.
#include "common.cuh"

// f32 -> f16 bits, round to nearest even (as the CPU backend's conversion).
KDEV u16 f32_to_f16(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

KDEV float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

KDEV double warp_sum_d(double v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// out[g] = x[g] * (1 / sqrt(mean(x[g]^2) + eps)) * w, for each `group`-wide slice g.
// grid (groups), block (256). Squares summed in f64 as the CPU backend (and ggml) does.
extern "C" __global__ void rms_norm(const float* KRESTRICT x, const float* KRESTRICT w, float* KRESTRICT out,
                                    int group, float eps) {
    const float* xr = x + (i64)blockIdx.x * group;
    float* orow = out + (i64)blockIdx.x * group;
    double s = 0.0;
    for (int i = threadIdx.x; i < group; i += blockDim.x) {
        float v = xr[i];
        s += (double)mul_rn(v, v);
    }
    __shared__ double part[32];
    s = warp_sum_d(s);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = s;
    __syncthreads();
    if (threadIdx.x < 32) {
        double t = threadIdx.x < (blockDim.x >> 5) ? part[threadIdx.x] : 0.0;
        t = warp_sum_d(t);
        if (threadIdx.x == 0) part[0] = t;
    }
    __syncthreads();
    float mean = (float)(part[0] / (double)group);
    float scale = 1.0f / sqrtf(mean + eps);
    for (int i = threadIdx.x; i < group; i += blockDim.x) orow[i] = mul_rn(mul_rn(xr[i], scale), w[i]);
}

// x += y over n values. grid (ceil(n / 256)), block (256).
extern "C" __global__ void add(float* KRESTRICT x, const float* KRESTRICT y, i64 n) {
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = add_rn(x[i], y[i]);
}

// x *= s. grid (ceil(n / 256)), block (256).
extern "C" __global__ void scale(float* x, float s, i64 n) {
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = mul_rn(x[i], s);
}

// x = cap * tanh(x / cap). grid (ceil(n / 256)), block (256).
extern "C" __global__ void softcap(float* x, float cap, i64 n) {
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = mul_rn(cap, tanhf(x[i] / cap));
}

// SwiGLU: out = silu(gate) * up. grid (ceil(n / 256)), block (256).
extern "C" __global__ void swiglu(const float* KRESTRICT g, const float* KRESTRICT u, float* KRESTRICT out, i64 n) {
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float x = g[i];
        out[i] = mul_rn(x / add_rn(1.0f, expf(-x)), u[i]);
    }
}

// GeGLU with GELU's tanh approximation, looked up as ggml does: the gate rounded to f16, GELU of
// that in f32, the result rounded to f16; exact 0 / identity beyond ±10.
// grid (ceil(n / 256)), block (256).
extern "C" __global__ void geglu(const float* KRESTRICT g, const float* KRESTRICT u, float* KRESTRICT out, i64 n) {
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float x = g[i], r;
    if (x <= -10.0f) {
        r = 0.0f;
    } else if (x >= 10.0f) {
        r = mul_rn(x, u[i]);
    } else {
        float h = f16_to_f32(f32_to_f16(x));
        float inner = fmaf(0.044715f * h, h, 1.0f);
        float ge = 0.5f * h * (1.0f + tanhf(0.7978846f * h * inner));
        r = mul_rn(f16_to_f32(f32_to_f16(ge)), u[i]);
    }
    out[i] = r;
}

// gpt-oss's clamped SwiGLU: min(g, limit) * sigmoid(alpha * min(g, limit)) * (clamp(u, ±limit) + 1).
// grid (ceil(n / 256)), block (256).
extern "C" __global__ void swiglu_oai(const float* KRESTRICT g, const float* KRESTRICT u, float* KRESTRICT out, i64 n,
                                      float alpha, float limit) {
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float gx = fminf(g[i], limit);
    float uy = fminf(fmaxf(u[i], -limit), limit);
    out[i] = mul_rn(gx / add_rn(1.0f, expf(mul_rn(alpha, -gx))), add_rn(uy, 1.0f));
}

// out[i] = x[rows[i]]. grid (n), block (256).
extern "C" __global__ void gather_rows(const float* KRESTRICT x, const int* KRESTRICT rows, float* KRESTRICT out,
                                       int cols) {
    const float* src = x + (i64)rows[blockIdx.x] * cols;
    float* dst = out + (i64)blockIdx.x * cols;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) dst[c] = src[c];
}

// RoPE in place: every `head_dim`-wide head of row r rotated by the angles of position pos[r],
// on its first n_rot dimensions: pairs (2j, 2j+1) (normal) or (j, j + n_rot/2) (NeoX). The angle
// of pair j is pos·freq_scale·theta_scale^j built by repeated multiplication, as the CPU backend
// (and ggml) does; with YaRN (yarn != 0) it is mixed between interpolation and extrapolation over
// the correction range [low, high] and both cos and sin are scaled by mscale.
// grid (rows), block (min(256, heads·n_rot/2)).
extern "C" __global__ void rope(float* x, const int* KRESTRICT pos, int cols, int head_dim, int n_rot, int neox,
                                float freq_scale, float theta_scale, int yarn, float low, float high, float ext,
                                float mscale) {
    int half = n_rot / 2;
    int heads = cols / head_dim;
    float p = (float)pos[blockIdx.x];
    float* row = x + (i64)blockIdx.x * cols;
    for (int t = threadIdx.x; t < heads * half; t += blockDim.x) {
        int h = t / half, j = t % half;
        float c, s;
        if (!yarn) {
            float theta = mul_rn(p, freq_scale);
            for (int i = 0; i < j; i++) theta = mul_rn(theta, theta_scale);
            c = cosf(theta);
            s = sinf(theta);
        } else {
            float extrap = p;
            for (int i = 0; i < j; i++) extrap = mul_rn(extrap, theta_scale);
            float interp = mul_rn(freq_scale, extrap);
            float y = ((float)j - low) / fmaxf(high - low, 0.001f);
            float mix = mul_rn(sub_rn(1.0f, fminf(fmaxf(y, 0.0f), 1.0f)), ext);
            float theta = fmaf(interp, sub_rn(1.0f, mix), mul_rn(extrap, mix));
            c = mul_rn(cosf(theta), mscale);
            s = mul_rn(sinf(theta), mscale);
        }
        int i0 = neox ? j : 2 * j, i1 = neox ? j + half : 2 * j + 1;
        float* hp = row + h * head_dim;
        float x0 = hp[i0], x1 = hp[i1];
        hp[i0] = fmaf(x0, c, -mul_rn(x1, s));
        hp[i1] = fmaf(x0, s, mul_rn(x1, c));
    }
}

// Mixture-of-experts router: for each row, the n_used largest of its n_expert logits (ties to the
// lower expert index, as a stable sort), and a softmax over those only (sum in f64).
// ids[r*n_used + s], weights[r*n_used + s]. grid (ceil(n / 128)), block (128); n_expert ≤ 256.
extern "C" __global__ void moe_topk(const float* KRESTRICT logits, int n, int n_expert, int n_used, int* KRESTRICT ids,
                                    float* KRESTRICT weights) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= n) return;
    const float* l = logits + (i64)r * n_expert;
    u32 taken[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    float top = 0.0f;
    double sum = 0.0;
    for (int s = 0; s < n_used; s++) {
        int best = -1;
        float bv = 0.0f;
        for (int e = 0; e < n_expert; e++) {
            if (taken[e >> 5] & (1u << (e & 31))) continue;
            float v = l[e];
            if (best < 0 || v > bv) {
                best = e;
                bv = v;
            }
        }
        taken[best >> 5] |= 1u << (best & 31);
        if (s == 0) top = bv;
        float ex = expf(bv - top);
        ids[r * n_used + s] = best;
        weights[r * n_used + s] = ex;
        sum += (double)ex;
    }
    float inv = (float)(1.0 / sum);
    for (int s = 0; s < n_used; s++) weights[r * n_used + s] = mul_rn(weights[r * n_used + s], inv);
}

// out[r] = Σ_s slots[r*n_used + s] · weights[r*n_used + s], summed in slot order.
// grid (n), block (256).
extern "C" __global__ void moe_sum(const float* KRESTRICT slots, const float* KRESTRICT weights, float* KRESTRICT out,
                                   int n_used, int cols) {
    int r = blockIdx.x;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float acc = 0.0f;
        for (int s = 0; s < n_used; s++) {
            float v = mul_rn(slots[((i64)r * n_used + s) * cols + c], weights[r * n_used + s]);
            acc = s == 0 ? v : add_rn(acc, v);
        }
        out[(i64)r * cols + c] = acc;
    }
}

// Activations rounded the way the CPU backend rounds them before a product with quantized weights
// (ggml-cpu's `from_float` into the weight's `vec_dot_type`): Y = dequantize(quantize(X)), so a
// GPU product over Y sums the same terms as the CPU's integer dot products, up to the order of the
// f32 additions. X is flat (rows of k values, k a multiple of the mode's block). Modes:
//   0  Q8_0 / Q8_1, blocks of 32 (one warp each): amax = max |x|, d = amax / 127 rounded to f16,
//      q = x · (127 / amax) rounded to nearest even and saturated to i8 (NaN gives −128), y = q · d;
//   1  Q8_K, blocks of 256 (one thread block each): max = the first value of largest magnitude,
//      iscale = −127 / max, q = min(127, nearest_int(iscale · x)), y = (1 / iscale) · q;
//   2  f16, round to nearest even;  3  bf16, ggml's rounding (NaN quietened).
// grid (ceil(n / 256)), block (256); n is a multiple of 32 (mode 0) or 256 (mode 1).
extern "C" __global__ void act_round(const float* KRESTRICT x, float* KRESTRICT y, i64 n, int mode) {
    const i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    const float v = i < n ? x[i] : 0.0f;
    if (mode == 0) {
        float amax = fabsf(v);
        if (amax != amax) amax = 0.0f;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
        const float d = f16_to_f32(f32_to_f16(__fdiv_rn(amax, 127.0f)));
        const float id = amax != 0.0f ? __fdiv_rn(127.0f, amax) : 0.0f;
        const float r = rintf(__fmul_rn(v, id));
        const int q = fabsf(r) < 2147483648.0f ? max(-128, min(127, (int)r)) : -128;
        if (i < n) y[i] = __fmul_rn((float)q, d);
    } else if (mode == 1) {
        // Largest magnitude, the first on ties; a NaN never wins (as the CPU's `ax > amax`).
        __shared__ float best_a[8];
        __shared__ int best_i[8];
        float a = fabsf(v);
        if (a != a) a = -1.0f;
        int at = threadIdx.x;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float oa = __shfl_xor_sync(0xffffffffu, a, o);
            const int oi = __shfl_xor_sync(0xffffffffu, at, o);
            if (oa > a || (oa == a && oi < at)) {
                a = oa;
                at = oi;
            }
        }
        if ((threadIdx.x & 31) == 0) {
            best_a[threadIdx.x >> 5] = a;
            best_i[threadIdx.x >> 5] = at;
        }
        __syncthreads();
        float amax = best_a[0];
        int first = best_i[0];
        for (int w = 1; w < 8; w++)
            if (best_a[w] > amax) {
                amax = best_a[w];
                first = best_i[w];
            }
        if (i >= n) return;
        if (amax <= 0.0f) {
            y[i] = 0.0f;
            return;
        }
        const float iscale = __fdiv_rn(-127.0f, x[(i - threadIdx.x) + first]);
        const int q = min(127, (__float_as_int(__fadd_rn(__fmul_rn(iscale, v), 12582912.0f)) & 0x007fffff) - 0x00400000);
        y[i] = __fmul_rn(__fdiv_rn(1.0f, iscale), (float)q);
    } else if (i < n) {
        if (mode == 2) {
            y[i] = f16_to_f32(f32_to_f16(v));
        } else {
            const u32 u = __float_as_uint(v);
            const u32 h = (u & 0x7fffffffu) > 0x7f800000u ? ((u >> 16) | 0x40u) : ((u + (0x7fffu + ((u >> 16) & 1u))) >> 16);
            y[i] = __uint_as_float(h << 16);
        }
    }
}
