// Matrix products with weights in their quantized device layout (crates/kiln-cuda/src/layout.rs),
// f32 activations, f32 accumulation. One template per kernel over the decoders of quant.cuh,
// instantiated for every type by KILN_TYPES at the bottom:
//
//   mv_T      Y[i*m + j] = sum_c X[i*k + c] * W[j][c] (+ bias[j]), decode (n <= 8 rows; larger n
//             is correct but reads the weights once per 8 rows).
//             grid (ceil(m / 8)), block (32, 8), no dynamic shared memory: warp y of block x
//             computes weight row 8x + y for every activation row.
//   mm_T      the same product for any n, tiled: a block computes TM weight rows x TN activation
//             rows, decoding each weight chunk into shared memory once per tile step.
//             grid (ceil(m / TM), ceil(n / TN)), block (256), static shared memory only;
//             TM = TN = 32 for q2_K, q3_K, q6_K and 64 for every other type.
//   mv_ids_T  mixture of experts: for slot s < n_slots, e = ids[s],
//             Y[s*m + j] = W_e[j] . X[(s / x_div)*k ..] (+ bias[e*bias_stride + j]),
//             W_e = W + e*slab_bytes (a negative id writes zeros). grid (ceil(m / 8),
//             min(n_slots, 65535)), block (32, 8).
//   mm_ids_T  the same as mv_ids_T for many slots (prefill MoE): block (x, e) computes weight
//             rows x*TM .. of expert e against the slots routed to e, TN at a time (one warp
//             scans ids for them with ballots), decoding each weight chunk once per tile step.
//             grid (ceil(m / TM), n_expert), block (256); TM = TN as for mm_T.
//   get_rows_T  Y[i*k + c] = row ids[i] of W (m rows) decoded, times scale.
//             grid (n, ceil(chunks / 128)), block (128); chunks = k / 16 for f32/f16/bf16
//             (+1 when k % 16 != 0), k / 32 for the 32-element types, k / 32 for
//             q4_K/q5_K/q6_K, k / 64 for q2_K/q3_K.
//
// The pieces below the kernels (row_dot_lane, mm_load, mm_compute, mm_store, get_rows_thread)
// are plain functions of the thread's index, so the host test (crates/kiln-cuda/tests/
// decode_host.rs) runs them for every thread of a grid with g++ and checks the index math.
#include "quant.cuh"

// ---- matrix-vector ---------------------------------------------------------------------------

#define MV_ROWS 8  // weight rows (warps) per block

// Lane `lane` of `nlanes` adds its share of row r . X[i] (i < nx <= NX) to acc[i]: chunks
// lane, lane + nlanes, ... of the row, so a warp reads consecutive chunks (contiguous payload).
template <class T, int NX>
KDEV void row_dot_lane(const Slab& s, int r, const float* KRESTRICT X, i64 ldx, int nx, bool xal, int lane,
                       int nlanes, float* acc) {
    const int nc = s.nb * T::CPB;
    for (int c = lane; c < nc; c += nlanes) {
        float v[T::NG * 16];
        T::decode(s, r, c, v);
#pragma unroll
        for (int g = 0; g < T::NG; g++) {
            const int o = T::off(c, g);
#pragma unroll
            for (int i = 0; i < NX; i++) {
                if (i < nx) {
                    const float* xp = X + i * ldx + o;
                    float a = acc[i];
#pragma unroll
                    for (int q = 0; q < 4; q++) {
                        F4 f = ld_f4(xp + 4 * q, xal);
                        a += v[16 * g + 4 * q] * f.v[0];
                        a += v[16 * g + 4 * q + 1] * f.v[1];
                        a += v[16 * g + 4 * q + 2] * f.v[2];
                        a += v[16 * g + 4 * q + 3] * f.v[3];
                    }
                    acc[i] = a;
                }
            }
        }
    }
    if constexpr (T::FLOAT != 0) {
        // Float types: the k % 16 elements after the last whole chunk.
        for (int c = nc * 16 + lane; c < s.k; c += nlanes) {
            float w = T::one(s, r, c);
#pragma unroll
            for (int i = 0; i < NX; i++)
                if (i < nx) acc[i] += w * X[i * ldx + c];
        }
    }
}

