"""layer_norm over the last dim, every provider (tests/_fused_helpers.py).

The reference against the formula and finite differences; "cpp" and "triton" against
the reference (with and without weight / bias, tails, empty dims, strided views, a mean
of 1e6); Triton's loop kernel and uneven row groups, and float16; the op boundary's
messages under every provider; the C++ extension's own guards."""
import numpy as np
import pytest
from hypothesis import given, settings

import tensorlite as tl
import tensorlite.reference as R
from tensorlite.nn import functional as F
from tensorlite.ops.fused import FusedLayerNorm

from _fused_helpers import (FLOATS, ROWS, assert_defines, assert_grad, cases, check, close,
                            dtype_message, f64, load, needs_cpp, needs_triton, numeric_grad,
                            providers, rel_err, t)
from _fused_helpers import each_provider_fixture  # noqa: F401 (the fixture each_provider)

WB = [(True, True), (True, False), (False, True), (False, False)]


# ---------------------------------------------------------------- the reference

@pytest.mark.parametrize("has_w,has_b", WB)
def test_reference_forward_matches_formula(rng, has_w, has_b):
    x = rng.standard_normal((2, 3, 6)) * 3 + 5
    w = rng.standard_normal(6) if has_w else None
    b = rng.standard_normal(6) if has_b else None
    y, mean, rstd = R.layer_norm_forward(x, w, b, 1e-5)
    want = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    if has_w:
        want = want * w
    if has_b:
        want = want + b
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)
    assert mean.shape == rstd.shape == (2, 3)
    np.testing.assert_allclose(rstd, 1 / np.sqrt(x.var(-1) + 1e-5), rtol=1e-12)


@pytest.mark.parametrize("has_w", [True, False])
def test_reference_backward_matches_finite_differences(rng, has_w):
    x = rng.standard_normal((3, 5))
    w = rng.standard_normal(5) if has_w else None
    b = rng.standard_normal(5)
    dy = rng.standard_normal((3, 5))

    def loss():
        return (R.layer_norm_forward(x, w, b, 1e-3)[0] * dy).sum()

    _, mean, rstd = R.layer_norm_forward(x, w, b, 1e-3)
    dx, dw, db = R.layer_norm_backward(dy, x, w, mean, rstd)
    assert_grad(dx, numeric_grad(loss, x))
    assert_grad(db, numeric_grad(loss, b))
    if has_w:
        assert_grad(dw, numeric_grad(loss, w))
    else:
        assert dw is None


def test_reference_float32_stats():
    x = np.ones((4, 3), np.float32)
    y, mean, rstd = R.layer_norm_forward(x, None, None, 1e-5)
    assert y.dtype == mean.dtype == rstd.dtype == np.float32


# ---------------------------------------------------------------- providers vs the reference

@pytest.mark.parametrize("provider", providers())
def test_every_provider_defines_the_op(provider):
    assert_defines(provider, "layer_norm_forward", "layer_norm_backward")



# (provider, shape, has_w, has_b, loop_block, groups). Triton: loop_block forces the loop
# kernel with that column block; groups=3 splits the rows unevenly over the programs that
# sum dweight / dbias partials.
CASES = (
    cases("cpp", *[(s, w, b, None, None)
                   for s in [(1, 5), (3, 4, 33), (7, 1), (0, 8), (2, 0, 6), (9,), (16, 768)]
                   for w, b in WB])
    + cases("triton", *[(s, a, a, lb, 3) for s, lb in [((3, 5, 37), None), ((7, 40), 16)]
                        for a in (True, False)]))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("provider,shape,has_w,has_b,loop_block,groups", CASES)
