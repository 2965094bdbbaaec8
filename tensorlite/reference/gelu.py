"""GELU activation, forward and backward, in plain NumPy.

gelu(x) = x * Phi(x), with Phi the standard normal CDF.
  approximate="none": Phi(x) = erfc(-x / sqrt(2)) / 2   (exact; erfc keeps the
                      far negative tail accurate where 1 + erf(x/sqrt(2)) cancels)
  approximate="tanh": Phi(x) ~ (1 + tanh(z)) / 2,  z = sqrt(2/pi) * (x + 0.044715 x^3),
                      computed as sigmoid(2z) = 1 / (1 + exp(-2z)): for x < -2,
                      1 + tanh(z) cancels (it keeps no digit at all by x ~ -6), the
                      sigmoid does not.
Both are computed in float64 and cast back to the input dtype, so this reference
is at least as accurate as any provider checked against it.
"""
import math

from ._erf import erfc
from ..backend.device import xp_of

_TANH_K = math.sqrt(2.0 / math.pi)
_TANH_C = 0.044715
# Beyond |x| = 25 the tanh slope is exactly 1 (x > 0) or 0 (x < 0, exp(2z) underflows) in
# float64, while x^3 and x * dz/dx overflow (inf * 0 = NaN once x*x does, |x| ~ 1e154).
# The slope is evaluated at x clamped there. (|x| = 20 would not do: the left tail's slope
# is still ~1e-258 there, and a far smaller number further out.)
_TANH_CLAMP = 25.0


def _sigmoid_2z(xp, z):
    """(s, s * (1 - s)) for s = sigmoid(2z) = (1 + tanh z) / 2, from a = exp(-2|z|) <= 1:
    nothing overflows, and neither s nor 1 - s is formed by cancellation."""
    a = xp.exp(-2.0 * xp.abs(z))
    s = xp.where(z >= 0, 1.0 / (1.0 + a), a / (1.0 + a))
    return s, a / ((1.0 + a) * (1.0 + a))


def gelu_forward(x, approximate):
    xp = xp_of(x)
    x64 = x.astype(xp.float64)
    if approximate == "none":
        cdf = 0.5 * erfc(-x64 / math.sqrt(2.0))
    else:
        cdf, _ = _sigmoid_2z(xp, _TANH_K * (x64 + _TANH_C * x64 * x64 * x64))
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
        # d/dx [x s], s = sigmoid(2z): s + x * 2 z' * s (1 - s)
        c = xp.clip(x64, -_TANH_CLAMP, _TANH_CLAMP)
        s, s1s = _sigmoid_2z(xp, _TANH_K * (c + _TANH_C * c * c * c))
        dz = _TANH_K * (1.0 + 3.0 * _TANH_C * c * c)
        slope = s + c * 2.0 * dz * s1s
    return (dy * slope).astype(x.dtype)
