"""layer_norm over the last dim (size C): forward and backward, in plain NumPy.

Forward:  xhat = (x - mean) * rstd,  rstd = 1 / sqrt(var + eps),  y = xhat * weight + bias.
The variance is computed from the centred values (two passes), not as
E[x^2] - E[x]^2, which cancels catastrophically when |mean| >> std.

Backward, with g = dy * weight (the gradient reaching xhat):
    dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
The two means come from xhat depending on x through mean and rstd as well.
"""
from ._xp import check_float, check_last_dim, check_same_shape, get_xp


def _check_affine(op, name, p, C):
    if p is not None and p.shape != (C,):
        raise ValueError(f"{op}: {name} has shape {p.shape}, expected ({C},) to match the last dim of x")


def layer_norm_forward(x, weight, bias, eps):
    """Returns (y, mean, rstd); mean and rstd have shape x.shape[:-1]."""
    op = "layer_norm_forward"
    check_float(op, x=x, weight=weight, bias=bias)
    check_last_dim(op, x)
    C = x.shape[-1]
    if C == 0:
        raise ValueError(f"{op}: cannot normalise over an empty last dim, x has shape {x.shape}")
    _check_affine(op, "weight", weight, C)
    _check_affine(op, "bias", bias, C)
    xp = get_xp(x)
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
    op = "layer_norm_backward"
    check_float(op, dy=dy, x=x, weight=weight, mean=mean, rstd=rstd)
    check_same_shape(op, "dy", dy, "x", x)
    check_last_dim(op, x)
    C = x.shape[-1]
    _check_affine(op, "weight", weight, C)
    if mean.shape != x.shape[:-1] or rstd.shape != x.shape[:-1]:
        raise ValueError(f"{op}: mean {mean.shape} and rstd {rstd.shape} must have shape "
                         f"{x.shape[:-1]} (x is {x.shape})")
    xhat = (x - mean[..., None]) * rstd[..., None]
    g = dy if weight is None else dy * weight
    g_mean = g.mean(axis=-1, keepdims=True)
    gx_mean = (g * xhat).mean(axis=-1, keepdims=True)
    dx = rstd[..., None] * (g - g_mean - xhat * gx_mean)
    lead = tuple(range(x.ndim - 1))
    dweight = None if weight is None else (dy * xhat).sum(axis=lead)
    dbias = dy.sum(axis=lead)
    return dx, dweight, dbias
