// Thread count of the fused kernels. OpenMP reads OMP_NUM_THREADS at start-up, so
// that is the default; set_num_threads overrides it for the calling thread, which is
// the thread that launches the kernels' parallel regions.
#include "common.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

void set_num_threads(int n) {
    if (n < 1) throw py::value_error("set_num_threads: n must be >= 1, got " + std::to_string(n));
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
}

int get_num_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;  // built without OpenMP: every kernel runs on the calling thread
#endif
}

}  // namespace

void bind_threads(py::module_& m) {
    m.def("set_num_threads", &set_num_threads, py::arg("n"),
          "Number of threads the fused kernels use (default: OMP_NUM_THREADS, else all cores).");
    m.def("get_num_threads", &get_num_threads, "Number of threads the fused kernels use.");
}
