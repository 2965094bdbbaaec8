// layer_norm over the last dim (size C), forward and backward (docs/KERNELS.md).
// Forward is row-parallel. Backward also sums dweight/dbias over the rows; to keep
// that sum independent of the thread count the rows are cut into a fixed number of
// chunks (a function of the row count only), each chunk sums its rows in order, and
// the chunk sums are added in chunk order at the end.
#include "kernel_util.h"

#include <algorithm>

namespace {

// 1 / sqrt(var + eps) of a row whose squared deviations overflow T (|x| >~ 1e19 in
// float32): the deviations divided by the largest one are squared instead, and the scale
// brought back outside the root. Rare rows only, so the plain pass stays the fast one.
template <class T>
T scaled_rstd(const T* x, T mu, int64_t C, double eps) {
    T m = 0;
    for (int64_t j = 0; j < C; ++j) m = std::max(m, std::fabs(x[j] - mu));
    if (!(m > 0) || !std::isfinite(m)) return T(0);  // inf/nan inputs: no finite answer
    T ss = 0;
    for (int64_t j = 0; j < C; ++j) {
        const T d = (x[j] - mu) / m;
        ss += d * d;
    }
    return (T(1) / m) / std::sqrt(ss / T(C) + T(eps) / m / m);
}

// Two passes over the row (mean, then centred variance): E[x^2]-E[x]^2 cancels badly
// when |mean| >> std.
template <class T>
TL_INLINE void forward_rows(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd,
                            int64_t rows, int64_t C, double eps) {
    for (int64_t r = 0; r < rows; ++r, x += C, y += C) {
        T s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t j = 0; j < C; ++j) s += x[j];
        const T mu = s / T(C);
        T ss = 0;
#pragma omp simd reduction(+ : ss)
        for (int64_t j = 0; j < C; ++j) ss += (x[j] - mu) * (x[j] - mu);
        T rs = T(1) / std::sqrt(ss / T(C) + T(eps));
        if (!std::isfinite(ss)) rs = scaled_rstd(x, mu, C, eps);  // squares overflowed
        mean[r] = mu;
        rstd[r] = rs;
        if (w && b) {
#pragma omp simd
            for (int64_t j = 0; j < C; ++j) y[j] = (x[j] - mu) * rs * w[j] + b[j];
        } else if (w) {
#pragma omp simd
            for (int64_t j = 0; j < C; ++j) y[j] = (x[j] - mu) * rs * w[j];
        } else if (b) {
#pragma omp simd
            for (int64_t j = 0; j < C; ++j) y[j] = (x[j] - mu) * rs + b[j];
        } else {
#pragma omp simd
            for (int64_t j = 0; j < C; ++j) y[j] = (x[j] - mu) * rs;
        }
    }
}

// dx = rstd * (g - mean(g) - xhat * mean(g*xhat)), g = dy * w.  dw += dy*xhat, db += dy.
template <class T>
TL_INLINE void backward_rows(const T* dy, const T* x, const T* w, const T* mean, const T* rstd,
                             T* dx, T* dw, T* db, int64_t rows, int64_t C) {
    for (int64_t r = 0; r < rows; ++r, dy += C, x += C, dx += C) {
        const T mu = mean[r], rs = rstd[r];
        T sg = 0, sgx = 0;
        if (w) {
#pragma omp simd reduction(+ : sg, sgx)
            for (int64_t j = 0; j < C; ++j) {
                const T g = dy[j] * w[j];
                sg += g;
                sgx += g * ((x[j] - mu) * rs);  // xhat first: g * (x - mu) overflows for huge rows
            }
        } else {
#pragma omp simd reduction(+ : sg, sgx)
            for (int64_t j = 0; j < C; ++j) {
                sg += dy[j];
                sgx += dy[j] * ((x[j] - mu) * rs);
            }
        }
        const T a = sg / T(C), bcoef = sgx / T(C);
        if (w) {
#pragma omp simd
            for (int64_t j = 0; j < C; ++j) {
                const T xhat = (x[j] - mu) * rs;
                dx[j] = rs * (dy[j] * w[j] - a - xhat * bcoef);
                dw[j] += dy[j] * xhat;
                db[j] += dy[j];
            }
        } else {
#pragma omp simd
            for (int64_t j = 0; j < C; ++j) {
                const T xhat = (x[j] - mu) * rs;
                dx[j] = rs * (dy[j] - a - xhat * bcoef);
                db[j] += dy[j];
            }
        }
    }
}

