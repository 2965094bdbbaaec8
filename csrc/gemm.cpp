// Matrix products on the kernels' own thread pool, through a sequential BLAS loaded at run time.
//
// Why: NumPy's matmul runs OpenBLAS on OpenBLAS's own threads, a second owner of the cores
// beside our pool, and at the small shapes of a Transformer (640 x 384 x 1536) it reaches ~80%
// of the FMA peak. MKL's single-threaded sgemm reaches ~90% per core, so here each pool thread
// runs one sequential GEMM on its own block of C: the cores have one owner, and a GEMM and the
// fused kernels never compete. The library is whatever tensorlite/backend/blas.py finds and
// hands to blas_load (MKL's libmkl_rt, put in its sequential layer); nothing is linked at build
// time, so the extension builds and runs without it (gemm then refuses: blas.py checks first).
//
// C (M, N) = op(A) op(B) [+ C] [+ bias over rows] [+ residual (M, N)]. A and B are 2-D arrays
// with one unit stride (a row-major matrix or a transposed view of one: the transpose becomes
// the BLAS flag, never a copy); C is C-contiguous. The split is over M when M is the larger
// side, else over N, in blocks that are multiples of 16 so each thread's GEMM keeps full
// register tiles.
#include "kernel_util.h"

#include <chrono>
#include <dlfcn.h>

namespace {

enum { kRowMajor = 101, kNoTrans = 111, kTrans = 112 };
template <class T>
using Gemm = void (*)(int, int, int, int, int, int, T, const T*, int, const T*, int, T, T*, int);

Gemm<float> g_sgemm = nullptr;
Gemm<double> g_dgemm = nullptr;
std::string g_name;

bool blas_load(const std::string& path) {
    void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) throw py::value_error("blas_load: cannot open " + path + ": " + dlerror());
    auto s = reinterpret_cast<Gemm<float>>(dlsym(h, "cblas_sgemm"));
    auto d = reinterpret_cast<Gemm<double>>(dlsym(h, "cblas_dgemm"));
    if (!s || !d) throw py::value_error("blas_load: " + path + " has no cblas_sgemm/cblas_dgemm");
    // MKL: its own threads would fight our pool for the cores; one thread per call, ours.
    if (auto layer = reinterpret_cast<int (*)(int)>(dlsym(h, "MKL_Set_Threading_Layer")))
        layer(1);  // MKL_THREADING_SEQUENTIAL
    g_sgemm = s;
    g_dgemm = d;
    g_name = path;
    return true;
}

// A 2-D operand as BLAS sees it: row-major data with leading dimension ld, transposed or not.
struct Operand {
    const char* ptr;
    int64_t rows, cols, ld;
    bool trans;  // the array is the transpose of a row-major (cols x rows) matrix
};

template <class T>
Operand operand(const py::array& a, const char* what) {
    if (a.ndim() != 2)
        throw py::value_error(std::string("gemm: ") + what + " must be 2-D, got " +
                              std::to_string(a.ndim()) + "-D");
    const int64_t r = a.shape(0), c = a.shape(1), s0 = a.strides(0), s1 = a.strides(1);
    const int64_t it = sizeof(T);
    Operand o{static_cast<const char*>(a.data()), r, c, std::max<int64_t>(c, 1), false};
    // (the same rules as blas.py's _blas_layout, which sends nothing else here)
    if (r == 0 || c == 0) return o;  // nothing is read: any strides do
    if ((c == 1 || s1 == it) && s0 % it == 0 && s0 >= c * it) o.ld = s0 / it;
    else if ((r == 1 || s0 == it) && s1 % it == 0 && s1 >= r * it) {
        o.ld = s1 / it;
        o.trans = true;
    } else if (!(r == 1 && s1 == it))  // a row vector: its row stride is never used
        throw py::value_error(std::string("gemm: ") + what + " needs one unit stride (copy it first)");
    return o;
}

// Element (i, j) of the operand's data start, as a BLAS pointer offset.
template <class T>
const T* at(const Operand& o, int64_t i, int64_t j) {
    const T* p = reinterpret_cast<const T*>(o.ptr);
    return o.trans ? p + j * o.ld + i : p + i * o.ld + j;
}

