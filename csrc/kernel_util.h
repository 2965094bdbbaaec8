// Helpers shared by the fused CPU kernels: dtype dispatch and argument checks at the
// Python boundary, a row-parallel loop, per-CPU code selection, row loops without scalar
// remainders, and a vectorisable float exp.
#pragma once
#include "common.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

// Hot loops are compiled three times (AVX-512, AVX2+FMA, baseline x86-64) and the
// loader picks the best one for the running CPU, so the extension stays portable
// without -march=native. Elsewhere they are compiled once, as they are with
// -DTL_NO_CLONES (used to test the baseline code path on an AVX-512 machine).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(TL_NO_CLONES)
#define TL_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define TL_CLONES
#endif
#define TL_INLINE inline __attribute__((always_inline))
// Lambdas handed to the row helpers must be inlined into the vectorised loop.
#define TL_LAMBDA __attribute__((always_inline))

namespace tl {

enum class Float { F32, F64 };

inline std::string shape_str(const py::array& a) {
    std::ostringstream s;
    s << "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s << (i ? ", " : "") << a.shape(i);
    s << (a.ndim() == 1 ? ",)" : ")");
    return s.str();
}

inline std::string dtype_str(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

// float32 or float64, else TypeError naming the op and the argument.
inline Float float_kind(const char* op, const char* name, const py::array& a) {
    const auto dt = a.dtype();
    if (dt.kind() == 'f' && dt.itemsize() == 4) return Float::F32;
    if (dt.kind() == 'f' && dt.itemsize() == 8) return Float::F64;
    throw py::type_error(std::string(op) + ": " + name + " has dtype " + dtype_str(a) +
                         "; expected float32 or float64");
}

// Every float argument must share the dispatch dtype: the kernels run in one precision.
inline void same_kind(const char* op, const char* name, const py::array& a, Float want) {
    if (float_kind(op, name, a) != want)
        throw py::type_error(std::string(op) + ": " + name + " has dtype " + dtype_str(a) +
                             " but the other float inputs are " +
                             (want == Float::F32 ? "float32" : "float64"));
}

// A C-contiguous array of T with the same values (a copy only when needed).
template <class T>
using carray = py::array_t<T, py::array::c_style | py::array::forcecast>;

template <class T>
carray<T> contiguous(const py::array& a) { return carray<T>(a); }

inline void same_shape(const char* op, const char* an, const py::array& a, const char* bn,
                       const py::array& b) {
    bool same = a.ndim() == b.ndim();
    for (py::ssize_t i = 0; same && i < a.ndim(); ++i) same = a.shape(i) == b.shape(i);
    if (!same)
        throw py::value_error(std::string(op) + ": " + an + " has shape " + shape_str(a) +
                              " but " + bn + " has shape " + shape_str(b));
}

inline std::vector<py::ssize_t> shape_of(const py::array& a) {
    return std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim());
}

// (rows, cols) of a "last dim" op's input, which needs at least one dim.
inline void rows_cols(const char* op, const py::array& x, int64_t& rows, int64_t& cols) {
    if (x.ndim() < 1)
        throw py::value_error(std::string(op) + ": expected an array with at least 1 dim, got shape " +
                              shape_str(x));
    cols = x.shape(x.ndim() - 1);
    rows = 1;
    for (py::ssize_t i = 0; i + 1 < x.ndim(); ++i) rows *= x.shape(i);
}

// Calls body(begin, end) on contiguous slices of [0, n), one per thread, but only when
// the whole job (n * work_per_item elements) is big enough to pay for waking threads:
// 2^17 float elements are ~50-100 us of work on one core, against a fork/join of a few
// us on an idle machine (and far more when the cores are shared with other jobs).
// Each item is computed by the same code whatever the split, so results do not depend
// on the thread count.
template <class F>
void parallel_for(int64_t n, int64_t work_per_item, F&& body) {
#ifdef _OPENMP
    const int64_t kMinWork = 1 << 17;
    const int threads = omp_get_max_threads();
    if (threads > 1 && n > 1 && n * work_per_item >= kMinWork) {
#pragma omp parallel num_threads(threads)
        {
            const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
            const int64_t per = (n + nt - 1) / nt;
            const int64_t b = std::min(n, t * per), e = std::min(n, b + per);
            if (b < e) body(b, e);
        }
        return;
    }
#endif
    body(int64_t(0), n);
}

// Row loops in whole vector pieces, with no scalar remainder loop: on rows of a few
// dozen elements the remainder a compiler emits (a scalar loop, e.g. a scalar exp per
// element) costs more than the whole vector part. A row of n >= kLanes elements is
// covered by its whole pieces plus one last piece [n - kLanes, n) that overlaps them;
// f(j, keep) sees keep == false on the overlapped lanes, which must not count or be
// stored again. Rows shorter than one piece use a plain loop.
// kLanes = 16: one AVX-512 register of floats, a multiple of every narrower vector.
constexpr int64_t kLanes = 16;

// sum over j of f(j, keep), where f returns its term (the caller masks with keep).
template <class T, class F>
TL_INLINE T sum_over(int64_t n, F f) {
    T s = 0;
    if (n < kLanes) {
        for (int64_t j = 0; j < n; ++j) s += f(j, true);
        return s;
    }
    const int64_t body = n & ~(kLanes - 1), start = n - kLanes, first_new = body - start;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < body; ++j) s += f(j, true);
    if (body < n) {
#pragma omp simd reduction(+ : s)
        for (int64_t i = 0; i < kLanes; ++i) {
            const bool keep = i >= first_new;
            const T v = f(start + i, keep);
            s += keep ? v : T(0);
        }
    }
    return s;
}

