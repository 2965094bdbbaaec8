"""layer_norm over the last dim (size C): forward and backward, in plain NumPy.

Forward:  xhat = (x - mean) * rstd,  rstd = 1 / sqrt(var + eps),  y = xhat * weight + bias.
The variance is computed from the centred values (two passes), not as
E[x^2] - E[x]^2, which cancels catastrophically when |mean| >> std.

Squaring the deviations overflows once |x - mean| > ~1.8e19 (float32) / ~1.3e154
(float64): var = inf, rstd = 0 and y = bias, a zeroed row. Such rows (rare) are normalised
as in csrc/layer_norm.cpp: the deviations divided by the row's largest |deviation| s are
squared instead, and s is brought back outside the root,
    rstd = (1 / s) / sqrt(mean((xc / s)^2) + eps / s^2).
rstd is then a small number (~1 / std), which the backward below takes as it is.

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
    overflowed = var == xp.inf          # the squares overflowed (see the top)
    if overflowed.any():                # rare: the common path pays for this test only
        s = xp.abs(xc).max(axis=-1)
        # inf inputs have no finite answer: those rows keep rstd = 0
        scaled = overflowed & xp.isfinite(s)
        s = xp.where(scaled, s, 1)
        xs = xc / s[..., None]
        r = 1.0 / xp.sqrt((xs * xs).mean(axis=-1) + eps / s / s)    # = s * rstd
        rstd = xp.where(scaled, r / s, rstd)
        y = xp.where(scaled[..., None], xs * r[..., None], y)     # r does not underflow
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