def test_forward_backward_match_reference(rng, provider, shape, has_w, has_b, loop_block,
                                          groups, dtype):
    mod = load(provider)
    fwd, bwd = mod.layer_norm_forward, mod.layer_norm_backward
    if provider == "triton":
        from tensorlite.kernels import layer_norm as KLN
        fwd = lambda *a: KLN.layer_norm_forward(*a, loop_block=loop_block)  # noqa: E731
        bwd = lambda *a: KLN.layer_norm_backward(*a, loop_block=loop_block,  # noqa: E731
                                                 groups=groups)
    Cn = shape[-1]
    x = (rng.standard_normal(shape) * 2 + 3).astype(dtype)
    w = rng.standard_normal(Cn).astype(dtype) if has_w else None
    b = rng.standard_normal(Cn).astype(dtype) if has_b else None
    dy = rng.standard_normal(shape).astype(dtype)
    y, mean, rstd = fwd(x, w, b, 1e-5)
    ry, rmean, rrstd = R.layer_norm_forward(f64(x), f64(w), f64(b), 1e-5)
    assert mean.shape == rstd.shape == shape[:-1]
    check(provider, y, ry, dtype, "y", scale=10)
    check(provider, mean, rmean, dtype, "mean", scale=10)
    check(provider, rstd, rrstd, dtype, "rstd")
    dx, dw, db = bwd(dy, x, w, mean, rstd)
    rdx, rdw, rdb = R.layer_norm_backward(f64(dy), f64(x), f64(w), f64(mean), f64(rstd))
    rows = max(1, int(np.prod(shape[:-1])))
    # dx's terms are of size rstd*|dy*w| and cancel (exactly, when C == 1): a few ulps of them
    check(provider, dx, rdx, dtype, "dx", scale=10 * max(1.0, float(rrstd.max(initial=0))),
          rel=10)
    check(provider, db, rdb, dtype, "dbias", scale=10 * rows)
    if has_w:
        check(provider, dw, rdw, dtype, "dweight", scale=10 * rows)
    else:
        assert dw is None