// Where slot `slot` of mv_ids reads and writes for weight row r: expert e = ids[slot]'s slab,
// activation row slot / x_div, output row slot, bias[e * bias_stride + r]. False for e < 0 (the
// output is zero then).
template <class T>
KDEV bool ids_slot(const u8* W, i64 slab_bytes, const float* X, int x_div, const int* ids, const float* bias,
                   int bias_stride, float* Y, int m, int k, int slot, int r, Slab* s, const float** x, float** y,
                   float* b) {
    const int e = ids[slot];
    *y = Y + (i64)slot * m;
    if (e < 0) return false;
    *s = make_slab<T>(W + (i64)e * slab_bytes, m, k);
    *x = X + (i64)(slot / x_div) * k;
    *b = bias ? bias[(i64)e * bias_stride + r] : 0.0f;
    return true;
}

#ifdef KILN_GPU
KDEV float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// One warp: weight row r against activation rows X[0 .. n) (row stride k), into Y[i*ldy + r].
template <class T, int NX>
__device__ void mv_warp(const Slab& s, int r, const float* X, int n, float* Y, i64 ldy, float b) {
    const int k = s.k;
    const bool xal = aligned16(X) && (k & 3) == 0;
    for (int i0 = 0; i0 < n; i0 += NX) {
        float acc[NX];
#pragma unroll
        for (int i = 0; i < NX; i++) acc[i] = 0.0f;
        row_dot_lane<T, NX>(s, r, X + (i64)i0 * k, k, n - i0, xal, threadIdx.x, 32, acc);
#pragma unroll
        for (int i = 0; i < NX; i++) {
            float t = warp_sum(acc[i]);
            if (threadIdx.x == 0 && i0 + i < n) Y[(i64)(i0 + i) * ldy + r] = t + b;
        }
    }
}

template <class T>
__device__ void mv_impl(const u8* W, const float* X, const float* bias, float* Y, int m, int k, int n) {
    const int r = blockIdx.x * MV_ROWS + threadIdx.y;
    if (r >= m) return;
    Slab s = make_slab<T>(W, m, k);
    const float b = bias ? bias[r] : 0.0f;
    if (n == 1)
        mv_warp<T, 1>(s, r, X, n, Y, m, b);
    else
        mv_warp<T, 8>(s, r, X, n, Y, m, b);
}

template <class T>
__device__ void mv_ids_impl(const u8* W, i64 slab_bytes, const float* X, int x_div, const int* ids, int n_slots,
                            const float* bias, int bias_stride, float* Y, int m, int k) {
    const int r = blockIdx.x * MV_ROWS + threadIdx.y;
    if (r >= m) return;
    // Slots beyond the grid's 65535 rows: the grid's rows stride over them.
    for (int slot = blockIdx.y; slot < n_slots; slot += gridDim.y) {
        Slab s;
        const float* x;
        float* y;
        float b;
        if (!ids_slot<T>(W, slab_bytes, X, x_div, ids, bias, bias_stride, Y, m, k, slot, r, &s, &x, &y, &b)) {
            if (threadIdx.x == 0) y[r] = 0.0f;
            continue;
        }
        mv_warp<T, 1>(s, r, x, 1, y, 0, b);
    }
}
#endif

// ---- tiled matrix-matrix -----------------------------------------------------------------------

template <class T>
struct MM {
    static const int KT = T::FLOAT ? 32 : T::SPAN;  // elements of k per tile step
    static const int TM = KT >= 128 ? 32 : 64;     // weight rows per block
    static const int TN = TM;                       // activation rows per block
    static const int LD = KT + 1;                   // shared row stride (odd: no bank conflicts)
    static const int RM = TM / 16, RN = TN / 16;    // outputs per thread
    static const int THREADS = 256;
    static const int CPS = T::FLOAT ? 1 : KT / (16 * T::NG);  // chunks per tile step and row
};

