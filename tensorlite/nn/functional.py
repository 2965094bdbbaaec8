"""tensorlite.nn.functional: the stateless building blocks of models (PyTorch's names).

softmax, log_softmax, layer_norm, gelu, cross_entropy and scaled_dot_product_attention
are fused ops: one kernel each, from the provider in use (docs/KERNELS.md)."""
import math

import numpy as np

from .. import _dtype as dt
from .._autocast import fast_dtype
from ..backend.device import xp_of
from ..backend.registry import warn_once
from ..ops import fused
from ..ops import indexing as I
from ..ops import linear as L
from ..ops import shape as S
from ..ops._util import shape_str
from ..tensor import Tensor


def _one_gemm(input, weight, bias):  # noqa: A002
    """Whether ops/linear.Linear takes these as they are: no autocast, one float dtype and
    one device for all of them."""
    return (fast_dtype(input.device.type) is None and input.dtype is weight.dtype
            and input.dtype in (dt.float32, dt.float64) and input.device == weight.device
            and (bias is None or (bias.dtype is input.dtype and bias.device == input.device)))


def linear(input, weight, bias=None):  # noqa: A002
    """y = x W^T + b with W stored (out_features, in_features), as in PyTorch."""
    if input.shape[-1] != weight.shape[-1]:
        raise ValueError(f"linear: input of shape {shape_str(input.shape)} has {input.shape[-1]} "
                         f"features but the weight of shape {shape_str(weight.shape)} expects "
                         f"{weight.shape[-1]}")
    if _one_gemm(input, weight, bias):
        return L.Linear.apply(input, weight, bias)  # one node, one GEMM (ops/linear.py)
    # autocast, mixed dtypes or devices: the matmul's own casts and checks, then the add
    y = input @ weight.T
    if bias is not None and bias.dtype is not y.dtype and fast_dtype(y.device.type) is y.dtype:
        bias = bias.to(y.dtype)  # under autocast the whole linear runs in the low dtype
    return y if bias is None else y + bias


def _linear_residual(input, weight, bias, residual):  # noqa: A002
    """residual + linear(input, weight, bias): a transformer's skip connection. On the CPU's
    one-GEMM path the residual is the GEMM's starting value (ops/linear.py), one pass and one
    graph node fewer than the add; anywhere else (other dtypes, devices, broadcasting), the
    plain add."""
    if (residual.shape == input.shape[:-1] + (weight.shape[0],)
            and input.shape[-1] == weight.shape[-1] and _one_gemm(input, weight, bias) and residual.dtype is input.dtype
            and residual.device == input.device):
        return L.Linear.apply(input, weight, bias, residual)
    return residual + linear(input, weight, bias)


def relu(input):  # noqa: A002
    return input.relu()


def gelu(input, approximate="none"):  # noqa: A002
    return input.gelu(approximate)


def silu(input):  # noqa: A002
    return input.silu()


def tanh(input):  # noqa: A002
    return input.tanh()


def sigmoid(input):  # noqa: A002
    return input.sigmoid()


def softmax(input, dim=-1):  # noqa: A002
    return input.softmax(dim)


