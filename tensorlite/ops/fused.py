"""The fused ops as autograd Functions: each forward checks its arguments once
(fused_checks.py), hands the arrays to the provider in use (backend/registry.py) and keeps
what the backward needs; the backward calls the same provider's `<op>_backward`.

Shapes: B batch, H heads, T (Tq, Tk) sequence, D head dim, C channels, N rows, V classes.
"""
from ..autograd.function import Function
from ..backend.device import xp_of
from ..backend.registry import DTYPES, dtype_name, get_provider, load, warn_once
from . import fused_checks as check


def _provider(ctx):
    """The provider for this op, chosen once when the forward runs; the backward reuses it."""
    name, mod = get_provider(ctx.device.type if ctx.device is not None else "cpu")
    ctx.provider, ctx.mod = name, mod
    return name, mod


_HALF = ("float16", "bfloat16")


def _widen(ctx, name, *arrays):
    """float16/bfloat16 inputs of a provider that computes in float32/float64 only (numpy,
    cpp) are widened to float32: the op then accumulates in float32, as the Triton kernels do
    for half inputs, and _narrow rounds its results back to the input dtype. ctx.half holds
    that dtype (None when nothing was widened) so the backward does the same."""
    first = next((a for a in arrays if a is not None and hasattr(a, "dtype")), None)
    ctx.half = None
    if first is None or first.dtype.itemsize != 2 or dtype_name(first.dtype) not in _HALF \
            or dtype_name(first.dtype) in DTYPES[name]:
        return arrays
    ctx.half = first.dtype
    return tuple(a.astype("float32") if a is not None and getattr(a, "dtype", None) is not None
                 and dtype_name(a.dtype) in _HALF else a for a in arrays)


def _cast(dtype, arrays):
    """arrays in dtype (None: as they are); one array comes back bare, several as a tuple."""
    out = arrays if dtype is None else tuple(None if a is None else a.astype(dtype) for a in arrays)
    return out if len(out) > 1 else out[0]


def _narrow(ctx, *arrays):
    return _cast(ctx.half, arrays)


def _wide(ctx, a):
    """A gradient arriving in the half dtype, widened like the forward's inputs were."""
    return a if ctx.half is None or a is None else a.astype("float32")


_F32_MAX = 3.4028234663852886e38


def _attention(ctx, mod, q, k, v, mask, is_causal, scale):
    """The provider's attention forward, except when float32 scores overflow.

    A float32 score q.k * scale beyond 3.4e38 is +-inf in every provider: the row then
    looks like one that attends no key (lse = +inf, o = 0) and its backward is NaN. Such
    a call is redone in float64 by the reference (where no float32 product can overflow)
    and its backward stays there; ctx.f64 keeps the dtype to round back to. The test is
    the cheap one first (lse is B*H*Tq numbers) and the bound only when a row is empty,
    so that rows a mask empties on purpose keep their fast path."""
    o, lse = mod.attention_forward(q, k, v, mask, is_causal, scale)
    ctx.f64 = None
    if q.dtype.itemsize != 4 or bool((lse < float("inf")).all()):
        return q, k, v, mask, o, lse
    xp = xp_of(q)
    # max(1, scale): a provider may form q.k before scaling it, which overflows first
    bound = float(xp.abs(q).max()) * float(xp.abs(k).max()) * q.shape[-1] * max(1.0, abs(scale))
    if not _F32_MAX <= bound < float("inf"):  # emptied by the mask (or inf/nan inputs)
        return q, k, v, mask, o, lse
    warn_once("attention-f64", f"attention: float32 scores can overflow (max|q| * max|k| * D * "
              f"max(1, scale) = {bound:.3g} > 3.4e38); such calls are recomputed in float64 by the "
              "numpy reference, which is slower")
    ctx.f64, ctx.mod = q.dtype, load("numpy")
    q, k, v, mask = (None if a is None else a.astype("float64") for a in (q, k, v, mask))
    o, lse = ctx.mod.attention_forward(q, k, v, mask, is_causal, scale)
    return q, k, v, mask, o, lse


def _f32(ctx, *arrays):
    """Round the float64 results of an overflowing attention call back to its dtype."""
    return _cast(ctx.f64, arrays)


