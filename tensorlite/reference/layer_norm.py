"""layer_norm over the last dim (size C): forward and backward, in plain NumPy.

Forward:  xhat = (x - mean) * rstd,  rstd = 1 / sqrt(var + eps),  y = xhat * weight + bias.
The variance is computed from the centred values (two passes), not as
E[x^2] - E[x]^2, which cancels catastrophically when |mean| >> std.

Backward, with g = dy * weight (the gradient reaching xhat):
    dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
The two means come from xhat depending on x through mean and rstd as well.
"""
from ..backend.device import xp_of


def layer_norm_forward(x, weight, bias, eps):
    """Returns (y, mean, rstd); mean and rstd have shape x.shape[:-1]."""
    xp = xp_of(x)
    mean = x.mean(axis=-1)
    xc = x - mean[..., None]
    var = (xc * xc).mean(axis=-1)
    rstd = 1.0 / xp.sqrt(var + eps)
    y = xc * rstd[..., None]
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y, mean, rstd.astype(x.dtype, copy=False)


def layer_norm_backward(dy, x, weight, mean, rstd):
    """Returns (dx, dweight, dbias); dweight is None when weight is None."""
    xhat = (x - mean[..., None]) * rstd[..., None]
    g = dy if weight is None else dy * weight
    g_mean = g.mean(axis=-1, keepdims=True)
    gx_mean = (g * xhat).mean(axis=-1, keepdims=True)
    dx = rstd[..., None] * (g - g_mean - xhat * gx_mean)
    lead = tuple(range(x.ndim - 1))
    dweight = None if weight is None else (dy * xhat).sum(axis=lead)
    dbias = dy.sum(axis=lead)
    return dx, dweight, dbias
