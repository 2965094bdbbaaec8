// Flash-style CPU scaled-dot-product attention (forward and backward).
// The kernels land in follow-up commits; this file exists first so the
// extension links for every op family.
#include "common.h"

void bind_attention(py::module_& m) {
    (void)m;
}
