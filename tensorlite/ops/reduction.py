"""Reductions over `dim` (an int, a tuple, or None for all) with `keepdim`."""
from ..autograd.function import Function
from ..backend.device import xp_of


def _expand_back(g, in_shape, dims, keepdim):
    """Re-insert reduced dims into g (if keepdim dropped them) and broadcast to in_shape."""
    xp = xp_of(g)
    if not keepdim:
        shape = list(in_shape)
        for d in dims:
            shape[d] = 1
        g = g.reshape(shape)
    return xp.broadcast_to(g, in_shape)


class Sum(Function):
    @staticmethod
    def forward(ctx, x, dims=(), keepdim=False):
        ctx.meta = (x.shape, dims, keepdim)
        return xp_of(x).asarray(x.sum(axis=dims, keepdims=keepdim))

    @staticmethod
    def backward(ctx, g):
        return (_expand_back(g, *ctx.meta),)


class Mean(Function):
    @staticmethod
    def forward(ctx, x, dims=(), keepdim=False):
        ctx.meta = (x.shape, dims, keepdim)
        n = 1
        for d in dims:
            n *= x.shape[d]
        ctx.n = n
        return xp_of(x).asarray(x.mean(axis=dims, keepdims=keepdim))

    @staticmethod
    def backward(ctx, g):
        return (_expand_back(g / ctx.n, *ctx.meta),)


class Var(Function):
    @staticmethod
    def forward(ctx, x, dims=(), correction=1, keepdim=False):
        xp = xp_of(x)
        n = 1
        for d in dims:
            n *= x.shape[d]
        mean = x.mean(axis=dims, keepdims=True)
        ctx.save_for_backward(x)
        ctx.mean = mean
        ctx.denom = max(n - correction, 0)
        ctx.meta = (x.shape, dims, keepdim)
        # NumPy warns on a zero denominator; PyTorch returns inf/nan silently. Match PyTorch.
        with _quiet(xp):
            return xp.asarray(x.var(axis=dims, ddof=correction, keepdims=keepdim))

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved
        g = _expand_back(g, *ctx.meta)
        xp = xp_of(x)
        with _quiet(xp):
            return (g * (2 * (x - ctx.mean) / x.dtype.type(ctx.denom)),)


class Std(Function):
    """sqrt(var). Its own Function so that a zero std (a constant row) gets a zero gradient,
    as in PyTorch, instead of var's 0 times sqrt's inf = nan."""

    @staticmethod
    def forward(ctx, x, dims=(), correction=1, keepdim=False):
        v = Var.forward(ctx, x, dims=dims, correction=correction, keepdim=keepdim)
        y = xp_of(x).sqrt(v)
        ctx.y = y
        return y

    @staticmethod
    def backward(ctx, g):
        xp = xp_of(g)
        y = ctx.y
        with _quiet(xp):
            gv = xp.where(y == 0, xp.zeros_like(g), g / (2 * y))
        return Var.backward(ctx, gv)


class Amax(Function):
    """max/min values over dims. Ties share the gradient evenly (PyTorch's amax/amin)."""

    @staticmethod
    def forward(ctx, x, dims=(), keepdim=False, largest=True):
        m = x.max(axis=dims, keepdims=True) if largest else x.min(axis=dims, keepdims=True)
        ctx.save_for_backward(x)
        ctx.m = m
        ctx.meta = (x.shape, dims, keepdim)
        out = m if keepdim else m.reshape([s for i, s in enumerate(x.shape) if i not in dims])
        return xp_of(x).asarray(out)

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved
        hit = (x == ctx.m)
        count = hit.sum(axis=ctx.meta[1], keepdims=True)
        return (_expand_back(g, *ctx.meta) * hit / count.astype(g.dtype),)


class LogSumExp(Function):
    @staticmethod
    def forward(ctx, x, dims=(), keepdim=False):
        xp = xp_of(x)
        if any(x.shape[d] == 0 for d in dims):  # max has no identity: an empty sum of exp is 0
            m = xp.zeros([1 if d in dims else s for d, s in enumerate(x.shape)], dtype=x.dtype)
        else:
            m = x.max(axis=dims, keepdims=True)
        m = xp.where(xp.isfinite(m), m, 0)  # a row of -inf must give -inf, not nan
        with _quiet(xp):  # log(0) for that row of -inf: -inf is the answer, no warning
            lse = xp.log(xp.exp(x - m).sum(axis=dims, keepdims=True)) + m
        ctx.save_for_backward(x)
        ctx.lse = lse
        ctx.meta = (x.shape, dims, keepdim)
        out = lse if keepdim else lse.reshape([s for i, s in enumerate(x.shape) if i not in dims])
        return xp.asarray(out)

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved
        return (_expand_back(g, *ctx.meta) * xp_of(x).exp(x - ctx.lse),)


class Prod(Function):
    @staticmethod
    def forward(ctx, x, dim=None, keepdim=False):
        ctx.save_for_backward(x)
        ctx.dim, ctx.keepdim = dim, keepdim
        return xp_of(x).asarray(x.prod(axis=dim, keepdims=keepdim))

    @staticmethod
    def backward(ctx, g):
        # d prod / d x_i = product of all the other entries: exclusive cumulative products
        # from the left and from the right, which stays exact when some x_j are zero.
        x, = ctx.saved
        xp = xp_of(x)
        dim = ctx.dim
        xs = x.reshape(-1) if dim is None else xp.moveaxis(x, dim, -1)
        ones = xp.ones(xs.shape[:-1] + (1,), dtype=x.dtype)
        # drop the last entry after concatenating (not before): for an empty dim, [:-1] of
        # the cumprod would keep nothing and the result would have one entry too many
        left = xp.concatenate([ones, xp.cumprod(xs, axis=-1)], axis=-1)[..., :-1]
        right = xp.flip(xp.concatenate(
            [ones, xp.cumprod(xp.flip(xs, -1), axis=-1)], axis=-1)[..., :-1], -1)
        others = left * right
        if dim is None:
            return ((others * g).reshape(x.shape),)
        gk = g if ctx.keepdim else xp.expand_dims(g, dim)
        return (xp.moveaxis(others, -1, dim) * gk,)


class Cumsum(Function):
    @staticmethod
    def forward(ctx, x, dim=0):
        ctx.dim = dim
        return xp_of(x).cumsum(x, axis=dim)

    @staticmethod
    def backward(ctx, g):
        xp = xp_of(g)
        return (xp.flip(xp.cumsum(xp.flip(g, ctx.dim), axis=ctx.dim), ctx.dim),)


class _quiet:
    def __init__(self, xp):
        self.xp = xp

    def __enter__(self):
        import numpy as np
        self.old = np.seterr(divide="ignore", invalid="ignore")

    def __exit__(self, *exc):
        import numpy as np
        np.seterr(**self.old)
