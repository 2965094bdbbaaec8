// The tensorlite._C module: every op family registers its own functions.
#include "common.h"

PYBIND11_MODULE(_C, m) {
    m.doc() = "tensorlite's fused CPU kernels (see docs/KERNELS.md for the contract)";
    bind_threads(m);
    bind_softmax(m);
    bind_layer_norm(m);
    bind_attention(m);
    bind_cross_entropy(m);
    bind_gelu(m);
    bind_adamw(m);
    bind_gemm(m);
}
