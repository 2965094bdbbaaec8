// Flash-style scaled-dot-product attention on the CPU, forward and backward.
//
// The contract (docs/KERNELS.md) and the readable spec (tensorlite/reference/attention.py):
//   S = q k^T * scale + mask (+ causal -inf),  P = softmax_rows(S),  o = P v,  lse = logsumexp_rows(S).
//
// How it is computed here:
//   * Every head's q, k, v (and do, ... in the backward) is first packed into padded, aligned
//     buffers: q pre-multiplied by scale, k and v both row-major and transposed, so that every
//     product below is a plain "broadcast one scalar of A, multiply a contiguous row of B" GEMM
//     and one register-tiled micro-kernel serves all six products of the two passes.
//   * Forward (FlashAttention): one task per (batch, head, tile of BQ queries). It walks the key
//     tiles with an online softmax (running row max m and row sum l; the partial output is
//     rescaled by exp(m_old - m_new) when the max grows), so no more than one BQ x BK block of
//     scores per thread ever exists. Causal: key tiles entirely above the diagonal are skipped.
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
template <class VT, class T>
TL_INLINE VT vsplat(T x) {
    return VT{} + x;
}

// exp(x) for a vector: Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, a Taylor polynomial for
// e^r (degree 7 for float: error < 1e-8 relative, below float's rounding; degree 13 for double:
// < 1e-17) and 2^n assembled in the exponent bits. Inputs below the smallest normal's log give
// exactly 0 (this is what turns the -inf of masked scores into P = 0); NaN stays NaN.
template <typename T, int W>
TL_INLINE typename Vec<T, W>::type vexp(typename Vec<T, W>::type x) {
    using VT = typename Vec<T, W>::type;
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
            VT a = vsplat<VT>(A[r * ars + k * acs]);
#pragma GCC unroll 8
            for (int v = 0; v < NV; ++v) acc[r][v] += a * b[v];
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

// C (M x N) op= A (M x K) B (K x N); M a multiple of Isa::R, N a multiple of the vector width.
template <typename T, class Isa, int MODE>
TL_INLINE void gemm(long M, long N, long K, const T* A, long ars, long acs, const T* B, long ldb,
                    T* C, long ldc, const T* rowscale = nullptr) {
    constexpr int W = Isa::bytes / sizeof(T), R = Isa::R, NVM = Isa::NVMAX;
    static_assert(NVM >= 3 && NVM <= 4, "remainder dispatch below covers 1..3 vectors");
    for (long i = 0; i < M; i += R) {
        const T* Ai = A + i * ars;
        T* Ci = C + i * ldc;
        const T* rs = rowscale ? rowscale + i : nullptr;
        long n = 0;
        for (; n + NVM * W <= N; n += NVM * W)
            micro<T, W, R, NVM, MODE>(K, Ai, ars, acs, B + n, ldb, Ci + n, ldc, rs);
        switch ((N - n) / W) {
            case 1: micro<T, W, R, 1, MODE>(K, Ai, ars, acs, B + n, ldb, Ci + n, ldc, rs); break;
            case 2: micro<T, W, R, 2, MODE>(K, Ai, ars, acs, B + n, ldb, Ci + n, ldc, rs); break;
            case 3: micro<T, W, R, 3, MODE>(K, Ai, ars, acs, B + n, ldb, Ci + n, ldc, rs); break;
            default: break;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Problem description shared by both passes.

template <typename T>
struct View4 {  // a strided 4-D (or 3-D, s[3] unused) input, strides in elements
    const T* p = nullptr;
    long s[4] = {0, 0, 0, 0};
};

template <typename T>
struct Problem {
    long B, H, Tq, Tk, D;
    long Dp, Tqp, Tkp;  // padded: D to the vector width, T to the tile sizes
    long nqt, nkt;
    bool causal;
    T scale;
    View4<T> mask;  // p == nullptr: no mask; broadcast dims have stride 0

    const T* mask_row(long b, long h, long i) const {
        return mask.p + b * mask.s[0] + h * mask.s[1] + i * mask.s[2];
    }
};

// Packed per-head buffers (all rows padded with zeros), see the file comment.
template <typename T>
struct Packed {
    T* Qs = nullptr;   // (BH, Tqp, Dp)  q * scale
    T* KT = nullptr;   // (BH, Dp, Tkp)  k transposed
    T* Kr = nullptr;   // (BH, Tkp, Dp)  k (backward only)
    T* Vr = nullptr;   // (BH, Tkp, Dp)  v (forward only)
    T* VT = nullptr;   // (BH, Dp, Tkp)  v transposed (backward only)
    T* dO = nullptr;   // (BH, Tqp, Dp)  (backward only)
    T* lse = nullptr;  // (BH, Tqp), +inf on padded rows (backward only)
    T* Di = nullptr;   // (BH, Tqp) rowsum(do * o) (backward only)
    T* dQ = nullptr;   // (G, BH, Tqp, Dp) per-group dq accumulators (backward only)
    long G = 1;
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

// dst[t][d] = src(b, h, t, d) * mult for t < T, d < D (the rest of dst stays zero).
template <typename T>
void pack_rows(const View4<T>& src, long b, long h, long T_, long D, T mult, T* dst, long ldd) {
    const T* base = src.p + b * src.s[0] + h * src.s[1];
    for (long t = 0; t < T_; ++t) {
        const T* row = base + t * src.s[2];
        T* out = dst + t * ldd;
        for (long d = 0; d < D; ++d) out[d] = row[d * src.s[3]] * mult;
    }
}

// dst[d][t] = src(b, h, t, d) for t < T, d < D.
template <typename T>
void pack_transposed(const View4<T>& src, long b, long h, long T_, long D, T* dst, long ldd) {
    const T* base = src.p + b * src.s[0] + h * src.s[1];
    for (long t = 0; t < T_; ++t) {
        const T* row = base + t * src.s[2];
        for (long d = 0; d < D; ++d) dst[d * ldd + t] = row[d * src.s[3]];
    }
}

// Masks one row of a score tile in place: adds the user mask on the keys this row may see and
// sets -inf from `lim` (causal limit or end of keys) up to the padded tile width n.
template <typename T>
TL_INLINE void mask_score_row(const Problem<T>& pb, long b, long h, long i, long j0, long cols,
                              long n, bool real_row, T* s) {
    long lim = cols;
    if (pb.causal) lim = std::min(lim, i - j0 + 1);
    lim = std::max(lim, 0L);
    if (real_row && pb.mask.p) {
        const T* mr = pb.mask_row(b, h, i) + j0 * pb.mask.s[3];
        const long sk = pb.mask.s[3];
        if (sk == 1) {
#pragma omp simd
            for (long j = 0; j < lim; ++j) s[j] += mr[j];
        } else {
            for (long j = 0; j < lim; ++j) s[j] += mr[j * sk];
        }
    }
    const T ninf = -std::numeric_limits<T>::infinity();
    for (long j = lim; j < n; ++j) s[j] = ninf;
}

// ---------------------------------------------------------------------------------------------
// Forward: one (batch*head, query tile) task.

template <typename T>
struct FwdScratch {  // per thread
    T *S, *O, *m, *l, *alpha, *rsum;
};

template <typename T, class Isa>
TL_INLINE void fwd_tile(const Problem<T>& pb, const Packed<T>& pk, long bh, long qt,
                        const FwdScratch<T>& w, T* out, T* lse_out) {
    constexpr int W = Isa::bytes / sizeof(T), R = Isa::R;
    using VT = typename Vec<T, W>::type;
    const T ninf = -std::numeric_limits<T>::infinity();
    const long b = bh / pb.H, h = bh % pb.H, Dp = pb.Dp;
    const long i0 = qt * BQ, rows = std::min(BQ, pb.Tq - i0), rows_r = round_up(rows, R);
    const T* Q = pk.Qs + (bh * pb.Tqp + i0) * Dp;
    const T* KT = pk.KT + bh * Dp * pb.Tkp;
    const T* V = pk.Vr + bh * pb.Tkp * Dp;
    // With is_causal the last row of the tile sees keys 0 .. i0+rows-1 only.
    const long kend = pb.causal ? std::min(pb.Tk, i0 + rows) : pb.Tk;

    for (long i = 0; i < BQ; ++i) w.m[i] = ninf, w.l[i] = 0, w.alpha[i] = 0;
    std::memset(w.O, 0, sizeof(T) * rows_r * Dp);

    for (long j0 = 0; j0 < kend; j0 += BK) {
        const long cols = std::min(BK, kend - j0);
        const long n = round_up(cols, W);
        gemm<T, Isa, 0>(rows_r, n, Dp, Q, Dp, 1, KT + j0, pb.Tkp, w.S, BK);
        for (long i = 0; i < rows_r; ++i) {
            T* s = w.S + i * BK;
            mask_score_row(pb, b, h, i0 + i, j0, cols, n, i < rows, s);
            VT mx = vsplat<VT>(ninf);
            for (long j = 0; j < n; j += W) {
                VT x = vload<VT>(s + j);
                mx = x > mx ? x : mx;
            }
            T rmax = w.m[i];
            for (int e = 0; e < W; ++e) rmax = std::max(rmax, T(mx[e]));
            // A row that has seen only -inf so far shifts by 0: exp(-inf - 0) = 0, not NaN.
            const T shift = rmax == ninf ? T(0) : rmax;
            w.alpha[i] = w.m[i] - shift;  // exp() below; exp(-inf) = 0 wipes an empty start
            w.m[i] = rmax;
            VT sum = VT{};
            for (long j = 0; j < n; j += W) {
                VT p = vexp<T, W>(vload<VT>(s + j) - shift);
                vstore(s + j, p);
                sum += p;
            }
            T rs = 0;
            for (int e = 0; e < W; ++e) rs += sum[e];
            w.rsum[i] = rs;
        }
        for (long i = 0; i < BQ; i += W) vstore(w.alpha + i, vexp<T, W>(vload<VT>(w.alpha + i)));
        for (long i = 0; i < rows_r; ++i) w.l[i] = w.l[i] * w.alpha[i] + w.rsum[i];
        gemm<T, Isa, 2>(rows_r, Dp, cols, w.S, BK, 1, V + j0 * Dp, Dp, w.O, Dp, w.alpha);
    }

    const long D = pb.D;
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
struct BwdScratch {  // per thread
    T *S, *dS, *dK, *dV;
};

template <typename T, class Isa>
TL_INLINE void bwd_group(const Problem<T>& pb, const Packed<T>& pk, long bh, long g,
                         const BwdScratch<T>& w, T* dk_out, T* dv_out) {
    constexpr int W = Isa::bytes / sizeof(T), R = Isa::R;
    using VT = typename Vec<T, W>::type;
    const long b = bh / pb.H, h = bh % pb.H, Dp = pb.Dp, D = pb.D;
    const T* KT = pk.KT + bh * Dp * pb.Tkp;
    const T* VTb = pk.VT + bh * Dp * pb.Tkp;
    const T* Kr = pk.Kr + bh * pb.Tkp * Dp;
    T* dQ = pk.dQ + (g * pb.B * pb.H + bh) * pb.Tqp * Dp;
    constexpr long RW = R > W ? R : W;  // tile widths: multiples of both, so M <= N below

    for (long kt = g; kt < pb.nkt; kt += pk.G) {
        const long j0 = kt * BK, cols = std::min(BK, pb.Tk - j0);
        const long n = round_up(cols, RW), mr = round_up(cols, R);
        std::memset(w.dK, 0, sizeof(T) * mr * Dp);
        std::memset(w.dV, 0, sizeof(T) * mr * Dp);
        // Query tiles wholly above the diagonal never see these keys.
        const long qt0 = pb.causal ? j0 / BQ : 0;
        for (long qt = qt0; qt < pb.nqt; ++qt) {
            const long i0 = qt * BQ, rows = std::min(BQ, pb.Tq - i0), rows_r = round_up(rows, R);
            const T* Q = pk.Qs + (bh * pb.Tqp + i0) * Dp;
            const T* dO = pk.dO + (bh * pb.Tqp + i0) * Dp;
            const T* lse = pk.lse + bh * pb.Tqp + i0;
            const T* Di = pk.Di + bh * pb.Tqp + i0;
            gemm<T, Isa, 0>(rows_r, n, Dp, Q, Dp, 1, KT + j0, pb.Tkp, w.S, BK);      // S
            gemm<T, Isa, 0>(rows_r, n, Dp, dO, Dp, 1, VTb + j0, pb.Tkp, w.dS, BK);   // dP
            for (long i = 0; i < rows_r; ++i) {
                T* s = w.S + i * BK;
                T* ds = w.dS + i * BK;
                mask_score_row(pb, b, h, i0 + i, j0, cols, n, i < rows, s);
                // Padded rows have lse = +inf and do = 0, so their P and dS come out 0.
                const T li = lse[i], di = Di[i];
                for (long j = 0; j < n; j += W) {
                    VT p = vexp<T, W>(vload<VT>(s + j) - li);
                    vstore(s + j, p);
                    vstore(ds + j, p * (vload<VT>(ds + j) - di));
                }
            }
            gemm<T, Isa, 1>(mr, Dp, rows_r, w.S, 1, BK, dO, Dp, w.dV, Dp);           // dv += P^T do
            gemm<T, Isa, 1>(mr, Dp, rows_r, w.dS, 1, BK, Q, Dp, w.dK, Dp);           // dk += dS^T q*scale
            gemm<T, Isa, 1>(rows_r, Dp, cols, w.dS, BK, 1, Kr + j0 * Dp, Dp, dQ + i0 * Dp, Dp);
        }
        for (long r = 0; r < cols; ++r) {
            T* dk = dk_out + (bh * pb.Tk + j0 + r) * D;
            T* dv = dv_out + (bh * pb.Tk + j0 + r) * D;
            for (long d = 0; d < D; ++d) dk[d] = w.dK[r * Dp + d], dv[d] = w.dV[r * Dp + d];
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Instruction-set variants and run-time choice.

template <typename T>
using FwdFn = void (*)(const Problem<T>&, const Packed<T>&, long, long, const FwdScratch<T>&, T*,
                       T*);
template <typename T>
using BwdFn = void (*)(const Problem<T>&, const Packed<T>&, long, long, const BwdScratch<T>&, T*,
                       T*);

template <typename T>
void fwd_base(const Problem<T>& pb, const Packed<T>& pk, long bh, long qt, const FwdScratch<T>& w,
              T* o, T* lse) {
    fwd_tile<T, IsaBase>(pb, pk, bh, qt, w, o, lse);
}
template <typename T>
void bwd_base(const Problem<T>& pb, const Packed<T>& pk, long bh, long g, const BwdScratch<T>& w,
              T* dk, T* dv) {
    bwd_group<T, IsaBase>(pb, pk, bh, g, w, dk, dv);
}
#if TL_X86
template <typename T>
TL_TARGET_AVX2 void fwd_avx2(const Problem<T>& pb, const Packed<T>& pk, long bh, long qt,
                             const FwdScratch<T>& w, T* o, T* lse) {
    fwd_tile<T, IsaAvx2>(pb, pk, bh, qt, w, o, lse);
}
template <typename T>
TL_TARGET_AVX2 void bwd_avx2(const Problem<T>& pb, const Packed<T>& pk, long bh, long g,
                             const BwdScratch<T>& w, T* dk, T* dv) {
    bwd_group<T, IsaAvx2>(pb, pk, bh, g, w, dk, dv);
}
template <typename T>
TL_TARGET_AVX512 void fwd_avx512(const Problem<T>& pb, const Packed<T>& pk, long bh, long qt,
                                 const FwdScratch<T>& w, T* o, T* lse) {
    fwd_tile<T, IsaAvx512>(pb, pk, bh, qt, w, o, lse);
}
template <typename T>
TL_TARGET_AVX512 void bwd_avx512(const Problem<T>& pb, const Packed<T>& pk, long bh, long g,
                                 const BwdScratch<T>& w, T* dk, T* dv) {
    bwd_group<T, IsaAvx512>(pb, pk, bh, g, w, dk, dv);
}
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

// ---------------------------------------------------------------------------------------------
// The two passes over a whole problem (GIL released by the caller).

template <typename T>
void pack_qkv(const Problem<T>& pb, const View4<T>& q, const View4<T>& k, const View4<T>& v,
              Packed<T>& pk, bool backward) {
    const long BH = pb.B * pb.H, Dp = pb.Dp;
#pragma omp parallel for schedule(static)
    for (long bh = 0; bh < BH; ++bh) {
        const long b = bh / pb.H, h = bh % pb.H;
        pack_rows(q, b, h, pb.Tq, pb.D, pb.scale, pk.Qs + bh * pb.Tqp * Dp, Dp);
        pack_transposed(k, b, h, pb.Tk, pb.D, pk.KT + bh * Dp * pb.Tkp, pb.Tkp);
        if (backward) {
            pack_rows(k, b, h, pb.Tk, pb.D, T(1), pk.Kr + bh * pb.Tkp * Dp, Dp);
            pack_transposed(v, b, h, pb.Tk, pb.D, pk.VT + bh * Dp * pb.Tkp, pb.Tkp);
        } else {
            pack_rows(v, b, h, pb.Tk, pb.D, T(1), pk.Vr + bh * pb.Tkp * Dp, Dp);
        }
    }
}

template <typename T>
void run_forward(const Problem<T>& pb, const View4<T>& q, const View4<T>& k, const View4<T>& v,
                 T* o, T* lse) {
    const long BH = pb.B * pb.H, Dp = pb.Dp;
    std::vector<Buffer> owner;
    Packed<T> pk;
    pk.Qs = alloc_zeroed<T>(owner, BH * pb.Tqp * Dp);
    pk.KT = alloc_zeroed<T>(owner, BH * Dp * pb.Tkp);
    pk.Vr = alloc_zeroed<T>(owner, BH * pb.Tkp * Dp);
    const int nth = max_threads();
    const long per = BQ * BK + BQ * Dp + 4 * BQ;
    T* scratch = alloc_zeroed<T>(owner, nth * round_up(per, 16));
    FwdFn<T> fn = pick_fwd<T>();

    pack_qkv(pb, q, k, v, pk, false);
    const long ntasks = BH * pb.nqt;
#pragma omp parallel num_threads(nth)
    {
        T* base = scratch + thread_id() * round_up(per, 16);
        FwdScratch<T> w{base, base + BQ * BK, base + BQ * BK + BQ * Dp, nullptr, nullptr, nullptr};
        w.l = w.m + BQ, w.alpha = w.l + BQ, w.rsum = w.alpha + BQ;
        // Late (causal: most expensive) query tiles first, so the dynamic schedule ends evenly.
#pragma omp for schedule(dynamic, 1)
        for (long t = 0; t < ntasks; ++t) fn(pb, pk, t % BH, pb.nqt - 1 - t / BH, w, o, lse);
    }
}

template <typename T>
void run_backward(const Problem<T>& pb, const View4<T>& q, const View4<T>& k, const View4<T>& v,
                  const View4<T>& o, const View4<T>& lse, const View4<T>& dout, T* dq, T* dk,
                  T* dv) {
    const long BH = pb.B * pb.H, Dp = pb.Dp;
    std::vector<Buffer> owner;
    Packed<T> pk;
    // Enough (head, group) tasks to keep the machine busy; depends on shapes and core count
    // only, so the summation order of dq, and hence the result, is the same for any thread count.
    const long want = 4L * num_procs();
    pk.G = std::max(1L, std::min(std::max(pb.nkt, 1L), (want + BH - 1) / std::max(BH, 1L)));
    pk.Qs = alloc_zeroed<T>(owner, BH * pb.Tqp * Dp);
    pk.KT = alloc_zeroed<T>(owner, BH * Dp * pb.Tkp);
    pk.Kr = alloc_zeroed<T>(owner, BH * pb.Tkp * Dp);
    pk.VT = alloc_zeroed<T>(owner, BH * Dp * pb.Tkp);
    pk.dO = alloc_zeroed<T>(owner, BH * pb.Tqp * Dp);
    pk.lse = alloc_zeroed<T>(owner, BH * pb.Tqp);
    pk.Di = alloc_zeroed<T>(owner, BH * pb.Tqp);
    pk.dQ = alloc_zeroed<T>(owner, pk.G * BH * pb.Tqp * Dp);
    const int nth = max_threads();
    const long per = 2 * BQ * BK + 2 * BK * Dp;
    T* scratch = alloc_zeroed<T>(owner, nth * round_up(per, 16));
    BwdFn<T> fn = pick_bwd<T>();

    pack_qkv(pb, q, k, v, pk, true);
#pragma omp parallel for schedule(static)
    for (long bh = 0; bh < BH; ++bh) {
        const long b = bh / pb.H, h = bh % pb.H;
        pack_rows(dout, b, h, pb.Tq, pb.D, T(1), pk.dO + bh * pb.Tqp * Dp, Dp);
        T* L = pk.lse + bh * pb.Tqp;
        T* Di = pk.Di + bh * pb.Tqp;
        const T* lrow = lse.p + b * lse.s[0] + h * lse.s[1];
        for (long i = 0; i < pb.Tqp; ++i)
            L[i] = i < pb.Tq ? lrow[i * lse.s[2]] : std::numeric_limits<T>::infinity();
        const T* obase = o.p + b * o.s[0] + h * o.s[1];
        const T* dbase = dout.p + b * dout.s[0] + h * dout.s[1];
        for (long i = 0; i < pb.Tq; ++i) {
            T acc = 0;
            for (long d = 0; d < pb.D; ++d)
                acc += obase[i * o.s[2] + d * o.s[3]] * dbase[i * dout.s[2] + d * dout.s[3]];
            Di[i] = acc;
        }
    }

    const long ntasks = BH * pk.G;
#pragma omp parallel num_threads(nth)
    {
        T* base = scratch + thread_id() * round_up(per, 16);
        BwdScratch<T> w{base, base + BQ * BK, base + 2 * BQ * BK, base + 2 * BQ * BK + BK * Dp};
#pragma omp for schedule(dynamic, 1)
        for (long t = 0; t < ntasks; ++t) fn(pb, pk, t % BH, t / BH, w, dk, dv);
    }

    // dq = scale * sum over groups, always in group order.
#pragma omp parallel for schedule(static)
    for (long bh = 0; bh < BH; ++bh) {
        for (long i = 0; i < pb.Tq; ++i) {
            T* out = dq + (bh * pb.Tq + i) * pb.D;
            for (long d = 0; d < pb.D; ++d) {
                T acc = 0;
                for (long g = 0; g < pk.G; ++g) acc += pk.dQ[((g * BH + bh) * pb.Tqp + i) * Dp + d];
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
    pb.Tkp = round_up(c.Tk, BK);
    pb.nqt = pb.Tqp / BQ;
    pb.nkt = pb.Tkp / BK;
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
