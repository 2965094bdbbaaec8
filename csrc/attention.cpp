// Flash-style scaled-dot-product attention on the CPU, forward and backward: the kernels.
// The Python boundary (checks, views, GIL) is attention_binding.cpp.
//
// The contract (docs/KERNELS.md) and the readable spec (tensorlite/reference/attention.py):
//   S = q k^T * scale + mask (+ causal -inf),  P = softmax_rows(S),  o = P v,
//   lse = logsumexp_rows(S).
//
// How it is computed here:
//   * Every product is one shape of GEMM, C (+)= A B with A read one scalar at a time through
//     arbitrary strides (so A^T costs nothing) and B read as contiguous rows of vectors; one
//     register-tiled micro-kernel (gemm_tile.h) serves all of them.
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
//   * The per-task code is compiled once per instruction set (TL_VARIANTS, kernel_util.h) and
//     the variant of the active one runs, so the extension needs no -march=native.
#include "attention.h"
#include "gemm_tile.h"

#include <cstdlib>
#include <type_traits>
#include <memory>
#include <new>

namespace tl::attn {
namespace {

// ---------------------------------------------------------------------------------------------
// Operands and per-thread memory.

// A (B, H, T, Dp) operand read as contiguous rows of Dp (a whole number of vectors): the
// caller's array itself when it allows, else a zero-padded copy (see rows_operand).
template <typename T>
struct Rows {
    const T* p = nullptr;
    long sb = 0, sh = 0, st = 0;
    const T* row(long b, long h, long t) const { return p + b * sb + h * sh + t * st; }
};

struct FreeDeleter {
    void operator()(void* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<void, FreeDeleter>;

// 64-byte aligned, zero-filled unless `zero` is false (buffers whose every element is written
// before it is read); throws std::bad_alloc (-> MemoryError) before any thread starts.
template <typename T>
T* alloc_zeroed(std::vector<Buffer>& owner, long n, bool zero = true) {
    std::size_t bytes = round_up(std::max<long>(n, 1) * (long)sizeof(T), 64);
    void* p = std::aligned_alloc(64, bytes);
    if (!p) throw std::bad_alloc();
    if (zero) std::memset(p, 0, bytes);
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

// dst[d][i] = src(b, h, i0 + i, d) * mult for i < rows; lanes rows .. L-1 zero. (D x L)
template <long L = BQ, typename T>
void copy_tile_transposed(const View4<T>& src, long b, long h, long i0, long rows, long D, T mult,
                          T* dst) {
    if (src.s[3] == 1 && rows == L) {
        // the usual case: whole tiles of unit-stride rows, read 16 queries at a time into a
        // local block and stored as contiguous runs of the transposed tile
        const T* base = src.at(b, h, i0);
        const long ts = src.s[2];
        for (long c = 0; c < L; c += 16) {
            for (long d = 0; d < D; ++d) {
                T* out = dst + d * L + c;
                for (long i = 0; i < 16; ++i) out[i] = base[(c + i) * ts + d] * mult;
            }
        }
        return;
    }
    for (long i = 0; i < L; ++i) {
        if (i < rows) {
            const T* row = src.at(b, h, i0 + i);
            for (long d = 0; d < D; ++d) dst[d * L + i] = row[d * src.s[3]] * mult;
        } else {
            for (long d = 0; d < D; ++d) dst[d * L + i] = 0;
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
    tl::parallel_for_static(nth, BH, [&](long bh) {
        copy_rows(a, bh / pb.H, bh % pb.H, 0, T_, T_, pb.D, buf + bh * T_ * pb.Dp, pb.Dp);
    });
    return Rows<T>{buf, pb.H * T_ * pb.Dp, T_ * pb.Dp, pb.Dp};
}

// Masks row j (global key jg) of a transposed score tile whose lanes are queries i0 .. i0+L-1:
// adds the user mask and sets -inf where the key lies after the query (is_causal).
template <typename T, int W, long L = BQ>
TL_INLINE void mask_st_row(const Problem<T>& pb, long b, long h, long i0, long rows, long jg,
                           T* st) {
    using VT = typename Vec<T, W>::type;
    if (pb.mask.p) {
        const T* mp = pb.mask.p + b * pb.mask.s[0] + h * pb.mask.s[1] + i0 * pb.mask.s[2] +
                      jg * pb.mask.s[3];
        const long sq = pb.mask.s[2];
        if (sq == 0) {  // one value for all queries (e.g. a key-padding mask): a vector add
            const T mv = *mp;
            for (long i = 0; i < L; i += W) vstore(st + i, vload<VT>(st + i) + mv);
        } else {
            for (long i = 0; i < rows; ++i) st[i] += mp[i * sq];
        }
    }
    if (pb.causal) {
        const long c = std::min(jg - i0, L);  // lanes 0 .. c-1 are queries before this key
        for (long i = 0; i < c; ++i) st[i] = -std::numeric_limits<T>::infinity();
    }
}

// ---------------------------------------------------------------------------------------------
// Forward: one (batch*head, query tile) task.

// Per thread, for query tiles of L lanes. Every array's size is a multiple of 16 elements (L and
// BK are), so each starts 64-byte aligned in the aligned block run_tasks carves it from.
template <typename T, long L>
struct FwdScratch {
    T *QT, *ST, *O, *Kt, *m, *l, *alpha;
    static long size(const Problem<T>& pb) {
        return pb.D * L + BK * L + L * pb.Dp + BK * pb.D + 3 * L;
    }
    FwdScratch(T* p, const Problem<T>& pb)
        : QT(p), ST(QT + pb.D * L), O(ST + BK * L), Kt(O + L * pb.Dp), m(Kt + BK * pb.D),
          l(m + L), alpha(l + L) {}
};

// L: the query tile's width (lanes), BQ or, for short sequences, kShortBQ.
template <class Isa, typename T, long L>
TL_INLINE void fwd_tile(const Problem<T>& pb, const View4<T>& q, const View4<T>& k,
                        const Rows<T>& vrows, long bh, long qt, const FwdScratch<T, L>& w, T* out,
                        T* lse_out, std::integral_constant<long, L>) {
    constexpr int W = Isa::vbytes / sizeof(T), R = Tile<Isa>::R;
    using VT = typename Vec<T, W>::type;
    const T ninf = -std::numeric_limits<T>::infinity();
    const long b = bh / pb.H, h = bh % pb.H, D = pb.D, Dp = pb.Dp;
    const long i0 = qt * L, rows = std::min(L, pb.Tq - i0), rows_r = round_up(rows, R);
    // With is_causal the last query of the tile sees keys 0 .. i0+rows-1 only.
    const long kend = pb.causal ? std::min(pb.Tk, i0 + rows) : pb.Tk;

    copy_tile_transposed<L>(q, b, h, i0, rows, D, pb.scale, w.QT);
    for (long i = 0; i < L; ++i) w.m[i] = ninf, w.l[i] = 0;
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
        gemm<T, Isa, 0>(M, L, D, A, ars, acs, w.QT, L, w.ST, L, nullptr, keys_rows);
        for (long j = 0; j < cols; ++j)
            mask_st_row<T, W, L>(pb, b, h, i0, rows, j0 + j, w.ST + j * L);

        // Online softmax, one vector of queries at a time.
        for (long v = 0; v < L; v += W) {
            const VT m_old = vload<VT>(w.m + v);
            VT mx = m_old;
            for (long j = 0; j < cols; ++j) {
                const VT x = vload<VT>(w.ST + j * L + v);
                mx = x > mx ? x : mx;
            }
            // A query that has seen only -inf so far shifts by 0: exp(-inf - 0) = 0, not NaN.
            const VT shift = mx == vsplat<VT>(ninf) ? VT{} : mx;
            const VT alpha = exp_poly(m_old - shift);  // m_old = -inf: 0 wipes the empty start
            VT sum = VT{};
            for (long j = 0; j < cols; ++j) {
                const VT p = exp_poly(vload<VT>(w.ST + j * L + v) - shift);
                vstore(w.ST + j * L + v, p);
                sum += p;
            }
            vstore(w.m + v, mx);
            vstore(w.alpha + v, alpha);
            vstore(w.l + v, vload<VT>(w.l + v) * alpha + sum);
        }
        // O = diag(alpha) O + P V, with P read transposed out of ST.
        gemm<T, Isa, 2>(rows_r, Dp, cols, w.ST, 1, L, vrows.row(b, h, j0), vrows.st, w.O, Dp,
                        w.alpha, Tri{pb.causal ? Tri::kend : Tri::none, i0 - j0});
    }

    for (long i = 0; i < rows; ++i) {
        const T l = w.l[i];
        T* o = out + b * pb.ob + h * pb.oh + (i0 + i) * pb.ot;
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
struct BwdScratch {  // per thread, laid out as FwdScratch
    T *ST, *dST, *dK, *dV, *Kt, *Vt;
    static long size(const Problem<T>& pb) { return 2 * BK * BQ + 2 * BK * pb.Dp + 2 * BK * pb.D; }
    BwdScratch(T* p, const Problem<T>& pb)
        : ST(p), dST(ST + BK * BQ), dK(dST + BK * BQ), dV(dK + BK * pb.Dp), Kt(dV + BK * pb.Dp),
          Vt(Kt + BK * pb.D) {}
};

template <class Isa, typename T>
TL_INLINE void bwd_group(const Problem<T>& pb, const BwdData<T>& bd, long bh, long g,
                         const BwdScratch<T>& w, T* dk_out, T* dv_out) {
    constexpr int W = Isa::vbytes / sizeof(T), R = Tile<Isa>::R;
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
                    // P <= 1: a score recomputed a rounding above the forward's (one ulp of a
                    // score of 1e28 is far more than 88) must not give exp(+big)
                    VT d = vload<VT>(st + v) - vload<VT>(L + v);
                    d = d > VT{} ? VT{} : d;
                    const VT p = exp_poly(d);
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
            const long at = b * pb.kgb + h * pb.kgh + (j0 + r) * pb.kgt;
            T* dk = dk_out + at;
            T* dv = dv_out + at;
            for (long d = 0; d < D; ++d) dk[d] = w.dK[r * Dp + d] * pb.scale, dv[d] = w.dV[r * Dp + d];
        }
    }
}

// Threads for a problem of `work` multiply-adds. Waking a team costs a few microseconds on
// an idle machine and whole scheduler time slices (milliseconds) when the cores are shared,
// so small problems (decoding one token, the tiny models of the tests) stay on one thread.
// The result does not depend on this choice (see the dq grouping below).
template <typename T>
int threads_for(const Problem<T>& pb) {
    const double work = double(pb.B) * pb.H * pb.Tq * pb.Tk * pb.D;
    return work < double(1 << 20) ? 1 : tl::max_threads();
}

// One (batch*head, query tile) forward task and one (batch*head, key-tile group) backward
// task, each compiled per instruction set.
TL_VARIANTS(fwd_task, fwd_tile)
TL_VARIANTS(bwd_task, bwd_group)

// Runs task(t, scratch) for every t < ntasks on a team of nth threads, each with its own
// Scratch (zeroed; freed with `owner`). Allocated before the team starts, so that a failure
// is a MemoryError, not an exception inside a parallel region. Handed out one at a time (an
// atomic counter): tasks differ in cost (causal tiles, ragged tails) and are few.
template <class Scratch, typename T, class F>
void run_tasks(const Problem<T>& pb, int nth, long ntasks, std::vector<Buffer>& owner, F&& task) {
    const long per = round_up(Scratch::size(pb), 16);
    T* all = alloc_zeroed<T>(owner, nth * per);
    std::atomic<long> next{0};
    tl::parallel(int(std::min<long>(nth, std::max(ntasks, 1L))), [&](int tid, int) {
        const Scratch w(all + tid * per, pb);
        for (long t; (t = next.fetch_add(1, std::memory_order_relaxed)) < ntasks;) task(t, w);
    });
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The two passes over a whole problem (GIL released by the caller).

namespace {

// A few queries (decoding with a KV cache: one new token per sequence) would fill 1/64 of a
// query tile, so the tile path computes 64x the scores it needs. Here each (batch, head,
// query) row makes one pass over its keys -- scores and their max, then exp, sum and P v --
// in a per-thread buffer of Tk scores. Same contract: causal is top-left aligned, a row that
// may attend nothing gives o = 0 and lse = +inf.
template <typename T>
void decode_forward(const Problem<T>& pb, const View4<T>& q, const View4<T>& k,
                    const View4<T>& v, T* o, T* lse) {
    const long D = pb.D, rows = pb.B * pb.H * pb.Tq;
    const int nth = threads_for(pb);
    std::vector<T> scores(size_t(nth) * size_t(std::max(pb.Tk, 1L)));  // before the team starts
    const T ninf = -std::numeric_limits<T>::infinity();
    tl::parallel(nth, [&](int tid, int nt) {
        T* s = scores.data() + size_t(tid) * size_t(std::max(pb.Tk, 1L));
        for (long r = tid; r < rows; r += nt) {
            const long i = r % pb.Tq, h = (r / pb.Tq) % pb.H, b = r / (pb.Tq * pb.H);
            const long kend = pb.causal ? std::min(pb.Tk, i + 1) : pb.Tk;
            const T* qi = q.at(b, h, i);
            T m = ninf;
            for (long j = 0; j < kend; ++j) {
                const T* kj = k.at(b, h, j);
                T acc = 0;
                for (long d = 0; d < D; ++d) acc += qi[d * q.s[3]] * kj[d * k.s[3]];
                acc *= pb.scale;
                if (pb.mask.p)
                    acc += pb.mask.p[b * pb.mask.s[0] + h * pb.mask.s[1] + i * pb.mask.s[2] +
                                     j * pb.mask.s[3]];
                s[j] = acc;
                m = std::max(m, acc);
            }
            T* oi = o + b * pb.ob + h * pb.oh + i * pb.ot;
            for (long d = 0; d < D; ++d) oi[d] = 0;
            if (m == ninf) {  // nothing to attend (or no keys at all)
                lse[r] = std::numeric_limits<T>::infinity();
                continue;
            }
            T l = 0;
            for (long j = 0; j < kend; ++j) {
                const T p = std::exp(s[j] - m);
                l += p;
                const T* vj = v.at(b, h, j);
                for (long d = 0; d < D; ++d) oi[d] += p * vj[d * v.s[3]];
            }
            for (long d = 0; d < D; ++d) oi[d] /= l;
            lse[r] = m + std::log(l);
        }
    });
}

}  // namespace

template <typename T>
void run_forward(const Problem<T>& pb, const View4<T>& q, const View4<T>& k, const View4<T>& v,
                 T* o, T* lse) {
    if (pb.Tq <= kDecodeRows) {
        decode_forward(pb, q, k, v, o, lse);
        return;
    }
    const long BH = pb.B * pb.H;
    std::vector<Buffer> owner;
    const int nth = threads_for(pb);
    const Rows<T> vrows = rows_operand(pb, v, pb.Tk, owner, nth);
    auto run = [&](auto lanes) {
        constexpr long L = decltype(lanes)::value;
        const long nq = (pb.Tq + L - 1) / L;
        // Late (causal: most expensive) query tiles first, so the dynamic schedule ends evenly.
        using Scratch = FwdScratch<T, L>;
        run_tasks<Scratch>(pb, nth, BH * nq, owner, [&](long t, const Scratch& w) {
            fwd_task(pb, q, k, vrows, t % BH, nq - 1 - t / BH, w, o, lse, lanes);
        });
    };
    // Every query's arithmetic is the same whatever the tile width: the narrow tile only
    // stops computing the scores of padding lanes.
    if (pb.Tq <= kShortBQ) run(std::integral_constant<long, kShortBQ>{});
    else run(std::integral_constant<long, BQ>{});
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
    const long want = 4L * tl::num_procs();
    bd.G = std::max(1L, std::min(std::max(pb.nkt, 1L), (want + BH - 1) / std::max(BH, 1L)));
    // (filled in whole, padding lanes included, by the loop below)
    T* QT = alloc_zeroed<T>(owner, BH * pb.nqt * D * BQ, false);
    T* dOT = alloc_zeroed<T>(owner, BH * pb.nqt * D * BQ, false);
    T* L = alloc_zeroed<T>(owner, BH * pb.Tqp, false);
    T* Di = alloc_zeroed<T>(owner, BH * pb.Tqp, false);
    bd.QT = QT, bd.dOT = dOT, bd.lse = L, bd.Di = Di;
    bd.dQ = alloc_zeroed<T>(owner, bd.G * BH * pb.Tqp * Dp);

    tl::parallel_for_static(nth, BH * pb.nqt, [&](long t) {
        const long bh = t / pb.nqt, qt = t % pb.nqt, b = bh / pb.H, h = bh % pb.H;
        const long i0 = qt * BQ, rows = std::min(BQ, pb.Tq - i0);
        copy_tile_transposed(q, b, h, i0, rows, D, pb.scale, QT + t * D * BQ);
        copy_tile_transposed(dout, b, h, i0, rows, D, T(1), dOT + t * D * BQ);
        const bool unit = o.s[3] == 1 && dout.s[3] == 1;
        for (long i = 0; i < BQ; ++i) {
            T acc = 0;
            if (i < rows) {
                const T* orow = o.at(b, h, i0 + i);
                const T* drow = dout.at(b, h, i0 + i);
                if (unit) {  // the usual case, vectorised
#pragma omp simd reduction(+ : acc)
                    for (long d = 0; d < D; ++d) acc += orow[d] * drow[d];
                } else {
                    for (long d = 0; d < D; ++d) acc += orow[d * o.s[3]] * drow[d * dout.s[3]];
                }
            }
            Di[bh * pb.Tqp + i0 + i] = acc;
            L[bh * pb.Tqp + i0 + i] = i < rows ? lse.at(b, h, 0)[(i0 + i) * lse.s[2]]
                                               : std::numeric_limits<T>::infinity();
        }
    });

    run_tasks<BwdScratch<T>>(pb, nth, BH * bd.G, owner, [&](long t, const BwdScratch<T>& w) {
        bwd_task(pb, bd, t % BH, t / BH, w, dk, dv);
    });

    // dq = scale * sum over groups, always in group order.
    tl::parallel_for_static(nth, BH, [&](long bh) {
        const long group = BH * pb.Tqp * Dp;  // one group's dq buffer
        for (long i = 0; i < pb.Tq; ++i) {
            T* out = dq + (bh / pb.H) * pb.qgb + (bh % pb.H) * pb.qgh + i * pb.qgt;
            const T* src = bd.dQ + (bh * pb.Tqp + i) * Dp;
            // d innermost (contiguous, vectorised), groups added one after the other: the same
            // sums in the same order as a loop over groups per element
#pragma omp simd
            for (long d = 0; d < D; ++d) out[d] = src[d];
            for (long g = 1; g < bd.G; ++g) {
                const T* sg = src + g * group;
#pragma omp simd
                for (long d = 0; d < D; ++d) out[d] += sg[d];
            }
#pragma omp simd
            for (long d = 0; d < D; ++d) out[d] *= pb.scale;
        }
    });
}

#define TL_INSTANTIATE(T)                                                                    \
    template void run_forward<T>(const Problem<T>&, const View4<T>&, const View4<T>&,         \
                                 const View4<T>&, T*, T*);                                    \
    template void run_backward<T>(const Problem<T>&, const View4<T>&, const View4<T>&,        \
                                  const View4<T>&, const View4<T>&, const View4<T>&,          \
                                  const View4<T>&, T*, T*, T*);
TL_INSTANTIATE(float)
TL_INSTANTIATE(double)
#undef TL_INSTANTIATE

}  // namespace tl::attn
