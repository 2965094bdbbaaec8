// Run-time settings of the fused kernels: the thread count and the instruction-set variant.
//
// Threads: the kernels' own pool (thread_pool.h). OMP_NUM_THREADS is the default, as it was
// with OpenMP; set_num_threads overrides it for the whole process (OpenMP's was per calling
// thread, and every kernel launched from the thread that called it).
// Variant: the best this CPU has (kernel_util.h); tests lower it to cover the others.
#include "kernel_util.h"

namespace {

void set_num_threads(int n) {
    if (n < 1) throw py::value_error("set_num_threads: n must be >= 1, got " + std::to_string(n));
    tl::set_max_threads(n);
}

std::string isa() { return tl::isa_name(tl::active_isa()); }

// Returns the previous variant, so that a test can restore it.
std::string set_isa(const std::string& name) {
    const std::string previous = isa();
    const tl::Isa best = tl::best_isa();
    tl::Isa want;
    if (name == "auto") want = best;
    else if (name == "avx512") want = tl::Isa::avx512;
    else if (name == "avx2") want = tl::Isa::avx2;
    else if (name == "base") want = tl::Isa::base;
    else throw py::value_error("_set_isa: expected 'auto', 'avx512', 'avx2' or 'base', got '" +
                               name + "'");
    // Guards memory safety too: a variant the CPU lacks would die on an illegal instruction.
#if TL_MULTI_ISA
    if (int(want) > int(best))
        throw py::value_error(std::string("_set_isa: this CPU supports up to '") +
                              tl::isa_name(best) + "', not '" + name + "'");
#else
    if (want != best)
        throw py::value_error(std::string("_set_isa: this build has only the '") +
                              tl::isa_name(best) + "' variant (TL_NO_CLONES or a non-x86 build), "
                              "not '" + name + "'");
#endif
    tl::set_active_isa(want);
    return previous;
}

}  // namespace

void bind_threads(py::module_& m) {
    m.def("set_num_threads", &set_num_threads, py::arg("n"),
          "Number of threads the fused kernels use (default: OMP_NUM_THREADS, else the CPUs this "
          "process may use).");
    m.def("get_num_threads", [] { return tl::max_threads(); },
          "Number of threads the fused kernels use.");
    m.def("_isa", &isa, "The instruction-set variant the kernels run ('avx512', 'avx2' or 'base').");
    m.def("_set_isa", &set_isa, py::arg("name"),
          "Forces the kernels' instruction-set variant ('auto' = best this CPU has); returns the "
          "previous one. For tests of the lower variants.");
    // The names the attention tests know, from when only attention had variants.
    m.def("_attention_isa", &isa, "Alias of _isa.");
    m.def("_attention_set_isa", &set_isa, py::arg("name"), "Alias of _set_isa.");
}
