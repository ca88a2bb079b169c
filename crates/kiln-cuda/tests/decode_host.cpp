// Host driver for tests/decode_host.rs: runs the decoders of kernels/quant.cuh and the per-thread
// pieces of kernels/matmul.cu (row_dot_lane, mm_load/mm_compute/mm_store, get_rows_thread) on
// the CPU, emulating every lane / thread of the grid the GPU launch uses.
//
// stdin:  i32 mode = 0; i32 ty, m, k, n, n_ids; u64 image bytes; image; f32 X[n*k]; i32 ids[n_ids]
// stdout: f32 dec[m*k]; f32 mv[n*m]; f32 mm[n*m]; f32 rows[n_ids*k]
// or, for mv_ids (every lane of every (weight row, slot) warp):
// stdin:  i32 mode = 1; i32 ty, m, k, n_exp, n_slots, x_div, bias_stride, nx; u64 image bytes;
//         image (n_exp slabs); f32 X[nx*k]; i32 ids[n_slots]; f32 bias[n_exp*bias_stride]
// stdout: f32 Y_mv_ids[n_slots*m]; f32 Y_mm_ids[n_slots*m]
// Exit status 3 with a message when a decoder writes an element twice, never, or out of range.
#include "matmul.cu"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

static void rd(void* p, size_t n) {
    if (n && fread(p, 1, n, stdin) != n) {
        fprintf(stderr, "short read\n");
        exit(2);
    }
}

template <class T>
static int run(int m, int k, int n, int nid, std::vector<u8>& img, std::vector<float>& X, std::vector<int>& ids) {
    Slab s = make_slab<T>(img.data(), m, k);
    const int nc = s.nb * T::CPB;
    // 1. Decode every chunk of every row; each element exactly once.
    std::vector<float> dec((size_t)m * k, 0.0f);
    std::vector<int> cnt((size_t)m * k, 0);
    for (int r = 0; r < m; r++) {
        for (int c = 0; c < nc; c++) {
            float v[T::NG * 16];
            T::decode(s, r, c, v);
            for (int g = 0; g < T::NG; g++) {
                int o = T::off(c, g);
                if (o < 0 || o + 16 > k) {
                    fprintf(stderr, "chunk %d group %d: offset %d out of row (k=%d)\n", c, g, o, k);
                    return 3;
                }
                for (int t = 0; t < 16; t++) {
                    dec[(size_t)r * k + o + t] = v[16 * g + t];
                    cnt[(size_t)r * k + o + t]++;
                }
            }
        }
        if constexpr (T::FLOAT != 0) {
            for (int c = nc * 16; c < k; c++) {
                dec[(size_t)r * k + c] = T::one(s, r, c);
                cnt[(size_t)r * k + c]++;
            }
        }
    }
    for (size_t i = 0; i < cnt.size(); i++)
        if (cnt[i] != 1) {
            fprintf(stderr, "element %zu decoded %d times\n", i, cnt[i]);
            return 3;
        }
    // Every tile step's chunks cover exactly [k0, k0 + SPAN).
    if (T::FLOAT == 0) {
        typedef MM<T> S;
        for (int k0 = 0; k0 < k; k0 += S::KT)
            for (int j = 0; j < S::CPS; j++) {
                int c = (k0 / T::SPAN) * S::CPS + j;
                for (int g = 0; g < T::NG; g++) {
                    int o = T::off(c, g);
                    if (o < k0 || o + 16 > k0 + S::KT) {
                        fprintf(stderr, "tile step %d: chunk %d group %d at %d outside the step\n", k0, c, g, o);
                        return 3;
                    }
                }
            }
    }
    // 2. mv: one warp of 32 lanes per weight row, as mv_warp (NX = 1 for n == 1, else 8).
    std::vector<float> mv((size_t)n * m, NAN);
    const bool xal = aligned16(X.data()) && (k & 3) == 0;
    const int NXr = n == 1 ? 1 : 8;
    for (int r = 0; r < m; r++) {
        for (int i0 = 0; i0 < n; i0 += NXr) {
            float lanes[32][8] = {};
            for (int lane = 0; lane < 32; lane++) {
                if (n == 1)
                    row_dot_lane<T, 1>(s, r, X.data() + (i64)i0 * k, k, n - i0, xal, lane, 32, lanes[lane]);
                else
                    row_dot_lane<T, 8>(s, r, X.data() + (i64)i0 * k, k, n - i0, xal, lane, 32, lanes[lane]);
            }
            for (int i = 0; i < NXr && i0 + i < n; i++) {
                float t = 0;
                for (int lane = 0; lane < 32; lane++) t += lanes[lane][i];
                mv[(size_t)(i0 + i) * m + r] = t;
            }
        }
    }
    // 3. mm: every block of the grid, every thread, the k loop with its two phases.
    typedef MM<T> S;
    std::vector<float> mm((size_t)n * m, NAN);
    std::vector<float> Ws(S::TM * S::LD), Xs(S::TN * S::LD);
    std::vector<float> acc((size_t)S::THREADS * S::RM * S::RN);
    for (int bx = 0; bx < (m + S::TM - 1) / S::TM; bx++)
        for (int by = 0; by < (n + S::TN - 1) / S::TN; by++) {
            const int m0 = bx * S::TM, n0 = by * S::TN;
            std::fill(acc.begin(), acc.end(), 0.0f);
            for (int k0 = 0; k0 < k; k0 += S::KT) {
                std::fill(Ws.begin(), Ws.end(), NAN);
                std::fill(Xs.begin(), Xs.end(), NAN);
                for (int tid = 0; tid < S::THREADS; tid++)
                    mm_load<T>(s, X.data(), m, n, m0, n0, k0, tid, Ws.data(), Xs.data());
                for (int tid = 0; tid < S::THREADS; tid++)
                    mm_compute<T>(tid, Ws.data(), Xs.data(), acc.data() + (size_t)tid * S::RM * S::RN);
            }
            for (int tid = 0; tid < S::THREADS; tid++)
                mm_store<T>(tid, m, n, m0, n0, acc.data() + (size_t)tid * S::RM * S::RN, nullptr, mm.data());
        }
    // 4. get_rows, scale 0.5: every thread of every output row.
    std::vector<float> rows((size_t)nid * k, NAN);
    const int nch = get_rows_chunks<T>(k);
    for (int i = 0; i < nid; i++)
        for (int t = 0; t < nch; t++) get_rows_thread<T>(s, ids[i], 0.5f, rows.data() + (size_t)i * k, t);

    fwrite(dec.data(), 4, dec.size(), stdout);
    fwrite(mv.data(), 4, mv.size(), stdout);
    fwrite(mm.data(), 4, mm.size(), stdout);
    fwrite(rows.data(), 4, rows.size(), stdout);
    return 0;
}

