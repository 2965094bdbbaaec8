"""Gradient utilities."""
import math

from ..autograd.grad_mode import no_grad
from ..backend.device import xp_of
from ..tensor import Tensor


def clip_grad_norm_(parameters, max_norm, norm_type=2.0):
    """Scale all gradients so their global norm is at most max_norm; return the norm
    measured before clipping (as a Python float)."""
    if isinstance(parameters, Tensor):  # one tensor, as PyTorch accepts (iterating it gives rows)
        parameters = [parameters]
    grads = [p.grad for p in (parameters if isinstance(parameters, (list, tuple)) else list(parameters))
             if p.grad is not None]
    if not grads:
        return 0.0
    if norm_type == float("inf"):
        total = max(float(xp_of(g._data).abs(g._data).max()) for g in grads)
    else:
        total = sum(float((g._data.astype("float64") ** 2).sum()) if norm_type == 2 else
                    float((xp_of(g._data).abs(g._data.astype("float64")) ** norm_type).sum())
                    for g in grads)
        total = math.sqrt(total) if norm_type == 2 else total ** (1.0 / norm_type)
    coef = max_norm / (total + 1e-6)
    if coef < 1:
        with no_grad():
            for g in grads:
                g._data = (g._data * g._data.dtype.type(coef))
    return total
