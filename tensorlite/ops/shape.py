"""Ops that move data around without arithmetic: views, concatenation, padding."""
from ..autograd.function import Function
from ..backend.device import xp_of
from ._util import unbroadcast


class Reshape(Function):
    @staticmethod
    def forward(ctx, x, shape=()):
        ctx.in_shape = x.shape
        return x.reshape(shape)

    @staticmethod
    def backward(ctx, g):
        return (g.reshape(ctx.in_shape),)


class Expand(Function):
    @staticmethod
    def forward(ctx, x, shape=()):
        ctx.in_shape = x.shape
        return xp_of(x).broadcast_to(x, shape)

    @staticmethod
    def backward(ctx, g):
        return (unbroadcast(g, ctx.in_shape),)


class Permute(Function):
    @staticmethod
    def forward(ctx, x, dims=()):
        ctx.dims = dims
        return x.transpose(dims)

    @staticmethod
    def backward(ctx, g):
        inverse = [0] * len(ctx.dims)
        for i, d in enumerate(ctx.dims):
            inverse[d] = i
        return (g.transpose(inverse),)


class Contiguous(Function):
    @staticmethod
    def forward(ctx, x):
        return xp_of(x).ascontiguousarray(x)

    @staticmethod
    def backward(ctx, g):
        return (g,)


class Clone(Function):
    @staticmethod
    def forward(ctx, x):
        return x.copy()

    @staticmethod
    def backward(ctx, g):
        return (g,)


class Cat(Function):
    @staticmethod
    def forward(ctx, *xs, dim=0):
        ctx.dim = dim
        ctx.sizes = [x.shape[dim] for x in xs]
        return xp_of(xs[0]).concatenate(xs, axis=dim)

    @staticmethod
    def backward(ctx, g):
        xp = xp_of(g)
        bounds = []
        acc = 0
        for s in ctx.sizes[:-1]:
            acc += s
            bounds.append(acc)
        return tuple(xp.split(g, bounds, axis=ctx.dim))


class Repeat(Function):
    @staticmethod
    def forward(ctx, x, reps=()):
        ctx.in_shape = x.shape
        ctx.reps = reps
        return xp_of(x).tile(x, reps)

    @staticmethod
    def backward(ctx, g):
        # view the output as (r0, s0, r1, s1, ...) and sum over the repeat axes
        reps = ctx.reps
        shape = (1,) * (len(reps) - len(ctx.in_shape)) + tuple(ctx.in_shape)
        split = []
        for r, s in zip(reps, shape):
            split += [r, s]
        g = g.reshape(split).sum(axis=tuple(range(0, 2 * len(reps), 2)))
        return (g.reshape(ctx.in_shape),)


class Tri(Function):
    """triu / tril: keep the upper or lower triangle of the last two dims."""

    @staticmethod
    def forward(ctx, x, diagonal=0, upper=True):
        xp = xp_of(x)
        ctx.diagonal, ctx.upper = diagonal, upper
        return xp.triu(x, diagonal) if upper else xp.tril(x, diagonal)

    @staticmethod
    def backward(ctx, g):
        xp = xp_of(g)
        return (xp.triu(g, ctx.diagonal) if ctx.upper else xp.tril(g, ctx.diagonal),)


class Pad(Function):
    """Constant padding; `pad` pairs start from the last dim, as in F.pad."""

    @staticmethod
    def forward(ctx, x, pad=(), value=0.0):
        xp = xp_of(x)
        widths = [(0, 0)] * x.ndim
        for i in range(len(pad) // 2):
            widths[x.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
        ctx.widths = widths
        # negative pads crop; split them into a crop followed by a non-negative pad
        crop = tuple(slice(max(-lo, 0), x.shape[d] - max(-hi, 0)) for d, (lo, hi) in enumerate(widths))
        ctx.crop = crop
        ctx.in_shape = x.shape
        return xp.pad(x[crop], [(max(lo, 0), max(hi, 0)) for lo, hi in widths],
                      mode="constant", constant_values=value)

    @staticmethod
    def backward(ctx, g):
        xp = xp_of(g)
        inner = tuple(slice(max(lo, 0), g.shape[d] - max(hi, 0)) for d, (lo, hi) in enumerate(ctx.widths))
        gx = xp.zeros(ctx.in_shape, dtype=g.dtype)
        gx[ctx.crop] = g[inner]
        return (gx,)


class Flip(Function):
    @staticmethod
    def forward(ctx, x, dims=()):
        ctx.dims = dims
        return xp_of(x).flip(x, dims).copy()  # a copy, as torch.flip (NumPy's flip is a view)

    @staticmethod
    def backward(ctx, g):
        return (xp_of(g).flip(g, ctx.dims).copy(),)
