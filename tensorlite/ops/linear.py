"""y = x W^T + b over the last dim of x, W stored (out_features, in_features) as in PyTorch:
one graph node (PyTorch's AddmmBackward) instead of a transpose, a matmul and an add.

The forward is one GEMM over all leading dims with the bias added inside the GEMM's own pass
(backend/blas.py: C starts as the bias rows); the backward is the three products
    dx = g W,   dW = g^T x,   db = sum of g over rows,
each one GEMM on the flattened rows, W's gradient computed in W's own (out, in) layout.
"""
import math

from ..autograd.function import Function
from ..backend.blas import mm


class Linear(Function):
    """residual (optional, of the output's shape): y = residual + x W^T + b, a transformer's
    skip connection taken into the GEMM (the GEMM starts from it: no separate add pass);
    its gradient is g itself."""

    @staticmethod
    def forward(ctx, x, weight, bias=None, residual=None):
        K, N = weight.shape[1], weight.shape[0]
        lead = x.shape[:-1]
        x2 = x.reshape(math.prod(lead), K)
        ctx.save_for_backward(x2, weight)
        ctx.lead = lead
        r2 = None if residual is None else residual.reshape(x2.shape[0], N)
        return mm(x2, weight.T, bias=bias, residual=r2).reshape(lead + (N,))

    @staticmethod
    def backward(ctx, g):
        x2, w = ctx.saved
        needs = ctx.needs_input_grad  # 3 or 4 entries: residual is passed only when used
        nx, nw, nb, nr = needs + (False,) * (4 - len(needs))
        g2 = g.reshape(x2.shape[0], w.shape[0])
        dx = mm(g2, w).reshape(ctx.lead + (w.shape[1],)) if nx else None
        dw = mm(g2.T, x2) if nw else None
        db = g2.sum(axis=0) if nb else None
        return (dx, dw, db, g if nr else None)[:len(needs)]
