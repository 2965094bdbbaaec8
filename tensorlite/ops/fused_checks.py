"""The one place where the fused ops' arguments are checked (backend/registry.py has the
contract). The autograd Functions in ops/fused.py and the optimizers call these on the raw
arrays before any provider runs, so every provider sees only valid input and a user gets
one line naming the op, the argument, its value and what is allowed -- whichever provider
is in use."""
import math

import numpy as np

from ..backend.registry import DTYPES, dtype_name


def floats(op, provider, **arrays):
    """Every named array has a float dtype the provider computes in, and all share it:
    mixing would silently promote in NumPy while the kernels work in one dtype."""
    allowed = DTYPES[provider]
    first = None
    for name, a in arrays.items():
        if a is None:
            continue
        dt = a.dtype
        if dtype_name(dt) not in allowed:
            raise TypeError(f"{op}: {name} has dtype {dtype_name(dt)}; the {provider!r} kernels "
                            f"take {' or '.join(allowed)}")
        if first is None:
            first = (name, dt)
        elif dt != first[1]:
            raise TypeError(f"{op}: {name} has dtype {dt.name} but {first[0]} has "
                            f"{first[1].name}; all float inputs must share one dtype")


def has_last_dim(op, x):
    if x.ndim < 1:
        raise ValueError(f"{op}: expected an array with at least 1 dim, got shape {x.shape}")


def softmax(op, provider, x):
    floats(op, provider, x=x)
    has_last_dim(op, x)


def gelu(provider, x, approximate):
    floats("gelu", provider, x=x)
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


def layer_norm(provider, x, weight, bias, eps):
    op = "layer_norm"
    floats(op, provider, x=x, weight=weight, bias=bias)
    has_last_dim(op, x)
    C = x.shape[-1]
    if C == 0:
        raise ValueError(f"{op}: cannot normalise over an empty last dim, x has shape {x.shape}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and p.shape != (C,):
            raise ValueError(f"{op}: {name} has shape {p.shape}, expected ({C},) to match the "
                             f"last dim of x {x.shape}")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
        raise ValueError(f"{op}: eps must be a finite number >= 0, got {eps!r}")


def attention(provider, q, k, v, mask, scale):
    op = "scaled_dot_product_attention"
    floats(op, provider, q=q, k=k, v=v, mask=mask)
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(f"{op}: query, key, value must be 4-D (B, H, T, D), got "
                         f"{q.shape}, {k.shape}, {v.shape}")
    B, H, Tq, D = q.shape
    if k.shape[:2] != (B, H) or k.shape[3] != D or v.shape != k.shape:
        raise ValueError(f"{op}: expected key and value of shape ({B}, {H}, Tk, {D}) to match "
                         f"query {q.shape}, got key {k.shape}, value {v.shape}")
    if D == 0:
        raise ValueError(f"{op}: the head dim D must be at least 1, got query {q.shape}")
    if mask is not None:
        Tk = k.shape[2]
        if (mask.ndim != 4 or mask.shape[0] not in (1, B) or mask.shape[1] not in (1, H)
                or mask.shape[2] not in (1, Tq) or mask.shape[3] != Tk):
            raise ValueError(f"{op}: mask of shape {mask.shape} does not broadcast as "
                             f"(1|{B}, 1|{H}, 1|{Tq}, {Tk}) for query {q.shape}, key {k.shape}")
    if not math.isfinite(scale):
        raise ValueError(f"{op}: scale must be finite, got {scale}")


def cross_entropy(provider, logits, targets, ignore_index, label_smoothing):
    op = "cross_entropy"
    floats(op, provider, logits=logits)
    if logits.ndim != 2:
        raise ValueError(f"{op}: logits must be (N, V), got shape {logits.shape}")
    N, V = logits.shape
    if V == 0:
        raise ValueError(f"{op}: logits have no classes, shape {logits.shape}")
    if targets.shape != (N,):
        raise ValueError(f"{op}: targets must have shape ({N},) to match logits {logits.shape}, "
                         f"got {targets.shape}")
    if np.dtype(targets.dtype).name != "int64":
        raise TypeError(f"{op}: targets must be int64 class indices, got {targets.dtype}")
    bad = (targets != ignore_index) & ((targets < 0) | (targets >= V))
    if bool(bad.any()):
        raise IndexError(f"{op}: target {int(targets[bad][0])} is out of range for {V} classes "
                         f"(ignore_index={ignore_index})")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{op}: label_smoothing must be in [0, 1], got {label_smoothing}")


def adamw(provider, params, grads, exp_avgs, exp_avg_sqs, lr, beta1, beta2, eps, weight_decay,
          step):
    op = "adamw_step"
    n = len(params)
    if not (len(grads) == len(exp_avgs) == len(exp_avg_sqs) == n):
        raise ValueError(f"{op}: lists differ in length: params {n}, grads {len(grads)}, "
                         f"exp_avgs {len(exp_avgs)}, exp_avg_sqs {len(exp_avg_sqs)}")
    if not (isinstance(step, int) and step >= 1):
        raise ValueError(f"{op}: step is 1-based, got {step!r}")
    for name, x in (("lr", lr), ("beta1", beta1), ("beta2", beta2), ("eps", eps),
                    ("weight_decay", weight_decay)):
        if not math.isfinite(x):
            raise ValueError(f"{op}: {name} must be finite, got {x}")
    for i, (p, g, m, v) in enumerate(zip(params, grads, exp_avgs, exp_avg_sqs)):
        for name, a in (("params", p), ("grads", g), ("exp_avgs", m), ("exp_avg_sqs", v)):
            if not (hasattr(a, "dtype") and hasattr(a, "shape") and hasattr(a, "flags")):
                raise TypeError(f"{op}: {name}[{i}] must be an array, got {type(a).__name__}")
        floats(f"{op} (parameter {i})", provider, param=p, grad=g, exp_avg=m, exp_avg_sq=v)
        for name, a in (("grad", g), ("exp_avg", m), ("exp_avg_sq", v)):
            if a.shape != p.shape:
                raise ValueError(f"{op}: parameter {i} has shape {p.shape} but its {name} "
                                 f"has shape {a.shape}")
        for name, a in (("param", p), ("exp_avg", m), ("exp_avg_sq", v)):
            # updated in place: a strided view would leave part of the parameter stale
            if not a.flags.c_contiguous or not getattr(a.flags, "writeable", True):
                raise ValueError(f"{op}: parameter {i}'s {name} must be a contiguous, writeable "
                                 f"array (shape {a.shape})")
