"""The fused ops: autograd Functions whose forward and backward are handed to a provider
(numpy reference, C++ or Triton; see docs/KERNELS.md). The provider is chosen when the
forward runs and the backward uses the same one."""
from ..autograd.function import Function
from ..backend.providers import get_provider


def _provider(ctx):
    name, mod = get_provider(ctx.device.type if ctx.device is not None else "cpu")
    ctx.provider, ctx.mod = name, mod
    return mod


class Softmax(Function):
    @staticmethod
    def forward(ctx, x):
        y = _provider(ctx).softmax_forward(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        y, = ctx.saved
        return (ctx.mod.softmax_backward(y, g),)


class LogSoftmax(Function):
    @staticmethod
    def forward(ctx, x):
        y = _provider(ctx).log_softmax_forward(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        y, = ctx.saved
        return (ctx.mod.log_softmax_backward(y, g),)


class Gelu(Function):
    @staticmethod
    def forward(ctx, x, approximate="none"):
        ctx.save_for_backward(x)
        ctx.approximate = approximate
        return _provider(ctx).gelu_forward(x, approximate)

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved
        return (ctx.mod.gelu_backward(x, g, ctx.approximate),)


class LayerNorm(Function):
    @staticmethod
    def forward(ctx, x, weight=None, bias=None, eps=1e-5):
        y, mean, rstd = _provider(ctx).layer_norm_forward(x, weight, bias, eps)
        ctx.save_for_backward(x, weight)
        ctx.mean, ctx.rstd = mean, rstd
        return y

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved
        dx, dw, db = ctx.mod.layer_norm_backward(g, x, weight, ctx.mean, ctx.rstd)
        _, nw, nb = ctx.needs_input_grad
        return dx, dw if nw else None, db if nb else None


class ScaledDotProductAttention(Function):
    @staticmethod
    def forward(ctx, q, k, v, mask=None, is_causal=False, scale=1.0):
        o, lse = _provider(ctx).attention_forward(q, k, v, mask, is_causal, scale)
        ctx.save_for_backward(q, k, v, o)
        ctx.lse, ctx.mask, ctx.is_causal, ctx.scale = lse, mask, is_causal, scale
        return o

    @staticmethod
    def backward(ctx, g):
        q, k, v, o = ctx.saved
        dq, dk, dv = ctx.mod.attention_backward(q, k, v, o, ctx.lse, g, ctx.mask,
                                                ctx.is_causal, ctx.scale)
        return dq, dk, dv, None


class CrossEntropy(Function):
    """Per-row losses (N,) of logits (N, V); the reduction is applied outside."""

    @staticmethod
    def forward(ctx, logits, targets, ignore_index=-100, label_smoothing=0.0):
        loss, lse = _provider(ctx).cross_entropy_forward(logits, targets, ignore_index,
                                                         label_smoothing)
        ctx.save_for_backward(logits, targets)
        ctx.lse, ctx.ignore_index, ctx.label_smoothing = lse, ignore_index, label_smoothing
        return loss

    @staticmethod
    def backward(ctx, g):
        logits, targets = ctx.saved
        return (ctx.mod.cross_entropy_backward(logits, targets, ctx.lse, g, ctx.ignore_index,
                                               ctx.label_smoothing), None)
