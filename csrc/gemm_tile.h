// A register-tiled GEMM micro-kernel for the small products inside flash attention.
//
// Why not BLAS: every product there is one 64 x 64 tile (times the head dim), thousands of them
// per call, each interleaved with the softmax of the same tile while it is still in L1. A BLAS
// call per tile costs more in call overhead, argument checks and packing than the tile's own
// arithmetic, and BLAS cannot fuse the online-softmax rescale (MODE 2) or skip the blocks that
// a causal mask zeroes (Tri). One micro-kernel with a strided A serves every product of the
// forward and the backward pass.
#pragma once
#include "simd.h"

namespace tl {

// The micro-kernel: an R x (NV*W) block of C = sum_k A(r, k) * B[k][c], held in registers.
// A is read through strides (ars, acs), so A^T needs no copy; B is row-major with stride ldb.
// MODE 0: C = AB.  MODE 1: C += AB.  MODE 2: C = C * rowscale[r] + AB (online-softmax rescale).
template <typename T, int W, int R, int NV, int MODE>
TL_INLINE void micro(long K, const T* A, long ars, long acs, const T* B, long ldb, T* C, long ldc,
                     const T* rowscale) {
    using VT = typename Vec<T, W>::type;
    VT acc[R][NV];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) {
            if constexpr (MODE == 0) {
                acc[r][v] = VT{};
            } else if constexpr (MODE == 1) {
                acc[r][v] = vload<VT>(C + r * ldc + v * W);
            } else {
                acc[r][v] = vload<VT>(C + r * ldc + v * W) * rowscale[r];
            }
        }
    }
    for (long k = 0; k < K; ++k) {
        VT b[NV];
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) b[v] = vload<VT>(B + k * ldb + v * W);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
            const T a = A[r * ars + k * acs];
#pragma GCC unroll 8
            for (int v = 0; v < NV; ++v) acc[r][v] += b[v] * a;
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) vstore(C + r * ldc + v * W, acc[r][v]);
    }
}

// Register-tile shape per instruction set: R rows x NVMAX vectors of accumulators, leaving
// registers for the B row and the broadcast (32 zmm; 16 ymm / xmm).
template <class Isa>
struct Tile {
    static constexpr int R = 4, NVMAX = 3;
};
template <>
struct Tile<IsaAvx512> {
    static constexpr int R = 4, NVMAX = 4;
};

// Causal structure of a tile that the diagonal crosses, so that a product can skip the
// register blocks that is_causal masks entirely. `off` is (first key - first query) for
// rows of keys and (first query - first key) for rows of queries.
struct Tri {
    enum Kind { none, kend, kstart, nstart } kind = none;
    long off = 0;
};
//   kend:   rows are queries, K runs over keys: row block i needs keys k < off + i + R.
//   kstart: rows are keys, K runs over queries: row block i needs queries k >= off + i.
//   nstart: rows are keys, columns are queries: row block i needs columns >= off + i; the
//           columns skipped are written as zeros (MODE 0 only), so C stays fully defined.

// C (M x N) op= A (M x K) B (K x N); M a multiple of Tile<Isa>::R, N a multiple of the vector
// width.
template <typename T, class Isa, int MODE>
TL_INLINE void gemm(long M, long N, long K, const T* A, long ars, long acs, const T* B, long ldb,
                    T* C, long ldc, const T* rowscale = nullptr, Tri tri = {}) {
    constexpr int W = Isa::vbytes / sizeof(T), R = Tile<Isa>::R, NVM = Tile<Isa>::NVMAX;
    static_assert(NVM >= 3 && NVM <= 4, "remainder dispatch below covers 1..3 vectors");
    for (long i = 0; i < M; i += R) {
        long k0 = 0, k1 = K, n = 0;
        if (tri.kind == Tri::kend) k1 = std::clamp(tri.off + i + R, 0L, K);
        if (tri.kind == Tri::kstart) k0 = std::clamp(tri.off + i, 0L, K);
        if (tri.kind == Tri::nstart) {
            n = std::clamp(tri.off + i, 0L, N) / W * W;
            for (int r = 0; r < R; ++r) std::memset(C + (i + r) * ldc, 0, sizeof(T) * n);
        }
        const long Kb = std::max(k1 - k0, 0L);
        const T* Ai = A + i * ars + k0 * acs;
        const T* Bk = B + k0 * ldb;
        T* Ci = C + i * ldc;
        const T* rs = rowscale ? rowscale + i : nullptr;
        for (; n + NVM * W <= N; n += NVM * W)
            micro<T, W, R, NVM, MODE>(Kb, Ai, ars, acs, Bk + n, ldb, Ci + n, ldc, rs);
        switch ((N - n) / W) {
            case 1: micro<T, W, R, 1, MODE>(Kb, Ai, ars, acs, Bk + n, ldb, Ci + n, ldc, rs); break;
            case 2: micro<T, W, R, 2, MODE>(Kb, Ai, ars, acs, Bk + n, ldb, Ci + n, ldc, rs); break;
            case 3: micro<T, W, R, 3, MODE>(Kb, Ai, ars, acs, Bk + n, ldb, Ci + n, ldc, rs); break;
            default: break;
        }
    }
}

}  // namespace tl