template <class T>
void gemm_t(const py::array& a, const py::array& b, py::array& c, bool accumulate,
            const py::object& bias, const py::object& residual) {
    Gemm<T> f = nullptr;
    if constexpr (std::is_same_v<T, float>) f = g_sgemm;
    else f = g_dgemm;
    if (!f) throw py::value_error("gemm: no BLAS loaded (tensorlite.backend.blas loads one)");
    const Operand A = operand<T>(a, "a"), B = operand<T>(b, "b");
    const int64_t M = A.rows, K = A.cols, N = B.cols;
    if (B.rows != K) throw py::value_error("gemm: a is " + std::to_string(M) + "x" +
                                           std::to_string(K) + " but b is " +
                                           std::to_string(B.rows) + "x" + std::to_string(N));
    if (c.ndim() != 2 || c.shape(0) != M || c.shape(1) != N || !(c.flags() & py::array::c_style) ||
        !c.writeable())
        throw py::value_error("gemm: out must be a writeable C-contiguous " + std::to_string(M) +
                              "x" + std::to_string(N) + " array");
    const int lim = std::numeric_limits<int>::max();
    if (M > lim || N > lim || K > lim || A.ld > lim || B.ld > lim)
        throw py::value_error("gemm: a dimension exceeds the BLAS int range");
    const T* bp = nullptr;
    py::array_t<T, py::array::c_style | py::array::forcecast> bv;  // alive until the end
    if (!bias.is_none()) {
        bv = py::cast<py::array_t<T, py::array::c_style | py::array::forcecast>>(bias);
        if (bv.ndim() != 1 || bv.shape(0) != N)
            throw py::value_error("gemm: bias must have shape (" + std::to_string(N) + ",)");
        bp = bv.data();
    }
    const T* rp = nullptr;
    py::array_t<T, py::array::c_style | py::array::forcecast> rv;
    if (!residual.is_none()) {
        if (accumulate) throw py::value_error("gemm: residual and accumulate exclude each other");
        rv = py::cast<py::array_t<T, py::array::c_style | py::array::forcecast>>(residual);
        if (rv.ndim() != 2 || rv.shape(0) != M || rv.shape(1) != N)
            throw py::value_error("gemm: residual must have shape (" + std::to_string(M) + ", " +
                                  std::to_string(N) + ")");
        rp = rv.data();
    }
    T* C = static_cast<T*>(c.mutable_data());
    if (M == 0 || N == 0) return;
    const bool by_rows = M >= N;
    const int64_t span = by_rows ? M : N;
    // one block per thread, at least 64 rows/columns each: below that a thread costs more
    // than it saves
    const int nth = int(std::max<int64_t>(1, std::min<int64_t>(tl::max_threads(), span / 64)));
    py::gil_scoped_release nogil;
    tl::parallel(nth, [&](int t, int nt) {
        const int64_t per = ((span + nt - 1) / nt + 15) / 16 * 16;
        const int64_t lo = std::min(span, t * per), hi = std::min(span, lo + per);
        if (lo >= hi) return;
        const int64_t m0 = by_rows ? lo : 0, m = by_rows ? hi - lo : M;
        const int64_t n0 = by_rows ? 0 : lo, n = by_rows ? N : hi - lo;
        T* cb = C + m0 * N + n0;
        T beta = accumulate ? T(1) : T(0);
        // The bias and the residual (a transformer's skip connection, y = r + x W^T + b) as
        // C's starting value: the GEMM adds its product to them in the same pass, while this
        // thread's block of C is in its cache, instead of a separate add over the whole array.
        if (bp || rp) {
            for (int64_t i = 0; i < m; ++i) {
                T* row = cb + i * N;
                const T* res = rp ? rp + (m0 + i) * N + n0 : nullptr;
                if (accumulate)
                    for (int64_t j = 0; j < n; ++j) row[j] += bp[n0 + j];
                else if (res && bp)
                    for (int64_t j = 0; j < n; ++j) row[j] = res[j] + bp[n0 + j];
                else
                    std::memcpy(row, res ? res : bp + n0, size_t(n) * sizeof(T));
            }
            beta = T(1);
        }
        if (K == 0) {
            if (beta == T(0))
                for (int64_t i = 0; i < m; ++i) std::memset(cb + i * N, 0, size_t(n) * sizeof(T));
            return;
        }
        f(kRowMajor, A.trans ? kTrans : kNoTrans, B.trans ? kTrans : kNoTrans, int(m), int(n),
          int(K), T(1), at<T>(A, m0, 0), int(A.ld), at<T>(B, 0, n0), int(B.ld), beta, cb, int(N));
    });
}