template <class Isa, class T>
TL_INLINE void fwd_impl(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int64_t rows,
                        int64_t C, double eps) {
    forward_rows(x, w, b, y, mean, rstd, rows, C, eps);
}
template <class Isa, class T>
TL_INLINE void bwd_impl(const T* dy, const T* x, const T* w, const T* mean, const T* rstd, T* dx,
                        T* dw, T* db, int64_t rows, int64_t C) {
    backward_rows(dy, x, w, mean, rstd, dx, dw, db, rows, C);
}
TL_VARIANTS(fwd, fwd_impl)
TL_VARIANTS(bwd, bwd_impl)

// Memory-safety guards (Python checks arguments for users at the op boundary): the raw row
// loops read x, weight, bias, mean and rstd by the shapes and dtypes checked here.
void check_affine(const char* op, const char* name, const py::object& p, int64_t C, tl::Float k) {
    if (p.is_none()) return;
    const auto a = py::cast<py::array>(p);
    tl::same_kind(op, name, a, k);
    if (a.ndim() != 1 || a.shape(0) != C)
        throw py::value_error(std::string(op) + ": " + name + " has shape " + tl::shape_str(a) +
                              ", expected (" + std::to_string(C) + ",) to match the last dim of x");
}

template <class T>
const T* data_or_null(const py::object& p, tl::carray<T>& keep) {
    if (p.is_none()) return nullptr;
    keep = tl::contiguous<T>(py::cast<py::array>(p));
    return keep.data();
}

template <class T>
py::tuple forward_typed(const py::array& x_in, const py::object& w_in, const py::object& b_in,
                        double eps, int64_t rows, int64_t C) {
    auto x = tl::contiguous<T>(x_in);
    tl::carray<T> wk, bk;
    const T* w = data_or_null<T>(w_in, wk);
    const T* b = data_or_null<T>(b_in, bk);
    auto shape = tl::shape_of(x);
    py::array_t<T> y(shape);
    shape.pop_back();
    py::array_t<T> mean(shape), rstd(shape);
    const T* xp = x.data();
    T *yp = y.mutable_data(), *mp = mean.mutable_data(), *rp = rstd.mutable_data();
    {
        py::gil_scoped_release nogil;
        tl::parallel_for(rows, C, [&](int64_t r0, int64_t r1) {
            fwd(xp + r0 * C, w, b, yp + r0 * C, mp + r0, rp + r0, r1 - r0, C, eps);
        });
    }
    return py::make_tuple(y, mean, rstd);
}

py::tuple forward(const py::array& x, const py::object& weight, const py::object& bias, double eps) {
    const char* op = "layer_norm_forward";
    const tl::Float k = tl::float_kind(op, "x", x);
    int64_t rows, C;
    tl::rows_cols(op, x, rows, C);
    if (C == 0)
        throw py::value_error(std::string(op) + ": cannot normalise over an empty last dim, x has shape " +
                              tl::shape_str(x));
    check_affine(op, "weight", weight, C, k);
    check_affine(op, "bias", bias, C, k);
    return k == tl::Float::F32 ? forward_typed<float>(x, weight, bias, eps, rows, C)
                               : forward_typed<double>(x, weight, bias, eps, rows, C);
}

