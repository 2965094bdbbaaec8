// Helpers shared by the fused CPU kernels: per-CPU code selection, thread queries, dtype
// dispatch and argument checks at the Python boundary, a row-parallel loop, row loops
// without scalar remainders, and the one vectorisable exp.
#pragma once
#include "common.h"
#include "thread_pool.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#define TL_INLINE inline __attribute__((always_inline))
// Lambdas handed to the row helpers must be inlined into the vectorised loop.
#define TL_LAMBDA __attribute__((always_inline))

// ---------------------------------------------------------------------------------------------
// Per-CPU code selection.
//
// The extension is built without -march=native so that one build runs on any x86-64 CPU, yet
// the hot loops should use AVX-512 or AVX2+FMA where the CPU has them. So every hot function is
// compiled once per instruction set (target attributes) and a dispatcher calls the variant of
// the active set: by default the best this CPU has; tests lower it (_C._set_isa) to cover every
// variant on one machine. The variant is an explicit template argument, not a GCC
// target_clones copy, because the attention kernel needs the instruction set at compile time
// (its register tiles and vector widths differ per set) and a clone cannot know its target.
//
// -DTL_NO_CLONES, and builds for other CPUs or compilers, compile every kernel once, for what
// the compiler flags target: baseline x86-64, or e.g. -march=haswell to test the AVX2 path
// (CPPFLAGS="-DTL_NO_CLONES -march=haswell" python setup.py build_ext --inplace --force; recent
// setuptools hand C++ compiles CXXFLAGS and CPPFLAGS, not CFLAGS).
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && !defined(TL_NO_CLONES)
#define TL_MULTI_ISA 1
#define TL_TARGET_AVX512 \
    __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,prefer-vector-width=512")))
#define TL_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define TL_MULTI_ISA 0
#endif

namespace tl {

enum class Isa : int { base = 0, avx2 = 1, avx512 = 2 };

// Compile-time tags for the kernels' template argument; vbytes is the vector width in bytes.
struct IsaBase {
    static constexpr Isa id = Isa::base;
    static constexpr int vbytes = 16;
};
struct IsaAvx2 {
    static constexpr Isa id = Isa::avx2;
    static constexpr int vbytes = 32;
};
struct IsaAvx512 {
    static constexpr Isa id = Isa::avx512;
    static constexpr int vbytes = 64;
};

#if !TL_MULTI_ISA  // the one variant there is: whatever the compiler flags enable
#if defined(__AVX512F__) && defined(__AVX512VL__) && defined(__AVX512DQ__) && \
    defined(__AVX512BW__) && defined(__AVX2__) && defined(__FMA__)
using IsaBuilt = IsaAvx512;
#elif defined(__AVX2__) && defined(__FMA__)
using IsaBuilt = IsaAvx2;
#else
using IsaBuilt = IsaBase;
#endif
#endif

inline const char* isa_name(Isa i) {
    return i == Isa::avx512 ? "avx512" : i == Isa::avx2 ? "avx2" : "base";
}

// The best variant this build can run on this CPU.
inline Isa best_isa() {
#if TL_MULTI_ISA
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw"))
        return Isa::avx512;
    return avx2 ? Isa::avx2 : Isa::base;
#else
    return IsaBuilt::id;
#endif
}

// One setting for the whole extension (an inline function's static is one object across
// translation units). Atomic because kernels read it on threads without the GIL.
inline std::atomic<int>& isa_setting() {
    static std::atomic<int> isa{int(best_isa())};
    return isa;
}
inline Isa active_isa() { return Isa(isa_setting().load(std::memory_order_relaxed)); }
// Callers check that `i` is at most best_isa() (a variant the CPU cannot run would crash).
inline void set_active_isa(Isa i) { isa_setting().store(int(i), std::memory_order_relaxed); }

}  // namespace tl

// TL_VARIANTS(NAME, IMPL) defines NAME(args...), which calls IMPL<Isa>(args...) compiled for
// the active instruction set. IMPL must be TL_INLINE so that its body (and what it inlines) is
// compiled under each variant's target attribute.
#if TL_MULTI_ISA
#define TL_VARIANTS(NAME, IMPL)                                                    \
    template <class... A>                                                          \
    TL_TARGET_AVX512 void NAME##_avx512(A&&... a) {                                \
        IMPL<tl::IsaAvx512>(static_cast<A&&>(a)...);                               \
    }                                                                              \
    template <class... A>                                                          \
    TL_TARGET_AVX2 void NAME##_avx2(A&&... a) {                                    \
        IMPL<tl::IsaAvx2>(static_cast<A&&>(a)...);                                 \
    }                                                                              \
    template <class... A>                                                          \
    void NAME##_base(A&&... a) {                                                   \
        IMPL<tl::IsaBase>(static_cast<A&&>(a)...);                                 \
    }                                                                              \
    template <class... A>                                                          \
    void NAME(A&&... a) {                                                          \
        switch (tl::active_isa()) {                                                \
            case tl::Isa::avx512: return NAME##_avx512(static_cast<A&&>(a)...);    \
            case tl::Isa::avx2: return NAME##_avx2(static_cast<A&&>(a)...);        \
            default: return NAME##_base(static_cast<A&&>(a)...);                   \
        }                                                                          \
    }
#else
#define TL_VARIANTS(NAME, IMPL)                                                    \
    template <class... A>                                                          \
    void NAME(A&&... a) {                                                          \
        IMPL<tl::IsaBuilt>(static_cast<A&&>(a)...);                                \
    }