def log_softmax(input, dim=-1):  # noqa: A002
    return input.log_softmax(dim)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):  # noqa: A002
    ns = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if input.shape[input.ndim - len(ns):] != ns:
        raise ValueError(f"layer_norm: normalized_shape {ns} does not match the last dims of the "
                         f"input's shape {shape_str(input.shape)}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and p.shape != ns:  # before flattening, while ns is still readable
            raise ValueError(f"layer_norm: {name} has shape {shape_str(p.shape)}, expected {ns}")
    x = input if input.dtype.is_floating_point else input.float()
    if len(ns) != 1:  # the kernels normalise over one last dim: flatten the normalised dims
        n = int(np.prod(ns))
        y = layer_norm(x.reshape(x.shape[:x.ndim - len(ns)] + (n,)), n,
                       None if weight is None else weight.reshape(n),
                       None if bias is None else bias.reshape(n), eps)
        return y.reshape(input.shape)
    return fused.FusedLayerNorm.apply(x, weight, bias, eps=eps)


def rms_norm(input, normalized_shape, weight=None, eps=None):  # noqa: A002
    """x / sqrt(mean(x^2 over the normalized (last) dims) + eps) * weight. eps=None is the
    machine epsilon of the input's dtype, as in PyTorch."""
    ns = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if not ns or input.shape[input.ndim - len(ns):] != ns:
        raise ValueError(f"rms_norm: normalized_shape {ns} does not match the last dims of the "
                         f"input's shape {shape_str(input.shape)}")
    if weight is not None and weight.shape != ns:
        raise ValueError(f"rms_norm: weight has shape {shape_str(weight.shape)}, expected {ns}")
    x = input if input.dtype.is_floating_point else input.float()
    if eps is None:
        eps = float(np.finfo(x.dtype.np).eps)
    dims = tuple(range(x.ndim - len(ns), x.ndim))
    y = x * ((x * x).mean(dims, keepdim=True) + eps).rsqrt()
    return y if weight is None else y * weight


def normalize(input, p=2.0, dim=1, eps=1e-12):  # noqa: A002
    """input / max(||input||_p over dim, eps): unit vectors along dim, zeros kept zeros."""
    return input / input.norm(p, dim, keepdim=True).clamp(min=eps)


def embedding(input, weight):  # noqa: A002
    """weight[input] for an integer tensor of any shape; gradients add into the rows used."""
    if input.dtype not in (dt.int64, dt.int32):
        raise TypeError(f"embedding: indices must be an integer tensor, got {input.dtype}")
    n = weight.shape[0]
    a = input._data
    if a.size and (int(a.max()) >= n or int(a.min()) < 0):
        bad = int(a.max()) if int(a.max()) >= n else int(a.min())
        raise IndexError(f"embedding: index {bad} is out of range for a table of {n} rows")
    return I.Embedding.apply(weight, input)


def dropout(input, p=0.5, training=True, generator=None):  # noqa: A002
    if not 0 <= p <= 1:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0:
        return input
    if p == 1:
        return input * 0
    from ..random import _draw
    keep = _draw("uniform", input.shape, dt.float32, input.device, generator) >= p
    scale = xp_of(input._data).asarray(keep / (1 - p), dtype=input._data.dtype)
    return input * Tensor._make(scale, input.device)


def pad(input, pad, mode="constant", value=0.0):  # noqa: A002
    if mode != "constant":
        raise NotImplementedError(f"pad: mode {mode!r} is not supported (only 'constant')")
    if len(pad) % 2 or len(pad) // 2 > input.ndim:
        raise ValueError(f"pad: pad {tuple(pad)} must have an even length of at most "
                         f"2 * ndim = {2 * input.ndim}")
    return S.Pad.apply(input, pad=tuple(int(p) for p in pad), value=value)


def one_hot(tensor, num_classes=-1):
    if tensor.dtype is not dt.int64:
        raise TypeError(f"one_hot: expected an int64 tensor, got {tensor.dtype}")
    a = tensor._data
    n = int(a.max()) + 1 if num_classes == -1 else num_classes
    if a.size and (int(a.min()) < 0 or int(a.max()) >= n):
        raise IndexError(f"one_hot: class values must be in [0, {n}), got "
                         f"[{int(a.min())}, {int(a.max())}]")
    xp = xp_of(a)
    return Tensor._make((a[..., None] == xp.arange(n)).astype(np.int64), tensor.device)


def cross_entropy(input, target, ignore_index=-100, reduction="mean", label_smoothing=0.0):  # noqa: A002
    """Fused log-softmax + negative log-likelihood. input: (N, C) logits (or (C,), or
    (N, C, d1, ...) with the class dim second, as in PyTorch); target: class indices."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if target.dtype not in (dt.int64, dt.int32):
        raise TypeError(f"cross_entropy: target must hold class indices (int64), got {target.dtype}")
    logits, tgt = input, target
    if input.ndim == 1:
        logits, tgt = input.unsqueeze(0), target.reshape(1)
    elif input.ndim > 2:
        order = (0,) + tuple(range(2, input.ndim)) + (1,)
        logits = input.permute(*order).reshape(-1, input.shape[1])
        tgt = target.reshape(-1)
    expect = (input.shape[0],) + input.shape[2:] if input.ndim >= 2 else ()
    if target.shape != expect:
        raise ValueError(f"cross_entropy: input of shape {shape_str(input.shape)} needs a target of "
                         f"shape {shape_str(expect)}, got {shape_str(target.shape)}")
    if tgt.dtype is not dt.int64:
        tgt = tgt.long()
    t = tgt._data
    x = logits if logits.dtype.is_floating_point else logits.float()
    if x.dtype.itemsize == 2 and fast_dtype(x.device.type) is not None:
        x = x.float()  # autocast computes the loss in float32, as PyTorch's does
    losses = fused.FusedCrossEntropy.apply(x, tgt, ignore_index=ignore_index, label_smoothing=label_smoothing)
    if reduction == "none":
        return losses.reshape(target.shape)
    if reduction == "sum":
        return losses.sum()
    count = int((t != ignore_index).sum())
    # all targets ignored: PyTorch returns nan (0/0); keep that rather than invent a value
    return losses.sum() / count if count else losses.sum() * float("nan")


def nll_loss(input, target, ignore_index=-100, reduction="mean"):  # noqa: A002
    """input: (N, C) log-probabilities; target: (N,) class indices."""
    t = target._data
    keep = t != ignore_index
    safe = Tensor._make(xp_of(t).where(keep, t, 0)[:, None], target.device)
    picked = -input.gather(1, safe).squeeze(1) * Tensor._make(keep.astype(input._data.dtype), input.device)
    if reduction == "none":
        return picked
    if reduction == "sum":
        return picked.sum()
    return picked.sum() / int(keep.sum())


def mse_loss(input, target, reduction="mean"):  # noqa: A002
    d = (input - target) ** 2
    return d.mean() if reduction == "mean" else d.sum() if reduction == "sum" else d


def _attention_mask(attn_mask, q, B, H, Tq, Tk):
    """User mask -> the kernels' additive float mask of shape (Bm, Hm, Tqm, Tk)."""
    if attn_mask is None:
        return None
    m = attn_mask._data if isinstance(attn_mask, Tensor) else attn_mask
    xp = xp_of(q._data)
    if m.ndim > 4 or m.ndim == 0:
        raise ValueError(f"scaled_dot_product_attention: attn_mask must have 1 to 4 dims, got shape "
                         f"{shape_str(m.shape)}")
    m = m.reshape((1,) * (4 - m.ndim) + tuple(m.shape))
    if m.shape[3] == 1 and Tk != 1:  # the kernels broadcast every dim but the key dim
        m = xp.broadcast_to(m, m.shape[:3] + (Tk,))  # (the fused op checks the other dims)
    if m.dtype == np.bool_:  # True = attend, as in PyTorch
        return xp.where(m, 0.0, -np.inf).astype(q._data.dtype)
    return xp.ascontiguousarray(m, dtype=q._data.dtype)


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None):
    """softmax(q k^T * scale + mask) v over (B, H, T, D) tensors, as one fused kernel that
    never stores the T x T attention matrix. A query row that may attend no key at all gives
    zeros (not NaN). dropout_p > 0 uses the unfused composition (with a warning, once)."""
    q, k, v = query, key, value
    if q.ndim != 4 or k.ndim != 4:  # the fused op checks the rest; the mask needs these dims
        raise ValueError(f"scaled_dot_product_attention: expected 4-D (B, H, T, D) query, key, "
                         f"value; got {shape_str(q.shape)}, {shape_str(k.shape)}, {shape_str(v.shape)}")
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    if scale is None:
        scale = 1.0 / math.sqrt(D) if D > 0 else 1.0  # D = 0 is refused by the fused op
    mask = _attention_mask(attn_mask, q, B, H, Tq, Tk)
    if dropout_p > 0:
        warn_once("sdpa_dropout", "scaled_dot_product_attention: dropout_p > 0 runs the unfused "
                   "path (materialises T x T attention)")
        p = attention_probs(q, k, mask, is_causal, scale)
        return dropout(p, dropout_p) @ v
    return fused.FusedAttention.apply(q, k, v, mask, is_causal=bool(is_causal), scale=float(scale))