void gemm(const py::array& a, const py::array& b, py::array& out, bool accumulate,
          const py::object& bias, const py::object& residual) {
    const auto dt = a.dtype();
    if (!dt.is(b.dtype()) || !dt.is(out.dtype()))
        throw py::value_error("gemm: a, b and out must have one dtype");
    if (dt.is(py::dtype::of<float>())) gemm_t<float>(a, b, out, accumulate, bias, residual);
    else if (dt.is(py::dtype::of<double>())) gemm_t<double>(a, b, out, accumulate, bias, residual);
    else throw py::value_error("gemm: dtype must be float32 or float64");
}

// The machine's fused multiply-add peak, measured rather than assumed (the CPU model varies,
// and clocks with it): every pool thread runs 12 independent vector FMA chains, enough to keep
// two FMA ports busy across their latency, for `iters` rounds. Returns FLOP/s (2 per lane).
template <class Isa>
TL_INLINE void fma_chains(int64_t iters, float* out) {
    constexpr int W = Isa::vbytes / 4, A = 12;
    float acc[A][W];
    for (int a = 0; a < A; ++a)
        for (int l = 0; l < W; ++l) acc[a][l] = float(a + l);
    const float mul = 0.9999999f, add = 1e-7f;
    for (int64_t it = 0; it < iters; ++it)
        for (int a = 0; a < A; ++a)
#pragma omp simd
            for (int l = 0; l < W; ++l) acc[a][l] = acc[a][l] * mul + add;
    float sum = 0.0f;
    for (int a = 0; a < A; ++a)
        for (int l = 0; l < W; ++l) sum += acc[a][l];
    *out = sum;  // observed, so the loop is not optimised away
}
TL_VARIANTS(fma_run, fma_chains)

double fma_peak(int64_t iters) {
    const int nth = tl::max_threads();
    const int W = tl::active_isa() == tl::Isa::avx512 ? 16 : tl::active_isa() == tl::Isa::avx2 ? 8 : 4;
    std::vector<float> sink(size_t(nth) * 16);
    py::gil_scoped_release nogil;
    tl::parallel(nth, [&](int t, int) { fma_run(iters / 10, &sink[size_t(t) * 16]); });  // warm up
    const auto t0 = std::chrono::steady_clock::now();
    tl::parallel(nth, [&](int t, int) { fma_run(iters, &sink[size_t(t) * 16]); });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return 2.0 * 12 * W * double(iters) * nth / s;
}

}  // namespace

void bind_gemm(py::module_& m) {
    m.def("fma_peak", &fma_peak, py::arg("iters") = 20000000,
          "Measured float32 FMA FLOP/s of the active instruction set on the kernels' threads.");
    m.def("blas_load", &blas_load, py::arg("path"),
          "Load a BLAS with cblas_sgemm/cblas_dgemm (MKL's libmkl_rt: put in its sequential "
          "layer) for gemm.");
    m.def("blas_name", [] { return g_name; }, "Path of the loaded BLAS ('' if none).");
    m.def("gemm", &gemm, py::arg("a"), py::arg("b"), py::arg("out"),
          py::arg("accumulate") = false, py::arg("bias") = py::none(),
          py::arg("residual") = py::none(),
          "out = a @ b (+ out if accumulate) (+ bias over rows) (+ residual, an (M, N) array), "
          "on the kernels' thread pool.");
}
