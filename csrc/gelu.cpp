// GELU, forward and backward, elementwise (docs/KERNELS.md).
//   exact ("none"): gelu(x) = x * Phi(x), Phi the standard normal CDF
//   "tanh":         gelu(x) = x * (1 + tanh(z)) / 2,  z = sqrt(2/pi) * (x + 0.044715 x^3)
// float64 uses the C library (std::erfc, std::tanh). float32 uses formulas that
// vectorise, built on tl::fast_exp:
//   * (1 + tanh(z)) / 2 = 1 / (1 + exp(-2z)), which also stays relatively accurate in
//     the far negative tail where 1 + tanh(z) would cancel.
//   * Phi(-a) = exp(-a^2/2) * M(a) for a = |x|, and Phi(x) = 1 - Phi(-x) for x > 0.
//     M(a) = exp(a^2/2) Phi(-a) is smooth and slowly varying (M(0) = 1/2, M(a) ~
//     1/(a sqrt(2 pi)) for large a), so a degree-12 polynomial in u = 4/(a+4) fits it.
//     The coefficients are our own least-squares Chebyshev fit of M on a in [0, 13.2]
//     (beyond that exp(-a^2/2) underflows float32), converted to the power basis in u.
//     Evaluated in float32 the max relative error of M is 4e-7; exp(-a^2/2) adds the
//     rounding of a^2, so Phi(-a) is within ~1e-6 relative up to a = 6.
#include "kernel_util.h"

namespace {

constexpr double kSqrt2OverPi = 0.7978845608028654;
constexpr double kTanhC = 0.044715;
constexpr double kInvSqrt2 = 0.7071067811865476;
constexpr double kInvSqrt2Pi = 0.3989422804014327;

// M(a) = exp(a^2/2) * Phi(-a) as a polynomial in u = 4 / (a + 4), highest power first.
constexpr float kMills[] = {
    -1.179144870e-03f, -8.874586663e-03f, 9.592544458e-02f, -3.004333101e-01f,
    4.443451728e-01f,  -3.820144474e-01f, 2.998079031e-01f, -5.065468224e-02f,
    1.168571956e-01f,  8.572954416e-02f,  1.008456259e-01f, 9.964173101e-02f,
    3.554236748e-06f,
};

// Phi(x) and the normal density phi(x), float32, vectorisable.
TL_INLINE void normal_cdf_pdf(float x, float& cdf, float& pdf) {
    const float a = std::fabs(x);
    const float u = 4.0f / (a + 4.0f);
    float m = kMills[0];
    for (int i = 1; i < 13; ++i) m = m * u + kMills[i];
    const float g = tl::fast_exp(-0.5f * a * a);
    const float tail = g * m;  // Phi(-a)
    cdf = x < 0.0f ? tail : 1.0f - tail;
    pdf = g * float(kInvSqrt2Pi);
}

template <bool kTanh>
TL_INLINE void forward_f32(const float* x, float* y, int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
        const float v = x[i];
        if (kTanh) {
            const float z = float(kSqrt2OverPi) * (v + float(kTanhC) * v * v * v);
            y[i] = v / (1.0f + tl::fast_exp(-2.0f * z));
        } else {
            float cdf, pdf;
            normal_cdf_pdf(v, cdf, pdf);
            y[i] = v * cdf;
        }
    }
}

// d/dx [x s(x)] with s = sigmoid(2z): s + x * 2 z' * s * (1 - s).
template <bool kTanh>
TL_INLINE void backward_f32(const float* x, const float* dy, float* dx, int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
        const float v = x[i];
        float slope;
        if (kTanh) {
            // sigmoid(2z) from t = exp(-2|z|) <= 1 on both sides, so nothing overflows and
            // the far left tail keeps its relative accuracy: s = 1/(1+t) for z >= 0, t/(1+t)
            // below, and s(1-s) = t/(1+t)^2 either way. Beyond |x| = 12 the slope is exactly 1
            // or 0 in float32 (t underflows), while v^3 would overflow at |x| ~ 7e12: clamp.
            // (comparisons, not std::fmin/fmax, which GCC does not vectorise here; NaN passes)
            const float c = v < -12.0f ? -12.0f : v > 12.0f ? 12.0f : v;
            const float z = float(kSqrt2OverPi) * (c + float(kTanhC) * c * c * c);
            const float dz = float(kSqrt2OverPi) * (1.0f + 3.0f * float(kTanhC) * c * c);
            const float t = tl::fast_exp(-2.0f * std::fabs(z));
            const float r = 1.0f / (1.0f + t);
            const float s = z >= 0.0f ? r : t * r;
            slope = s + c * 2.0f * dz * (t * r * r);
        } else {
            float cdf, pdf;
            normal_cdf_pdf(v, cdf, pdf);
            slope = cdf + v * pdf;
        }
        dx[i] = dy[i] * slope;
    }
}

// float64: the C library (erfc keeps the negative tail exact); the tanh form as x * s with
// s = (1 + tanh z)/2 = sigmoid(2z) from t = exp(-2|z|), which neither cancels in the left tail
// (1 + tanh z does) nor overflows. Beyond |x| = 30, t underflows: s is exactly 0 or 1.
TL_INLINE void sigmoid2(double z, double& s, double& s1s) {
    const double t = std::exp(-2.0 * std::fabs(z)), r = 1.0 / (1.0 + t);
    s = z >= 0.0 ? r : t * r;
    s1s = t * r * r;  // s (1 - s)
}

