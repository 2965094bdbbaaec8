"""softmax and log_softmax over the last dim: forward and backward, in plain NumPy.

Both subtract the row max before exponentiating, so exp never overflows: the
largest exponent is exp(0) = 1. softmax(x) == softmax(x - c) for any constant c,
so the result is unchanged.
"""
from ._xp import check_float, check_last_dim, check_same_shape, get_xp


def softmax_forward(x):
    """y = exp(x) / sum(exp(x)) along the last dim."""
    check_float("softmax_forward", x=x)
    check_last_dim("softmax_forward", x)
    xp = get_xp(x)
    e = xp.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_backward(y, dy):
    """dx = y * (dy - sum(dy * y)): the Jacobian of softmax is diag(y) - y y^T."""
    check_float("softmax_backward", y=y, dy=dy)
    check_same_shape("softmax_backward", "y", y, "dy", dy)
    check_last_dim("softmax_backward", y)
    return y * (dy - (dy * y).sum(axis=-1, keepdims=True))


def log_softmax_forward(x):
    """y = x - logsumexp(x) along the last dim."""
    check_float("log_softmax_forward", x=x)
    check_last_dim("log_softmax_forward", x)
    xp = get_xp(x)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))


def log_softmax_backward(y, dy):
    """dx = dy - softmax(x) * sum(dy), where softmax(x) = exp(y)."""
    check_float("log_softmax_backward", y=y, dy=dy)
    check_same_shape("log_softmax_backward", "y", y, "dy", dy)
    check_last_dim("log_softmax_backward", y)
    xp = get_xp(y)
    return dy - xp.exp(y) * dy.sum(axis=-1, keepdims=True)