// Stage step k0 of the tile (m0, n0): weights into Ws[TM][LD], activations into Xs[TN][LD];
// zeros outside the matrices. With `sel` (mm_ids), tile column a < n is activation row
// sel[a] / x_div instead of n0 + a.
template <class T>
KDEV void mm_load(const Slab& s, const float* KRESTRICT X, int m, int n, int m0, int n0, int k0, int tid, float* Ws,
                  float* Xs, const int* sel = nullptr, int x_div = 1) {
    typedef MM<T> S;
    const int k = s.k;
    if constexpr (T::FLOAT != 0) {
        for (int idx = tid; idx < S::TM * S::KT; idx += S::THREADS) {
            const int rr = idx / S::KT, cc = idx % S::KT;
            const int row = m0 + rr, col = k0 + cc;
            Ws[rr * S::LD + cc] = (row < m && col < k) ? T::one(s, row, col) : 0.0f;
        }
    } else {
        for (int task = tid; task < S::TM * S::CPS; task += S::THREADS) {
            const int rr = task / S::CPS, j = task % S::CPS;
            const int row = m0 + rr;
            const int c = (k0 / T::SPAN) * S::CPS + j;
            float v[T::NG * 16];
            if (row < m) {
                T::decode(s, row, c, v);
            } else {
#pragma unroll
                for (int t = 0; t < T::NG * 16; t++) v[t] = 0.0f;
            }
#pragma unroll
            for (int g = 0; g < T::NG; g++) {
                float* dst = Ws + rr * S::LD + (T::off(c, g) - k0);
#pragma unroll
                for (int t = 0; t < 16; t++) dst[t] = v[16 * g + t];
            }
        }
    }
    for (int idx = tid; idx < S::TN * S::KT; idx += S::THREADS) {
        const int a = idx / S::KT, cc = idx % S::KT;
        const int i = n0 + a, col = k0 + cc;
        const i64 xi = sel ? (i64)(i < n ? sel[i] / x_div : 0) : (i64)i;
        Xs[a * S::LD + cc] = (i < n && col < k) ? X[xi * k + col] : 0.0f;
    }
}

// acc[a*RN + b] += Ws[tx + 16a] . Xs[ty + 16b] over the step (tx = tid % 16, ty = tid / 16).
template <class T>
KDEV void mm_compute(int tid, const float* Ws, const float* Xs, float* acc) {
    typedef MM<T> S;
    const int tx = tid % 16, ty = tid / 16;
#pragma unroll 4
    for (int kk = 0; kk < S::KT; kk++) {
        float w[S::RM], x[S::RN];
#pragma unroll
        for (int a = 0; a < S::RM; a++) w[a] = Ws[(tx + 16 * a) * S::LD + kk];
#pragma unroll
        for (int b = 0; b < S::RN; b++) x[b] = Xs[(ty + 16 * b) * S::LD + kk];
#pragma unroll
        for (int a = 0; a < S::RM; a++)
#pragma unroll
            for (int b = 0; b < S::RN; b++) acc[a * S::RN + b] += w[a] * x[b];
    }
}

template <class T>
KDEV void mm_store(int tid, int m, int n, int m0, int n0, const float* acc, const float* bias, float* Y,
                   const int* sel = nullptr) {
    typedef MM<T> S;
    const int tx = tid % 16, ty = tid / 16;
#pragma unroll
    for (int a = 0; a < S::RM; a++) {
        const int j = m0 + tx + 16 * a;
        if (j >= m) continue;
        const float b = bias ? bias[j] : 0.0f;
#pragma unroll
        for (int bb = 0; bb < S::RN; bb++) {
            const int i = n0 + ty + 16 * bb;
            if (i < n) Y[(sel ? (i64)sel[i] : (i64)i) * m + j] = acc[a * S::RN + bb] + b;
        }
    }
}

#ifdef KILN_GPU
template <class T>
__device__ void mm_impl(const u8* W, const float* X, const float* bias, float* Y, int m, int k, int n, float* Ws,
                        float* Xs) {
    typedef MM<T> S;
    Slab s = make_slab<T>(W, m, k);
    const int m0 = blockIdx.x * S::TM, n0 = blockIdx.y * S::TN, tid = threadIdx.x;
    float acc[S::RM * S::RN];
#pragma unroll
    for (int i = 0; i < S::RM * S::RN; i++) acc[i] = 0.0f;
    for (int k0 = 0; k0 < k; k0 += S::KT) {
        mm_load<T>(s, X, m, n, m0, n0, k0, tid, Ws, Xs);
        __syncthreads();
        mm_compute<T>(tid, Ws, Xs, acc);
        __syncthreads();
    }
    mm_store<T>(tid, m, n, m0, n0, acc, bias, Y);
}
#endif

// ---- tiled mixture of experts ----------------------------------------------------------------

// The next <= TN slots s >= *j with ids[s] == e, in slot order, into list; advances *j past the
// last one taken (or to n_slots). Returns how many. Host form (one thread); the kernel runs the
// same scan with one warp and ballots (mm_ids_gather_warp).
KDEV int mm_ids_gather_serial(const int* ids, int n_slots, int e, int tn, int* j, int* list) {
    int c = 0, s = *j;
    for (; s < n_slots && c < tn; s++)
        if (ids[s] == e) list[c++] = s;
    *j = s;
    return c;
}

