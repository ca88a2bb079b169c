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

// meta[5r..5r+5) = (pos, lo, table offset, first block, split) of row r; its keys are positions
// lo..=pos (`split` is read by attention_f16 only). q: [rows][n_head·hd]; out: [rows][n_head·hdv].
// The all-f32 path, for batches of 64 rows or more (the CPU backend's tiled path).
// grid (rows, n_head), block (32·ATT_WARPS). hd, hdv ≤ 256 (the host checks).
extern "C" __global__ void attention(const float* KRESTRICT q, const u16* KRESTRICT K, const u16* KRESTRICT V,
                                     const int* KRESTRICT meta, const int* KRESTRICT tables,
                                     const float* KRESTRICT sinks, float* KRESTRICT out, int n_head, int n_head_kv,
                                     int hd, int hdv, int bs, float scale) {
    __shared__ float qs[ATT_MAX_D];
    __shared__ float wm[ATT_WARPS], wl[ATT_WARPS];
    __shared__ float wacc[ATT_WARPS][ATT_MAX_D];
    const int r = blockIdx.x, h = blockIdx.y;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int pos = meta[5 * r], lo = meta[5 * r + 1], toff = meta[5 * r + 2], first = meta[5 * r + 3];
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

KDEV float round_f16(float f) { return f16_to_f32(to_f16(f)); }

#define F16_TILE 128

// The CPU backend's path for batches of fewer than 64 rows (ggml's `flash_attn_ext_f16_one_chunk`),
// whose roundings it follows so that the two backends agree closely: the query rounded to f16,
// an online softmax over the keys in order, the weighted values accumulated in f16 (rounded after
// every key) and rescaled whenever the maximum grows; an attention sink joins after the last key.
// A row with split = meta[5r + 4] > 0 (one row over 512 or more cache cells, as ggml's split-KV
// path at two threads) attends chunks of `split` positions counted from 0 separately (the sink in
// the first) and merges them in f32. Keys come in tiles of 128: scores in parallel, the running
// maximum by a scan, then each thread walks the tile in order for its value dimensions (tid and
// tid + 128). grid (rows, n_head), block (F16_TILE); hd, hdv ≤ 256.
extern "C" __global__ void attention_f16(const float* KRESTRICT q, const u16* KRESTRICT K, const u16* KRESTRICT V,
                                         const int* KRESTRICT meta, const int* KRESTRICT tables,
                                         const float* KRESTRICT sinks, float* KRESTRICT out, int n_head,
                                         int n_head_kv, int hd, int hdv, int bs, float scale) {
    __shared__ float qs[ATT_MAX_D];
    __shared__ float ms_t[F16_TILE], vs_t[F16_TILE];
    __shared__ int slot_t[F16_TILE];
    __shared__ float wmax[F16_TILE / 32];
    __shared__ float sum_sh;
    const int r = blockIdx.x, h = blockIdx.y, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int pos = meta[5 * r], lo = meta[5 * r + 1], toff = meta[5 * r + 2], first = meta[5 * r + 3];
    const int split = meta[5 * r + 4];
    const int kvh = h / (n_head / n_head_kv);
    const int kw = n_head_kv * hd, vw = n_head_kv * hdv;
    for (int d = tid; d < hd; d += blockDim.x) qs[d] = round_f16(q[((i64)r * n_head + h) * hd + d]);
    __syncthreads();
    const bool has0 = tid < hdv, has1 = tid + F16_TILE < hdv;
    const float sink = sinks ? sinks[h] : NEG_INF;

    float o0 = 0.0f, o1 = 0.0f;       // merged output (f32)
    float M = NEG_INF, S = 0.0f;      // merged maximum and sum
    const int step = split > 0 ? split : pos + 1;
    for (int c0 = split > 0 ? 0 : lo; c0 <= pos; c0 += step) {
        const int plo = max(c0, lo), phi = split > 0 ? min(c0 + split - 1, pos) : pos;
        const bool with_sink = sinks && (split == 0 || c0 == 0);
        if (plo > phi && !with_sink) continue;
        float a0 = 0.0f, a1 = 0.0f;  // f16 accumulators, held as f32
        float m = NEG_INF, sum = 0.0f;
        for (int t0 = plo; t0 <= phi; t0 += F16_TILE) {
            const int nt = min(F16_TILE, phi - t0 + 1);
            float s = NEG_INF;
            if (tid < nt) {
                const int p = t0 + tid;
                const int slot = tables[toff + p / bs - first] * bs + p % bs;
                const u16* kp = K + (i64)slot * kw + kvh * hd;
                float dot = 0.0f;
                for (int d = 0; d < hd; d++) dot = fmaf(qs[d], f16_to_f32(kp[d]), dot);
                s = dot * scale;
                slot_t[tid] = slot;
            }
            // Exclusive running maximum before each key: m, then the scores before it.
            float inc = s;
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
                const float u = __shfl_up_sync(0xffffffffu, inc, o);
                if (lane >= o) inc = fmaxf(inc, u);
            }
            if (lane == 31) wmax[warp] = inc;
            __syncthreads();
            float before = m;
            for (int w = 0; w < warp; w++) before = fmaxf(before, wmax[w]);
            const float up = __shfl_up_sync(0xffffffffu, inc, 1);
            if (lane > 0) before = fmaxf(before, up);
            if (tid < nt) {
                if (s > before) {
                    ms_t[tid] = expf(before - s);
                    vs_t[tid] = 1.0f;
                } else {
                    ms_t[tid] = 1.0f;
                    vs_t[tid] = expf(s - before);
                }
            }
            for (int w = 0; w < F16_TILE / 32; w++) m = fmaxf(m, wmax[w]);
            __syncthreads();
            if (tid == 0)
                for (int t = 0; t < nt; t++) sum = fmaf(sum, ms_t[t], vs_t[t]);
            for (int t = 0; t < nt; t++) {
                const float ms = ms_t[t], vs = vs_t[t];
                const u16* vp = V + (i64)slot_t[t] * vw + kvh * hdv;
                if (has0) a0 = round_f16(fmaf(f16_to_f32(vp[tid]), vs, round_f16(__fmul_rn(a0, ms))));
                if (has1) a1 = round_f16(fmaf(f16_to_f32(vp[tid + F16_TILE]), vs, round_f16(__fmul_rn(a1, ms))));
            }
            __syncthreads();
        }
        if (tid == 0) sum_sh = sum;
        __syncthreads();
        sum = sum_sh;
        __syncthreads();
        if (with_sink) {
            float ms = 1.0f, vs = 1.0f;
            if (sink > m) {
                ms = expf(m - sink);
                m = sink;
                a0 = __fmul_rn(a0, ms);
                a1 = __fmul_rn(a1, ms);
            } else {
                vs = expf(sink - m);
            }
            sum = __fadd_rn(__fmul_rn(sum, ms), vs);
        }
        if (split == 0) {
            M = m;
            S = sum;
            o0 = a0;
            o1 = a1;
        } else {
            const float mn = fmaxf(M, m);
            const float s_old = expf(M - mn), s_new = expf(m - mn);
            o0 = fmaf(o0, s_old, __fmul_rn(a0, s_new));
            o1 = fmaf(o1, s_old, __fmul_rn(a1, s_new));
            S = fmaf(S, s_old, __fmul_rn(sum, s_new));
            M = mn;
        }
    }
    const float inv = 1.0f / S;
    float* orow = out + ((i64)r * n_head + h) * hdv;
    if (has0) orow[tid] = __fmul_rn(o0, inv);
    if (has1) orow[tid + F16_TILE] = __fmul_rn(o1, inv);
}
