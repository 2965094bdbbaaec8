"""Scaled dot-product attention, every provider (tests/_fused_helpers.py).

The reference is checked against central finite differences (float64), an independent
loop-per-query implementation and, when torch is importable, torch's
scaled_dot_product_attention. "cpp" and "triton" must match the reference on awkward
shapes (T not a multiple of a tile, Tq != Tk under causality, D in {1, 8, 16, 17, 24, 32,
64, 80}), every broadcast form of the mask, fully masked rows, strided views and empty
dims: the C++ kernels to ~1e-10 (float64) / ~1e-5 (float32) elementwise, on every
instruction-set variant; the Triton kernels by FlashAttention's rule in float32 (at most
twice the error of the plain float32 reference), to 1e-12 in float64, with forced tile
sizes, and in float16. Then the op boundary's messages under every provider, and the
C++ extension's own guards. (Thread counts: tests/test_cpp_runtime.py.)
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorlite.nn import functional as F
from tensorlite.ops.fused import FusedAttention, FusedPackedSelfAttention
from tensorlite.reference.attention import attention_backward, attention_forward

from _fused_helpers import (assert_close as assert_within, assert_defines, cases, dtype_message,
                            load, needs_cpp, needs_triton, numeric_grad, providers, rel_err, t)
from _fused_helpers import each_provider_fixture  # noqa: F401 (the fixture each_provider)

NAMES = ["o", "lse", "dq", "dk", "dv"]


# ---------------------------------------------------------------- helpers

def make_inputs(rng, B, H, Tq, Tk, D, dtype=np.float64):
    q = rng.standard_normal((B, H, Tq, D)).astype(dtype)
    k = rng.standard_normal((B, H, Tk, D)).astype(dtype)
    v = rng.standard_normal((B, H, Tk, D)).astype(dtype)
    return q, k, v


def make_mask(rng, kind, B, H, Tq, Tk, dtype=np.float64):
    """Additive masks of every broadcast form the contract allows."""
    if kind is None:
        return None
    if kind == "pad":  # key padding; batch 0 keeps 2 keys, the last batch keeps none
        m = np.zeros((B, 1, 1, Tk), dtype)
        m[0, ..., 2:] = -np.inf
        m[-1] = -np.inf
        return m
    if kind == "full":  # arbitrary additive values plus scattered -inf
        m = rng.standard_normal((B, H, Tq, Tk))
        m[rng.random(m.shape) < 0.2] = -np.inf
        return m.astype(dtype)
    if kind == "shared":  # one (Tq, Tk) mask for every batch and head
        return rng.standard_normal((1, 1, Tq, Tk)).astype(dtype)
    if kind == "head":  # per head, same for every query
        return rng.standard_normal((1, H, 1, Tk)).astype(dtype)
    raise ValueError(kind)


def naive_attention(q, k, v, mask, is_causal, scale):
    """One query at a time with Python loops: independent of the vectorised reference."""
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    o = np.zeros((B, H, Tq, D))
    lse = np.zeros((B, H, Tq))
    for b in range(B):
        for h in range(H):
            for i in range(Tq):
                scores = []
                for j in range(Tk):
                    s = float(np.dot(q[b, h, i], k[b, h, j])) * scale
                    if mask is not None:
                        s += float(mask[min(b, mask.shape[0] - 1), min(h, mask.shape[1] - 1),
                                        min(i, mask.shape[2] - 1), j])
                    if is_causal and j > i:
                        s = -math.inf
                    scores.append(s)
                top = max(scores, default=-math.inf)
                if top == -math.inf:
                    lse[b, h, i] = math.inf  # nothing to attend: o stays 0
                    continue
                w = [math.exp(s - top) for s in scores]
                total = sum(w)
                o[b, h, i] = sum(wj * v[b, h, j] for j, wj in enumerate(w)) / total
                lse[b, h, i] = top + math.log(total)
    return o, lse


def assert_close(got, want, dtype, what=""):
    """Elementwise, with an absolute floor relative to the array's scale; +-inf must match."""
    rtol = 1e-10 if dtype == np.float64 else 1e-5
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    inf = np.isinf(want)
    np.testing.assert_array_equal(got[inf], want[inf], err_msg=f"{what}: inf positions")
    assert not np.isnan(got).any(), f"{what}: NaN"
    fin = ~inf
    floor = rtol * max(float(np.abs(want[fin]).max(initial=0.0)), 1.0)
    np.testing.assert_allclose(got[fin], want[fin], rtol=rtol, atol=floor, err_msg=what)


def reference_all(q, k, v, mask, causal, scale, do, dtype=np.float64):
    """Reference forward + backward, computed in dtype on the given inputs."""
    f = lambda a: None if a is None else np.asarray(a, dtype)  # noqa: E731
    o, lse = attention_forward(f(q), f(k), f(v), f(mask), causal, scale)
    grads = attention_backward(f(q), f(k), f(v), o, lse, f(do), f(mask), causal, scale)
    return (o, lse) + tuple(grads)


