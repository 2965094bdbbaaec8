// softmax and log_softmax over the last dim, forward and backward (docs/KERNELS.md).
// One row at a time: rows are independent, so threads split the rows and every row
// is computed by the same code whatever the thread count (bitwise reproducible).
#include "kernel_util.h"

namespace {

// y = exp(x - max) / sum, or (log) y = x - max - log(sum).
template <class T, bool kLog>
TL_INLINE void forward_rows(const T* x, T* y, int64_t rows, int64_t n) {
    for (int64_t r = 0; r < rows; ++r, x += n, y += n) {
        const T m = tl::max_over(x, n);
        if (kLog) {
            const T sum = tl::sum_over<T>(n, [&](int64_t j, bool) TL_LAMBDA {
                return tl::fast_exp(x[j] - m);
            });
            // (x - m) - log(sum), not x - (m + log(sum)): for offset logits (m ~ 1e4) the sum
            // m + log(sum) would round to m's ulp (1e-3 in float32) and shift every output
            const T ls = std::log(sum);
#pragma omp simd
            for (int64_t j = 0; j < n; ++j) y[j] = (x[j] - m) - ls;
        } else {
            const T sum = tl::sum_over<T>(n, [&](int64_t j, bool keep) TL_LAMBDA {
                const T e = tl::fast_exp(x[j] - m);
                if (keep) y[j] = e;
                return e;
            });
            const T inv = T(1) / sum;
#pragma omp simd
            for (int64_t j = 0; j < n; ++j) y[j] *= inv;
        }
    }
}

// softmax: dx = y * (dy - sum(dy*y)).  log_softmax: dx = dy - exp(y) * sum(dy).
template <class T, bool kLog>
TL_INLINE void backward_rows(const T* y, const T* dy, T* dx, int64_t rows, int64_t n) {
    for (int64_t r = 0; r < rows; ++r, y += n, dy += n, dx += n) {
        if (kLog) {
            const T s = tl::sum_over<T>(n, [&](int64_t j, bool) TL_LAMBDA { return dy[j]; });
            tl::map_over(n, [&](int64_t j, bool keep) TL_LAMBDA {
                const T v = dy[j] - tl::fast_exp(y[j]) * s;
                if (keep) dx[j] = v;
            });
        } else {
            const T s = tl::sum_over<T>(n, [&](int64_t j, bool) TL_LAMBDA { return dy[j] * y[j]; });
#pragma omp simd
            for (int64_t j = 0; j < n; ++j) dx[j] = y[j] * (dy[j] - s);
        }
    }
}

template <class Isa, class T>
TL_INLINE void fwd_impl(const T* x, T* y, int64_t rows, int64_t n, bool log) {
    log ? forward_rows<T, true>(x, y, rows, n) : forward_rows<T, false>(x, y, rows, n);
}
template <class Isa, class T>
TL_INLINE void bwd_impl(const T* y, const T* dy, T* dx, int64_t rows, int64_t n, bool log) {
    log ? backward_rows<T, true>(y, dy, dx, rows, n) : backward_rows<T, false>(y, dy, dx, rows, n);
}
TL_VARIANTS(fwd, fwd_impl)
TL_VARIANTS(bwd, bwd_impl)

// Memory-safety guards (Python checks arguments for users at the op boundary): the dtype,
// shape and rank checks below keep the raw row loops inside the arrays.
template <class T>
py::array forward_typed(const py::array& x_in, bool log) {
    const char* op = log ? "log_softmax_forward" : "softmax_forward";
    int64_t rows, n;
    tl::rows_cols(op, x_in, rows, n);
    auto x = tl::contiguous<T>(x_in);
    py::array_t<T> y(tl::shape_of(x));
    const T* xp = x.data();
    T* yp = y.mutable_data();
    if (n > 0) {
        py::gil_scoped_release nogil;
        tl::parallel_for(rows, n, [&](int64_t b, int64_t e) {
            fwd(xp + b * n, yp + b * n, e - b, n, log);
        });
    }
    return y;
}

template <class T>
py::array backward_typed(const py::array& y_in, const py::array& dy_in, bool log) {
    auto y = tl::contiguous<T>(y_in);
    auto dy = tl::contiguous<T>(dy_in);
    int64_t rows, n;
    tl::rows_cols(log ? "log_softmax_backward" : "softmax_backward", y_in, rows, n);
    py::array_t<T> dx(tl::shape_of(y));
    const T *yp = y.data(), *dyp = dy.data();
    T* dxp = dx.mutable_data();
    if (n > 0) {
        py::gil_scoped_release nogil;
        tl::parallel_for(rows, n, [&](int64_t b, int64_t e) {
            bwd(yp + b * n, dyp + b * n, dxp + b * n, e - b, n, log);
        });
    }
    return dx;
}

py::array forward(const py::array& x, bool log) {
    const char* op = log ? "log_softmax_forward" : "softmax_forward";
    return tl::float_kind(op, "x", x) == tl::Float::F32 ? forward_typed<float>(x, log)
                                                        : forward_typed<double>(x, log);
}

py::array backward(const py::array& y, const py::array& dy, bool log) {
    const char* op = log ? "log_softmax_backward" : "softmax_backward";
    const tl::Float k = tl::float_kind(op, "y", y);
    tl::same_kind(op, "dy", dy, k);
    tl::same_shape(op, "y", y, "dy", dy);
    return k == tl::Float::F32 ? backward_typed<float>(y, dy, log) : backward_typed<double>(y, dy, log);
}

}  // namespace

void bind_softmax(py::module_& m) {
    m.def("softmax_forward", [](const py::array& x) { return forward(x, false); }, py::arg("x"),
          "softmax over the last dim");
    m.def("softmax_backward", [](const py::array& y, const py::array& dy) { return backward(y, dy, false); },
          py::arg("y"), py::arg("dy"), "dx = y * (dy - sum(dy*y)) over the last dim");
    m.def("log_softmax_forward", [](const py::array& x) { return forward(x, true); }, py::arg("x"),
          "log_softmax over the last dim");
    m.def("log_softmax_backward", [](const py::array& y, const py::array& dy) { return backward(y, dy, true); },
          py::arg("y"), py::arg("dy"), "dx = dy - exp(y) * sum(dy) over the last dim");
}