template <class T>
static int run_ids(int m, int k, int n_exp, int n_slots, int x_div, int bias_stride, std::vector<u8>& img,
                   std::vector<float>& X, std::vector<int>& ids, std::vector<float>& bias) {
    const i64 slab_bytes = (i64)img.size() / n_exp;
    std::vector<float> Y((size_t)n_slots * m, NAN);
    for (int slot = 0; slot < n_slots; slot++)
        for (int r = 0; r < m; r++) {
            Slab s;
            const float* x;
            float* y;
            float b;
            if (!ids_slot<T>(img.data(), slab_bytes, X.data(), x_div, ids.data(), bias.data(), bias_stride, Y.data(), m,
                             k, slot, r, &s, &x, &y, &b)) {
                y[r] = 0.0f;
                continue;
            }
            const bool xal = aligned16(x) && (k & 3) == 0;
            float t = 0;
            for (int lane = 0; lane < 32; lane++) {
                float acc[1] = {0.0f};
                row_dot_lane<T, 1>(s, r, x, k, 1, xal, lane, 32, acc);
                t += acc[0];
            }
            y[r] = t + b;
        }
    fwrite(Y.data(), 4, Y.size(), stdout);
    // mm_ids: blocks (bx, e), the serial form of the slot gather, tiles of TN slots.
    typedef MM<T> S;
    std::vector<float> Y2((size_t)n_slots * m, NAN);
    std::vector<float> Ws(S::TM * S::LD), Xs(S::TN * S::LD);
    std::vector<float> acc((size_t)S::THREADS * S::RM * S::RN);
    std::vector<int> list(S::TN);
    for (int bx = 0; bx < (m + S::TM - 1) / S::TM; bx++) {
        const int m0 = bx * S::TM;
        for (int slot = 0; slot < n_slots; slot++)
            if (ids[slot] < 0)
                for (int r = m0; r < m0 + S::TM && r < m; r++) Y2[(size_t)slot * m + r] = 0.0f;
        for (int e = 0; e < n_exp; e++) {
            Slab s = make_slab<T>(img.data() + e * slab_bytes, m, k);
            int j = 0;
            while (j < n_slots) {
                const int cnt = mm_ids_gather_serial(ids.data(), n_slots, e, S::TN, &j, list.data());
                if (cnt == 0) break;
                std::fill(acc.begin(), acc.end(), 0.0f);
                for (int k0 = 0; k0 < k; k0 += S::KT) {
                    std::fill(Ws.begin(), Ws.end(), NAN);
                    std::fill(Xs.begin(), Xs.end(), NAN);
                    for (int tid = 0; tid < S::THREADS; tid++)
                        mm_load<T>(s, X.data(), m, cnt, m0, 0, k0, tid, Ws.data(), Xs.data(), list.data(), x_div);
                    for (int tid = 0; tid < S::THREADS; tid++)
                        mm_compute<T>(tid, Ws.data(), Xs.data(), acc.data() + (size_t)tid * S::RM * S::RN);
                }
                for (int tid = 0; tid < S::THREADS; tid++)
                    mm_store<T>(tid, m, cnt, m0, 0, acc.data() + (size_t)tid * S::RM * S::RN,
                                bias.data() + (size_t)e * bias_stride, Y2.data(), list.data());
            }
        }
    }
    fwrite(Y2.data(), 4, Y2.size(), stdout);
    return 0;
}

