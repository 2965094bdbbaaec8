"""Helpers shared by all ops: the one place broadcast gradients are summed back,
and the one place a `dim` argument is checked."""
import numbers

from ..backend.device import xp_of


def unbroadcast(grad, shape):
    """Sum grad (of the broadcast output's shape) back down to an input's `shape`."""
    if tuple(grad.shape) == tuple(shape):
        return grad
    xp = xp_of(grad)
    lead = grad.ndim - len(shape)
    if lead:
        grad = grad.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, s in enumerate(shape) if s == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return xp.reshape(grad, shape)


def norm_dim(dim, ndim, op):
    """Turn a possibly negative dim into 0..ndim-1, or raise IndexError naming the op."""
    lo, hi = -max(ndim, 1), max(ndim, 1) - 1
    if isinstance(dim, numbers.Integral) and not isinstance(dim, bool):
        dim = int(dim)  # NumPy integers (from shapes or argmax) are dims too
    if not isinstance(dim, int) or not (lo <= dim <= hi):
        raise IndexError(f"{op}: dim {dim} is out of range for a tensor with {ndim} dims "
                         f"(expected a value in [{lo}, {hi}])")
    return dim % max(ndim, 1)


def norm_dims(dim, ndim, op):
    """dim=None -> all dims; int or tuple -> sorted tuple of non-negative dims."""
    if dim is None:
        return tuple(range(ndim))
    if isinstance(dim, numbers.Integral):
        dim = (dim,)
    out = tuple(sorted({norm_dim(d, ndim, op) for d in dim}))
    if len(out) != len(dim):
        raise ValueError(f"{op}: dim {dim} names a dimension more than once")
    # a 0-d tensor accepts dim 0/-1 (as PyTorch does) but has no axis to reduce over
    return out if ndim else ()


def shape_str(s):
    return str(tuple(int(x) for x in s))  # (3,) for one dim, as Python prints shapes


def broadcast_shape(a, b, op):
    try:
        import numpy as np
        return np.broadcast_shapes(tuple(a), tuple(b))
    except ValueError:
        raise ValueError(f"{op}: shapes {shape_str(a)} and {shape_str(b)} cannot be broadcast "
                         "together") from None
