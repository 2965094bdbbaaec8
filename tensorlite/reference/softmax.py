"""softmax and log_softmax over the last dim: forward and backward, in plain NumPy.

Both subtract the row max before exponentiating, so exp never overflows: the
largest exponent is exp(0) = 1. softmax(x) == softmax(x - c) for any constant c,
so the result is unchanged.
"""
from ..backend.device import xp_of


def softmax_forward(x):
    """y = exp(x) / sum(exp(x)) along the last dim."""
    xp = xp_of(x)
    e = xp.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_backward(y, dy):
    """dx = y * (dy - sum(dy * y)): the Jacobian of softmax is diag(y) - y y^T."""
    return y * (dy - (dy * y).sum(axis=-1, keepdims=True))


def log_softmax_forward(x):
    """y = x - logsumexp(x) along the last dim."""
    xp = xp_of(x)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))


def log_softmax_backward(y, dy):
    """dx = dy - softmax(x) * sum(dy), where softmax(x) = exp(y)."""
    xp = xp_of(y)
    return dy - xp.exp(y) * dy.sum(axis=-1, keepdims=True)
