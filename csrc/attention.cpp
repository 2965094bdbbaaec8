// Flash-style scaled-dot-product attention on the CPU, forward and backward.
//
// The contract (docs/KERNELS.md) and the readable spec (tensorlite/reference/attention.py):
//   S = q k^T * scale + mask (+ causal -inf),  P = softmax_rows(S),  o = P v,
//   lse = logsumexp_rows(S).
//
// How it is computed here:
//   * Every product is one shape of GEMM, C (+)= A B with A read one scalar at a time through
//     arbitrary strides (so A^T costs nothing) and B read as contiguous rows of vectors; one
//     register-tiled micro-kernel (R rows x up to 4 vectors of accumulators) serves all of them.
//   * Score tiles are held transposed, ST[key][query] (BK x BQ), queries in the vector lanes:
//     the softmax statistics of BQ queries are then plain vectors (no horizontal reductions),
//     and k and v enter as broadcast scalars straight from the caller's arrays. Only q (scaled)
//     and do are copied, transposed, one BQ x D tile at a time.
//   * Forward (FlashAttention): one task per (batch, head, tile of BQ queries). It walks the key
//     tiles with an online softmax (running max m and sum l per query; the partial output is
//     rescaled by exp(m_old - m_new) when the max grows), so no more than one BK x BQ block of
//     scores per thread ever exists. Causal: key tiles wholly after the last query are skipped,
//     and inside a tile that the diagonal crosses the products skip the masked register blocks.
//   * Backward (FlashAttention-2): P is recomputed from q, k and the saved lse. One task per
//     (batch, head, group of key tiles) owns the dk/dv rows of its key tiles, so those need no
//     synchronisation; its dq contributions go to a dq buffer private to its group, summed in a
//     fixed order at the end. The number of groups depends on the shapes and the machine, never
//     on the thread count, so 1 and N threads give bit-identical results.
//   * The hot code is compiled three times (AVX-512, AVX2+FMA, baseline SSE2) through GCC
//     target attributes and picked at run time, so the extension needs no -march=native.
#include "common.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

// The vector helpers pass 32/64-byte vectors by value; they are always inlined, so the ABI
// note GCC prints for such signatures concerns no real call.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace {

#define TL_INLINE inline __attribute__((always_inline))

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define TL_X86 1
#define TL_TARGET_AVX512 \
    __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,prefer-vector-width=512")))
#define TL_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define TL_X86 0
#endif

// Query and key tile sizes: multiples of every vector width and register-tile height below.
// 64 x 64 keeps a score tile plus the q tile and the output accumulator inside L1 (48 KiB) and
// measured best against 64x128, 128x64 and 32x64 on the two benchmark shapes.
constexpr long BQ = 64;
constexpr long BK = 64;

constexpr long round_up(long x, long m) { return (x + m - 1) / m * m; }

// ---------------------------------------------------------------------------------------------
// Vectors: GCC vector extensions, so the same source becomes zmm, ymm or xmm code depending on
// the target attribute of the function it is inlined into.

template <typename T, int W>
struct Vec {
    typedef T type __attribute__((vector_size(W * sizeof(T))));
};
template <typename T>
using IntOf = std::conditional_t<std::is_same_v<T, float>, std::int32_t, std::int64_t>;

template <class VT, class T>
TL_INLINE VT vload(const T* p) {
    VT v;
    std::memcpy(&v, p, sizeof v);
    return v;
}
template <class VT, class T>
TL_INLINE void vstore(T* p, const VT& v) {
    std::memcpy(p, &v, sizeof v);
}
// For constants only (folded at compile time). Runtime scalars enter as `vector * scalar`:
// GCC 12 builds a runtime splat lane by lane inside target() functions, but folds the scalar
// operand of an arithmetic op into one broadcast (or an embedded {1toN} memory operand).
template <class VT, class T>
TL_INLINE VT vsplat(T x) {
    return VT{} + x;
}

// exp(x) for a vector: Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, a Taylor polynomial for
// e^r (degree 7 for float, degree 13 for double: truncation below either type's rounding) and
// 2^n assembled in the exponent bits. Measured over [-87, 0.5]: at most 1.0e-7 relative error
// in float (< 2 ulp), 2.2e-16 in double. Inputs below -bias*ln2 give exactly 0 (this is what
// turns the -inf of masked scores into P = 0); NaN stays NaN.
template <typename T, int W>
TL_INLINE typename Vec<T, W>::type vexp(const typename Vec<T, W>::type& x_in) {
    using VT = typename Vec<T, W>::type;
    VT x = x_in;
    using I = IntOf<T>;
    typedef I VI __attribute__((vector_size(W * sizeof(T))));
    constexpr bool f32 = std::is_same_v<T, float>;
    constexpr int mant = f32 ? 23 : 52;
    constexpr I bias = f32 ? 127 : 1023;
    const T lo = f32 ? T(-88.02969193111305) : T(-709.0895657128241);  // -bias * ln2
    const T hi = f32 ? T(88.37626) : T(709.782712893384);
    const T log2e = T(1.4426950408889634);
    const T ln2hi = f32 ? T(0.693145751953125) : T(0.6931471803691238);
    const T ln2lo = f32 ? T(1.428606765330187e-06) : T(1.9082149292705877e-10);
    const T magic = f32 ? T(12582912.0) : T(6755399441055744.0);  // 1.5 * 2^mant: rounds to int

    x = x < lo ? vsplat<VT>(lo) : x;
    x = x > hi ? vsplat<VT>(hi) : x;
    VT kb = x * log2e + magic;  // n sits in the low mantissa bits of kb
    VT kf = kb - magic;
    VT r = x - kf * ln2hi;
    r = r - kf * ln2lo;
    VT p;
    if constexpr (f32) {
        p = vsplat<VT>(T(1.0 / 5040));
        p = p * r + T(1.0 / 720);
        p = p * r + T(1.0 / 120);
        p = p * r + T(1.0 / 24);
        p = p * r + T(1.0 / 6);
        p = p * r + T(0.5);
        p = p * r + T(1);
        p = p * r + T(1);
    } else {
        p = vsplat<VT>(T(1.0 / 6227020800.0));
        const double inv_fact[] = {1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0,
                                   1.0 / 362880.0,    1.0 / 40320.0,    1.0 / 5040.0,
                                   1.0 / 720.0,       1.0 / 120.0,      1.0 / 24.0,
                                   1.0 / 6.0,         0.5,              1.0,
                                   1.0};
        for (double c : inv_fact) p = p * r + T(c);
    }
    VI n = (VI)kb - (VI)vsplat<VT>(magic);
    VI e = (n + bias) << mant;  // n = -bias (x clamped to lo) gives the bit pattern of +0.0
    return p * (VT)e;
}