#ifdef KILN_GPU
// Warp form of mm_ids_gather_serial (lane = threadIdx.x % 32): the same list, the same *j.
__device__ __forceinline__ int mm_ids_gather_warp(const int* ids, int n_slots, int e, int tn, int* j, int* list, int lane) {
    int c = 0, s0 = *j;
    while (s0 < n_slots && c < tn) {
        const int s = s0 + lane;
        const bool hit = s < n_slots && ids[s] == e;
        const u32 mask = __ballot_sync(0xffffffffu, hit);
        const int pos = c + __popc(mask & ((1u << lane) - 1u));
        if (hit && pos < tn) list[pos] = s;
        const int got = __popc(mask);
        if (c + got <= tn) {
            c += got;
            s0 += 32;
        } else {
            // Stop right after the hit that filled the list.
            const u32 last = __ballot_sync(0xffffffffu, hit && pos == tn - 1);
            s0 += __ffs(last);
            c = tn;
        }
    }
    *j = s0 < n_slots ? s0 : n_slots;
    return c;
}

// One tile of mm_ids: weight rows blockIdx.x*TM .. of expert blockIdx.y against the cnt slots
// of list.
template <class T>
__device__ __noinline__ void mm_ids_tile(const u8* W, i64 slab_bytes, const float* X, int x_div, const int* list,
                                         int cnt, const float* bias, int bias_stride, float* Y, int m, int k,
                                         float* Ws, float* Xs) {
    typedef MM<T> S;
    const int e = blockIdx.y, m0 = blockIdx.x * S::TM, tid = threadIdx.x;
    Slab s = make_slab<T>(W + (i64)e * slab_bytes, m, k);
    float acc[S::RM * S::RN];
#pragma unroll
    for (int i = 0; i < S::RM * S::RN; i++) acc[i] = 0.0f;
    for (int k0 = 0; k0 < k; k0 += S::KT) {
        mm_load<T>(s, X, m, cnt, m0, 0, k0, tid, Ws, Xs, list, x_div);
        __syncthreads();
        mm_compute<T>(tid, Ws, Xs, acc);
        __syncthreads();
    }
    mm_store<T>(tid, m, cnt, m0, 0, acc, bias ? bias + (i64)e * bias_stride : nullptr, Y, list);
}

// Block (x, e): weight rows x*TM .. of expert e against every slot routed to e, TN slots at a time.
template <class T>
__device__ void mm_ids_impl(const u8* W, i64 slab_bytes, const float* X, int x_div, const int* ids, int n_slots,
                            const float* bias, int bias_stride, float* Y, int m, int k, float* Ws, float* Xs,
                            int* list) {
    typedef MM<T> S;
    __shared__ int s_cnt, s_next;
    const int tid = threadIdx.x;
    if (blockIdx.y == 0) {
        // Slots with a negative id get zeros (as in mv_ids), rows m0 .. m0 + TM of them.
        const int m0 = blockIdx.x * S::TM;
        for (int slot = tid; slot < n_slots; slot += S::THREADS)
            if (ids[slot] < 0)
                for (int r = m0; r < m0 + S::TM && r < m; r++) Y[(i64)slot * m + r] = 0.0f;
    }
    int j = 0;
#pragma unroll 1
    while (j < n_slots) {
        if (tid < 32) {
            int jj = j;
            int c = mm_ids_gather_warp(ids, n_slots, blockIdx.y, S::TN, &jj, list, tid);
            if (tid == 0) {
                s_cnt = c;
                s_next = jj;
            }
        }
        __syncthreads();
        const int cnt = s_cnt;
        j = s_next;
        if (cnt == 0) break;
        mm_ids_tile<T>(W, slab_bytes, X, x_div, list, cnt, bias, bias_stride, Y, m, k, Ws, Xs);
        __syncthreads();  // list is rewritten by the next gather
    }
}
#endif

// ---- embedding rows ----------------------------------------------------------------------------