#define DISPATCH(FN, ...)                                   \
    switch (ty) {                                           \
        case 0: return FN<TF32>(__VA_ARGS__);               \
        case 1: return FN<TF16>(__VA_ARGS__);               \
        case 30: return FN<TBF16>(__VA_ARGS__);             \
        case 2: return FN<TQ4_0>(__VA_ARGS__);              \
        case 3: return FN<TQ4_1>(__VA_ARGS__);              \
        case 6: return FN<TQ5_0>(__VA_ARGS__);              \
        case 7: return FN<TQ5_1>(__VA_ARGS__);              \
        case 8: return FN<TQ8_0>(__VA_ARGS__);              \
        case 10: return FN<TQ2_K>(__VA_ARGS__);             \
        case 11: return FN<TQ3_K>(__VA_ARGS__);             \
        case 12: return FN<TQ4_K>(__VA_ARGS__);             \
        case 13: return FN<TQ5_K>(__VA_ARGS__);             \
        case 14: return FN<TQ6_K>(__VA_ARGS__);             \
        case 39: return FN<TMXFP4>(__VA_ARGS__);            \
    }

int main() {
    int mode;
    rd(&mode, 4);
    if (mode == 1) {
        int h[8];
        rd(h, sizeof h);
        const int ty = h[0], m = h[1], k = h[2], n_exp = h[3], n_slots = h[4], x_div = h[5], bias_stride = h[6],
                  nx = h[7];
        unsigned long long nbytes;
        rd(&nbytes, 8);
        std::vector<u8> img(nbytes);
        rd(img.data(), nbytes);
        std::vector<float> X((size_t)nx * k);
        rd(X.data(), X.size() * 4);
        std::vector<int> ids(n_slots);
        rd(ids.data(), ids.size() * 4);
        std::vector<float> bias((size_t)n_exp * bias_stride);
        rd(bias.data(), bias.size() * 4);
        DISPATCH(run_ids, m, k, n_exp, n_slots, x_div, bias_stride, img, X, ids, bias)
        fprintf(stderr, "unknown type %d\n", ty);
        return 4;
    }
    int h[5];
    rd(h, sizeof h);
    unsigned long long nbytes;
    rd(&nbytes, 8);
    std::vector<u8> img(nbytes);
    rd(img.data(), nbytes);
    const int ty = h[0], m = h[1], k = h[2], n = h[3], nid = h[4];
    std::vector<float> X((size_t)n * k);
    rd(X.data(), X.size() * 4);
    std::vector<int> ids(nid);
    rd(ids.data(), ids.size() * 4);
    DISPATCH(run, m, k, n, nid, img, X, ids)
    fprintf(stderr, "unknown type %d\n", ty);
    return 4;
}