def provider_all(provider, q, k, v, mask, causal, scale, do, blocks=None):
    """Forward + backward of a provider; blocks = (BLOCK_M, BLOCK_N) forces Triton's tiles."""
    if blocks is not None:
        from tensorlite.kernels import attention as KA
        o, lse = KA._fwd(q, k, v, mask, causal, scale, *blocks)
        return (o, lse) + tuple(KA._bwd(q, k, v, o, lse, do, mask, causal, scale, *blocks))
    mod = load(provider)
    o, lse = mod.attention_forward(q, k, v, mask, causal, scale)
    return (o, lse) + tuple(mod.attention_backward(q, k, v, o, lse, do, mask, causal, scale))


def assert_float32_error_within_twice_the_references(ours, q, k, v, mask, causal, scale, do):
    """The FlashAttention paper's rule: the fused float32 kernel may be at most twice as far
    from the float64 result as the plain float32 computation of the reference is (plus a
    floor of ~8 float32 ulps of the largest value, where both errors are a few ulps)."""
    exact = reference_all(q, k, v, mask, causal, scale, do)
    plain = reference_all(q, k, v, mask, causal, scale, do, np.float32)
    for name, a, p, x in zip(NAMES, ours, plain, exact):
        assert a.dtype == p.dtype and a.shape == p.shape, (name, a.dtype, a.shape)
        fin = np.isfinite(x)
        np.testing.assert_array_equal(np.isfinite(a), fin, err_msg=name)
        err_ours = np.abs(a[fin] - x[fin]).max(initial=0.0)
        err_plain = np.abs(p[fin] - x[fin]).max(initial=0.0)
        floor = 1e-6 * max(float(np.abs(x[fin]).max(initial=0.0)), 1.0)
        assert err_ours <= 2 * err_plain + floor, (name, err_ours, err_plain)


def assert_flash_rule(ours, ref32, ref64, atol=1e-6):
    """FlashAttention's rule, relative to the largest value: error vs float64 <= 2 x the
    float32 reference's error + atol."""
    for name, o, r32, r64 in zip(NAMES, ours, ref32, ref64):
        assert o.dtype == r32.dtype and o.shape == r32.shape, (name, o.dtype, o.shape)
        np.testing.assert_array_equal(np.isfinite(o), np.isfinite(r64), err_msg=name)
        e, e32 = rel_err(o, r64), rel_err(r32, r64)
        assert e <= 2 * e32 + atol, f"{name}: error {e:.3g} vs fp32 reference {e32:.3g}"


def check_provider(provider, got, q, k, v, mask, causal, scale, do):
    """A provider's (o, lse, dq, dk, dv) against the reference on the same inputs, to the
    tolerance the provider was written to: C++ elementwise (assert_close) and C-contiguous;
    Triton by FlashAttention's rule in float32, to 1e-12 of the largest value in float64."""
    dtype = q.dtype.type
    exact = reference_all(q, k, v, mask, causal, scale, do)
    if provider == "triton" and dtype == np.float32:
        assert_flash_rule(got, reference_all(q, k, v, mask, causal, scale, do, np.float32), exact)
        return
    for name, g, w in zip(NAMES, got, exact):
        assert g.dtype == dtype, (name, g.dtype)
        if provider == "triton":
            assert_within(g, w, 1e-12, name)
        else:
            assert g.flags.c_contiguous or (name == "o" and _in_q_layout(g, q)), name
            assert_close(g, w, dtype, name)


def _in_q_layout(o, q):
    """o as the cpp forward returns it for a q that is a (B, T, H, D) array seen as
    (B, H, T, D) (docs/KERNELS.md): a C-contiguous (B, T, H, D) array, transposed."""
    _, H, T, _ = q.shape
    return (H > 1 and T > 1 and q.strides[1] < q.strides[2]
            and o.transpose(0, 2, 1, 3).flags.c_contiguous)


def run_case(rng, provider, B, H, Tq, Tk, D, causal, mask_kind, dtype, scale=None, blocks=None):
    q, k, v = make_inputs(rng, B, H, Tq, Tk, D, dtype)
    mask = make_mask(rng, mask_kind, B, H, Tq, Tk, dtype)
    do = rng.standard_normal((B, H, Tq, D)).astype(dtype)
    scale = 1 / math.sqrt(max(D, 1)) if scale is None else scale
    got = provider_all(provider, q, k, v, mask, causal, scale, do, blocks)
    check_provider(provider, got, q, k, v, mask, causal, scale, do)
    return got


# ---------------------------------------------------------------- the reference

@pytest.mark.parametrize("causal,mask_kind,Tq,Tk", [
    (False, None, 4, 5), (True, None, 5, 3), (True, "full", 3, 6), (False, "pad", 4, 4),
    (True, "shared", 4, 4), (False, "head", 2, 5),
])
def test_reference_matches_naive_loops(rng, causal, mask_kind, Tq, Tk):
    q, k, v = make_inputs(rng, 2, 2, Tq, Tk, 3)
    mask = make_mask(rng, mask_kind, 2, 2, Tq, Tk)
    o, lse = attention_forward(q, k, v, mask, causal, 0.6)
    o_n, lse_n = naive_attention(q, k, v, mask, causal, 0.6)
    np.testing.assert_allclose(o, o_n, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lse, lse_n, rtol=1e-12, atol=1e-12)  # inf == inf passes