// Thread `t` of the flattened grid for output row i: decodes chunk t of row ids[i] (float types:
// thread nc also writes the k % 16 tail).
template <class T>
KDEV void get_rows_thread(const Slab& s, int row, float scale, float* KRESTRICT y, int t) {
    const int nc = s.nb * T::CPB;
    if (t < nc) {
        float v[T::NG * 16];
        T::decode(s, row, t, v);
#pragma unroll
        for (int g = 0; g < T::NG; g++) {
            float* dst = y + T::off(t, g);
#pragma unroll
            for (int q = 0; q < 16; q++) dst[q] = v[16 * g + q] * scale;
        }
    }
    if constexpr (T::FLOAT != 0) {
        if (t == nc)
            for (int c = nc * 16; c < s.k; c++) y[c] = T::one(s, row, c) * scale;
    }
}

template <class T>
KDEV int get_rows_chunks(int k) {
    return (k / T::BLK) * T::CPB + ((T::FLOAT != 0 && k % 16 != 0) ? 1 : 0);
}

#ifdef KILN_GPU
template <class T>
__device__ void get_rows_impl(const u8* W, const int* ids, float scale, float* Y, int n, int k, int m) {
    const int i = blockIdx.x;
    const int t = blockIdx.y * blockDim.x + threadIdx.x;
    if (i >= n || t >= get_rows_chunks<T>(k)) return;
    const int row = ids[i];
    if (row < 0 || row >= m) return;
    Slab s = make_slab<T>(W, m, k);
    get_rows_thread<T>(s, row, scale, Y + (i64)i * k, t);
}

// ---- entry points ----------------------------------------------------------------------------

#define KILN_KERNELS(SUF, T)                                                                                       \
    extern "C" __global__ void __launch_bounds__(256)                                                              \
        mv_##SUF(const u8* W, const float* X, const float* bias, float* Y, int m, int k, int n) {                  \
        mv_impl<T>(W, X, bias, Y, m, k, n);                                                                        \
    }                                                                                                              \
    extern "C" __global__ void __launch_bounds__(256)                                                              \
        mm_##SUF(const u8* W, const float* X, const float* bias, float* Y, int m, int k, int n) {                  \
        __shared__ float ws_##SUF[MM<T>::TM * MM<T>::LD];                                                           \
        __shared__ float xs_##SUF[MM<T>::TN * MM<T>::LD];                                                           \
        mm_impl<T>(W, X, bias, Y, m, k, n, ws_##SUF, xs_##SUF);                                                    \
    }                                                                                                              \
    extern "C" __global__ void __launch_bounds__(256)                                                              \
        mv_ids_##SUF(const u8* W, long long slab_bytes, const float* X, int x_div, const int* ids, int n_slots,     \
                     const float* bias, int bias_stride, float* Y, int m, int k) {                                 \
        mv_ids_impl<T>(W, slab_bytes, X, x_div, ids, n_slots, bias, bias_stride, Y, m, k);                         \
    }                                                                                                              \
    extern "C" __global__ void __launch_bounds__(256)                                                              \
        mm_ids_##SUF(const u8* W, long long slab_bytes, const float* X, int x_div, const int* ids, int n_slots,     \
                     const float* bias, int bias_stride, float* Y, int m, int k) {                                 \
        __shared__ float ws_##SUF[MM<T>::TM * MM<T>::LD];                                                           \
        __shared__ float xs_##SUF[MM<T>::TN * MM<T>::LD];                                                           \
        __shared__ int list_##SUF[MM<T>::TN];                                                                       \
        mm_ids_impl<T>(W, slab_bytes, X, x_div, ids, n_slots, bias, bias_stride, Y, m, k, ws_##SUF, xs_##SUF,       \
                       list_##SUF);                                                                                \
    }                                                                                                              \
    extern "C" __global__ void __launch_bounds__(128)                                                              \
        get_rows_##SUF(const u8* W, const int* ids, float scale, float* Y, int n, int k, int m) {                  \
        get_rows_impl<T>(W, ids, scale, Y, n, k, m);                                                               \
    }

KILN_KERNELS(f32, TF32)
KILN_KERNELS(f16, TF16)
KILN_KERNELS(bf16, TBF16)
KILN_KERNELS(q4_0, TQ4_0)
KILN_KERNELS(q4_1, TQ4_1)
KILN_KERNELS(q5_0, TQ5_0)
KILN_KERNELS(q5_1, TQ5_1)
KILN_KERNELS(q8_0, TQ8_0)
KILN_KERNELS(q2_K, TQ2_K)
KILN_KERNELS(q3_K, TQ3_K)
KILN_KERNELS(q4_K, TQ4_K)
KILN_KERNELS(q5_K, TQ5_K)
KILN_KERNELS(q6_K, TQ6_K)
KILN_KERNELS(mxfp4, TMXFP4)
#endif
