"""Attention whose float32 scores overflow (|q.k| beyond 3.4e38), on every provider.

Every provider computes q.k in float32, which is +-inf there: the row looked like one
that attends no key (o = 0) and its backward was NaN. ops/fused.py redoes such a call in
float64 (with a one-time warning); the truth here is the float64 reference on the same
float32 numbers. Rows that a mask empties on purpose must keep the provider's fast path.
"""
import warnings

import numpy as np
import pytest

from tensorlite.backend import registry
from tensorlite.ops.fused import FusedAttention, FusedPackedSelfAttention
from tensorlite.reference.attention import attention_backward, attention_forward

from _fused_helpers import t
from _fused_helpers import each_provider_fixture  # noqa: F401 (the fixture each_provider)


def _truth(q, k, v, mask, causal, scale, do):
    wide = [None if a is None else a.astype(np.float64) for a in (q, k, v, mask, do)]
    o, lse = attention_forward(*wide[:4], causal, scale)
    return (o,) + attention_backward(*wide[:3], o, lse, wide[4], wide[3], causal, scale)


def _close(what, got, want):
    got = np.asarray(got)
    assert got.dtype == np.float32, what
    assert np.isfinite(got).all(), f"{what}: not finite"
    err = np.abs(got - want).max() / (np.abs(want).max() + np.finfo(np.float64).tiny)
    assert err <= 2e-5, f"{what}: relative error {err:.2e}"  # float32 rounding, amplified by exp


@pytest.mark.parametrize("scale", [1.0, 1e-40], ids=["one-hot", "moderate-scaled-scores"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_overflowing_scores_match_float64(rng, each_provider, scale, causal):
    """scale 1: the scores themselves overflow (the softmax is one-hot on the argmax);
    scale 1e-40: only the product q.k does, the scaled scores are O(1), so the softmax
    and its gradients are far from trivial (the C++ kernels scale q first, so they
    never overflow there)."""
    B, H, T, D = 1, 2, 5, 8
    q, k = ((rng.standard_normal((B, H, T, D)) * 1e20).astype(np.float32) for _ in range(2))
    v = rng.standard_normal((B, H, T, D)).astype(np.float32)
    mask = np.where(rng.random((B, 1, 1, T)) < 0.2, -np.inf, 0.0).astype(np.float32)
    mask[..., 0] = 0.0
    do = rng.standard_normal((B, H, T, D)).astype(np.float32)
    qt, kt, vt = (t(a, requires_grad=True) for a in (q, k, v))
    registry._warned.discard("attention-f64")
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        o = FusedAttention.apply(qt, kt, vt, t(mask), is_causal=causal, scale=scale)
    assert o.grad_fn.provider == each_provider
    if scale == 1.0:  # (a provider that scales q before the product may not need float64)
        assert any("recomputed in float64" in str(w.message) for w in said)
    (o * t(do)).sum().backward()
    want = _truth(q, k, v, mask, causal, scale, do)
    for what, got, w in zip(["o", "dq", "dk", "dv"], (o.detach(), qt.grad, kt.grad, vt.grad), want):
        _close(what, got, w)


def test_packed_self_attention_overflow(rng, each_provider):
    B, T, H, D = 1, 4, 2, 4
    C = H * D
    qkv = (rng.standard_normal((B, T, 3 * C)) * 1e20).astype(np.float32)
    qkv[..., 2 * C:] /= 1e20  # v of ordinary size
    dy = rng.standard_normal((B, T, C)).astype(np.float32)
    xt = t(qkv, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = FusedPackedSelfAttention.apply(xt, n_head=H, is_causal=True, scale=1e-40)
    (y * t(dy)).sum().backward()
    heads = lambda a: a.reshape(B, T, H, D).transpose(0, 2, 1, 3)
    merge = lambda a: a.transpose(0, 2, 1, 3).reshape(B, T, C)
    q, k, v = (heads(qkv[..., i * C:(i + 1) * C]) for i in range(3))
    o, dq, dk, dv = _truth(q, k, v, None, True, 1e-40, heads(dy))
    _close("y", y.detach(), merge(o))
    _close("dqkv", xt.grad, np.concatenate([merge(g) for g in (dq, dk, dv)], -1))


def test_rows_masked_on_purpose_keep_the_fast_path(rng, each_provider):
    """A row that attends no key has lse = +inf too; with inputs far from overflow it is
    the mask's doing: no warning, no float64, zeros as before."""
    B, H, T, D = 1, 1, 3, 4
    q, k, v = (rng.standard_normal((B, H, T, D)).astype(np.float32) for _ in range(3))
    mask = np.zeros((B, H, T, T), np.float32)
    mask[0, 0, 1] = -np.inf  # query 1 sees nothing
    qt = t(q, requires_grad=True)
    registry._warned.discard("attention-f64")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        o = FusedAttention.apply(qt, t(k), t(v), t(mask), is_causal=False, scale=0.5)
        o.sum().backward()
    assert o.grad_fn is not None and np.asarray(o.detach())[0, 0, 1].tolist() == [0.0] * D
    assert np.isfinite(np.asarray(qt.grad)).all()
    assert "attention-f64" not in registry._warned