template <class T>
py::tuple backward_typed(const py::array& dy_in, const py::array& x_in, const py::object& w_in,
                         const py::array& mean_in, const py::array& rstd_in, int64_t rows, int64_t C) {
    auto dy = tl::contiguous<T>(dy_in);
    auto x = tl::contiguous<T>(x_in);
    auto mean = tl::contiguous<T>(mean_in);
    auto rstd = tl::contiguous<T>(rstd_in);
    tl::carray<T> wk;
    const T* w = data_or_null<T>(w_in, wk);
    py::array_t<T> dx(tl::shape_of(x));
    py::array_t<T> dw(std::vector<py::ssize_t>{C}), db(std::vector<py::ssize_t>{C});

    // Fixed chunking (see the top of the file): at most 64 chunks of whole rows.
    const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(64, rows));
    const int64_t per = rows > 0 ? (rows + chunks - 1) / chunks : 0;
    std::vector<T> part_w(w ? chunks * C : 0, T(0)), part_b(chunks * C, T(0));

    const T *dyp = dy.data(), *xp = x.data(), *mp = mean.data(), *rp = rstd.data();
    T *dxp = dx.mutable_data(), *dwp = dw.mutable_data(), *dbp = db.mutable_data();
    {
        py::gil_scoped_release nogil;
        tl::parallel_for(chunks, per * C, [&](int64_t c0, int64_t c1) {
            for (int64_t c = c0; c < c1; ++c) {
                const int64_t r0 = std::min(rows, c * per), r1 = std::min(rows, r0 + per);
                bwd(dyp + r0 * C, xp + r0 * C, w, mp + r0, rp + r0, dxp + r0 * C,
                    w ? part_w.data() + c * C : nullptr, part_b.data() + c * C, r1 - r0, C);
            }
        });
        std::fill(dbp, dbp + C, T(0));
        if (w) std::fill(dwp, dwp + C, T(0));
        for (int64_t c = 0; c < chunks; ++c) {
            for (int64_t j = 0; j < C; ++j) dbp[j] += part_b[c * C + j];
            if (w)
                for (int64_t j = 0; j < C; ++j) dwp[j] += part_w[c * C + j];
        }
    }
    return py::make_tuple(dx, w ? py::object(dw) : py::object(py::none()), db);
}

py::tuple backward(const py::array& dy, const py::array& x, const py::object& weight,
                   const py::array& mean, const py::array& rstd) {
    const char* op = "layer_norm_backward";
    const tl::Float k = tl::float_kind(op, "x", x);
    tl::same_kind(op, "dy", dy, k);
    tl::same_kind(op, "mean", mean, k);
    tl::same_kind(op, "rstd", rstd, k);
    tl::same_shape(op, "dy", dy, "x", x);
    int64_t rows, C;
    tl::rows_cols(op, x, rows, C);
    check_affine(op, "weight", weight, C, k);
    bool stats_ok = mean.ndim() == x.ndim() - 1 && rstd.ndim() == x.ndim() - 1;
    for (py::ssize_t i = 0; stats_ok && i + 1 < x.ndim(); ++i)
        stats_ok = mean.shape(i) == x.shape(i) && rstd.shape(i) == x.shape(i);
    if (!stats_ok)
        throw py::value_error(std::string(op) + ": mean " + tl::shape_str(mean) + " and rstd " +
                              tl::shape_str(rstd) + " must have x's leading shape (x is " +
                              tl::shape_str(x) + ")");
    return k == tl::Float::F32 ? backward_typed<float>(dy, x, weight, mean, rstd, rows, C)
                               : backward_typed<double>(dy, x, weight, mean, rstd, rows, C);
}

}  // namespace

void bind_layer_norm(py::module_& m) {
    m.def("layer_norm_forward", &forward, py::arg("x"), py::arg("weight"), py::arg("bias"),
          py::arg("eps"), "layer_norm over the last dim -> (y, mean, rstd)");
    m.def("layer_norm_backward", &backward, py::arg("dy"), py::arg("x"), py::arg("weight"),
          py::arg("mean"), py::arg("rstd"), "-> (dx, dweight or None, dbias)");
}