class FusedSoftmax(Function):
    """y = softmax(x) over the last dim."""

    @staticmethod
    def forward(ctx, x):
        name, mod = _provider(ctx)
        x, = _widen(ctx, name, x)
        check.softmax("softmax", name, x)
        y = mod.softmax_forward(x)
        ctx.save_for_backward(y)  # the backward needs only y: dx = y * (dy - sum(dy * y))
        return _narrow(ctx, y)

    @staticmethod
    def backward(ctx, g):
        y, = ctx.saved
        return (_narrow(ctx, ctx.mod.softmax_backward(y, _wide(ctx, g))),)


class FusedLogSoftmax(Function):
    """y = x - logsumexp(x) over the last dim."""

    @staticmethod
    def forward(ctx, x):
        name, mod = _provider(ctx)
        x, = _widen(ctx, name, x)
        check.softmax("log_softmax", name, x)
        y = mod.log_softmax_forward(x)
        ctx.save_for_backward(y)
        return _narrow(ctx, y)

    @staticmethod
    def backward(ctx, g):
        y, = ctx.saved
        return (_narrow(ctx, ctx.mod.log_softmax_backward(y, _wide(ctx, g))),)


class FusedGelu(Function):
    """y = x * Phi(x), exact (approximate="none") or with the tanh approximation."""

    @staticmethod
    def forward(ctx, x, approximate="none"):
        name, mod = _provider(ctx)
        x, = _widen(ctx, name, x)
        check.gelu(name, x, approximate)
        ctx.save_for_backward(x)
        ctx.approximate = approximate
        return _narrow(ctx, mod.gelu_forward(x, approximate))

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved
        return (_narrow(ctx, ctx.mod.gelu_backward(x, _wide(ctx, g), ctx.approximate)),)


class FusedLayerNorm(Function):
    """y = (x - mean) / sqrt(var + eps) * weight + bias over the last dim C."""

    @staticmethod
    def forward(ctx, x, weight=None, bias=None, eps=1e-5):
        name, mod = _provider(ctx)
        x, weight, bias = _widen(ctx, name, x, weight, bias)
        check.layer_norm(name, x, weight, bias, eps)
        y, mean, rstd = mod.layer_norm_forward(x, weight, bias, eps)  # mean, rstd: x.shape[:-1]
        ctx.save_for_backward(x, weight)
        ctx.mean, ctx.rstd = mean, rstd
        return _narrow(ctx, y)

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved
        dx, dw, db = _narrow(ctx, *ctx.mod.layer_norm_backward(_wide(ctx, g), x, weight, ctx.mean,
                                                               ctx.rstd))
        _, nw, nb = ctx.needs_input_grad
        return dx, dw if nw else None, db if nb else None


class FusedAttention(Function):
    """o = softmax(q k^T * scale + mask) v for q (B, H, Tq, D), k and v (B, H, Tk, D); the
    Tq x Tk scores are never stored. mask: additive, broadcastable (1|B, 1|H, 1|Tq, Tk)."""

    @staticmethod
    def forward(ctx, q, k, v, mask=None, is_causal=False, scale=1.0):
        name, mod = _provider(ctx)
        q, k, v, mask = _widen(ctx, name, q, k, v, mask)
        check.attention(name, q, k, v, mask, scale)
        q, k, v, mask, o, lse = _attention(ctx, mod, q, k, v, mask, is_causal, scale)
        ctx.save_for_backward(q, k, v, o)  # lse (B, H, Tq)
        ctx.lse, ctx.mask, ctx.is_causal, ctx.scale = lse, mask, is_causal, scale
        return _narrow(ctx, _f32(ctx, o))

    @staticmethod
    def backward(ctx, g):
        q, k, v, o = ctx.saved
        g = _wide(ctx, g) if ctx.f64 is None else g.astype("float64")
        grads = ctx.mod.attention_backward(q, k, v, o, ctx.lse, g, ctx.mask, ctx.is_causal,
                                           ctx.scale)
        dq, dk, dv = _narrow(ctx, *_f32(ctx, *grads))
        return dq, dk, dv, None


class FusedCrossEntropy(Function):
    """Per-row losses (N,) of logits (N, V) against int64 targets (N,); the reduction is
    applied outside (nn.functional.cross_entropy)."""

    @staticmethod
    def forward(ctx, logits, targets, ignore_index=-100, label_smoothing=0.0):
        name, mod = _provider(ctx)
        logits, = _widen(ctx, name, logits)
        check.cross_entropy(name, logits, targets, ignore_index, label_smoothing)
        loss, lse = mod.cross_entropy_forward(logits, targets, ignore_index, label_smoothing)
        ctx.save_for_backward(logits, targets)
        ctx.lse, ctx.ignore_index, ctx.label_smoothing = lse, ignore_index, label_smoothing
        return _narrow(ctx, loss)

    @staticmethod
    def backward(ctx, g):
        logits, targets = ctx.saved
        return (_narrow(ctx, ctx.mod.cross_entropy_backward(logits, targets, ctx.lse, _wide(ctx, g),
                                                            ctx.ignore_index, ctx.label_smoothing)),
                None)


