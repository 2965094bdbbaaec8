// Explicit vectors for the tiled kernels (attention, gemm_tile.h). GCC vector extensions rather
// than intrinsics, so that one source becomes zmm, ymm or xmm code depending on the target of
// the variant it is inlined into (TL_VARIANTS in kernel_util.h). Their exp is tl::exp_poly,
// the same one the row kernels use.
#pragma once
#include "kernel_util.h"

namespace tl {

template <typename T, int W>
struct Vec {
    typedef T type __attribute__((vector_size(W * sizeof(T))));
};

// memcpy: no alignment is assumed (tiles of odd sizes, callers' arrays); it compiles to one
// unaligned vector load or store.
template <class VT, class T>
TL_INLINE VT vload(const T* p) {
    VT v;
    std::memcpy(&v, p, sizeof v);
    return v;
}
template <class VT, class T>
TL_INLINE void vstore(T* p, const VT& v) {
    std::memcpy(p, &v, sizeof v);
}
// For constants only (folded at compile time). Runtime scalars enter as `vector * scalar`:
// GCC 12 builds a runtime splat lane by lane inside target() functions, but folds the scalar
// operand of an arithmetic op into one broadcast (or an embedded {1toN} memory operand).
template <class VT, class T>
TL_INLINE VT vsplat(T x) {
    return VT{} + x;
}

}  // namespace tl
