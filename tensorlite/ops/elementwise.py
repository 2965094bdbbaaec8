"""Elementwise ops: each forward next to its backward. Binary ops broadcast like NumPy;
their gradients go back through `unbroadcast`."""

from ..autograd.function import Function
from ..backend.device import xp_of
from ._util import unbroadcast


# ---- binary arithmetic ------------------------------------------------------------

class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (a.shape, b.shape)
        return a + b

    @staticmethod
    def backward(ctx, g):
        sa, sb = ctx.shapes
        na, nb = ctx.needs_input_grad
        return (unbroadcast(g, sa) if na else None, unbroadcast(g, sb) if nb else None)


class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (a.shape, b.shape)
        return a - b

    @staticmethod
    def backward(ctx, g):
        sa, sb = ctx.shapes
        na, nb = ctx.needs_input_grad
        return (unbroadcast(g, sa) if na else None, unbroadcast(-g, sb) if nb else None)


class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        na, nb = ctx.needs_input_grad
        return (unbroadcast(g * b, a.shape) if na else None,
                unbroadcast(g * a, b.shape) if nb else None)


class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a / b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        na, nb = ctx.needs_input_grad
        return (unbroadcast(g / b, a.shape) if na else None,
                unbroadcast(-g * a / (b * b), b.shape) if nb else None)


class Pow(Function):
    @staticmethod
    def forward(ctx, a, b):
        y = a ** b
        ctx.save_for_backward(a, b, y)
        return y

    @staticmethod
    def backward(ctx, g):
        a, b, y = ctx.saved
        xp = xp_of(a)
        na, nb = ctx.needs_input_grad
        ga = gb = None
        if na:
            # b * a**(b-1), written so that a == 0 with b >= 1 gives a finite value; where b == 0
            # use a**1 instead: 0 * 0**-1 would be nan, and d/da a**0 is 0 (PyTorch's too)
            ga = unbroadcast(g * b * a ** xp.where(b == 0, 1, b - 1), a.shape)
        if nb:
            # d/db a**b = a**b * log(a); defined as 0 where a == 0 (PyTorch does the same)
            safe = xp.where(a > 0, a, 1)
            gb = unbroadcast(xp.where(a > 0, g * y * xp.log(safe), 0).astype(y.dtype), b.shape)
        return ga, gb


class Maximum(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return xp_of(a).maximum(a, b)

    @staticmethod
    def backward(ctx, g):
        # ties split the gradient evenly between the two inputs, as in PyTorch
        a, b = ctx.saved
        wa = (a > b) + 0.5 * (a == b)
        return (unbroadcast(g * wa.astype(g.dtype), a.shape),
                unbroadcast(g * (1 - wa).astype(g.dtype), b.shape))


class Minimum(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return xp_of(a).minimum(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        wa = (a < b) + 0.5 * (a == b)
        return (unbroadcast(g * wa.astype(g.dtype), a.shape),
                unbroadcast(g * (1 - wa).astype(g.dtype), b.shape))


# ---- unary ------------------------------------------------------------------------

class Neg(Function):
    @staticmethod
    def forward(ctx, x):
        return -x

    @staticmethod
    def backward(ctx, g):
        return (-g,)


class Abs(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return xp_of(x).abs(x)

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved
        return (g * xp_of(x).sign(x),)


class Exp(Function):
    @staticmethod
    def forward(ctx, x):
        y = xp_of(x).exp(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        y, = ctx.saved
        return (g * y,)


class Log(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return xp_of(x).log(x)

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved
        return (g / x,)


class Sqrt(Function):
    @staticmethod
    def forward(ctx, x):
        y = xp_of(x).sqrt(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        y, = ctx.saved
        return (g / (2 * y),)


class Rsqrt(Function):
    @staticmethod
    def forward(ctx, x):
        y = 1 / xp_of(x).sqrt(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        y, = ctx.saved
        return (-0.5 * g * y * y * y,)


class Sin(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return xp_of(x).sin(x)

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved
        return (g * xp_of(x).cos(x),)


class Cos(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return xp_of(x).cos(x)

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved
        return (-g * xp_of(x).sin(x),)


class Tanh(Function):
    @staticmethod
    def forward(ctx, x):
        y = xp_of(x).tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        y, = ctx.saved
        return (g * (1 - y * y),)


def _sigmoid(x):
    # exp of a non-positive number only, so large |x| never overflows
    xp = xp_of(x)
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype)


class Sigmoid(Function):
    @staticmethod
    def forward(ctx, x):
        y = _sigmoid(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        y, = ctx.saved
        return (g * y * (1 - y),)


class Relu(Function):
    @staticmethod
    def forward(ctx, x):
        y = xp_of(x).maximum(x, 0).astype(x.dtype, copy=False)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        y, = ctx.saved
        return (g * (y > 0),)


class Silu(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * _sigmoid(x)

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved
        s = _sigmoid(x)
        return (g * (s * (1 + x * (1 - s))),)


class Clamp(Function):
    @staticmethod
    def forward(ctx, x, lo=None, hi=None):
        ctx.save_for_backward(x)
        ctx.lo, ctx.hi = lo, hi
        return xp_of(x).clip(x, lo, hi).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        # the gradient passes where the input lies inside [lo, hi], bounds included
        x, = ctx.saved
        keep = True
        if ctx.lo is not None:
            keep = keep & (x >= ctx.lo)
        if ctx.hi is not None:
            keep = keep & (x <= ctx.hi)
        return (g * keep,)


class Where(Function):
    @staticmethod
    def forward(ctx, cond, a, b):
        ctx.save_for_backward(cond)
        ctx.shapes = (a.shape, b.shape)
        return xp_of(a).where(cond, a, b)

    @staticmethod
    def backward(ctx, g):
        cond, = ctx.saved
        sa, sb = ctx.shapes
        _, na, nb = ctx.needs_input_grad
        zero = g.dtype.type(0)
        return (None,
                unbroadcast(xp_of(g).where(cond, g, zero), sa) if na else None,
                unbroadcast(xp_of(g).where(cond, zero, g), sb) if nb else None)


class Cast(Function):
    @staticmethod
    def forward(ctx, x, dtype=None):
        ctx.in_dtype = x.dtype
        return x.astype(dtype)

    @staticmethod
    def backward(ctx, g):
        return (g.astype(ctx.in_dtype),)