#endif

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
    const int64_t kMinWork = 1 << 17;
    const int threads = max_threads();
    if (threads > 1 && n > 1 && n * work_per_item >= kMinWork) {
        parallel(int(std::min<int64_t>(threads, n)), [&](int t, int nt) {
            const int64_t per = (n + nt - 1) / nt;
            const int64_t b = std::min(n, t * per), e = std::min(n, b + per);
            if (b < e) body(b, e);
        });
        return;
    }
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

// exp_poly and the vector helpers (simd.h) return 32/64-byte vectors by value; they are always
// inlined, so the ABI warning GCC prints for such signatures concerns no real call. (GCC still
// prints an ABI note for a vector *parameter* by value in a header, so those take references.)
#pragma GCC diagnostic ignored "-Wpsabi"

// The same bits read as another type of the same size (scalars or GCC vectors).
template <class To, class From>
TL_INLINE To bits_as(const From& f) {
    static_assert(sizeof(To) == sizeof(From), "bits_as keeps the size");
    To t;
    std::memcpy(&t, &f, sizeof t);
    return t;
}

// Lane type T and the integer type I of the same shape, for V a float/double scalar or a GCC
// vector of them.
template <class V, bool = std::is_arithmetic_v<V>>
struct LanesOf {
    using T = V;
    using I = std::conditional_t<sizeof(T) == 4, std::int32_t, std::int64_t>;
};
template <class V>
struct LanesOf<V, false> {
    using T = std::remove_cv_t<std::remove_reference_t<decltype(std::declval<V>()[0])>>;
    typedef std::conditional_t<sizeof(T) == 4, std::int32_t, std::int64_t> I
        __attribute__((vector_size(sizeof(V))));
};

// exp(x), written once for scalars (in loops the compiler vectorises; std::exp does not
// vectorise) and for the explicit vectors of the attention tiles (simd.h).
// Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2 (ln2 split so that n * ln2hi is exact),
// e^r by its Taylor polynomial (degree 7 for float, 13 for double: truncation below the
// type's rounding), 2^n assembled in the exponent bits. Max relative error 1.0e-7 in float
// (< 2 ulp) over [-87, 88], 1.8e-16 in double.
// Inputs below -bias*ln2 give exactly 0 (this turns the -inf of masked scores into 0); inputs
// above ~(bias + 1/2) ln2 are clamped there (a large finite value, e.g. 2.4e38 in float);
// NaN stays NaN.
template <class V>
TL_INLINE V exp_poly(const V& x_in) {  // by reference: see the -Wpsabi note above
    using T = typename LanesOf<V>::T;
    using I = typename LanesOf<V>::I;
    constexpr bool f32 = std::is_same_v<T, float>;
    static_assert(f32 || std::is_same_v<T, double>, "exp_poly is for float and double");
    constexpr int mant = f32 ? 23 : 52;
    constexpr int bias = f32 ? 127 : 1023;
    const T lo = f32 ? T(-88.02969193111305) : T(-709.0895657128241);  // -bias * ln2
    const T hi = f32 ? T(88.376) : T(709.436);  // keeps n <= bias, so 2^n stays finite
    const T log2e = T(1.4426950408889634);
    const T ln2hi = f32 ? T(0.693145751953125) : T(0.6931471803691238);
    const T ln2lo = f32 ? T(1.428606765330187e-06) : T(1.9082149292705877e-10);
    const T magic = f32 ? T(12582912.0) : T(6755399441055744.0);  // 1.5 * 2^mant: rounds to int
    // Constants as V (a splat, folded at compile time) so that ?: sees operands of one type.
    const V vlo = V{} + lo, vhi = V{} + hi;

    V x = x_in < vlo ? vlo : x_in;
    x = x > vhi ? vhi : x;
    const V kb = x * log2e + magic;  // n sits in the low mantissa bits of kb
    const V kf = kb - magic;
    V r = x - kf * ln2hi;
    r = r - kf * ln2lo;
    V p;
    if constexpr (f32) {
        p = V{} + T(1.0 / 5040);
        p = p * r + T(1.0 / 720);
        p = p * r + T(1.0 / 120);
        p = p * r + T(1.0 / 24);
        p = p * r + T(1.0 / 6);
        p = p * r + T(0.5);
        p = p * r + T(1);
        p = p * r + T(1);
    } else {
        p = V{} + T(1.0 / 6227020800.0);
        const double inv_fact[] = {1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0,
                                   1.0 / 362880.0,    1.0 / 40320.0,    1.0 / 5040.0,
                                   1.0 / 720.0,       1.0 / 120.0,      1.0 / 24.0,
                                   1.0 / 6.0,         0.5,              1.0,
                                   1.0};
        for (double c : inv_fact) p = p * r + T(c);
    }
    const I n = bits_as<I>(kb) - bits_as<I>(V{} + magic);
    const I e = (n + bias) << mant;  // n = -bias (x clamped to lo) gives the bits of +0.0
    return p * bits_as<V>(e);
}

// The row kernels' exp: exp_poly for float; double keeps the C library's (its float64 results
// stay exactly what they were; exp_poly in double is only needed where a vector exp is).
TL_INLINE float fast_exp(float x) { return exp_poly(x); }
TL_INLINE double fast_exp(double x) { return std::exp(x); }

}  // namespace tl