@pytest.mark.parametrize("provider", providers("cpp", "triton"))
def test_large_mean_float64(rng, provider):
    mod = load(provider)
    x = rng.standard_normal((4, 64)) + 1e6
    y, mean, rstd = mod.layer_norm_forward(x, None, None, 1e-5)
    ry, _, rrstd = R.layer_norm_forward(x, None, None, 1e-5)
    np.testing.assert_allclose(y, ry, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(rstd, rrstd, rtol=1e-8)


@pytest.mark.parametrize("provider", providers("cpp", "triton"))
def test_non_contiguous(rng, provider):
    mod = load(provider)
    x = rng.standard_normal((10, 12)).T  # (12, 10), not C-contiguous
    w = rng.standard_normal(20)[::2]
    dy = rng.standard_normal((10, 12)).T
    y, mean, rstd = mod.layer_norm_forward(x, w, None, 1e-5)
    check(provider, y, R.layer_norm_forward(x, w, None, 1e-5)[0], np.float64, "y")
    for what, got, want in zip(("dx", "dweight", "dbias"),
                               mod.layer_norm_backward(dy, x, w, mean, rstd),
                               R.layer_norm_backward(dy, x, w, mean, rstd)):
        check(provider, got, want, np.float64, what, scale=10, rel=10)


@pytest.mark.parametrize("provider", providers())
def test_no_rows(provider):
    mod = load(provider)
    x = np.zeros((0, 6), np.float32)
    y, mean, rstd = mod.layer_norm_forward(x, None, None, 1e-5)
    assert y.shape == (0, 6) and mean.shape == (0,)
    dx, dw, db = mod.layer_norm_backward(x, x, np.ones(6, np.float32), mean, rstd)
    assert dx.shape == (0, 6) and dw.shape == db.shape == (6,)
    assert np.all(dw == 0) and np.all(db == 0)


@needs_triton
def test_triton_float16_accumulates_in_float32(rng):
    mod = load("triton")
    x = (rng.standard_normal((6, 70)) * 2).astype(np.float16)
    y, mean, rstd = mod.layer_norm_forward(x, None, None, 1e-5)
    ry, rmean, rrstd = R.layer_norm_forward(x.astype(np.float64), None, None, 1e-5)
    assert y.dtype == np.float16 and mean.dtype == rstd.dtype == np.float32
    assert rel_err(y, ry) < 2e-3 and rel_err(mean, rmean) < 1e-6 and rel_err(rstd, rrstd) < 1e-6


@needs_cpp
@settings(max_examples=15, deadline=None)
@given(**ROWS)
def test_cpp_hypothesis_shapes(lead, C_, dtype, seed):
    C = load("cpp")
    r = np.random.default_rng(seed)
    x = r.standard_normal((*lead, C_)).astype(dtype)
    w = r.standard_normal(C_).astype(dtype)
    y, mean, rstd = C.layer_norm_forward(x, w, None, 1e-5)
    close(y, R.layer_norm_forward(f64(x), f64(w), None, 1e-5)[0], dtype, scale=10)
    dy = r.standard_normal(x.shape).astype(dtype)
    dx = C.layer_norm_backward(dy, x, w, mean, rstd)[0]
    close(dx, R.layer_norm_backward(f64(dy), f64(x), f64(w), f64(mean), f64(rstd))[0], dtype,
          scale=100)


def test_through_autograd_matches_reference(rng, each_provider):
    """nn.functional.layer_norm as a user calls it: forward and the gradients of x, weight
    and bias from the provider in use, against the reference."""
    x, w, b = rng.standard_normal((2, 3, 6)) * 2 + 1, rng.standard_normal(6), rng.standard_normal(6)
    dy = rng.standard_normal(x.shape)
    xt, wt, bt = (t(a, requires_grad=True) for a in (x, w, b))
    y = F.layer_norm(xt, 6, wt, bt, eps=1e-5)
    assert y.grad_fn.provider == each_provider
    (y * t(dy)).sum().backward()
    ry, mean, rstd = R.layer_norm_forward(x, w, b, 1e-5)
    check(each_provider, np.asarray(y.detach()), ry, np.float64, "y", scale=10)
    for what, got, want in zip(("dx", "dweight", "dbias"), (xt.grad, wt.grad, bt.grad),
                               R.layer_norm_backward(dy, x, w, mean, rstd)):
        check(each_provider, np.asarray(got), want, np.float64, what, scale=10, rel=10)


# ---------------------------------------------------------------- bad input

def test_op_boundary_rejects_bad_input(each_provider):
    p = each_provider
    x = t(np.ones((4, 3), np.float32))
    with pytest.raises(ValueError, match=r"layer_norm: weight has shape \(4,\), expected \(3,\) "
                                         r"to match the last dim of x \(4, 3\)"):
        FusedLayerNorm.apply(x, t(np.ones(4, np.float32)), None)
    with pytest.raises(ValueError, match=r"layer_norm: bias has shape \(4,\), expected \(3,\)"):
        F.layer_norm(x, 3, None, t(np.ones(4, np.float32)))
    with pytest.raises(TypeError, match="layer_norm: bias has dtype float64 but x has float32; "
                                        "all float inputs must share one dtype"):
        F.layer_norm(x, 3, None, t(np.ones(3, np.float64)))
    with pytest.raises(TypeError, match="layer_norm: weight has dtype float64 but x has float32"):
        FusedLayerNorm.apply(x, t(np.ones(3, np.float64)), None)
    with pytest.raises(TypeError, match=dtype_message("layer_norm", "x", "int32", p)):
        FusedLayerNorm.apply(t(np.ones((4, 3), np.int32)))
    with pytest.raises(ValueError, match=r"layer_norm: cannot normalise over an empty last dim, "
                                         r"x has shape \(2, 0\)"):
        F.layer_norm(t(np.ones((2, 0), np.float32)), 0)
    for eps in (float("nan"), -1.0):
        with pytest.raises(ValueError, match="layer_norm: eps must be a finite number >= 0"):
            F.layer_norm(x, 3, eps=eps)
    # and good input keeps its dtype
    assert F.layer_norm(x, 3).dtype == tl.float32


@needs_cpp
def test_cpp_guards_name_the_kernel():
    """tensorlite._C's own checks, which keep memory safe when it is called directly."""
    C = load("cpp")
    x = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"layer_norm_forward.*weight.*\(4,\)"):
        C.layer_norm_forward(x, np.ones(4, np.float32), None, 1e-5)
    with pytest.raises(TypeError, match="layer_norm_forward.*bias"):
        C.layer_norm_forward(x, None, np.ones(3, np.float64), 1e-5)
    with pytest.raises(TypeError, match="layer_norm_forward"):
        C.layer_norm_forward(x.astype(np.int32), None, None, 1e-5)
    with pytest.raises(ValueError, match="layer_norm_forward.*empty"):
        C.layer_norm_forward(np.ones((2, 0), np.float32), None, None, 1e-5)
    _, mean, rstd = C.layer_norm_forward(x, None, None, 1e-5)
    with pytest.raises(ValueError, match="layer_norm_backward.*mean"):
        C.layer_norm_backward(x, x, None, mean[:2], rstd)
    with pytest.raises(ValueError, match="layer_norm_backward"):
        C.layer_norm_backward(x[:2], x, None, mean, rstd)


