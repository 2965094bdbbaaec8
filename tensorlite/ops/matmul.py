"""Matrix multiplication with NumPy's rules: 1-D operands are promoted to a row/column
and the result squeezed; batch dims broadcast, and their gradients are summed back."""
import math

from ..autograd.function import Function
from ..backend.blas import mm
from ._util import unbroadcast


_HALF = ("float16", "bfloat16")


def _wide(*arrays):
    # half-precision products run as float32 GEMMs (NumPy has no float16/bfloat16 BLAS) and
    # _same rounds the result back: float32 accumulation, as tensor cores do on a GPU
    return tuple(x if x.dtype.name not in _HALF else x.astype("float32") for x in arrays)


class Matmul(Function):
    @staticmethod
    def forward(ctx, a0, b0):
        ctx.save_for_backward(a0, b0)
        a, b = _wide(a0, b0)
        if a.ndim > 2 and b.ndim == 2:
            # (..., K) @ (K, N), as every Linear does: one GEMM over all the leading dims
            # (NumPy's matmul would run one small GEMM per leading index)
            lead = a.shape[:-1]
            return _same(a0, mm(a.reshape(math.prod(lead), a.shape[-1]), b).reshape(lead + (b.shape[1],)))
        return _same(a0, mm(a, b) if a.ndim == 2 and b.ndim == 2 else a @ b)

    @staticmethod
    def backward(ctx, g):
        a0, b0 = ctx.saved
        a, b, g = _wide(a0, b0, g)
        na, nb = ctx.needs_input_grad
        if a.ndim >= 2 and b.ndim == 2:
            return _backward_2d(a, b, g, na, nb, a0.dtype)
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        # restore the dims the forward squeezed away so g lines up with a2 @ b2
        g2 = g
        if a.ndim == 1:
            g2 = g2[..., None, :] if b.ndim > 1 else g2[..., None]
        if b.ndim == 1:
            g2 = g2[..., None]
        ga = gb = None
        if na:
            ga = _same(a0, unbroadcast(g2 @ b2.swapaxes(-1, -2), a2.shape).reshape(a.shape))
        if nb:
            gb = _same(a0, unbroadcast(a2.swapaxes(-1, -2) @ g2, b2.shape).reshape(b.shape))
        return ga, gb


def _same(a, out):
    # a tensor op keeps its operands' dtype (a: an operand, or its dtype)
    dtype = getattr(a, "dtype", a)
    return out if out.dtype == dtype else out.astype(dtype)


def _backward_2d(a, b, g, na, nb, dtype):
    """(..., K) @ (K, N): both gradients as 2-D GEMMs over the flattened leading dims, so
    b's gradient needs no per-batch products summed afterwards."""
    K, N = b.shape
    M = math.prod(a.shape[:-1])
    g2 = g.reshape(M, N)
    ga = gb = None
    if na:
        ga = _same(dtype, mm(g2, b.T).reshape(a.shape))
    if nb:
        a2 = a.reshape(M, K)
        if b.flags.f_contiguous and not b.flags.c_contiguous:
            # b is a transposed weight (x @ W.T in Linear): compute W's gradient in W's own
            # layout, so it arrives C-contiguous once the transpose's backward flips it back
            gb = _same(dtype, mm(g2.T, a2).T)
        else:
            gb = _same(dtype, mm(a2.T, g2))
    return ga, gb