class FusedPackedSelfAttention(Function):
    """The fast path of nn.MultiHeadAttention: self-attention from the packed projection
    qkv (B, T, 3C) -- q, k and v side by side, as one c_attn matmul makes them -- to
    y (B, T, C), heads already merged back.

    The same kernels as FusedAttention, called on strided (B, H, T, D) views of qkv (the
    providers read any strides), so the split into q/k/v, the head reshapes and transposes
    cost no graph nodes and no copies; the backward writes dq, dk and dv straight into one
    packed gradient instead of three zero-padded ones that are summed. The readable
    version of the same computation is MultiHeadAttention's general path."""

    @staticmethod
    def _heads(a, n_head):
        B, T, C3 = a.shape
        h = a.reshape(B, T, 3, n_head, C3 // (3 * n_head))         # (B, T, 3, H, D)
        return tuple(h[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # 3 x (B, H, T, D)

    @staticmethod
    def forward(ctx, qkv, mask=None, n_head=1, is_causal=True, scale=1.0):
        # mask: None or the kernels' additive float mask, broadcastable to (B, H, T, T): a
        # key-padding mask (B, 1, 1, T) for padded batches (BERT)
        name, mod = _provider(ctx)
        if qkv.ndim != 3 or qkv.shape[2] % (3 * n_head):
            raise ValueError(f"packed self-attention: qkv must be (B, T, 3 * C) with C divisible "
                             f"by n_head={n_head}, got shape {qkv.shape}")
        qkv, mask = _widen(ctx, name, qkv, mask)
        q, k, v = FusedPackedSelfAttention._heads(qkv, n_head)
        check.attention(name, q, k, v, mask, scale)
        _, _, _, mask, o, lse = _attention(ctx, mod, q, k, v, mask, is_causal, scale)  # o (B, H, T, D)
        ctx.save_for_backward(qkv if ctx.f64 is None else qkv.astype("float64"))
        ctx.o, ctx.lse, ctx.n_head, ctx.is_causal, ctx.scale = o, lse, n_head, is_causal, scale
        ctx.mask = mask
        B, H, T, D = o.shape
        return _narrow(ctx, _f32(ctx, o.transpose(0, 2, 1, 3).reshape(B, T, H * D)))  # (B, T, C)

    @staticmethod
    def backward(ctx, g):
        qkv, = ctx.saved
        q, k, v = FusedPackedSelfAttention._heads(qkv, ctx.n_head)
        B, H, T, D = ctx.o.shape
        g = _wide(ctx, g) if ctx.f64 is None else g.astype("float64")
        do = g.reshape(B, T, H, D).transpose(0, 2, 1, 3)                # (B, H, T, D)
        grads = ctx.mod.attention_backward(q, k, v, ctx.o, ctx.lse, do, ctx.mask, ctx.is_causal,
                                           ctx.scale)
        base = getattr(grads[0], "base", None)
        if (base is not None and all(d.base is base for d in grads)
                and base.shape == (B, T, 3, H, D) and base.flags.c_contiguous):
            dqkv = base  # the provider wrote all three into one packed array (cpp)
        else:
            dqkv = xp_of(g).empty((B, T, 3, H, D), dtype=qkv.dtype)
            for i, d in enumerate(grads):
                dqkv[:, :, i] = d.transpose(0, 2, 1, 3)
        return _narrow(ctx, _f32(ctx, dqkv.reshape(qkv.shape))), None


def adamw_step(device_type, params, grads, exp_avgs, exp_avg_sqs, *, lr, beta1, beta2, eps,
               weight_decay, step):
    """One fused AdamW update of many parameters in place (not an autograd op)."""
    name, mod = get_provider(device_type)
    check.adamw(name, params, grads, exp_avgs, exp_avg_sqs, lr, beta1, beta2, eps,
                weight_decay, step)
    mod.adamw_step(params, grads, exp_avgs, exp_avg_sqs, lr=lr, beta1=beta1, beta2=beta2,
                   eps=eps, weight_decay=weight_decay, step=step)
    return name