@pytest.mark.parametrize("causal,mask_kind", [(False, None), (True, None), (True, "full"),
                                              (False, "pad"), (True, "shared")])
def test_reference_backward_matches_finite_differences(rng, causal, mask_kind):
    B, H, Tq, Tk, D = 2, 1, 3, 4, 2
    q, k, v = make_inputs(rng, B, H, Tq, Tk, D)
    mask = make_mask(rng, mask_kind, B, H, Tq, Tk)
    w = rng.standard_normal((B, H, Tq, D))  # loss = sum(o * w), so do = w
    scale = 0.8

    def loss():
        return float((attention_forward(q, k, v, mask, causal, scale)[0] * w).sum())

    o, lse = attention_forward(q, k, v, mask, causal, scale)
    grads = attention_backward(q, k, v, o, lse, w, mask, causal, scale)
    for x, g in zip((q, k, v), grads):
        np.testing.assert_allclose(g, numeric_grad(loss, x, h=1e-6), rtol=1e-6, atol=1e-8)


def test_reference_fully_masked_rows_are_zero_not_nan(rng):
    q, k, v = make_inputs(rng, 2, 1, 3, 4, 2)
    mask = make_mask(rng, "pad", 2, 1, 3, 4)  # batch 1 has no key at all
    o, lse = attention_forward(q, k, v, mask, False, 1.0)
    assert np.all(o[1] == 0) and np.all(np.isposinf(lse[1]))
    dq, dk, dv = attention_backward(q, k, v, o, lse, np.ones_like(o), mask, False, 1.0)
    for g in (dq, dk, dv):
        assert np.all(np.isfinite(g)) and np.all(g[1] == 0)


def test_reference_dtypes(rng):
    q, k, v = make_inputs(rng, 1, 2, 3, 4, 5, np.float32)
    o, lse = attention_forward(q, k, v, None, True, 0.5)
    assert o.dtype == np.float32 and lse.dtype == np.float32
    dq, dk, dv = attention_backward(q, k, v, o, lse, o, None, True, 0.5)
    assert dq.dtype == dk.dtype == dv.dtype == np.float32
    o64, lse64 = attention_forward(*(a.astype(np.float64) for a in (q, k, v)), None, True, 0.5)
    assert lse64.dtype == np.float64


@pytest.mark.parametrize("causal,mask_kind,Tq,Tk", [
    (True, None, 5, 5), (True, None, 6, 3), (False, "full", 4, 7), (True, "shared", 5, 8),
])
def test_reference_matches_torch(rng, causal, mask_kind, Tq, Tk):
    torch = pytest.importorskip("torch")
    TF = torch.nn.functional
    q, k, v = make_inputs(rng, 2, 3, Tq, Tk, 4)
    mask = make_mask(rng, mask_kind, 2, 3, Tq, Tk)
    if mask_kind == "full":  # torch gives NaN on rows with nothing to attend
        mask[..., 0] = 0.0
    do = rng.standard_normal(q.shape)
    o, lse = attention_forward(q, k, v, mask, causal, 0.7)
    dq, dk, dv = attention_backward(q, k, v, o, lse, do, mask, causal, 0.7)

    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    tmask = None if mask is None else torch.tensor(mask)
    if causal:  # torch refuses attn_mask together with is_causal: fold causality into the mask
        tri = torch.full((Tq, Tk), -math.inf, dtype=torch.float64).triu(1)
        tmask = tri if tmask is None else tmask + tri
    to = TF.scaled_dot_product_attention(tq, tk, tv, attn_mask=tmask, scale=0.7)
    to.backward(torch.tensor(do))
    for ours, theirs in [(o, to), (dq, tq.grad), (dk, tk.grad), (dv, tv.grad)]:
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- providers vs the reference

@pytest.mark.parametrize("provider", providers())
def test_every_provider_defines_the_op(provider):
    assert_defines(provider, "attention_forward", "attention_backward")



AWKWARD = [
    # B, H, Tq, Tk, D, causal, mask
    (2, 3, 70, 70, 64, True, None),      # T not a multiple of the 64 tile
    (1, 2, 130, 130, 32, False, None),   # several tiles, no causality
    (2, 1, 1, 1, 8, True, None),         # T = 1
    (1, 2, 1, 77, 16, False, "pad"),     # one query (decoding), key padding
    (2, 2, 9, 13, 1, True, None),        # D = 1
    (1, 1, 67, 67, 17, True, "full"),    # odd D, scattered -inf
    (1, 2, 40, 100, 24, True, None),     # Tq < Tk, causal
    (1, 2, 100, 40, 24, True, None),     # Tq > Tk, causal: late rows see every key
    (3, 2, 65, 66, 8, False, "pad"),     # a fully masked batch
    (2, 2, 33, 70, 80, True, "shared"),  # (1, 1, Tq, Tk) mask, D > one register tile
    (2, 3, 20, 129, 16, False, "head"),  # (1, H, 1, Tk) mask
]

