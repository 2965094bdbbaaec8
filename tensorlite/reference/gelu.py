"""GELU activation, forward and backward, in plain NumPy.

gelu(x) = x * Phi(x), with Phi the standard normal CDF.
  approximate="none": Phi(x) = erfc(-x / sqrt(2)) / 2   (exact; erfc keeps the
                      far negative tail accurate where 1 + erf(x/sqrt(2)) cancels)
  approximate="tanh": Phi(x) ~ (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))) / 2
Both are computed in float64 and cast back to the input dtype, so this reference
is at least as accurate as any provider checked against it.
"""
import math

from ._erf import erfc
from ..backend.device import xp_of

_TANH_K = math.sqrt(2.0 / math.pi)
_TANH_C = 0.044715


def gelu_forward(x, approximate):
    xp = xp_of(x)
    x64 = x.astype(xp.float64)
    if approximate == "none":
        cdf = 0.5 * erfc(-x64 / math.sqrt(2.0))
    else:
        cdf = 0.5 * (1.0 + xp.tanh(_TANH_K * (x64 + _TANH_C * x64 * x64 * x64)))
    return (x64 * cdf).astype(x.dtype)


def gelu_backward(x, dy, approximate):
    """d gelu / dx = Phi(x) + x * Phi'(x)."""
    xp = xp_of(x)
    x64 = x.astype(xp.float64)
    if approximate == "none":
        cdf = 0.5 * erfc(-x64 / math.sqrt(2.0))
        pdf = xp.exp(-0.5 * x64 * x64) / math.sqrt(2.0 * math.pi)
        slope = cdf + x64 * pdf
    else:
        t = xp.tanh(_TANH_K * (x64 + _TANH_C * x64 * x64 * x64))
        dinner = _TANH_K * (1.0 + 3.0 * _TANH_C * x64 * x64)
        slope = 0.5 * (1.0 + t) + 0.5 * x64 * (1.0 - t * t) * dinner
    return (dy * slope).astype(x.dtype)
