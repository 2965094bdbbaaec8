"""Gradient utilities."""
import math
import numbers

import numpy as np

from ..autograd.grad_mode import no_grad
from ..backend.device import xp_of
from ..tensor import Tensor


def clip_grad_norm_(parameters, max_norm, norm_type=2.0):
    """Scale all gradients so their global norm is at most max_norm; return the norm
    measured before clipping (as a Python float)."""
    for name, v in (("max_norm", max_norm), ("norm_type", norm_type)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or math.isnan(v):
            raise TypeError(f"clip_grad_norm_: {name} must be a number, got {v!r}")
    if max_norm < 0:  # a negative scale would flip every gradient: gradient ascent
        raise ValueError(f"clip_grad_norm_: max_norm must be >= 0, got {max_norm!r}")
    if not norm_type > 0:
        raise ValueError(f"clip_grad_norm_: norm_type must be > 0 (or inf), got {norm_type!r}")
    if isinstance(parameters, Tensor):  # one tensor, as PyTorch accepts (iterating it gives rows)
        parameters = [parameters]
    grads = [p.grad for p in (parameters if isinstance(parameters, (list, tuple)) else list(parameters))
             if p.grad is not None]
    if not grads:
        return 0.0
    if norm_type == float("inf"):
        total = max(float(xp_of(g._data).abs(g._data).max()) for g in grads)
    else:
        total = sum(_sum_of_squares(g._data) if norm_type == 2 else
                    float((xp_of(g._data).abs(g._data.astype("float64")) ** norm_type).sum())
                    for g in grads)
        total = math.sqrt(total) if norm_type == 2 else total ** (1.0 / norm_type)
    coef = max_norm / (total + 1e-6)
    if coef < 1:
        with no_grad():
            for g in grads:
                a = g._data
                if a.flags.writeable:
                    a *= a.dtype.type(coef)  # in place, as PyTorch's clip does (mul_)
                else:  # e.g. a read-only broadcast view someone assigned as .grad
                    g._data = a * a.dtype.type(coef)
    return total


_CHUNK = 1 << 16


def _sum_of_squares(a):
    """sum(a ** 2) as a Python float. On the CPU: dot products of 64K-element chunks in the
    array's own precision, added up in float64 -- as accurate as a float64 cast of the
    whole array for any practical size, without the cast's copies."""
    if xp_of(a) is not np or a.dtype.kind != "f":
        return float((a.astype("float64") ** 2).sum())
    flat = a.reshape(-1)
    if flat.dtype.itemsize < 4:
        flat = flat.astype(np.float32)  # float16 squares overflow past 256
    return sum(float(np.dot(flat[i:i + _CHUNK], flat[i:i + _CHUNK]))
               for i in range(0, flat.size, _CHUNK))
