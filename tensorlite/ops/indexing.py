"""Indexing: x[key], gather, index_select, scatter_add, index_add and the embedding lookup.
Every backward scatters with add.at, so repeated indices accumulate their gradients."""
from ..autograd.function import Function
from ..backend.device import xp_of


def _is_basic(key):
    """True if key uses only ints, slices, None and Ellipsis (so no index can repeat)."""
    items = key if isinstance(key, tuple) else (key,)
    return all(isinstance(k, (int, slice)) or k is None or k is Ellipsis for k in items)


class GetItem(Function):
    @staticmethod
    def forward(ctx, x, key=None):
        ctx.key = key
        ctx.in_shape, ctx.dtype = x.shape, x.dtype
        out = x[key]
        if not isinstance(out, type(x)):
            # all-integer keys give a NumPy scalar (a copy); with a trailing Ellipsis NumPy
            # gives a 0-d view instead, so x[i] shares memory with x as in PyTorch
            out = x[(key if isinstance(key, tuple) else (key,)) + (Ellipsis,)]
        return out

    @staticmethod
    def backward(ctx, g):
        xp = xp_of(g)
        gx = xp.zeros(ctx.in_shape, dtype=g.dtype)
        if _is_basic(ctx.key):
            gx[ctx.key] = g
        else:
            xp.add.at(gx, ctx.key, g)
        return (gx,)


def _full_index(index, dim):
    """The index tuple that picks x[..., index[...], ...] along `dim` for every position of index."""
    xp = xp_of(index)
    grids = list(xp.indices(index.shape, sparse=True))
    grids[dim] = index
    return tuple(grids)


class Gather(Function):
    @staticmethod
    def forward(ctx, x, index, dim=0):
        ctx.save_for_backward(index)
        ctx.dim, ctx.in_shape = dim, x.shape
        # like torch.gather, index may be smaller than x in the other dims
        part = tuple(slice(None) if d == dim else slice(0, s) for d, s in enumerate(index.shape))
        return xp_of(x).take_along_axis(x[part], index, axis=dim)

    @staticmethod
    def backward(ctx, g):
        index, = ctx.saved
        xp = xp_of(g)
        gx = xp.zeros(ctx.in_shape, dtype=g.dtype)
        xp.add.at(gx, _full_index(index, ctx.dim), g)
        return (gx, None)


class IndexSelect(Function):
    @staticmethod
    def forward(ctx, x, index, dim=0):
        ctx.save_for_backward(index)
        ctx.dim, ctx.in_shape = dim, x.shape
        return xp_of(x).take(x, index, axis=dim)

    @staticmethod
    def backward(ctx, g):
        index, = ctx.saved
        xp = xp_of(g)
        gx = xp.zeros(ctx.in_shape, dtype=g.dtype)
        xp.add.at(xp.moveaxis(gx, ctx.dim, 0), index, xp.moveaxis(g, ctx.dim, 0))
        return (gx, None)


class ScatterAdd(Function):
    @staticmethod
    def forward(ctx, x, index, src, dim=0):
        ctx.save_for_backward(index)
        ctx.dim = dim
        out = x.copy()
        # src may be larger than index along any dim: only the part index covers is used
        src_part = src[tuple(slice(0, s) for s in index.shape)]
        xp_of(x).add.at(out, _full_index(index, dim), src_part)
        ctx.src_shape = src.shape
        return out

    @staticmethod
    def backward(ctx, g):
        index, = ctx.saved
        xp = xp_of(g)
        gsrc = None
        if ctx.needs_input_grad[2]:
            gsrc = xp.zeros(ctx.src_shape, dtype=g.dtype)
            # as in Gather: index may be smaller than the output in the other dims
            part = tuple(slice(None) if d == ctx.dim else slice(0, s) for d, s in enumerate(index.shape))
            gsrc[tuple(slice(0, s) for s in index.shape)] = xp.take_along_axis(g[part], index, axis=ctx.dim)
        return (g, None, gsrc)


class IndexAdd(Function):
    @staticmethod
    def forward(ctx, x, index, source, dim=0, alpha=1):
        ctx.save_for_backward(index)
        ctx.dim, ctx.alpha = dim, alpha
        xp = xp_of(x)
        out = x.copy()
        xp.add.at(xp.moveaxis(out, dim, 0), index, xp.moveaxis(source * alpha, dim, 0))
        return out

    @staticmethod
    def backward(ctx, g):
        index, = ctx.saved
        xp = xp_of(g)
        gsrc = xp.take(g, index, axis=ctx.dim) * ctx.alpha if ctx.needs_input_grad[2] else None
        return (g, None, gsrc)


class Embedding(Function):
    """weight[idx] for an integer idx of any shape; the backward adds rows into the table."""

    @staticmethod
    def forward(ctx, weight, idx):
        ctx.save_for_backward(idx)
        ctx.w_shape = weight.shape
        return weight[idx]

    @staticmethod
    def backward(ctx, g):
        idx, = ctx.saved
        xp = xp_of(g)
        gw = xp.zeros(ctx.w_shape, dtype=g.dtype)
        # add.at over a 1-D array with one index per element takes NumPy's fast path: 2-4x
        # faster than add.at of whole rows into the 2-D table
        C = ctx.w_shape[-1]
        flat = (idx.reshape(-1, 1) * C + xp.arange(C)).reshape(-1)
        xp.add.at(gw.reshape(-1), flat, g.reshape(-1))
        return (gw, None)
