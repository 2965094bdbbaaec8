// What the attention kernels (attention.cpp) and their Python boundary (attention_binding.cpp)
// share: the problem description and the two passes over a whole problem.
#pragma once
#include "kernel_util.h"

namespace tl::attn {

// Query and key tile sizes: multiples of every vector width and register-tile height.
// 64 x 64 keeps a score tile plus the q tile and the output accumulator inside L1 (48 KiB) and
// measured best against 64x128, 128x64 and 32x64 on the two benchmark shapes.
constexpr long BQ = 64;
constexpr long BK = 64;
// The forward's query tile for at most this many queries (BERT on sentences: ~10-30 tokens),
// which would leave most of a BQ-lane tile empty. A multiple of every vector width.
constexpr long kShortBQ = 32;
// Up to this many queries the forward takes the row-at-a-time decode path (attention.cpp).
constexpr long kDecodeRows = 4;

constexpr long round_up(long x, long m) { return (x + m - 1) / m * m; }

template <typename T>
struct View4 {  // a strided 4-D (or 3-D, s[3] unused) input, strides in elements
    const T* p = nullptr;
    long s[4] = {0, 0, 0, 0};
    const T* at(long b, long h, long t) const { return p + b * s[0] + h * s[1] + t * s[2]; }
};

template <typename T>
struct Problem {
    long B, H, Tq, Tk, D;
    long Dp, Tqp;  // D padded to a whole 64-byte vector, Tq to whole query tiles
    long nqt, nkt;
    bool causal;
    T scale;
    View4<T> mask;  // p == nullptr: no mask; broadcast dims have stride 0
    long ob, oh, ot;  // strides of the forward's output o (elements; d is contiguous)
    long qgb, qgh, qgt;  // strides of the backward's dq, and of its dk and dv
    long kgb, kgh, kgt;
};

template <typename T>
Problem<T> make_problem(long B, long H, long Tq, long Tk, long D, bool causal, double scale) {
    constexpr long W = 64 / sizeof(T);  // pad D to the widest vector, whichever variant runs
    Problem<T> pb;
    pb.B = B, pb.H = H, pb.Tq = Tq, pb.Tk = Tk, pb.D = D;
    pb.Dp = round_up(D, W);
    pb.Tqp = round_up(Tq, BQ);
    pb.nqt = pb.Tqp / BQ;
    pb.nkt = round_up(Tk, BK) / BK;
    pb.causal = causal;
    pb.scale = T(scale);
    pb.ob = H * Tq * D, pb.oh = Tq * D, pb.ot = D;  // (B, H, Tq, D) C-contiguous
    pb.qgb = H * Tq * D, pb.qgh = Tq * D, pb.qgt = D;
    pb.kgb = H * Tk * D, pb.kgh = Tk * D, pb.kgt = D;
    return pb;
}

// Both run without the GIL; the caller has checked every shape the views are read with.
// o: (B, H, Tq, D), dq: (B, H, Tq, D), dk, dv: (B, H, Tk, D), each with pb's strides;
// lse: (B, H, Tq) C-contiguous.
template <typename T>
void run_forward(const Problem<T>& pb, const View4<T>& q, const View4<T>& k, const View4<T>& v,
                 T* o, T* lse);
template <typename T>
void run_backward(const Problem<T>& pb, const View4<T>& q, const View4<T>& k, const View4<T>& v,
                  const View4<T>& o, const View4<T>& lse, const View4<T>& dout, T* dq, T* dk,
                  T* dv);

}  // namespace tl::attn