template <bool kTanh>
TL_INLINE void forward_f64(const double* x, double* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        const double v = x[i];
        if (kTanh) {
            const double c = std::fmin(std::fmax(v, -30.0), 30.0);
            double s, s1s;
            sigmoid2(kSqrt2OverPi * (c + kTanhC * c * c * c), s, s1s);
            y[i] = v * s;
        } else {
            y[i] = 0.5 * v * std::erfc(-v * kInvSqrt2);
        }
    }
}

template <bool kTanh>
TL_INLINE void backward_f64(const double* x, const double* dy, double* dx, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        const double v = x[i];
        double slope;
        if (kTanh) {
            const double c = std::fmin(std::fmax(v, -30.0), 30.0);  // as in float32: no inf * 0
            const double dz = kSqrt2OverPi * (1.0 + 3.0 * kTanhC * c * c);
            double s, s1s;
            sigmoid2(kSqrt2OverPi * (c + kTanhC * c * c * c), s, s1s);
            slope = s + c * 2.0 * dz * s1s;
        } else {
            slope = 0.5 * std::erfc(-v * kInvSqrt2) + v * std::exp(-0.5 * v * v) * kInvSqrt2Pi;
        }
        dx[i] = dy[i] * slope;
    }
}

template <class Isa>
TL_INLINE void fwd_impl(const float* x, float* y, int64_t n, bool tanh) {
    tanh ? forward_f32<true>(x, y, n) : forward_f32<false>(x, y, n);
}
template <class Isa>
TL_INLINE void fwd_impl(const double* x, double* y, int64_t n, bool tanh) {
    tanh ? forward_f64<true>(x, y, n) : forward_f64<false>(x, y, n);
}
template <class Isa>
TL_INLINE void bwd_impl(const float* x, const float* dy, float* dx, int64_t n, bool tanh) {
    tanh ? backward_f32<true>(x, dy, dx, n) : backward_f32<false>(x, dy, dx, n);
}
template <class Isa>
TL_INLINE void bwd_impl(const double* x, const double* dy, double* dx, int64_t n, bool tanh) {
    tanh ? backward_f64<true>(x, dy, dx, n) : backward_f64<false>(x, dy, dx, n);
}
TL_VARIANTS(fwd, fwd_impl)
TL_VARIANTS(bwd, bwd_impl)

// Memory-safety guards (Python checks arguments for users at the op boundary): the dtype and
// shape checks below keep the raw loops inside the arrays; is_tanh picks the formula.
bool is_tanh(const char* op, const std::string& approximate) {
    if (approximate == "tanh") return true;
    if (approximate == "none") return false;
    throw py::value_error(std::string(op) + ": approximate must be 'none' or 'tanh', got '" +
                          approximate + "'");
}

// Elementwise work is split into blocks of whole cache lines per thread.
constexpr int64_t kBlock = 4096;

template <class T>
py::array forward_typed(const py::array& x_in, bool tanh) {
    auto x = tl::contiguous<T>(x_in);
    py::array_t<T> y(tl::shape_of(x));
    const int64_t n = x.size(), blocks = (n + kBlock - 1) / kBlock;
    const T* xp = x.data();
    T* yp = y.mutable_data();
    {
        py::gil_scoped_release nogil;
        tl::parallel_for(blocks, kBlock, [&](int64_t b, int64_t e) {
            const int64_t i0 = b * kBlock, i1 = std::min(n, e * kBlock);
            fwd(xp + i0, yp + i0, i1 - i0, tanh);
        });
    }
    return y;
}

template <class T>
py::array backward_typed(const py::array& x_in, const py::array& dy_in, bool tanh) {
    auto x = tl::contiguous<T>(x_in);
    auto dy = tl::contiguous<T>(dy_in);
    py::array_t<T> dx(tl::shape_of(x));
    const int64_t n = x.size(), blocks = (n + kBlock - 1) / kBlock;
    const T *xp = x.data(), *dyp = dy.data();
    T* dxp = dx.mutable_data();
    {
        py::gil_scoped_release nogil;
        tl::parallel_for(blocks, kBlock, [&](int64_t b, int64_t e) {
            const int64_t i0 = b * kBlock, i1 = std::min(n, e * kBlock);
            bwd(xp + i0, dyp + i0, dxp + i0, i1 - i0, tanh);
        });
    }
    return dx;
}

py::array forward(const py::array& x, const std::string& approximate) {
    const char* op = "gelu_forward";
    const tl::Float k = tl::float_kind(op, "x", x);
    const bool tanh = is_tanh(op, approximate);
    return k == tl::Float::F32 ? forward_typed<float>(x, tanh) : forward_typed<double>(x, tanh);
}

py::array backward(const py::array& x, const py::array& dy, const std::string& approximate) {
    const char* op = "gelu_backward";
    const tl::Float k = tl::float_kind(op, "x", x);
    tl::same_kind(op, "dy", dy, k);
    tl::same_shape(op, "x", x, "dy", dy);
    const bool tanh = is_tanh(op, approximate);
    return k == tl::Float::F32 ? backward_typed<float>(x, dy, tanh)
                               : backward_typed<double>(x, dy, tanh);
}

}  // namespace

void bind_gelu(py::module_& m) {
    m.def("gelu_forward", &forward, py::arg("x"), py::arg("approximate"),
          "GELU, approximate='none' (erf) or 'tanh'");
    m.def("gelu_backward", &backward, py::arg("x"), py::arg("dy"), py::arg("approximate"),
          "dx = dy * gelu'(x)");
}
