"""GELU, exact ("none": x * Phi(x) with erf) and tanh-approximated: forward and backward.

Elementwise over a flat view; one block of BLOCK elements per program.
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
def _tanh_and_sech2(u):
    # tl.math has no tanh. With e = exp(-2|u|) <= 1 nothing overflows for large |u|,
    # and 1 - tanh^2 = 4e / (1 + e)^2 avoids the cancellation of 1 - t*t near |t| = 1.
    e = tl.exp(-2.0 * tl.abs(u))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(u < 0, -t, t), 4.0 * e / ((1.0 + e) * (1.0 + e))


@triton.jit
def _gelu_fwd(X, Y, N, TANH: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    x = tl.load(X + offs, mask=mask, other=0.0).to(ACC)
    if TANH:
        t, _ = _tanh_and_sech2(0.7978845608028654 * (x + 0.044715 * x * x * x))
        y = 0.5 * x * (1.0 + t)
    else:
        y = 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))
    tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _gelu_bwd(X, DY, DX, N, TANH: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    x = tl.load(X + offs, mask=mask, other=0.0).to(ACC)
    dy = tl.load(DY + offs, mask=mask, other=0.0).to(ACC)
    if TANH:
        t, sech2 = _tanh_and_sech2(0.7978845608028654 * (x + 0.044715 * x * x * x))
        du = 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * x * x)
        d = 0.5 * (1.0 + t) + 0.5 * x * sech2 * du
    else:
        pdf = 0.3989422804014327 * tl.exp(-0.5 * x * x)
        d = 0.5 * (1.0 + tl.math.erf(x * 0.7071067811865476)) + x * pdf
    tl.store(DX + offs, (dy * d).to(DX.dtype.element_ty), mask=mask)


def _block() -> int:
    return 1 << 16 if L.interpreting() else 1024


def gelu_forward(x, approximate="none"):
    tanh = approximate == "tanh"
    xp = L.xp_of(x)
    xc = xp.ascontiguousarray(x)
    y = xp.empty(x.shape, x.dtype)
    n = xc.size
    if n:
        block = _block()
        L.launch(_gelu_fwd, (L.cdiv(n, block),), xc, y, n, TANH=tanh, BLOCK=block,
                 ACC=L.acc_dtype(x.dtype)[1], num_warps=4)
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
                 ACC=L.acc_dtype(x.dtype)[1], num_warps=4)
    return dx
