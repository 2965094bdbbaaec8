"""Scaled dot-product attention: the reference forward and backward.

This is the spec the C++ and Triton kernels are checked against, so it is
written for reading, not speed: it builds the whole (Tq x Tk) score matrix of
every head, which the fused kernels must never do.

Shapes: q (B, H, Tq, D), k and v (B, H, Tk, D), o (B, H, Tq, D), lse (B, H, Tq).

    S   = q @ k^T * scale + mask          (mask broadcast from (Bm, Hm, Tqm, Tk))
    S   = -inf where key j > query i       (only if is_causal; top-left aligned)
    P   = softmax(S) over keys             = exp(S - lse)
    o   = P @ v
    lse = log(sum_j exp(S_ij))             (saved for the backward)

A query row that may attend no key at all has lse = +inf and o = 0, so that
exp(S - lse) = 0 in the backward and all its gradients vanish instead of
turning into NaN.

Backward, with dO the gradient of o (the usual softmax-Jacobian identities):

    dv  = P^T @ dO
    dP  = dO @ v^T
    dS  = P * (dP - Di),  Di = rowsum(dO * o)   (= rowsum(P * dP))
    dq  = dS @ k * scale
    dk  = dS^T @ q * scale
"""
import numpy as np

from ..backend.device import xp_of


def _scores(xp, q, k, mask, is_causal, scale):
    """The scaled, masked scores S (B, H, Tq, Tk)."""
    s = (q @ xp.swapaxes(k, -1, -2)) * q.dtype.type(scale)
    if mask is not None:
        s = s + mask
    if is_causal:
        Tq, Tk = q.shape[2], k.shape[2]
        # Top-left aligned like PyTorch: query i sees keys 0..i, whatever Tk is.
        allowed = xp.tril(xp.ones((Tq, Tk), dtype=bool))
        s = xp.where(allowed, s, q.dtype.type(-np.inf))
    return s


def attention_forward(q, k, v, mask, is_causal, scale):
    """Returns (o, lse): o (B, H, Tq, D) and lse (B, H, Tq), both in q's dtype."""
    xp = xp_of(q)
    s = _scores(xp, q, k, mask, is_causal, scale)

    if s.shape[-1] == 0:  # no keys at all: every row attends nothing
        m = xp.full(s.shape[:-1] + (1,), -np.inf, dtype=s.dtype)
    else:
        m = s.max(axis=-1, keepdims=True)
    # A fully masked row has max -inf; shifting it by 0 instead keeps exp() at 0, not NaN.
    m = xp.where(m == -np.inf, s.dtype.type(0), m)
    p = xp.exp(s - m)
    l = p.sum(axis=-1, keepdims=True)
    attends = l > 0
    safe_l = xp.where(attends, l, s.dtype.type(1))
    o = xp.where(attends, (p / safe_l) @ v, s.dtype.type(0))
    lse = xp.where(attends, m + xp.log(safe_l), s.dtype.type(np.inf))[..., 0]
    return o, lse


def attention_backward(q, k, v, o, lse, do, mask, is_causal, scale):
    """Returns (dq, dk, dv), each in q's dtype and its input's shape."""
    xp = xp_of(q)
    s = _scores(xp, q, k, mask, is_causal, scale)
    # lse = +inf on rows that attend nothing, so their P (and every gradient) is 0.
    # P <= 1 exactly. The clamp matters in the fused kernels, whose recomputed scores may
    # round above the forward's; here they are the forward's own, so it changes nothing.
    p = xp.exp(xp.minimum(s - lse[..., None], 0))
    dv = xp.swapaxes(p, -1, -2) @ do
    dp = do @ xp.swapaxes(v, -1, -2)
    di = (do * o).sum(axis=-1, keepdims=True)
    ds = p * (dp - di)
    dq = (ds @ k) * q.dtype.type(scale)
    dk = (xp.swapaxes(ds, -1, -2) @ q) * q.dtype.type(scale)
    return dq, dk, dv