# Small enough for Triton's interpreter; (BLOCK_M, BLOCK_N) forced so that T has tails
TILED = [
    ((1, 2, 37, 37, 16, False, None), (16, 16)),   # T not a multiple of the block
    ((1, 2, 37, 37, 16, True, None), (16, 16)),
    ((2, 1, 20, 45, 32, True, None), (16, 16)),    # causal, Tq < Tk
    ((1, 2, 45, 20, 32, True, None), (16, 32)),    # causal, Tq > Tk, BLOCK_M != BLOCK_N
    ((1, 1, 50, 50, 32, True, None), (32, 16)),
    ((1, 1, 40, 24, 64, False, None), None),
    ((1, 1, 19, 19, 24, True, None), None),        # D padded to 32
]

# (provider, shape + causal + mask, dtype, blocks)
MATCH = (cases("cpp", *[(c, dt, None) for c in AWKWARD + [c for c, _ in TILED]
                        for dt in (np.float64, np.float32)])
         + cases("triton", *[(c, np.float32, b) for c, b in TILED]))


@pytest.mark.parametrize("provider,case,dtype,blocks", MATCH)
def test_matches_reference(rng, provider, case, dtype, blocks):
    run_case(rng, provider, *case, dtype, blocks=blocks)


@pytest.mark.parametrize("mshape", ["1H", "B1", "11"])
@pytest.mark.parametrize("provider", providers("cpp", "triton"))
def test_broadcast_mask_and_fully_masked_rows(rng, provider, mshape):
    b, h, tq, tk, d = 2, 2, 21, 27, 16
    shape = {"1H": (1, h, tq, tk), "B1": (b, 1, 1, tk), "11": (1, 1, tq, tk)}[mshape]
    mask = np.where(rng.random(shape) < 0.3, -np.inf, rng.standard_normal(shape))
    mask = mask.astype(np.float32)
    if shape[2] == tq:
        mask[..., 4, :] = -np.inf  # query row 4 attends nothing
    q, k, v = make_inputs(rng, b, h, tq, tk, d, np.float32)
    do = rng.standard_normal(q.shape).astype(np.float32)
    got = provider_all(provider, q, k, v, mask, True, d ** -0.5, do,
                       (16, 16) if provider == "triton" else None)
    check_provider(provider, got, q, k, v, mask, True, d ** -0.5, do)
    o, lse, dq, dk, dv = got
    if shape[2] == tq:
        assert np.all(o[:, :, 4] == 0) and np.all(lse[:, :, 4] == np.inf)
        assert np.all(dq[:, :, 4] == 0)
    for a in (o, dq, dk, dv):
        assert np.isfinite(a).all()


# (provider, H, T, dtype)
@pytest.mark.parametrize("provider,H,T,dtype",
                         cases("cpp", (2, 70, np.float64), (2, 70, np.float32))
                         + cases("triton", (1, 40, np.float32)))
def test_fully_masked_rows(rng, provider, H, T, dtype):
    mod = load(provider)
    B, Tq, Tk, D = 2, T, T, 16
    q, k, v = make_inputs(rng, B, H, Tq, Tk, D, dtype)
    mask = np.zeros((B, 1, Tq, Tk), dtype)
    mask[1] = -np.inf            # a whole batch attends nothing
    mask[0, 0, 5] = -np.inf      # and a single query row of batch 0
    o, lse = mod.attention_forward(q, k, v, mask, True, 0.25)
    assert np.all(o[1] == 0) and np.all(np.isposinf(lse[1]))
    assert np.all(o[0, :, 5] == 0) and np.all(np.isposinf(lse[0, :, 5]))
    assert np.isfinite(lse[0, :, 6]).all()
    dq, dk, dv = mod.attention_backward(q, k, v, o, lse, np.ones_like(o), mask, True, 0.25)
    for g in (dq, dk, dv):
        assert np.isfinite(g).all()
        assert np.all(g[1] == 0)
    assert np.all(dq[0, :, 5] == 0)


@pytest.mark.parametrize("provider,dtype", cases("cpp", (np.float64,), (np.float32,)) + [
    pytest.param("triton", np.float64, marks=needs_triton),
    pytest.param("triton", np.float32, marks=[needs_triton, pytest.mark.xfail(
        raises=AssertionError, strict=True,
        reason="known limit of the Triton kernel: scores are scaled by log2(e) in float32 "
               "before exp2, which costs ~1e-7 relative of scores up to 600 (o error 5.3e-6 "
               "vs 4.4e-6 allowed)")])])
