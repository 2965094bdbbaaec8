"""GELU, exact ("none": x * Phi(x) with erf) and tanh-approximated: forward and backward.

Elementwise over a flat view; one block of BLOCK elements per program.

The exact GELU's left tail: x (1 + erf(x / sqrt 2)) / 2 cancels for x < -2 (0 at x ~ -6 in
float32). Below float64, Phi(x) for x < 0 is computed as in csrc/gelu.cpp instead:
Phi(-a) = exp(-a^2/2) * M(a), M(a) = exp(a^2/2) Phi(-a) a slowly varying function
(M(0) = 1/2, M(a) ~ 1/(a sqrt(2 pi))) fitted by a degree-12 polynomial in u = 4/(a+4) --
our own fit, whose coefficients are copied from csrc/gelu.cpp (max relative error 4e-7).
libdevice's erfc would do on a GPU but Triton's interpreter has no extern functions, and
a float64 version of the fit is not written yet: float64 keeps 1 + erf, which cancels.
"""
from __future__ import annotations

import triton
import triton.language as tl

from . import _launch as L

# The constants are written out in the kernels: a compiled kernel may only read
# globals wrapped in tl.constexpr, and the interpreter mishandles constexpr * tensor.
# 0.7071067811865476 = 1/sqrt(2), 0.3989422804014327 = 1/sqrt(2*pi),
# 0.7978845608028654 = sqrt(2/pi), 0.044715 the tanh approximation's cubic coefficient.


@triton.jit
def _sigmoid_2z(z):
    # (s, s * (1 - s)) for s = sigmoid(2z) = (1 + tanh z) / 2 (tl.math has no tanh), from
    # a = exp(-2|z|) <= 1: nothing overflows for large |z|, and neither s nor 1 - s is
    # formed by cancellation -- x (1 + tanh z) / 2 keeps no digit of the left tail
    # (x < -2) at all by x ~ -6; x * s keeps them all.
    a = tl.exp(-2.0 * tl.abs(z))
    return tl.where(z >= 0, 1.0 / (1.0 + a), a / (1.0 + a)), a / ((1.0 + a) * (1.0 + a))


@triton.jit
def _normal_cdf_pdf(x, MILLS: tl.constexpr):
    """(Phi(x), phi(x)): with MILLS (float32/16 math), Phi(x < 0) from the Mills-ratio
    polynomial of the module docstring, which keeps the left tail's relative accuracy."""
    g = tl.exp(-0.5 * x * x)
    if MILLS:
        u = 4.0 / (tl.abs(x) + 4.0)
        m = -1.179144870e-03
        m = m * u - 8.874586663e-03
        m = m * u + 9.592544458e-02
        m = m * u - 3.004333101e-01
        m = m * u + 4.443451728e-01
        m = m * u - 3.820144474e-01
        m = m * u + 2.998079031e-01
        m = m * u - 5.065468224e-02
        m = m * u + 1.168571956e-01
        m = m * u + 8.572954416e-02
        m = m * u + 1.008456259e-01
        m = m * u + 9.964173101e-02
        m = m * u + 3.554236748e-06
        cdf = tl.where(x < 0, g * m, 0.5 * (1.0 + tl.math.erf(x * 0.7071067811865476)))
    else:
        cdf = 0.5 * (1.0 + tl.math.erf(x * 0.7071067811865476))
    return cdf, 0.3989422804014327 * g


@triton.jit
def _gelu_fwd(X, Y, N, TANH: tl.constexpr, MILLS: tl.constexpr, BLOCK: tl.constexpr,
              ACC: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    x = tl.load(X + offs, mask=mask, other=0.0).to(ACC)
    if TANH:
        s, _ = _sigmoid_2z(0.7978845608028654 * (x + 0.044715 * x * x * x))
        y = x * s
    else:
        cdf, _ = _normal_cdf_pdf(x, MILLS)
        y = x * cdf
    tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _gelu_bwd(X, DY, DX, N, TANH: tl.constexpr, MILLS: tl.constexpr, BLOCK: tl.constexpr,
              ACC: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    x = tl.load(X + offs, mask=mask, other=0.0).to(ACC)
    dy = tl.load(DY + offs, mask=mask, other=0.0).to(ACC)
    if TANH:
        # d/dx [x s] = s + x * 2 z' * s (1 - s), evaluated at x clamped to [-25, 25]:
        # beyond, the slope is exactly 1 (x > 0) or 0 (x < 0: exp(2z) underflows) in
        # float32 and float64 alike, while x^3 and x * z' overflow (inf * 0 = NaN once
        # x*x does). A clamp at 9 (float32) / 20 (float64) would leave the left tail a
        # slope of ~1e-27 / ~1e-258 where the truth is orders of magnitude smaller.
        c = tl.clamp(x, -25.0, 25.0, propagate_nan=tl.PropagateNan.ALL)  # NaN stays NaN
        s, s1s = _sigmoid_2z(0.7978845608028654 * (c + 0.044715 * c * c * c))
        dz = 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * c * c)
        d = s + c * 2.0 * dz * s1s
    else:
        cdf, pdf = _normal_cdf_pdf(x, MILLS)
        d = cdf + x * pdf
    tl.store(DX + offs, (dy * d).to(DX.dtype.element_ty), mask=mask)


def _block() -> int:
    return 1 << 16 if L.interpreting() else 1024


def _math(dtype):
    """ACC, the dtype the kernels compute in, and MILLS: below float64, Phi's left tail from
    the Mills-ratio polynomial (module docstring)."""
    acc = L.acc_dtype(dtype)[1]
    return dict(ACC=acc, MILLS=acc != tl.float64)


def gelu_forward(x, approximate="none"):
    tanh = approximate == "tanh"
    xp = L.xp_of(x)
    xc = xp.ascontiguousarray(x)
    y = xp.empty(x.shape, x.dtype)
    n = xc.size
    if n:
        block = _block()
        L.launch(_gelu_fwd, (L.cdiv(n, block),), xc, y, n, TANH=tanh, BLOCK=block,
                 num_warps=4, **_math(x.dtype))
    return y


def gelu_backward(x, dy, approximate="none"):
    tanh = approximate == "tanh"
    xp = L.xp_of(x)
    xc = xp.ascontiguousarray(x)
    dyc = xp.ascontiguousarray(dy)
    dx = xp.empty(x.shape, x.dtype)
    n = xc.size
    if n:
        block = _block()
        L.launch(_gelu_bwd, (L.cdiv(n, block),), xc, dyc, dx, n, TANH=tanh, BLOCK=block,
                 num_warps=4, **_math(x.dtype))
    return dx
