"""Vector norms and einsum, each forward next to its backward."""
import math

from ..autograd.function import Function
from ..backend.device import xp_of
from .reduction import _quiet


class VectorNorm(Function):
    """(sum |x|^p)^(1/p) over dims; p may be inf (max |x|), -inf (min |x|) or 0 (the count
    of non-zeros). Where the norm is 0 the gradient is 0 (PyTorch's subgradient), not the
    0/0 that differentiating sqrt(sum x^2) by the chain rule would give."""

    @staticmethod
    def forward(ctx, x, p=2.0, dims=(), keepdim=False):
        xp = xp_of(x)
        a = xp.abs(x)
        if p == math.inf:
            n = a.max(axis=dims, keepdims=True)
        elif p == -math.inf:
            n = a.min(axis=dims, keepdims=True)
        elif p == 0:
            n = (x != 0).sum(axis=dims, keepdims=True).astype(x.dtype)
        elif p == 1:
            n = a.sum(axis=dims, keepdims=True)
        elif p == 2:
            n = xp.sqrt((x * x).sum(axis=dims, keepdims=True))
        else:
            n = (a ** p).sum(axis=dims, keepdims=True) ** (1.0 / p)
        ctx.save_for_backward(x)
        ctx.n, ctx.p, ctx.dims = n, p, dims
        out = n if keepdim else n.reshape([s for i, s in enumerate(x.shape) if i not in dims])
        return xp.asarray(out, dtype=x.dtype)

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved
        xp = xp_of(x)
        n, p, dims = ctx.n, ctx.p, ctx.dims
        g = g.reshape(n.shape)  # back to keepdim's shape, which broadcasts against x
        if p == 0:
            return (xp.zeros_like(x),)
        sign = xp.sign(x)
        if p in (math.inf, -math.inf):
            # every entry that attains the max (min) shares the gradient evenly, as amax does
            hit = xp.abs(x) == n
            gx = g * sign * hit / hit.sum(axis=dims, keepdims=True).astype(x.dtype)
        elif p == 1:
            gx = g * sign
        else:
            with _quiet(xp):
                scale = xp.where(n == 0, 0, g / n ** (p - 1))
                gx = x * xp.abs(x) ** (p - 2) * scale if p != 2 else x * scale
            gx = xp.where(x == 0, 0, gx)  # |x|^(p-2) is inf at 0 for p < 2
        return (xp.asarray(gx, dtype=x.dtype),)


class Einsum(Function):
    """einsum over an explicit equation ('ij,jk->ik': every operand's subscripts and the
    output spelled out, no ellipsis, equal sizes per letter; tensorlite.einsum normalises
    to this). The gradient for one operand is another einsum: the output gradient with
    the other operands, summed to that operand's letters, broadcast along letters only it
    has, and written onto the diagonal where a letter repeats in it ('ii->i')."""

    @staticmethod
    def forward(ctx, *ops, equation=""):
        ctx.save_for_backward(*ops)
        ctx.equation = equation
        xp = xp_of(ops[0])
        return xp.asarray(xp.einsum(equation, *ops, **_optimize(len(ops))))

    @staticmethod
    def backward(ctx, g):
        ops = ctx.saved
        lhs, out = ctx.equation.split("->")
        terms = lhs.split(",")
        xp = xp_of(g)
        grads = []
        for i, (term, x) in enumerate(zip(terms, ops)):
            if not ctx.needs_input_grad[i]:
                grads.append(None)
                continue
            size = dict(zip(term, x.shape))
            letters = list(dict.fromkeys(term))  # its distinct letters, in order
            others = [t for j, t in enumerate(terms) if j != i]
            reachable = set(out).union(*others)
            keep = [c for c in letters if c in reachable]
            spec = ",".join([out] + others) + "->" + "".join(keep)
            gi = xp.einsum(spec, g, *[o for j, o in enumerate(ops) if j != i],
                           **_optimize(len(ops)))
            gi = xp.broadcast_to(gi.reshape([size[c] if c in keep else 1 for c in letters]),
                                 [size[c] for c in letters])
            if len(letters) == len(term):
                gx = xp.ascontiguousarray(gi)
            else:
                gx = xp.zeros(x.shape, dtype=g.dtype)
                pos = {c: k for k, c in enumerate(letters)}
                idx = tuple(xp.arange(size[c]).reshape([size[c] if m == pos[c] else 1
                                                         for m in range(len(letters))])
                            for c in term)
                gx[idx] = gi
            grads.append(gx.astype(x.dtype, copy=False))
        return tuple(grads)


def _optimize(n_ops):
    # contraction order only matters from three operands on; two take NumPy's direct path
    return {"optimize": True} if n_ops > 2 else {}