// ---------------------------------------------------------------------------------------------
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

// Register-tile shapes per instruction set: R rows x NVMAX vectors of accumulators, leaving
// registers for the B row and the broadcast (32 zmm; 16 ymm / xmm).
struct IsaAvx512 {
    static constexpr int bytes = 64, R = 4, NVMAX = 4;
};
struct IsaAvx2 {
    static constexpr int bytes = 32, R = 4, NVMAX = 3;
};
struct IsaBase {
    static constexpr int bytes = 16, R = 4, NVMAX = 3;
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

// C (M x N) op= A (M x K) B (K x N); M a multiple of Isa::R, N a multiple of the vector width.
template <typename T, class Isa, int MODE>
TL_INLINE void gemm(long M, long N, long K, const T* A, long ars, long acs, const T* B, long ldb,
                    T* C, long ldc, const T* rowscale = nullptr, Tri tri = {}) {
    constexpr int W = Isa::bytes / sizeof(T), R = Isa::R, NVM = Isa::NVMAX;
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

// ---------------------------------------------------------------------------------------------
// Problem description shared by both passes.
//
// Layout: a score tile is held transposed, ST[j][i] for key j (row) and query i (vector lane),
// BK x BQ. Then the softmax statistics of the BQ queries are plain vectors (column max, column
// sum: no horizontal reductions), the key-side operands k and v enter the products as broadcast
// scalars read through their own strides (never copied), and only q and do need a transposed,
// scaled copy of BQ x D per tile.

template <typename T>
struct View4 {  // a strided 4-D (or 3-D, s[3] unused) input, strides in elements
    const T* p = nullptr;
    long s[4] = {0, 0, 0, 0};
    const T* at(long b, long h, long t) const { return p + b * s[0] + h * s[1] + t * s[2]; }
};

// A (B, H, T, Dp) operand read as contiguous rows of Dp (a whole number of vectors): the
// caller's array itself when it allows, else a zero-padded copy (see rows_operand).
template <typename T>
struct Rows {
    const T* p = nullptr;
    long sb = 0, sh = 0, st = 0;
    const T* row(long b, long h, long t) const { return p + b * sb + h * sh + t * st; }
};

template <typename T>
struct Problem {
    long B, H, Tq, Tk, D;
    long Dp, Tqp;  // D padded to a whole 64-byte vector, Tq to whole query tiles
    long nqt, nkt;
    bool causal;
    T scale;
    View4<T> mask;  // p == nullptr: no mask; broadcast dims have stride 0
};

struct FreeDeleter {
    void operator()(void* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<void, FreeDeleter>;

// 64-byte aligned, zero-filled; throws std::bad_alloc (-> MemoryError) before any thread starts.
template <typename T>
T* alloc_zeroed(std::vector<Buffer>& owner, long n) {
    std::size_t bytes = round_up(std::max<long>(n, 1) * (long)sizeof(T), 64);
    void* p = std::aligned_alloc(64, bytes);
    if (!p) throw std::bad_alloc();
    std::memset(p, 0, bytes);
    owner.emplace_back(p);
    return static_cast<T*>(p);
}

// dst[i][d] = src(b, h, t0 + i, d) for i < n, d < D; rows n .. n_pad-1 zero. Row stride ldd.
template <typename T>
void copy_rows(const View4<T>& src, long b, long h, long t0, long n, long n_pad, long D, T* dst,
               long ldd) {
    for (long i = 0; i < n_pad; ++i) {
        T* out = dst + i * ldd;
        if (i < n) {
            const T* row = src.at(b, h, t0 + i);
            for (long d = 0; d < D; ++d) out[d] = row[d * src.s[3]];
        } else {
            for (long d = 0; d < D; ++d) out[d] = 0;
        }
    }
}

// dst[d][i] = src(b, h, i0 + i, d) * mult for i < rows; lanes rows .. BQ-1 zero. (D x BQ)
template <typename T>
void copy_tile_transposed(const View4<T>& src, long b, long h, long i0, long rows, long D, T mult,
                          T* dst) {
    for (long i = 0; i < BQ; ++i) {
        if (i < rows) {
            const T* row = src.at(b, h, i0 + i);
            for (long d = 0; d < D; ++d) dst[d * BQ + i] = row[d * src.s[3]] * mult;
        } else {
            for (long d = 0; d < D; ++d) dst[d * BQ + i] = 0;
        }
    }
}

// The rows of `a` as a B operand: used in place when each row is Dp contiguous elements,
// otherwise copied into a zero-padded (B, H, T, Dp) buffer.
template <typename T>
Rows<T> rows_operand(const Problem<T>& pb, const View4<T>& a, long T_, std::vector<Buffer>& owner,
                     int nth) {
    if (pb.D == pb.Dp && a.s[3] == 1) return Rows<T>{a.p, a.s[0], a.s[1], a.s[2]};
    T* buf = alloc_zeroed<T>(owner, pb.B * pb.H * T_ * pb.Dp);
    const long BH = pb.B * pb.H;
#pragma omp parallel for schedule(static) num_threads(nth)
    for (long bh = 0; bh < BH; ++bh)
        copy_rows(a, bh / pb.H, bh % pb.H, 0, T_, T_, pb.D, buf + bh * T_ * pb.Dp, pb.Dp);
    return Rows<T>{buf, pb.H * T_ * pb.Dp, T_ * pb.Dp, pb.Dp};
}

// Masks row j (global key jg) of a transposed score tile whose lanes are queries i0 .. i0+BQ-1:
// adds the user mask and sets -inf where the key lies after the query (is_causal).
template <typename T, int W>
TL_INLINE void mask_st_row(const Problem<T>& pb, long b, long h, long i0, long rows, long jg,
                           T* st) {
    using VT = typename Vec<T, W>::type;
    if (pb.mask.p) {
        const T* mp = pb.mask.p + b * pb.mask.s[0] + h * pb.mask.s[1] + i0 * pb.mask.s[2] +
                      jg * pb.mask.s[3];
        const long sq = pb.mask.s[2];
        if (sq == 0) {  // one value for all queries (e.g. a key-padding mask): a vector add
            const T mv = *mp;
            for (long i = 0; i < BQ; i += W) vstore(st + i, vload<VT>(st + i) + mv);
        } else {
            for (long i = 0; i < rows; ++i) st[i] += mp[i * sq];
        }
    }
    if (pb.causal) {
        const long c = std::min(jg - i0, BQ);  // lanes 0 .. c-1 are queries before this key
        for (long i = 0; i < c; ++i) st[i] = -std::numeric_limits<T>::infinity();
    }
}

// ---------------------------------------------------------------------------------------------
// Forward: one (batch*head, query tile) task.

template <typename T>
struct FwdScratch {  // per thread
    T *QT, *ST, *O, *Kt, *m, *l, *alpha;
};

template <typename T, class Isa>
TL_INLINE void fwd_tile(const Problem<T>& pb, const View4<T>& q, const View4<T>& k,
                        const Rows<T>& vrows, long bh, long qt, const FwdScratch<T>& w, T* out,
                        T* lse_out) {
    constexpr int W = Isa::bytes / sizeof(T), R = Isa::R;
    using VT = typename Vec<T, W>::type;
    const T ninf = -std::numeric_limits<T>::infinity();
    const long b = bh / pb.H, h = bh % pb.H, D = pb.D, Dp = pb.Dp;
    const long i0 = qt * BQ, rows = std::min(BQ, pb.Tq - i0), rows_r = round_up(rows, R);
    // With is_causal the last query of the tile sees keys 0 .. i0+rows-1 only.
    const long kend = pb.causal ? std::min(pb.Tk, i0 + rows) : pb.Tk;

    copy_tile_transposed(q, b, h, i0, rows, D, pb.scale, w.QT);
    for (long i = 0; i < BQ; ++i) w.m[i] = ninf, w.l[i] = 0;
    std::memset(w.O, 0, sizeof(T) * rows_r * Dp);

    for (long j0 = 0; j0 < kend; j0 += BK) {
        const long cols = std::min(BK, kend - j0), M = round_up(cols, R);
        // k rows are the broadcast operand; a ragged last tile is copied so the register tile
        // never reads past the array.
        const T* A = k.at(b, h, j0);
        long ars = k.s[2], acs = k.s[3];
        if (M != cols) {
            copy_rows(k, b, h, j0, cols, M, D, w.Kt, D);
            A = w.Kt, ars = D, acs = 1;
        }
        const Tri keys_rows{pb.causal ? Tri::nstart : Tri::none, j0 - i0};
        gemm<T, Isa, 0>(M, BQ, D, A, ars, acs, w.QT, BQ, w.ST, BQ, nullptr, keys_rows);
        for (long j = 0; j < cols; ++j) mask_st_row<T, W>(pb, b, h, i0, rows, j0 + j, w.ST + j * BQ);

        // Online softmax, one vector of queries at a time.
        for (long v = 0; v < BQ; v += W) {
            const VT m_old = vload<VT>(w.m + v);
            VT mx = m_old;
            for (long j = 0; j < cols; ++j) {
                const VT x = vload<VT>(w.ST + j * BQ + v);
                mx = x > mx ? x : mx;
            }
            // A query that has seen only -inf so far shifts by 0: exp(-inf - 0) = 0, not NaN.
            const VT shift = mx == vsplat<VT>(ninf) ? VT{} : mx;
            const VT alpha = vexp<T, W>(m_old - shift);  // m_old = -inf: 0 wipes the empty start
            VT sum = VT{};
            for (long j = 0; j < cols; ++j) {
                const VT p = vexp<T, W>(vload<VT>(w.ST + j * BQ + v) - shift);
                vstore(w.ST + j * BQ + v, p);
                sum += p;
            }
            vstore(w.m + v, mx);
            vstore(w.alpha + v, alpha);
            vstore(w.l + v, vload<VT>(w.l + v) * alpha + sum);
        }
        // O = diag(alpha) O + P V, with P read transposed out of ST.
        gemm<T, Isa, 2>(rows_r, Dp, cols, w.ST, 1, BQ, vrows.row(b, h, j0), vrows.st, w.O, Dp,
                        w.alpha, Tri{pb.causal ? Tri::kend : Tri::none, i0 - j0});
    }

    for (long i = 0; i < rows; ++i) {
        const T l = w.l[i];
        T* o = out + ((bh * pb.Tq) + i0 + i) * D;
        const T* acc = w.O + i * Dp;
        if (l > 0) {
            const T inv = T(1) / l;
            for (long d = 0; d < D; ++d) o[d] = acc[d] * inv;
            lse_out[bh * pb.Tq + i0 + i] = w.m[i] + std::log(l);
        } else {  // no key to attend (contract: o = 0, lse = +inf)
            for (long d = 0; d < D; ++d) o[d] = 0;
            lse_out[bh * pb.Tq + i0 + i] = std::numeric_limits<T>::infinity();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Backward: one (batch*head, key-tile group) task; group g owns key tiles g, g+G, g+2G, ...

template <typename T>
struct BwdData {
    View4<T> k, v;           // broadcast operands, read in place
    Rows<T> qrows, dorows, krows;  // row operands
    const T* QT = nullptr;   // (BH, nqt, D, BQ) q * scale, per query tile transposed
    const T* dOT = nullptr;  // (BH, nqt, D, BQ) do, likewise
    const T* lse = nullptr;  // (BH, Tqp), +inf past Tq so those lanes get P = 0
    const T* Di = nullptr;   // (BH, Tqp) rowsum(do * o)
    T* dQ = nullptr;         // (G, BH, Tqp, Dp) per-group dq accumulators
    long G = 1;
};

template <typename T>
struct BwdScratch {  // per thread
    T *ST, *dST, *dK, *dV, *Kt, *Vt;
};

template <typename T, class Isa>
TL_INLINE void bwd_group(const Problem<T>& pb, const BwdData<T>& bd, long bh, long g,
                         const BwdScratch<T>& w, T* dk_out, T* dv_out) {
    constexpr int W = Isa::bytes / sizeof(T), R = Isa::R;
    using VT = typename Vec<T, W>::type;
    const long b = bh / pb.H, h = bh % pb.H, Dp = pb.Dp, D = pb.D;
    T* dQ = bd.dQ + (g * pb.B * pb.H + bh) * pb.Tqp * Dp;

    for (long kt = g; kt < pb.nkt; kt += bd.G) {
        const long j0 = kt * BK, cols = std::min(BK, pb.Tk - j0), M = round_up(cols, R);
        const T *Ak = bd.k.at(b, h, j0), *Av = bd.v.at(b, h, j0);
        long ars_k = bd.k.s[2], acs_k = bd.k.s[3], ars_v = bd.v.s[2], acs_v = bd.v.s[3];
        if (M != cols) {  // ragged last tile: padded copies, see fwd_tile
            copy_rows(bd.k, b, h, j0, cols, M, D, w.Kt, D);
            copy_rows(bd.v, b, h, j0, cols, M, D, w.Vt, D);
            Ak = w.Kt, Av = w.Vt, ars_k = ars_v = D, acs_k = acs_v = 1;
        }
        std::memset(w.dK, 0, sizeof(T) * M * Dp);
        std::memset(w.dV, 0, sizeof(T) * M * Dp);
        // Query tiles wholly before these keys never see them.
        const long qt0 = pb.causal ? j0 / BQ : 0;
        for (long qt = qt0; qt < pb.nqt; ++qt) {
            const long i0 = qt * BQ, rows = std::min(BQ, pb.Tq - i0), rows_r = round_up(rows, R);
            const T* QT = bd.QT + (bh * pb.nqt + qt) * D * BQ;
            const T* dOT = bd.dOT + (bh * pb.nqt + qt) * D * BQ;
            const T* L = bd.lse + bh * pb.Tqp + i0;
            const T* Di = bd.Di + bh * pb.Tqp + i0;
            // With is_causal, skip the blocks of a diagonal tile that the mask zeroes anyway.
            const Tri keys_rows{pb.causal ? Tri::nstart : Tri::none, j0 - i0};
            const Tri keys_rows_k{pb.causal ? Tri::kstart : Tri::none, j0 - i0};
            const Tri query_rows{pb.causal ? Tri::kend : Tri::none, i0 - j0};
            gemm<T, Isa, 0>(M, BQ, D, Ak, ars_k, acs_k, QT, BQ, w.ST, BQ, nullptr, keys_rows);
            gemm<T, Isa, 0>(M, BQ, D, Av, ars_v, acs_v, dOT, BQ, w.dST, BQ, nullptr, keys_rows);
            for (long j = 0; j < cols; ++j) {
                T* st = w.ST + j * BQ;
                T* dst = w.dST + j * BQ;
                mask_st_row<T, W>(pb, b, h, i0, rows, j0 + j, st);
                for (long v = 0; v < BQ; v += W) {
                    const VT p = vexp<T, W>(vload<VT>(st + v) - vload<VT>(L + v));
                    vstore(st + v, p);
                    vstore(dst + v, p * (vload<VT>(dst + v) - vload<VT>(Di + v)));
                }
            }
            // Rows cols .. M-1 of P^T / dS^T (zero-padded keys) only reach dk/dv rows that are
            // never written out.
            gemm<T, Isa, 1>(M, Dp, rows, w.ST, BQ, 1, bd.dorows.row(b, h, i0), bd.dorows.st,
                            w.dV, Dp, nullptr, keys_rows_k);                          // P^T do
            gemm<T, Isa, 1>(M, Dp, rows, w.dST, BQ, 1, bd.qrows.row(b, h, i0), bd.qrows.st,
                            w.dK, Dp, nullptr, keys_rows_k);                          // dS^T q
            gemm<T, Isa, 1>(rows_r, Dp, cols, w.dST, 1, BQ, bd.krows.row(b, h, j0),
                            bd.krows.st, dQ + i0 * Dp, Dp, nullptr, query_rows);      // dS k
        }
        for (long r = 0; r < cols; ++r) {
            T* dk = dk_out + (bh * pb.Tk + j0 + r) * D;
            T* dv = dv_out + (bh * pb.Tk + j0 + r) * D;
            for (long d = 0; d < D; ++d) dk[d] = w.dK[r * Dp + d] * pb.scale, dv[d] = w.dV[r * Dp + d];
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Instruction-set variants and run-time choice.

template <typename T>
using FwdFn = void (*)(const Problem<T>&, const View4<T>&, const View4<T>&, const Rows<T>&, long,
                       long, const FwdScratch<T>&, T*, T*);
template <typename T>
using BwdFn = void (*)(const Problem<T>&, const BwdData<T>&, long, long, const BwdScratch<T>&, T*,
                       T*);

#define TL_VARIANTS(SUFFIX, ATTR, ISA)                                                        \
    template <typename T>                                                                     \
    ATTR void fwd_##SUFFIX(const Problem<T>& pb, const View4<T>& q, const View4<T>& k,        \
                           const Rows<T>& v, long bh, long qt, const FwdScratch<T>& w, T* o,  \
                           T* lse) {                                                          \
        fwd_tile<T, ISA>(pb, q, k, v, bh, qt, w, o, lse);                                     \
    }                                                                                         \
    template <typename T>                                                                     \
    ATTR void bwd_##SUFFIX(const Problem<T>& pb, const BwdData<T>& bd, long bh, long g,       \
                           const BwdScratch<T>& w, T* dk, T* dv) {                            \
        bwd_group<T, ISA>(pb, bd, bh, g, w, dk, dv);                                          \
    }

TL_VARIANTS(base, , IsaBase)
#if TL_X86
TL_VARIANTS(avx2, TL_TARGET_AVX2, IsaAvx2)
TL_VARIANTS(avx512, TL_TARGET_AVX512, IsaAvx512)
#endif

enum class Isa { base = 0, avx2 = 1, avx512 = 2 };
const char* isa_name(Isa i) {
    return i == Isa::avx512 ? "avx512" : i == Isa::avx2 ? "avx2" : "base";
}

Isa best_isa() {
#if TL_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return Isa::avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
#endif
    return Isa::base;
}

Isa g_isa = best_isa();  // tests lower it through _attention_set_isa to cover every variant

template <typename T>
FwdFn<T> pick_fwd() {
#if TL_X86
    if (g_isa == Isa::avx512) return fwd_avx512<T>;
    if (g_isa == Isa::avx2) return fwd_avx2<T>;
#endif
    return fwd_base<T>;
}
template <typename T>
BwdFn<T> pick_bwd() {
#if TL_X86
    if (g_isa == Isa::avx512) return bwd_avx512<T>;
    if (g_isa == Isa::avx2) return bwd_avx2<T>;
#endif
    return bwd_base<T>;
}

int max_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}
int thread_id() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}
int num_procs() {
#ifdef _OPENMP
    return omp_get_num_procs();
#else
    return 1;
#endif
}

// Threads for a problem of `work` multiply-adds. Waking a team costs a few microseconds on
// an idle machine and whole scheduler time slices (milliseconds) when the cores are shared,
// so small problems (decoding one token, the tiny models of the tests) stay on one thread.
// The result does not depend on this choice (see the dq grouping below).
template <typename T>
int threads_for(const Problem<T>& pb) {
    const double work = double(pb.B) * pb.H * pb.Tq * pb.Tk * pb.D;
    return work < double(1 << 20) ? 1 : max_threads();
}

// ---------------------------------------------------------------------------------------------
// The two passes over a whole problem (GIL released by the caller).

template <typename T>
void run_forward(const Problem<T>& pb, const View4<T>& q, const View4<T>& k, const View4<T>& v,
                 T* o, T* lse) {
    const long BH = pb.B * pb.H, D = pb.D, Dp = pb.Dp;
    std::vector<Buffer> owner;
    const int nth = threads_for(pb);
    const Rows<T> vrows = rows_operand(pb, v, pb.Tk, owner, nth);
    const long per = round_up(D * BQ + BK * BQ + BQ * Dp + BK * D + 3 * BQ, 16);
    T* scratch = alloc_zeroed<T>(owner, nth * per);
    const FwdFn<T> fn = pick_fwd<T>();
    const long ntasks = BH * pb.nqt;
#pragma omp parallel num_threads(nth)
    {
        // Every array size is a multiple of 16 elements, so each starts 64-byte aligned.
        T* base = scratch + thread_id() * per;
        FwdScratch<T> w;
        w.QT = base;
        w.ST = w.QT + D * BQ;
        w.O = w.ST + BK * BQ;
        w.Kt = w.O + BQ * Dp;
        w.m = w.Kt + BK * D;
        w.l = w.m + BQ;
        w.alpha = w.l + BQ;
        // Late (causal: most expensive) query tiles first, so the dynamic schedule ends evenly.
#pragma omp for schedule(dynamic, 1)
        for (long t = 0; t < ntasks; ++t) fn(pb, q, k, vrows, t % BH, pb.nqt - 1 - t / BH, w, o, lse);
    }
}

template <typename T>
void run_backward(const Problem<T>& pb, const View4<T>& q, const View4<T>& k, const View4<T>& v,
                  const View4<T>& o, const View4<T>& lse, const View4<T>& dout, T* dq, T* dk,
                  T* dv) {
    const long BH = pb.B * pb.H, D = pb.D, Dp = pb.Dp;
    std::vector<Buffer> owner;
    BwdData<T> bd;
    bd.k = k, bd.v = v;
    const int nth = threads_for(pb);
    bd.qrows = rows_operand(pb, q, pb.Tq, owner, nth);
    bd.dorows = rows_operand(pb, dout, pb.Tq, owner, nth);
    bd.krows = rows_operand(pb, k, pb.Tk, owner, nth);
    // Enough (head, group) tasks to keep the machine busy; depends on shapes and core count
    // only, so the summation order of dq, and hence the result, is the same for any thread count.
    const long want = 4L * num_procs();
    bd.G = std::max(1L, std::min(std::max(pb.nkt, 1L), (want + BH - 1) / std::max(BH, 1L)));
    T* QT = alloc_zeroed<T>(owner, BH * pb.nqt * D * BQ);
    T* dOT = alloc_zeroed<T>(owner, BH * pb.nqt * D * BQ);
    T* L = alloc_zeroed<T>(owner, BH * pb.Tqp);
    T* Di = alloc_zeroed<T>(owner, BH * pb.Tqp);
    bd.QT = QT, bd.dOT = dOT, bd.lse = L, bd.Di = Di;
    bd.dQ = alloc_zeroed<T>(owner, bd.G * BH * pb.Tqp * Dp);
    const long per = round_up(2 * BK * BQ + 2 * BK * Dp + 2 * BK * D, 16);
    T* scratch = alloc_zeroed<T>(owner, nth * per);
    const BwdFn<T> fn = pick_bwd<T>();

#pragma omp parallel for schedule(static) num_threads(nth)
    for (long t = 0; t < BH * pb.nqt; ++t) {
        const long bh = t / pb.nqt, qt = t % pb.nqt, b = bh / pb.H, h = bh % pb.H;
        const long i0 = qt * BQ, rows = std::min(BQ, pb.Tq - i0);
        copy_tile_transposed(q, b, h, i0, rows, D, pb.scale, QT + t * D * BQ);
        copy_tile_transposed(dout, b, h, i0, rows, D, T(1), dOT + t * D * BQ);
        for (long i = 0; i < BQ; ++i) {
            T acc = 0;
            if (i < rows) {
                const T* orow = o.at(b, h, i0 + i);
                const T* drow = dout.at(b, h, i0 + i);
                for (long d = 0; d < D; ++d) acc += orow[d * o.s[3]] * drow[d * dout.s[3]];
            }
            Di[bh * pb.Tqp + i0 + i] = acc;
            L[bh * pb.Tqp + i0 + i] = i < rows ? lse.at(b, h, 0)[(i0 + i) * lse.s[2]]
                                               : std::numeric_limits<T>::infinity();
        }
    }

    const long ntasks = BH * bd.G;
#pragma omp parallel num_threads(nth)
    {
        T* base = scratch + thread_id() * per;
        BwdScratch<T> w;
        w.ST = base;
        w.dST = w.ST + BK * BQ;
        w.dK = w.dST + BK * BQ;
        w.dV = w.dK + BK * Dp;
        w.Kt = w.dV + BK * Dp;
        w.Vt = w.Kt + BK * D;
#pragma omp for schedule(dynamic, 1)
        for (long t = 0; t < ntasks; ++t) fn(pb, bd, t % BH, t / BH, w, dk, dv);
    }

    // dq = scale * sum over groups, always in group order.
#pragma omp parallel for schedule(static) num_threads(nth)
    for (long bh = 0; bh < BH; ++bh) {
        for (long i = 0; i < pb.Tq; ++i) {
            T* out = dq + (bh * pb.Tq + i) * D;
            for (long d = 0; d < D; ++d) {
                T acc = 0;
                for (long g = 0; g < bd.G; ++g) acc += bd.dQ[((g * BH + bh) * pb.Tqp + i) * Dp + d];
                out[d] = acc * pb.scale;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Python boundary: validation, dtype dispatch, strided views, GIL release.

std::string shape_str(const py::array& a) {
    std::ostringstream s;
    s << "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s << (i ? ", " : "") << a.shape(i);
    if (a.ndim() == 1) s << ",";
    s << ")";
    return s.str();
}
std::string dtype_str(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

py::array as_array(const char* op, const char* name, const py::handle& obj) {
    if (!py::isinstance<py::array>(obj))
        throw py::type_error(std::string(op) + ": " + name + " must be a numpy array, got " +
                             py::str(py::type::of(obj)).cast<std::string>());
    return py::reinterpret_borrow<py::array>(obj);
}

// Strides in elements; an array whose strides are not whole elements is copied first.
template <typename T>
View4<T> view_of(py::array& a) {
    for (py::ssize_t i = 0; i < a.ndim(); ++i)
        if (a.strides(i) % (py::ssize_t)sizeof(T) != 0) {
            a = py::array::ensure(a, py::array::c_style);
            break;
        }
    View4<T> v;
    v.p = static_cast<const T*>(a.data());
    for (py::ssize_t i = 0; i < a.ndim(); ++i)
        v.s[i] = a.shape(i) == 1 ? 0 : a.strides(i) / (py::ssize_t)sizeof(T);
    return v;
}

struct Checked {
    long B, H, Tq, Tk, D;
    bool f64;
};

Checked check_inputs(const char* op, const py::array& q, const py::array& k, const py::array& v,
                     const py::object& mask) {
    if (q.ndim() != 4 || k.ndim() != 4 || v.ndim() != 4)
        throw py::value_error(std::string(op) + ": q, k, v must be 4-D (B, H, T, D), got q " +
                              shape_str(q) + ", k " + shape_str(k) + ", v " + shape_str(v));
    Checked c{(long)q.shape(0), (long)q.shape(1), (long)q.shape(2), (long)k.shape(2),
              (long)q.shape(3), false};
    if (k.shape(0) != c.B || k.shape(1) != c.H || k.shape(3) != c.D || v.shape(0) != c.B ||
        v.shape(1) != c.H || v.shape(2) != c.Tk || v.shape(3) != c.D)
        throw py::value_error(std::string(op) + ": expected k and v of shape (" +
                              std::to_string(c.B) + ", " + std::to_string(c.H) + ", Tk, " +
                              std::to_string(c.D) + ") to match q " + shape_str(q) + ", got k " +
                              shape_str(k) + ", v " + shape_str(v));
    const bool f32 = q.dtype().equal(py::dtype::of<float>());
    c.f64 = q.dtype().equal(py::dtype::of<double>());
    if ((!f32 && !c.f64) || !k.dtype().equal(q.dtype()) || !v.dtype().equal(q.dtype()))
        throw py::type_error(std::string(op) +
                             ": q, k, v must all be float32 or all float64, got " + dtype_str(q) +
                             ", " + dtype_str(k) + ", " + dtype_str(v));
    if (!mask.is_none()) {
        py::array m = as_array(op, "mask", mask);
        if (m.ndim() != 4 || (m.shape(0) != 1 && m.shape(0) != c.B) ||
            (m.shape(1) != 1 && m.shape(1) != c.H) || (m.shape(2) != 1 && m.shape(2) != c.Tq) ||
            m.shape(3) != c.Tk)
            throw py::value_error(std::string(op) + ": mask of shape " + shape_str(m) +
                                  " does not broadcast as (1|" + std::to_string(c.B) + ", 1|" +
                                  std::to_string(c.H) + ", 1|" + std::to_string(c.Tq) + ", " +
                                  std::to_string(c.Tk) + ") for q " + shape_str(q) + ", k " +
                                  shape_str(k));
        if (!m.dtype().equal(q.dtype()))
            throw py::type_error(std::string(op) + ": mask must be an additive float mask of q's "
                                 "dtype " + dtype_str(q) + ", got " + dtype_str(m));
    }
    return c;
}

template <typename T>
Problem<T> make_problem(const Checked& c, bool causal, double scale) {
    constexpr long W = 64 / sizeof(T);  // pad D to the widest vector, whichever ISA runs
    Problem<T> pb;
    pb.B = c.B, pb.H = c.H, pb.Tq = c.Tq, pb.Tk = c.Tk, pb.D = c.D;
    pb.Dp = round_up(c.D, W);
    pb.Tqp = round_up(c.Tq, BQ);
    pb.nqt = pb.Tqp / BQ;
    pb.nkt = round_up(c.Tk, BK) / BK;
    pb.causal = causal;
    pb.scale = T(scale);
    return pb;
}

template <typename T>
py::tuple forward_typed(const Checked& c, py::array q, py::array k, py::array v, py::object mask,
                        bool causal, double scale) {
    Problem<T> pb = make_problem<T>(c, causal, scale);
    py::array mk;
    if (!mask.is_none()) {
        mk = py::reinterpret_borrow<py::array>(mask);
        pb.mask = view_of<T>(mk);
    }
    View4<T> qv = view_of<T>(q), kv = view_of<T>(k), vv = view_of<T>(v);
    py::array_t<T> o({c.B, c.H, c.Tq, c.D});
    py::array_t<T> lse({c.B, c.H, c.Tq});
    T* op = o.mutable_data();
    T* lp = lse.mutable_data();
    {
        py::gil_scoped_release nogil;
        run_forward(pb, qv, kv, vv, op, lp);
    }
    return py::make_tuple(o, lse);
}

template <typename T>
py::tuple backward_typed(const Checked& c, py::array q, py::array k, py::array v, py::array o,
                         py::array lse, py::array dout, py::object mask, bool causal,
                         double scale) {
    Problem<T> pb = make_problem<T>(c, causal, scale);
    py::array mk;
    if (!mask.is_none()) {
        mk = py::reinterpret_borrow<py::array>(mask);
        pb.mask = view_of<T>(mk);
    }
    View4<T> qv = view_of<T>(q), kv = view_of<T>(k), vv = view_of<T>(v);
    View4<T> ov = view_of<T>(o), lv = view_of<T>(lse), dv_ = view_of<T>(dout);
    py::array_t<T> dq({c.B, c.H, c.Tq, c.D});
    py::array_t<T> dk({c.B, c.H, c.Tk, c.D});
    py::array_t<T> dv({c.B, c.H, c.Tk, c.D});
    T* dqp = dq.mutable_data();
    T* dkp = dk.mutable_data();
    T* dvp = dv.mutable_data();
    {
        py::gil_scoped_release nogil;
        run_backward(pb, qv, kv, vv, ov, lv, dv_, dqp, dkp, dvp);
    }
    return py::make_tuple(dq, dk, dv);
}

py::tuple attention_forward(py::object q_, py::object k_, py::object v_, py::object mask,
                            bool is_causal, double scale) {
    const char* op = "attention_forward";
    py::array q = as_array(op, "q", q_), k = as_array(op, "k", k_), v = as_array(op, "v", v_);
    Checked c = check_inputs(op, q, k, v, mask);
    return c.f64 ? forward_typed<double>(c, q, k, v, mask, is_causal, scale)
                 : forward_typed<float>(c, q, k, v, mask, is_causal, scale);
}

py::tuple attention_backward(py::object q_, py::object k_, py::object v_, py::object o_,
                             py::object lse_, py::object do_, py::object mask, bool is_causal,
                             double scale) {
    const char* op = "attention_backward";
    py::array q = as_array(op, "q", q_), k = as_array(op, "k", k_), v = as_array(op, "v", v_);
    py::array o = as_array(op, "o", o_), lse = as_array(op, "lse", lse_);
    py::array dout = as_array(op, "do", do_);
    Checked c = check_inputs(op, q, k, v, mask);
    const bool same = o.ndim() == 4 && dout.ndim() == 4 && lse.ndim() == 3 &&
                      o.shape(0) == c.B && o.shape(1) == c.H && o.shape(2) == c.Tq &&
                      o.shape(3) == c.D && dout.shape(0) == c.B && dout.shape(1) == c.H &&
                      dout.shape(2) == c.Tq && dout.shape(3) == c.D && lse.shape(0) == c.B &&
                      lse.shape(1) == c.H && lse.shape(2) == c.Tq;
    if (!same)
        throw py::value_error(std::string(op) + ": expected o and do of shape " + shape_str(q) +
                              " and lse of shape (" + std::to_string(c.B) + ", " +
                              std::to_string(c.H) + ", " + std::to_string(c.Tq) + ") for q " +
                              shape_str(q) + ", got o " + shape_str(o) + ", do " +
                              shape_str(dout) + ", lse " + shape_str(lse));
    if (!o.dtype().equal(q.dtype()) || !dout.dtype().equal(q.dtype()) ||
        !lse.dtype().equal(q.dtype()))
        throw py::type_error(std::string(op) + ": o, do and lse must have q's dtype " +
                             dtype_str(q) + ", got " + dtype_str(o) + ", " + dtype_str(dout) +
                             ", " + dtype_str(lse));
    return c.f64 ? backward_typed<double>(c, q, k, v, o, lse, dout, mask, is_causal, scale)
                 : backward_typed<float>(c, q, k, v, o, lse, dout, mask, is_causal, scale);
}

std::string set_isa(const std::string& name) {
    const std::string previous = isa_name(g_isa);
    const Isa best = best_isa();
    Isa want;
    if (name == "auto") want = best;
    else if (name == "avx512") want = Isa::avx512;
    else if (name == "avx2") want = Isa::avx2;
    else if (name == "base") want = Isa::base;
    else throw py::value_error("_attention_set_isa: expected 'auto', 'avx512', 'avx2' or 'base', "
                               "got '" + name + "'");
    if ((int)want > (int)best)
        throw py::value_error(std::string("_attention_set_isa: this CPU supports up to '") +
                              isa_name(best) + "', not '" + name + "'");
    g_isa = want;
    return previous;
}

}  // namespace

void bind_attention(py::module_& m) {
    m.def("attention_forward", &attention_forward, py::arg("q"), py::arg("k"), py::arg("v"),
          py::arg("mask"), py::arg("is_causal"), py::arg("scale"),
          "Flash-style attention forward -> (o, lse); see docs/KERNELS.md.");
    m.def("attention_backward", &attention_backward, py::arg("q"), py::arg("k"), py::arg("v"),
          py::arg("o"), py::arg("lse"), py::arg("do"), py::arg("mask"), py::arg("is_causal"),
          py::arg("scale"), "Flash-style attention backward -> (dq, dk, dv); see docs/KERNELS.md.");
    m.def("_attention_isa", []() { return std::string(isa_name(g_isa)); },
          "The instruction-set variant the attention kernels run ('avx512', 'avx2' or 'base').");
    m.def("_attention_set_isa", &set_isa, py::arg("name"),
          "Forces an attention kernel variant ('auto' = best this CPU has); returns the previous "
          "one. For tests of the lower variants.");
}
