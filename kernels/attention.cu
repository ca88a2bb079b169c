// Causal attention over the paged f16 KV cache, and writing K/V rows into it.
//
// Cache layout per layer (as the CPU backend's): slot-major, slot = block·block_size + offset,
// each slot holding n_head_kv heads of head_dim (K) / head_dim_v (V) f16 values. A row's positions
// map to slots through its sequence's block table: slot(p) = table[p / bs − first_block]·bs + p % bs.
//
// The attention kernel is tiled (no n² scratch): one block per (row, query head), each warp
// streaming tiles of 32 keys with an online softmax (running max and sum in f32), the four warps'
// partial results merged at the end; an attention sink (gpt-oss) joins the softmax denominator
// with no value. GQA: query head h reads KV head h / (n_head / n_head_kv). A sliding window is
// the row's lower bound `lo` (given per row by the host, with the row's position and table).
#include "common.cuh"

KDEV u16 to_f16(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

// K[slots[i]] = k[i], V[slots[i]] = v[i], rounded to f16. grid (n), block (128).
extern "C" __global__ void kv_write(const float* KRESTRICT k, const float* KRESTRICT v, const int* KRESTRICT slots,
                                    u16* KRESTRICT K, u16* KRESTRICT V, int kw, int vw) {
    i64 slot = slots[blockIdx.x];
    for (int c = threadIdx.x; c < kw; c += blockDim.x) K[slot * kw + c] = to_f16(k[(i64)blockIdx.x * kw + c]);
    for (int c = threadIdx.x; c < vw; c += blockDim.x) V[slot * vw + c] = to_f16(v[(i64)blockIdx.x * vw + c]);
}

#define ATT_WARPS 4
#define NEG_INF __int_as_float(0xff800000)
#define ATT_MAX_D 256

// meta[4r..4r+4) = (pos, lo, table offset, first block) of row r; its keys are positions lo..=pos.
// q: [rows][n_head·hd]; out: [rows][n_head·hdv]. grid (rows, n_head), block (32·ATT_WARPS).
// hd, hdv ≤ 256 (the host checks).
extern "C" __global__ void attention(const float* KRESTRICT q, const u16* KRESTRICT K, const u16* KRESTRICT V,
                                     const int* KRESTRICT meta, const int* KRESTRICT tables,
                                     const float* KRESTRICT sinks, float* KRESTRICT out, int n_head, int n_head_kv,
                                     int hd, int hdv, int bs, float scale) {
    __shared__ float qs[ATT_MAX_D];
    __shared__ float wm[ATT_WARPS], wl[ATT_WARPS];
    __shared__ float wacc[ATT_WARPS][ATT_MAX_D];
    const int r = blockIdx.x, h = blockIdx.y;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int pos = meta[4 * r], lo = meta[4 * r + 1], toff = meta[4 * r + 2], first = meta[4 * r + 3];
    const int kvh = h / (n_head / n_head_kv);
    const int kw = n_head_kv * hd, vw = n_head_kv * hdv;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) qs[d] = q[((i64)r * n_head + h) * hd + d];
    __syncthreads();

    const int nd = (hdv + 31) / 32;  // value dimensions per lane: lane + 32·i
    float acc[ATT_MAX_D / 32];
#pragma unroll
    for (int i = 0; i < ATT_MAX_D / 32; i++) acc[i] = 0.0f;
    float m = NEG_INF, l = 0.0f;

    for (int base = lo + warp * 32; base <= pos; base += 32 * ATT_WARPS) {
        const int p = base + lane;
        float s = NEG_INF;
        int slot = 0;
        if (p <= pos) {
            slot = tables[toff + p / bs - first] * bs + p % bs;
            const u16* kp = K + (i64)slot * kw + kvh * hd;
            float dot = 0.0f;
            if (hd & 7) {
                for (int d = 0; d < hd; d++) dot = fmaf(qs[d], f16_to_f32(kp[d]), dot);
            } else for (int d = 0; d < hd; d += 8) {
                uint4 w = *reinterpret_cast<const uint4*>(kp + d);
                u32 ws[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    dot = fmaf(qs[d + 2 * j], f16_to_f32((u16)(ws[j] & 0xffff)), dot);
                    dot = fmaf(qs[d + 2 * j + 1], f16_to_f32((u16)(ws[j] >> 16)), dot);
                }
            }
            s = dot * scale;
        }
        float tmax = s;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, o));
        const float mn = fmaxf(m, tmax);
        const float corr = m == NEG_INF ? 0.0f : expf(m - mn);
        const float pe = p <= pos ? expf(s - mn) : 0.0f;
        float psum = pe;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) psum += __shfl_xor_sync(0xffffffffu, psum, o);
        l = l * corr + psum;
        m = mn;
#pragma unroll
        for (int i = 0; i < ATT_MAX_D / 32; i++) acc[i] *= corr;
        const int nk = min(32, pos - base + 1);
        for (int t = 0; t < nk; t++) {
            const float pt = __shfl_sync(0xffffffffu, pe, t);
            const int st = __shfl_sync(0xffffffffu, slot, t);
            const u16* vp = V + (i64)st * vw + kvh * hdv;
#pragma unroll
            for (int i = 0; i < ATT_MAX_D / 32; i++)
                if (i < nd && lane + 32 * i < hdv) acc[i] = fmaf(pt, f16_to_f32(vp[lane + 32 * i]), acc[i]);
        }
    }

    if (lane == 0) {
        wm[warp] = m;
        wl[warp] = l;
    }
#pragma unroll
    for (int i = 0; i < ATT_MAX_D / 32; i++)
        if (i < nd && lane + 32 * i < hdv) wacc[warp][lane + 32 * i] = acc[i];
    __syncthreads();

    // Merge the warps' partial softmaxes, then the sink.
    float M = NEG_INF;
    for (int w = 0; w < ATT_WARPS; w++) M = fmaxf(M, wm[w]);
    float sink = sinks ? sinks[h] : NEG_INF;
    const float Mall = fmaxf(M, sink);
    float L = 0.0f;
    for (int w = 0; w < ATT_WARPS; w++)
        if (wm[w] != NEG_INF) L += wl[w] * expf(wm[w] - Mall);
    if (sinks) L += expf(sink - Mall);
    const float inv = 1.0f / L;
    for (int d = threadIdx.x; d < hdv; d += blockDim.x) {
        float a = 0.0f;
        for (int w = 0; w < ATT_WARPS; w++)
            if (wm[w] != NEG_INF) a = fmaf(wacc[w][d], expf(wm[w] - Mall), a);
        out[((i64)r * n_head + h) * hdv + d] = a * inv;
    }
}