def test_online_softmax_rescales(rng, provider, dtype):
    # Scores that grow key after key move the running max in every key tile, and their size
    # (up to 600) would overflow any exp() not shifted by that max. In float32 an lse of 600
    # is itself only good to ~4e-5, so float32 is held to the reference's own float32 error.
    B, H, T, D = 1, 1, 200, 4
    u = np.zeros(D)
    u[0] = 1.0
    q = np.broadcast_to(u, (B, H, T, D)).astype(dtype) * 3
    k = (np.arange(T)[:, None] * u).reshape(B, H, T, D).astype(dtype)
    v = rng.standard_normal((B, H, T, D)).astype(dtype)
    do = rng.standard_normal((B, H, T, D)).astype(dtype)
    got = provider_all(provider, q, k, v, None, True, 1.0, do)
    if dtype == np.float32:
        assert_float32_error_within_twice_the_references(got, q, k, v, None, True, 1.0, do)
    else:
        check_provider(provider, got, q, k, v, None, True, 1.0, do)


@needs_cpp
@pytest.mark.parametrize("causal,mask_kind", [(True, None), (False, "full")])
def test_cpp_float32_error_within_twice_the_references(rng, causal, mask_kind):
    B, H, T, D = 2, 2, 300, 64  # several tiles each way: too large for Triton's interpreter
    q, k, v = make_inputs(rng, B, H, T, T, D, np.float32)
    mask = make_mask(rng, mask_kind, B, H, T, T, np.float32)
    do = rng.standard_normal((B, H, T, D)).astype(np.float32)
    scale = 1 / math.sqrt(D)
    got = provider_all("cpp", q, k, v, mask, causal, scale, do)
    assert_float32_error_within_twice_the_references(got, q, k, v, mask, causal, scale, do)


# (provider, B, H, T, dtype, blocks)
@pytest.mark.parametrize("provider,B,H,T,dtype,blocks",
                         cases("cpp", (2, 3, 70, np.float64, None), (2, 3, 70, np.float32, None))
                         + cases("triton", (1, 2, 23, np.float64, (16, 16))))