def attention_probs(q, k, mask=None, is_causal=False, scale=None):
    """The attention probabilities softmax(q k^T * scale + mask), materialised (B, H, Tq, Tk).
    The fused kernel never stores these; this recomputes them (for dropout and inspection)."""
    Tq, Tk = q.shape[2], k.shape[2]
    scale = 1.0 / math.sqrt(q.shape[3]) if scale is None else scale
    s = (q @ k.transpose(-2, -1)) * scale
    if mask is not None:
        m = mask._data if isinstance(mask, Tensor) else mask
        if m.dtype == np.bool_:
            m = xp_of(m).where(m, 0.0, -np.inf)
        s = s + Tensor._make(xp_of(s._data).asarray(m, dtype=s._data.dtype), s.device)
    if is_causal:
        xp = xp_of(s._data)
        allowed = Tensor._make(xp.tril(xp.ones((Tq, Tk), dtype=bool)), s.device)
        s = s.masked_fill(~allowed, float("-inf"))
    # rows with nothing to attend: softmax of all -inf would be nan; make them zeros instead
    dead = s.amax(-1, keepdim=True).detach() == float("-inf")
    s = s.masked_fill(dead.expand(s.shape), 0.0)
    p = s.softmax(-1)
    return p.masked_fill(dead.expand(p.shape), 0.0)


__all__ = ["linear", "relu", "gelu", "silu", "tanh", "sigmoid", "softmax", "log_softmax",
           "layer_norm", "rms_norm", "normalize", "embedding", "dropout", "pad", "one_hot", "cross_entropy", "nll_loss",
           "mse_loss", "scaled_dot_product_attention", "attention_probs"]
