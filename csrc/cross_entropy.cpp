// Fused cross-entropy (log_softmax + NLL with label smoothing), forward and backward,
// per row of (N, V) logits (docs/KERNELS.md). The backward writes dlogits directly
// from the saved logsumexp: no other N x V array is ever made. Rows are independent,
// so threads split the rows and results do not depend on the thread count.
#include "kernel_util.h"

namespace {

// loss = (1-e)*(lse - x[t]) + e*(lse - mean(x)); 0 for ignored rows. lse for every row.
// The row sum of x is only needed with label smoothing, so it is a compile-time option.
template <class T, bool kSmooth>
TL_INLINE void forward_rows(const T* x, const int64_t* t, T* loss, T* lse, int64_t rows,
                            int64_t V, int64_t ignore, double smoothing) {
    const T e = T(smoothing);
    for (int64_t r = 0; r < rows; ++r, x += V) {
        const T m = tl::max_over(x, V);
        const T s = tl::sum_over<T>(V, [&](int64_t j, bool) TL_LAMBDA {
            return tl::fast_exp(x[j] - m);
        });
        const T l = m + std::log(s);
        lse[r] = l;
        if (t[r] == ignore) {
            loss[r] = T(0);
        } else if (kSmooth) {
            const T sx = tl::sum_over<T>(V, [&](int64_t j, bool) TL_LAMBDA { return x[j]; });
            loss[r] = (T(1) - e) * (l - x[t[r]]) + e * (l - sx / T(V));
        } else {
            loss[r] = l - x[t[r]];
        }
    }
}

// dlogits = dloss * (exp(x - lse) - e/V), then -= dloss*(1-e) at the target; 0 if ignored.
template <class T>
TL_INLINE void backward_rows(const T* x, const int64_t* t, const T* lse, const T* dloss, T* dx,
                             int64_t rows, int64_t V, int64_t ignore, double smoothing) {
    const T e = T(smoothing);
    for (int64_t r = 0; r < rows; ++r, x += V, dx += V) {
        if (t[r] == ignore) {
#pragma omp simd
            for (int64_t j = 0; j < V; ++j) dx[j] = T(0);
            continue;
        }
        const T l = lse[r], d = dloss[r], off = d * e / T(V);
        tl::map_over(V, [&](int64_t j, bool keep) TL_LAMBDA {
            const T v = d * tl::fast_exp(x[j] - l) - off;
            if (keep) dx[j] = v;
        });
        dx[t[r]] -= d * (T(1) - e);
    }
}

template <class Isa, class T>
TL_INLINE void fwd_impl(const T* x, const int64_t* t, T* loss, T* lse, int64_t rows, int64_t V,
                        int64_t ignore, double e) {
    e != 0.0 ? forward_rows<T, true>(x, t, loss, lse, rows, V, ignore, e)
             : forward_rows<T, false>(x, t, loss, lse, rows, V, ignore, e);
}
template <class Isa, class T>
TL_INLINE void bwd_impl(const T* x, const int64_t* t, const T* lse, const T* dloss, T* dx,
                        int64_t rows, int64_t V, int64_t ignore, double e) {
    backward_rows(x, t, lse, dloss, dx, rows, V, ignore, e);
}
TL_VARIANTS(fwd, fwd_impl)
TL_VARIANTS(bwd, bwd_impl)

// Memory-safety guards (Python checks arguments for users at the op boundary): the kernels
// index logits by the targets and the shapes checked here.
// Shapes, dtypes and target range, all checked before any kernel runs (never inside
// a parallel region, where an exception cannot be thrown).
tl::carray<int64_t> checked_targets(const char* op, const py::array& logits,
                                    const py::array& targets_in, int64_t ignore) {
    if (logits.ndim() != 2)
        throw py::value_error(std::string(op) + ": logits must be (N, V), got shape " +
                              tl::shape_str(logits));
    if (targets_in.ndim() != 1 || targets_in.shape(0) != logits.shape(0))
        throw py::value_error(std::string(op) + ": targets must have shape (" +
                              std::to_string(logits.shape(0)) + ",) to match logits " +
                              tl::shape_str(logits) + ", got " + tl::shape_str(targets_in));
    const char kind = targets_in.dtype().kind();
    if (kind != 'i' && kind != 'u')
        throw py::type_error(std::string(op) + ": targets must be an integer array (int64), got " +
                             tl::dtype_str(targets_in));
    if (logits.shape(1) == 0)
        throw py::value_error(std::string(op) + ": logits have no classes, shape " +
                              tl::shape_str(logits));
    auto t = tl::contiguous<int64_t>(targets_in);
    const int64_t N = t.shape(0), V = logits.shape(1);
    const int64_t* tp = t.data();
    for (int64_t i = 0; i < N; ++i)
        if (tp[i] != ignore && (tp[i] < 0 || tp[i] >= V))
            throw py::index_error(std::string(op) + ": target " + std::to_string(tp[i]) +
                                  " (row " + std::to_string(i) + ") is out of range for " +
                                  std::to_string(V) + " classes (ignore_index=" +
                                  std::to_string(ignore) + ")");
    return t;
}

template <class T>
py::tuple forward_typed(const py::array& logits_in, const tl::carray<int64_t>& t, int64_t ignore,
                        double e) {
    auto x = tl::contiguous<T>(logits_in);
    const int64_t N = x.shape(0), V = x.shape(1);
    py::array_t<T> loss(std::vector<py::ssize_t>{N}), lse(std::vector<py::ssize_t>{N});
    const T* xp = x.data();
    const int64_t* tp = t.data();
    T *lp = loss.mutable_data(), *sp = lse.mutable_data();
    {
        py::gil_scoped_release nogil;
        tl::parallel_for(N, V, [&](int64_t b, int64_t end) {
            fwd(xp + b * V, tp + b, lp + b, sp + b, end - b, V, ignore, e);
        });
    }
    return py::make_tuple(loss, lse);
}

py::tuple forward(const py::array& logits, const py::array& targets, int64_t ignore_index,
                  double label_smoothing) {
    const char* op = "cross_entropy_forward";
    const tl::Float k = tl::float_kind(op, "logits", logits);
    auto t = checked_targets(op, logits, targets, ignore_index);
    return k == tl::Float::F32 ? forward_typed<float>(logits, t, ignore_index, label_smoothing)
                               : forward_typed<double>(logits, t, ignore_index, label_smoothing);
}

template <class T>
py::array backward_typed(const py::array& logits_in, const tl::carray<int64_t>& t,
                         const py::array& lse_in, const py::array& dloss_in, int64_t ignore,
                         double e) {
    auto x = tl::contiguous<T>(logits_in);
    auto lse = tl::contiguous<T>(lse_in);
    auto dloss = tl::contiguous<T>(dloss_in);
    const int64_t N = x.shape(0), V = x.shape(1);
    py::array_t<T> dx(std::vector<py::ssize_t>{N, V});
    const T *xp = x.data(), *sp = lse.data(), *dp = dloss.data();
    const int64_t* tp = t.data();
    T* dxp = dx.mutable_data();
    {
        py::gil_scoped_release nogil;
        tl::parallel_for(N, V, [&](int64_t b, int64_t end) {
            bwd(xp + b * V, tp + b, sp + b, dp + b, dxp + b * V, end - b, V, ignore, e);
        });
    }
    return dx;
}

py::array backward(const py::array& logits, const py::array& targets, const py::array& lse,
                   const py::array& dloss, int64_t ignore_index, double label_smoothing) {
    const char* op = "cross_entropy_backward";
    const tl::Float k = tl::float_kind(op, "logits", logits);
    tl::same_kind(op, "lse", lse, k);
    tl::same_kind(op, "dloss", dloss, k);
    auto t = checked_targets(op, logits, targets, ignore_index);
    const int64_t N = logits.shape(0);
    if (lse.ndim() != 1 || lse.shape(0) != N || dloss.ndim() != 1 || dloss.shape(0) != N)
        throw py::value_error(std::string(op) + ": lse " + tl::shape_str(lse) + " and dloss " +
                              tl::shape_str(dloss) + " must have shape (" + std::to_string(N) + ",)");
    return k == tl::Float::F32
               ? backward_typed<float>(logits, t, lse, dloss, ignore_index, label_smoothing)
               : backward_typed<double>(logits, t, lse, dloss, ignore_index, label_smoothing);
}

}  // namespace

void bind_cross_entropy(py::module_& m) {
    m.def("cross_entropy_forward", &forward, py::arg("logits"), py::arg("targets"),
          py::arg("ignore_index"), py::arg("label_smoothing"), "-> (loss per row, lse per row)");
    m.def("cross_entropy_backward", &backward, py::arg("logits"), py::arg("targets"),
          py::arg("lse"), py::arg("dloss"), py::arg("ignore_index"), py::arg("label_smoothing"),
          "-> dlogits");
}