def test_non_contiguous_inputs(rng, provider, B, H, T, dtype, blocks):
    D = 16
    # The layout a GPT produces: (B, T, H, D) viewed as (B, H, T, D).
    q, k, v, do = (rng.standard_normal((B, T, H, D)).astype(dtype).transpose(0, 2, 1, 3)
                   for _ in range(4))
    k = k[:, :, ::-1]                                   # negative time stride
    v = rng.standard_normal((B, H, T, 2 * D)).astype(dtype)[..., ::2]  # D stride 2
    base = rng.standard_normal((T, T)).astype(dtype)
    mask = np.broadcast_to(base.T, (B, 1, T, T))        # stride-0 batch, transposed rows
    assert not any(a.flags.c_contiguous for a in (q, k, v, do, mask))
    got = provider_all(provider, q, k, v, mask, True, 0.3, do, blocks)
    check_provider(provider, got, q, k, v, mask, True, 0.3, do)
    # A strided o / lse into the backward as well.
    o, lse = got[0], got[1]
    o_s = np.ascontiguousarray(o.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
    lse_s = np.ascontiguousarray(lse.transpose(2, 0, 1)).transpose(1, 2, 0)
    again = load(provider).attention_backward(q, k, v, o_s, lse_s, do, mask, True, 0.3)
    if blocks is None:
        for g, w in zip(again, got[2:]):
            np.testing.assert_array_equal(g, w)
    else:  # other tiles than the forced ones: the same values, not the same bits
        for name, g, w in zip(NAMES[2:], again, got[2:]):
            assert_within(g, w, 1e-12, name)


# (provider, B, H, Tq, Tk, D). Only the C++ kernels take D = 0 (the op boundary refuses it).
EMPTY = (cases("cpp", (0, 2, 3, 4, 5), (1, 2, 0, 4, 5), (1, 2, 3, 0, 5), (1, 2, 3, 4, 0))
         + cases("triton", (0, 2, 3, 4, 5), (1, 2, 0, 4, 5), (1, 2, 3, 0, 5)))


@pytest.mark.parametrize("provider,B,H,Tq,Tk,D", EMPTY)
def test_empty_dimensions(rng, provider, B, H, Tq, Tk, D):
    q, k, v = make_inputs(rng, B, H, Tq, Tk, D)
    do = np.ones_like(q)
    got = provider_all(provider, q, k, v, None, False, 1.0, do)
    for name, g, w in zip(NAMES, got, reference_all(q, k, v, None, False, 1.0, do)):
        assert_close(g, w, np.float64, name)


@pytest.mark.parametrize("provider", providers())
def test_without_keys(rng, provider):
    mod = load(provider)
    q = rng.standard_normal((1, 2, 3, 16)).astype(np.float32)
    k = np.zeros((1, 2, 0, 16), np.float32)
    o, lse = mod.attention_forward(q, k, k, None, False, 0.25)
    assert np.all(o == 0) and np.all(lse == np.inf)
    dq, dk, dv = mod.attention_backward(q, k, k, o, lse, q, None, False, 0.25)
    assert np.all(dq == 0) and dk.shape == dv.shape == (1, 2, 0, 16)


@needs_triton
def test_triton_float16_accumulates_in_float32(rng):
    mod = load("triton")
    q, k, v = make_inputs(rng, 1, 1, 24, 24, 16, np.float16)
    do = rng.standard_normal(q.shape).astype(np.float16)
    up = [a.astype(np.float64) for a in (q, k, v, do)]
    o, lse = mod.attention_forward(q, k, v, None, True, 0.25)
    assert o.dtype == np.float16 and lse.dtype == np.float32
    ro, rlse = attention_forward(*up[:3], None, True, 0.25)
    assert rel_err(o, ro) < 5e-3 and rel_err(lse, rlse) < 1e-6
    grads = mod.attention_backward(q, k, v, o, lse, do, None, True, 0.25)
    for g, rg in zip(grads, attention_backward(*up[:3], ro, rlse, up[3], None, True, 0.25)):
        assert g.dtype == np.float16 and rel_err(g, rg) < 1e-2


@needs_cpp
@pytest.mark.parametrize("isa", ["avx512", "avx2", "base"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cpp_every_instruction_set_variant(rng, isa, dtype):
    C = load("cpp")
    try:
        previous = C._set_isa(isa)
    except ValueError as e:  # a CPU without it, or a TL_NO_CLONES build with one variant
        pytest.skip(str(e))
    try:
        for shape in [(2, 2, 70, 67, 20, True, "full"), (1, 3, 5, 130, 64, False, "pad"),
                      (1, 1, 3, 3, 1, True, None)]:
            run_case(rng, "cpp", *shape, dtype)
    finally:
        C._set_isa(previous)


@needs_cpp
@settings(max_examples=20, deadline=None)
@given(B=st.integers(1, 2), H=st.integers(1, 2), Tq=st.integers(1, 80), Tk=st.integers(1, 80),
       D=st.integers(1, 20), causal=st.booleans(),
       mask_kind=st.sampled_from([None, "pad", "full", "shared", "head"]),
       dtype=st.sampled_from([np.float64, np.float32]), seed=st.integers(0, 2**31))
def test_cpp_hypothesis(B, H, Tq, Tk, D, causal, mask_kind, dtype, seed):
    run_case(np.random.default_rng(seed), "cpp", B, H, Tq, Tk, D, causal, mask_kind, dtype)


def _agree(provider, got, want, what):
    if provider == "triton":
        assert_within(got, want, 1e-12, what)
    else:
        assert_close(got, want, np.float64, what)


def test_through_autograd_matches_reference(rng, each_provider):
    """nn.functional.scaled_dot_product_attention as a user calls it (causal, a boolean key
    mask, Tq != Tk): the output and the gradients of q, k, v from the provider in use."""
    causal = True
    B, H, Tq, Tk, D = 2, 2, 5, 7, 8
    q, k, v = make_inputs(rng, B, H, Tq, Tk, D)
    keep = rng.random((B, 1, 1, Tk)) > 0.3
    keep[..., 0] = True
    do = rng.standard_normal(q.shape)
    qt, kt, vt = (t(a, requires_grad=True) for a in (q, k, v))
    o = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=t(keep), is_causal=causal)
    assert o.grad_fn.provider == each_provider
    (o * t(do)).sum().backward()
    want = reference_all(q, k, v, np.where(keep, 0.0, -np.inf), causal, 1 / math.sqrt(D), do)
    for what, got, w in zip(["o", "dq", "dk", "dv"], (o.detach(), qt.grad, kt.grad, vt.grad),
                            want[:1] + want[2:]):
        _agree(each_provider, np.asarray(got), w, what)


def test_packed_self_attention_matches_reference(rng, each_provider):
    """The fast path of nn.MultiHeadAttention: the kernels on strided views of one packed
    (B, T, 3C) projection, and one packed gradient."""
    B, T, H, D = 2, 6, 2, 4
    C = H * D
    qkv = rng.standard_normal((B, T, 3 * C))
    dy = rng.standard_normal((B, T, C))
    xt = t(qkv, requires_grad=True)
    y = FusedPackedSelfAttention.apply(xt, n_head=H, is_causal=True, scale=0.5)
    assert y.grad_fn.provider == each_provider
    (y * t(dy)).sum().backward()
    heads = lambda a: a.reshape(B, T, H, D).transpose(0, 2, 1, 3)  # noqa: E731
    q, k, v = (heads(qkv[..., i * C:(i + 1) * C]) for i in range(3))
    do = heads(dy)
    o, _, dq, dk, dv = reference_all(q, k, v, None, True, 0.5, do)
    merge = lambda a: a.transpose(0, 2, 1, 3).reshape(B, T, C)  # noqa: E731
    _agree(each_provider, np.asarray(y.detach()), merge(o), "y")
    _agree(each_provider, np.asarray(xt.grad), np.concatenate([merge(g) for g in (dq, dk, dv)], -1),
           "dqkv")


# ---------------------------------------------------------------- bad input

SDPA = "scaled_dot_product_attention"


def test_op_boundary_rejects_bad_input(rng, each_provider):
    p = each_provider
    q, k, v = (t(a) for a in make_inputs(rng, 2, 2, 3, 4, 5))
    with pytest.raises(ValueError, match=rf"{SDPA}: expected 4-D \(B, H, T, D\) query, key, "
                                         r"value; got \(2, 3, 5\)"):
        F.scaled_dot_product_attention(q[0], k, v)
    with pytest.raises(ValueError, match=rf"{SDPA}: query, key, value must be 4-D \(B, H, T, D\), "
                                         r"got \(2, 3, 5\)"):
        FusedAttention.apply(q[0], k, v)
    with pytest.raises(ValueError, match=rf"{SDPA}: expected key and value of shape "
                                         r"\(2, 2, Tk, 5\) to match query \(2, 2, 3, 5\), got "
                                         r"key \(2, 1, 4, 5\)"):
        F.scaled_dot_product_attention(q, k[:, :1], v[:, :1])
    with pytest.raises(ValueError, match=r"got key \(2, 2, 4, 3\), value \(2, 2, 4, 5\)"):
        F.scaled_dot_product_attention(q, k[..., :3], v)
    with pytest.raises(ValueError, match=rf"{SDPA}: mask of shape \(2, 2, 2, 4\) does not "
                                         r"broadcast as \(1\|2, 1\|2, 1\|3, 4\) for query "
                                         r"\(2, 2, 3, 5\), key \(2, 2, 4, 5\)"):
        F.scaled_dot_product_attention(q, k, v, t(np.zeros((2, 2, 2, 4))))
    with pytest.raises(ValueError, match=rf"{SDPA}: mask of shape \(2, 4\) does not broadcast"):
        FusedAttention.apply(q, k, v, np.zeros((2, 4)))
    with pytest.raises(TypeError, match=f"{SDPA}: k has dtype float32 but q has float64; all "
                                        f"float inputs must share one dtype"):
        F.scaled_dot_product_attention(q, k.float(), v)
    with pytest.raises(TypeError, match=f"{SDPA}: mask has dtype float32 but q has float64"):
        FusedAttention.apply(q, k, v, np.zeros((1, 1, 1, 4), np.float32))
    with pytest.raises(TypeError, match=dtype_message(SDPA, "q", "int64", p)):
        FusedAttention.apply(q.long(), k.long(), v.long())
    with pytest.raises(ValueError, match=f"{SDPA}: scale must be finite, got inf"):
        F.scaled_dot_product_attention(q, k, v, scale=float("inf"))
    with pytest.raises(ValueError, match=rf"{SDPA}: the head dim D must be at least 1, got query "
                                         r"\(2, 2, 3, 0\)"):
        FusedAttention.apply(q[..., :0], k[..., :0], v[..., :0], scale=1.0)
    # the fast path of nn.MultiHeadAttention: packed q | k | v
    with pytest.raises(ValueError, match=r"packed self-attention: qkv must be \(B, T, 3 \* C\) "
                                         r"with C divisible by n_head=2, got shape \(1, 4, 10\)"):
        FusedPackedSelfAttention.apply(t(np.ones((1, 4, 10))), n_head=2)
    with pytest.raises(TypeError, match=dtype_message(SDPA, "q", "int64", p)):
        FusedPackedSelfAttention.apply(t(np.ones((1, 4, 12), np.int64)), n_head=2)


def test_zero_head_dim_is_rejected_by_name():
    q = t(np.ones((1, 1, 4, 0)))
    with pytest.raises(ValueError, match=f"{SDPA}: the head dim D must be at least 1"):
        F.scaled_dot_product_attention(q, q, q)


@needs_cpp
def test_cpp_guards_name_the_kernel_and_shapes(rng):
    """tensorlite._C's own checks, which keep memory safe when it is called directly."""
    C = load("cpp")
    q, k, v = make_inputs(rng, 2, 2, 3, 4, 5)
    o, lse = C.attention_forward(q, k, v, None, False, 1.0)
    with pytest.raises(ValueError, match=r"attention_forward.*\(2, 3, 5\)"):
        C.attention_forward(q[0], k, v, None, False, 1.0)
    with pytest.raises(ValueError, match=r"attention_forward.*\(2, 1, 4, 5\)"):
        C.attention_forward(q, k[:, :1], v[:, :1], None, False, 1.0)
    with pytest.raises(ValueError, match=r"attention_forward.*\(2, 2, 4, 3\)"):
        C.attention_forward(q, k[..., :3], v[..., :3], None, False, 1.0)
    with pytest.raises(ValueError, match=r"attention_forward: mask of shape \(2, 2, 2, 4\)"):
        C.attention_forward(q, k, v, np.zeros((2, 2, 2, 4)), False, 1.0)
    with pytest.raises(ValueError, match="mask"):
        C.attention_forward(q, k, v, np.zeros((2, 4)), False, 1.0)
    with pytest.raises(TypeError, match="attention_forward.*float32"):
        C.attention_forward(q, k.astype(np.float32), v, None, False, 1.0)
    with pytest.raises(TypeError, match="attention_forward.*int64"):
        C.attention_forward(*(a.astype(np.int64) for a in (q, k, v)), None, False, 1.0)
    with pytest.raises(TypeError, match="attention_forward: mask"):
        C.attention_forward(q, k, v, np.zeros((1, 1, 1, 4), np.float32), False, 1.0)
    with pytest.raises(TypeError, match="attention_forward: q must be a numpy array"):
        C.attention_forward(q.tolist(), k, v, None, False, 1.0)
    with pytest.raises(ValueError, match=r"attention_backward.*lse"):
        C.attention_backward(q, k, v, o, lse[..., :2], o, None, False, 1.0)
    with pytest.raises(TypeError, match="attention_backward"):
        C.attention_backward(q, k, v, o, lse.astype(np.float32), o, None, False, 1.0)


@needs_cpp
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("Tq", [1, 2, 4, 5])  # <= 4: the C++ decode path; 5: the tile path
def test_cpp_decode_rows_match_the_reference(rng, dtype, Tq):
    """A few queries against many cached keys (KV-cache decoding) take the C++ row-at-a-time
    path; it keeps the contract: masks, causal alignment, rows that attend nothing."""
    C = load("cpp")
    for Tk, causal, kind in [(1, False, None), (37, False, None), (37, True, None),
                             (70, False, "pad"), (70, True, "rows"), (9, False, "dead"), (0, False, None)]:
        q, k, v = make_inputs(rng, 3, 2, Tq, Tk, 24, dtype)
        mask = None
        if kind == "pad":  # a key-padding mask broadcast over heads and queries
            mask = np.where(rng.random((3, 1, 1, Tk)) < 0.3, -np.inf, 0.0).astype(dtype)
        elif kind == "rows":  # a float mask per query row
            mask = rng.standard_normal((1, 2, Tq, Tk)).astype(dtype)
        elif kind == "dead":  # the first batch row attends nothing
            mask = np.zeros((3, 1, 1, Tk), dtype)
            mask[0] = -np.inf
        k_strided = np.swapaxes(np.swapaxes(k, 2, 3).copy(), 2, 3)  # same values, other strides
        o, lse = C.attention_forward(q, k_strided, v, mask, causal, 0.3)
        o_ref, lse_ref = attention_forward(q, k, v, mask, causal, 0.3)
        assert_close(o, o_ref, dtype, f"o Tk={Tk} causal={causal} {kind}")
        assert_close(lse, lse_ref, dtype, f"lse Tk={Tk} causal={causal} {kind}")
        if kind == "dead":
            assert np.all(o[0] == 0) and np.all(np.isposinf(lse[0]))


# ---------------------------------------------------------------- large scores, bfloat16

@pytest.mark.parametrize("provider", providers())
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_backward_is_finite_at_huge_finite_scores(rng, provider, causal):
    """float32 scores ~1e28 (finite): the backward recomputes P = exp(S - lse) from scores
    that round differently from the forward's; one ulp of S is then far beyond exp's range,
    so an unclamped exponent gave P = inf and inf/NaN gradients. P <= 1 always."""
    mod = load(provider)
    B, H, T, D = 1, 2, 6, 4
    q, k = ((rng.standard_normal((B, H, T, D)) * 1e14).astype(np.float32) for _ in range(2))
    v, do = (rng.standard_normal((B, H, T, D)).astype(np.float32) for _ in range(2))
    o, lse = mod.attention_forward(q, k, v, None, causal, 0.5)
    assert np.isfinite(o).all() and np.isfinite(lse).all()
    dq, dk, dv = mod.attention_backward(q, k, v, o, lse, do, None, causal, 0.5)
    for what, g in (("dq", dq), ("dk", dk), ("dv", dv)):
        assert np.isfinite(g).all(), what
    # each row's softmax is (all but) one-hot: dv is dO gathered onto the argmax keys,
    # whatever P the backward recomputed, so |dv| stays within sum |dO| per column
    assert np.abs(dv).max() <= np.abs(do).sum(2).max() * (1 + 1e-5)


@needs_triton
def test_triton_bfloat16_matches_float64(rng):
    """bfloat16 on Triton: under the interpreter (whose tl.dot multiplies bfloat16 bit
    patterns as integers) the wrapper widens to float32; on a GPU the dots stay bf16."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bf16 = ml_dtypes.bfloat16
    mod = load("triton")
    B, H, T, D = 1, 2, 7, 8
    q, k, v, do = (rng.standard_normal((B, H, T, D)).astype(bf16) for _ in range(4))
    o, lse = mod.attention_forward(q, k, v, None, True, 0.35)
    grads = mod.attention_backward(q, k, v, o, lse, do, None, True, 0.35)
    wide = [a.astype(np.float64) for a in (q, k, v, do)]
    o64, lse64 = attention_forward(*wide[:3], None, True, 0.35)
    want = attention_backward(*wide[:3], o64, lse64, wide[3], None, True, 0.35)
    for what, got, w in zip(["o", "dq", "dk", "dv"], (o, *grads), (o64, *want)):
        assert got.dtype == bf16, what
        err = np.abs(got.astype(np.float64) - w).max() / np.abs(w).max()
        assert err < 4 * 2.0 ** -8, f"{what}: relative error {err:.3g}"
