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


class PackedSelfAttention(Function):
    """Self-attention from the packed projection qkv (B, T, 3C) -- q, k and v side by side,
    as one c_attn matmul makes them -- to y (B, T, C), heads already merged back.

    The same kernels as ScaledDotProductAttention, called on strided (B, H, T, D) views of
    qkv (the providers read any strides), so the split into q/k/v, the head reshapes and
    transposes cost no graph nodes and no copies; the backward writes dq, dk and dv
    straight into one packed gradient instead of three zero-padded ones that are summed."""

    @staticmethod
    def _heads(a, n_head):
        B, T, C3 = a.shape
        h = a.reshape(B, T, 3, n_head, C3 // (3 * n_head))
        return tuple(h[:, :, i].transpose(0, 2, 1, 3) for i in range(3))

    @staticmethod
    def forward(ctx, qkv, n_head=1, is_causal=True, scale=1.0):
        q, k, v = PackedSelfAttention._heads(qkv, n_head)
        o, lse = _provider(ctx).attention_forward(q, k, v, None, is_causal, scale)
        ctx.save_for_backward(qkv)
        ctx.o, ctx.lse, ctx.n_head, ctx.is_causal, ctx.scale = o, lse, n_head, is_causal, scale
        B, H, T, D = o.shape
        return o.transpose(0, 2, 1, 3).reshape(B, T, H * D)

    @staticmethod
    def backward(ctx, g):
        qkv, = ctx.saved
        q, k, v = PackedSelfAttention._heads(qkv, ctx.n_head)
        B, H, T, D = ctx.o.shape
        do = g.reshape(B, T, H, D).transpose(0, 2, 1, 3)
        grads = ctx.mod.attention_backward(q, k, v, ctx.o, ctx.lse, do, None, ctx.is_causal,
                                           ctx.scale)
        from ..backend.device import xp_of
        dqkv = xp_of(g).empty((B, T, 3, H, D), dtype=qkv.dtype)
        for i, d in enumerate(grads):
            dqkv[:, :, i] = d.transpose(0, 2, 1, 3)
        return (dqkv.reshape(qkv.shape),)