// max over j of x[j] (the overlap does no harm: max is idempotent).
template <class T>
TL_INLINE T max_over(const T* x, int64_t n) {
    T m = -std::numeric_limits<T>::infinity();
    if (n < kLanes) {
        for (int64_t j = 0; j < n; ++j) m = x[j] > m ? x[j] : m;
        return m;
    }
    const int64_t body = n & ~(kLanes - 1);
#pragma omp simd reduction(max : m)
    for (int64_t j = 0; j < body; ++j) m = x[j] > m ? x[j] : m;
    const T* last = x + n - kLanes;
#pragma omp simd reduction(max : m)
    for (int64_t i = 0; i < kLanes; ++i) m = last[i] > m ? last[i] : m;
    return m;
}

// f(j, keep) for every j; f stores its result only when keep.
template <class F>
TL_INLINE void map_over(int64_t n, F f) {
    if (n < kLanes) {
        for (int64_t j = 0; j < n; ++j) f(j, true);
        return;
    }
    const int64_t body = n & ~(kLanes - 1), start = n - kLanes, first_new = body - start;
#pragma omp simd
    for (int64_t j = 0; j < body; ++j) f(j, true);
    if (body < n) {
#pragma omp simd
        for (int64_t i = 0; i < kLanes; ++i) f(start + i, i >= first_new);
    }
}

TL_INLINE uint32_t bits_of(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
TL_INLINE float float_of(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

// exp(x) for float, written so that loops over arrays vectorise (std::expf does not).
// x = n*ln2 + r with |r| <= ln2/2, exp(r) by its degree-7 Taylor polynomial (truncation
// error 5e-9), 2^n assembled in the exponent bits. Max relative error ~2 ulp.
// Inputs above 88 are clamped to 88 (exp(88) ~ 1.7e38; only used where x <= 88 matters),
// inputs below ln(FLT_MIN) give 0, NaN stays NaN.
TL_INLINE float fast_exp(float x) {
    const float kHi = 88.0f, kLo = -87.33654475f;
    const float kLog2e = 1.44269504089f;
    const float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;  // ln2 split: n*kLn2Hi is exact
    const float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer in the low bits
    const bool under = x < kLo;
    x = x > kHi ? kHi : x;
    x = x < kLo ? kLo : x;
    const float shifted = x * kLog2e + kRound;
    const float n = shifted - kRound;
    const uint32_t ni = bits_of(shifted) - bits_of(kRound);  // n as a (wrapped) integer
    float r = x - n * kLn2Hi;
    r = r - n * kLn2Lo;
    float p = 1.0f / 5040;
    p = p * r + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const float scale = float_of((ni + 127u) << 23);
    return under ? 0.0f : p * scale;
}

TL_INLINE double fast_exp(double x) { return std::exp(x); }

}  // namespace tl
