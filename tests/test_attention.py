"""Scaled dot-product attention: the NumPy reference, then the C++ kernels against it.

The reference is checked against central finite differences (float64), an independent
loop-per-query implementation and, when torch is importable, torch's
scaled_dot_product_attention. The C++ forward and backward must match the reference to
~1e-10 in float64 and ~1e-5 in float32 on awkward shapes, masks, strided views, every
instruction-set variant and any thread count.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorlite.reference.attention import attention_backward, attention_forward

try:
    from tensorlite import _C
    from tensorlite import _C as C
except ImportError:  # the extension is optional; the reference tests still run
    _C = None

needs_cpp = pytest.mark.skipif(
    _C is None, reason="tensorlite._C is not built (run setup.py build_ext --inplace)")


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


def reference_all(q, k, v, mask, causal, scale, do):
    """Reference forward + backward in float64 on the given (possibly float32) inputs."""
    f = lambda a: None if a is None else np.asarray(a, np.float64)  # noqa: E731
    o, lse = attention_forward(f(q), f(k), f(v), f(mask), causal, scale)
    grads = attention_backward(f(q), f(k), f(v), o, lse, f(do), f(mask), causal, scale)
    return (o, lse) + tuple(grads)


def cpp_all(q, k, v, mask, causal, scale, do):
    o, lse = C.attention_forward(q, k, v, mask, causal, scale)
    grads = C.attention_backward(q, k, v, o, lse, do, mask, causal, scale)
    return (o, lse) + tuple(grads)


def check_cpp(rng, B, H, Tq, Tk, D, causal, mask_kind, dtype, scale=None):
    q, k, v = make_inputs(rng, B, H, Tq, Tk, D, dtype)
    mask = make_mask(rng, mask_kind, B, H, Tq, Tk, dtype)
    do = rng.standard_normal((B, H, Tq, D)).astype(dtype)
    scale = 1 / math.sqrt(max(D, 1)) if scale is None else scale
    got = cpp_all(q, k, v, mask, causal, scale, do)
    want = reference_all(q, k, v, mask, causal, scale, do)
    for name, g, w in zip(["o", "lse", "dq", "dk", "dv"], got, want):
        assert g.dtype == dtype, (name, g.dtype)
        assert g.flags.c_contiguous, name
        assert_close(g, w, dtype, name)
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
    eps = 1e-6
    for x, g in zip((q, k, v), grads):
        num = np.zeros_like(x)
        for idx in np.ndindex(x.shape):
            keep = x[idx]
            x[idx] = keep + eps
            up = loss()
            x[idx] = keep - eps
            down = loss()
            x[idx] = keep
            num[idx] = (up - down) / (2 * eps)
        np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-8)


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
    F = torch.nn.functional
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
    to = F.scaled_dot_product_attention(tq, tk, tv, attn_mask=tmask, scale=0.7)
    to.backward(torch.tensor(do))
    for ours, theirs in [(o, to), (dq, tq.grad), (dk, tk.grad), (dv, tv.grad)]:
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_reference_rejects_bad_inputs(rng):
    q, k, v = make_inputs(rng, 2, 2, 3, 4, 5)
    with pytest.raises(ValueError, match="attention_forward"):
        attention_forward(q[0], k, v, None, False, 1.0)
    with pytest.raises(ValueError, match=r"\(2, 2, 3, 5\)"):
        attention_forward(q, k[:, :1], v[:, :1], None, False, 1.0)
    with pytest.raises(ValueError, match="mask"):
        attention_forward(q, k, v, np.zeros((2, 2, 2, 4)), False, 1.0)
    with pytest.raises(TypeError, match="dtype"):
        attention_forward(q, k.astype(np.float32), v, None, False, 1.0)


# ---------------------------------------------------------------- C++ vs reference

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


@needs_cpp
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("B,H,Tq,Tk,D,causal,mask_kind", AWKWARD)
def test_cpp_matches_reference(rng, dtype, B, H, Tq, Tk, D, causal, mask_kind):
    check_cpp(rng, B, H, Tq, Tk, D, causal, mask_kind, dtype)


@needs_cpp
@pytest.mark.parametrize("isa", ["avx512", "avx2", "base"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cpp_every_instruction_set_variant(rng, isa, dtype):
    try:
        previous = _C._attention_set_isa(isa)
    except ValueError as e:
        pytest.skip(str(e))
    try:
        for shape in [(2, 2, 70, 67, 20, True, "full"), (1, 3, 5, 130, 64, False, "pad"),
                      (1, 1, 3, 3, 1, True, None)]:
            check_cpp(rng, *shape, dtype)
    finally:
        _C._attention_set_isa(previous)


@needs_cpp
def test_cpp_rejects_unknown_instruction_set():
    with pytest.raises(ValueError, match="avx512"):
        _C._attention_set_isa("neon")


@needs_cpp
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cpp_fully_masked_rows(rng, dtype):
    B, H, Tq, Tk, D = 2, 2, 70, 70, 16
    q, k, v = make_inputs(rng, B, H, Tq, Tk, D, dtype)
    mask = np.zeros((B, 1, Tq, Tk), dtype)
    mask[1] = -np.inf            # a whole batch attends nothing
    mask[0, 0, 5] = -np.inf      # and a single query row of batch 0
    o, lse = C.attention_forward(q, k, v, mask, True, 0.25)
    assert np.all(o[1] == 0) and np.all(np.isposinf(lse[1]))
    assert np.all(o[0, :, 5] == 0) and np.all(np.isposinf(lse[0, :, 5]))
    assert np.isfinite(lse[0, :, 6]).all()
    dq, dk, dv = C.attention_backward(q, k, v, o, lse, np.ones_like(o), mask, True, 0.25)
    for g in (dq, dk, dv):
        assert np.isfinite(g).all()
        assert np.all(g[1] == 0)
    assert np.all(dq[0, :, 5] == 0)


def assert_float32_error_within_twice_the_references(q, k, v, mask, causal, scale, do):
    """The FlashAttention paper's rule: the fused float32 kernel may be at most twice as far
    from the float64 result as the plain float32 computation of the reference is (plus a
    floor of ~8 float32 ulps of the largest value, where both errors are a few ulps)."""
    exact = reference_all(q, k, v, mask, causal, scale, do)
    ours = cpp_all(q, k, v, mask, causal, scale, do)
    o32, lse32 = attention_forward(q, k, v, mask, causal, scale)
    plain = (o32, lse32) + tuple(attention_backward(q, k, v, o32, lse32, do, mask, causal, scale))
    for name, a, p, x in zip(["o", "lse", "dq", "dk", "dv"], ours, plain, exact):
        fin = np.isfinite(x)
        np.testing.assert_array_equal(np.isfinite(a), fin, err_msg=name)
        err_ours = np.abs(a[fin] - x[fin]).max(initial=0.0)
        err_plain = np.abs(p[fin] - x[fin]).max(initial=0.0)
        floor = 1e-6 * max(float(np.abs(x[fin]).max(initial=0.0)), 1.0)
        assert err_ours <= 2 * err_plain + floor, (name, err_ours, err_plain)


@needs_cpp
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cpp_online_softmax_rescales(rng, dtype):
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
    if dtype == np.float32:
        assert_float32_error_within_twice_the_references(q, k, v, None, True, 1.0, do)
        return
    got = cpp_all(q, k, v, None, True, 1.0, do)
    want = reference_all(q, k, v, None, True, 1.0, do)
    for name, g, w in zip(["o", "lse", "dq", "dk", "dv"], got, want):
        assert_close(g, w, dtype, name)


@needs_cpp
@pytest.mark.parametrize("causal,mask_kind", [(True, None), (False, "full")])
def test_cpp_float32_error_within_twice_the_references(rng, causal, mask_kind):
    B, H, T, D = 2, 2, 300, 64
    q, k, v = make_inputs(rng, B, H, T, T, D, np.float32)
    mask = make_mask(rng, mask_kind, B, H, T, T, np.float32)
    do = rng.standard_normal((B, H, T, D)).astype(np.float32)
    assert_float32_error_within_twice_the_references(q, k, v, mask, causal, 1 / math.sqrt(D), do)


@needs_cpp
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cpp_non_contiguous_inputs(rng, dtype):
    B, H, T, D = 2, 3, 70, 16
    # The layout a GPT produces: (B, T, H, D) viewed as (B, H, T, D).
    q, k, v, do = (rng.standard_normal((B, T, H, D)).astype(dtype).transpose(0, 2, 1, 3)
                   for _ in range(4))
    k = k[:, :, ::-1]                                   # negative time stride
    v = rng.standard_normal((B, H, T, 2 * D)).astype(dtype)[..., ::2]  # D stride 2
    base = rng.standard_normal((T, T)).astype(dtype)
    mask = np.broadcast_to(base.T, (B, 1, T, T))        # stride-0 batch, transposed rows
    assert not any(a.flags.c_contiguous for a in (q, k, v, do, mask))
    got = cpp_all(q, k, v, mask, True, 0.3, do)
    want = reference_all(q, k, v, mask, True, 0.3, do)
    for name, g, w in zip(["o", "lse", "dq", "dk", "dv"], got, want):
        assert_close(g, w, dtype, name)
    # A strided o / lse into the backward as well.
    o, lse = got[0], got[1]
    o_s = np.ascontiguousarray(o.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
    lse_s = np.ascontiguousarray(lse.transpose(2, 0, 1)).transpose(1, 2, 0)
    again = C.attention_backward(q, k, v, o_s, lse_s, do, mask, True, 0.3)
    for g, w in zip(again, got[2:]):
        np.testing.assert_array_equal(g, w)


@needs_cpp
def test_cpp_thread_count_gives_identical_bits(rng):
    before = _C.get_num_threads()
    try:
        results = []
        for n in (1, 2):
            _C.set_num_threads(n)
            for shape in [(1, 1, 300, 300, 32), (2, 3, 70, 90, 16)]:  # many / one key group(s)
                r = np.random.default_rng(1)
                q, k, v = make_inputs(r, *shape, np.float32)
                do = r.standard_normal(q.shape).astype(np.float32)
                results.append(cpp_all(q, k, v, None, True, 0.2, do))
        half = len(results) // 2
        for one, two in zip(results[:half], results[half:]):
            for a, b in zip(one, two):
                np.testing.assert_array_equal(a, b)
    finally:
        _C.set_num_threads(before)


@needs_cpp
@pytest.mark.parametrize("shape", [(0, 2, 3, 4, 5), (1, 2, 0, 4, 5), (1, 2, 3, 0, 5),
                                   (1, 2, 3, 4, 0)])
def test_cpp_empty_dimensions(rng, shape):
    B, H, Tq, Tk, D = shape
    q, k, v = make_inputs(rng, B, H, Tq, Tk, D)
    do = np.ones_like(q)
    got = cpp_all(q, k, v, None, False, 1.0, do)
    want = reference_all(q, k, v, None, False, 1.0, do)
    for name, g, w in zip(["o", "lse", "dq", "dk", "dv"], got, want):
        assert_close(g, w, np.float64, name)


@needs_cpp
def test_cpp_errors_name_the_op_and_shapes(rng):
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
@settings(max_examples=20, deadline=None)
@given(B=st.integers(1, 2), H=st.integers(1, 2), Tq=st.integers(1, 80), Tk=st.integers(1, 80),
       D=st.integers(1, 20), causal=st.booleans(),
       mask_kind=st.sampled_from([None, "pad", "full", "shared", "head"]),
       dtype=st.sampled_from([np.float64, np.float32]), seed=st.integers(0, 2**31))
def test_cpp_hypothesis(B, H, Tq, Tk, D, causal, mask_kind, dtype, seed):
    check_cpp(np.random.default_rng(seed), B, H, Tq, Tk, D, causal, mask_kind, dtype)