@needs_cpp
@pytest.mark.parametrize("scale", [2e19, 1e25, 1e36])
def test_cpp_float32_rows_whose_squares_overflow(scale):
    # squared deviations beyond float32's range used to give rstd 0 and an all-zero output
    C = load("cpp")
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 256)) * scale).astype(np.float32)
    w = rng.standard_normal(256).astype(np.float32)
    b = rng.standard_normal(256).astype(np.float32)
    dy = rng.standard_normal((3, 256)).astype(np.float32)
    y, mean, rstd = C.layer_norm_forward(x, w, b, 1e-5)
    x64, w64, b64 = (a.astype(np.float64) for a in (x, w, b))
    y64, mean64, rstd64 = R.layer_norm_forward(x64, w64, b64, 1e-5)
    np.testing.assert_allclose(y, y64, rtol=0, atol=1e-4 * np.abs(y64).max())
    dx, dw, db = C.layer_norm_backward(dy, x, w, mean, rstd)
    dx64, dw64, _ = R.layer_norm_backward(dy.astype(np.float64), x64, w64, mean64, rstd64)
    np.testing.assert_allclose(dx, dx64, rtol=1e-4, atol=1e-4 * np.abs(dx64).max())
    np.testing.assert_allclose(dw, dw64, rtol=1e-4, atol=1e-4 * np.abs(dw64).max())


# ---------------------------------------------------------------- rows whose squares overflow

def _huge_rows_truth(x, w, b, dy, eps):
    """y, rstd, dx, dw, db in long double, the variance from scaled deviations (no overflow)."""
    W = np.longdouble
    xw, ww, bw, dyw = (a.astype(W) for a in (x, w, b, dy))
    xc = xw - xw.mean(-1, keepdims=True)
    s = np.abs(xc).max(-1, keepdims=True)
    std = np.sqrt(((xc / s) ** 2).mean(-1, keepdims=True) * s * s + W(eps))
    xhat = xc / std
    g = dyw * ww
    dx = (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True)) / std
    return xhat * ww + bw, 1 / std[:, 0], dx, (dyw * xhat).sum(0), dyw.sum(0)


@pytest.mark.parametrize("dtype,size", [(np.float32, 1e30), (np.float64, 1e200)],
                         ids=["float32", "float64"])
@pytest.mark.parametrize("provider,kernel", cases("numpy", ("tile",)) +
                         cases("triton", ("tile",), ("loop",)))
def test_huge_rows_forward_and_backward(rng, provider, kernel, dtype, size):
    """|x - mean| beyond sqrt(max) (~1.8e19 float32, ~1.3e154 float64): squaring the
    deviations overflowed, var = inf, rstd = 0 and y = bias. Such rows are normalised from
    scaled deviations; rstd is then ~1/std (tiny), which the backward takes as it is. One
    ordinary row rides along and keeps the plain path."""
    mod = load(provider)
    kw = dict(loop_block=16) if kernel == "loop" else {}
    x = (rng.standard_normal((3, 37)) * size).astype(dtype)
    x[1] = rng.standard_normal(37) + 3
    w, b, dy = (rng.standard_normal(s).astype(dtype) for s in (37, 37, (3, 37)))
    y, mean, rstd = mod.layer_norm_forward(x, w, b, 1e-5, **kw)
    dx, dw, db = mod.layer_norm_backward(dy, x, w, mean, rstd, **kw)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for what, got, want in zip(["y", "rstd", "dx", "dweight", "dbias"], (y, rstd, dx, dw, db),
                               _huge_rows_truth(x, w, b, dy, 1e-5)):
        got = np.asarray(got)
        assert np.isfinite(got).all(), what
        err = np.abs(got.astype(np.longdouble) - want) / np.abs(want).max(-1, keepdims=True)
        assert float(err.max()) < tol, f"{what}: relative error {float(err.max()):.2e}"
