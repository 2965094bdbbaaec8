"""cross_entropy (fused log-softmax + NLL, per-row losses), every provider
(tests/_fused_helpers.py).

The reference against the formula and finite differences; "cpp" and "triton" against
the reference (label smoothing, ignored rows, V = 50257, logits near +-1e4, strided
views); Triton's vocabulary blocks and float16; the op boundary's messages under every
provider; the C++ extension's own guards."""
import math

import numpy as np
import pytest

import tensorlite.reference as R
from tensorlite.nn import functional as F
from tensorlite.ops.fused import FusedCrossEntropy

from _fused_helpers import (FLOATS, assert_defines, assert_grad, cases, check, dtype_message, f64,
                            load, needs_cpp, needs_triton, numeric_grad, providers, rel_err, t)
from _fused_helpers import each_provider_fixture  # noqa: F401 (the fixture each_provider)

IGNORE = -100


# ---------------------------------------------------------------- the reference

@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_reference_forward_matches_formula(rng, smoothing):
    x = rng.standard_normal((5, 7)) * 3
    tg = np.array([0, 6, -100, 3, 3])
    loss, lse = R.cross_entropy_forward(x, tg, -100, smoothing)
    logp = np.log(np.exp(x) / np.exp(x).sum(-1, keepdims=True))
    for i in range(5):
        if tg[i] == -100:
            assert loss[i] == 0.0
            continue
        q = np.full(7, smoothing / 7)
        q[tg[i]] += 1 - smoothing
        assert loss[i] == pytest.approx(-(q * logp[i]).sum(), rel=1e-12)
    np.testing.assert_allclose(lse, np.log(np.exp(x).sum(-1)), rtol=1e-13)


def test_reference_is_stable_for_huge_logits():
    x = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], np.float32)
    loss, lse = R.cross_entropy_forward(x, np.array([1, 2]), -100, 0.0)
    # float32 spacing at 1e4 is ~1e-3, which bounds what any float32 loss can resolve
    np.testing.assert_allclose(loss, [2e4, math.log(3)], rtol=1e-6, atol=2e-3)
    assert lse.dtype == loss.dtype == np.float32


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_reference_backward_matches_finite_differences(rng, smoothing):
    x = rng.standard_normal((4, 6))
    tg = np.array([2, -1, 0, 5])
    dloss = rng.standard_normal(4)

    def total():
        return (R.cross_entropy_forward(x, tg, -1, smoothing)[0] * dloss).sum()

    _, lse = R.cross_entropy_forward(x, tg, -1, smoothing)
    g = R.cross_entropy_backward(x, tg, lse, dloss, -1, smoothing)
    assert_grad(g, numeric_grad(total, x))
    assert (g[1] == 0).all()


# ---------------------------------------------------------------- providers vs the reference

@pytest.mark.parametrize("provider", providers())
def test_every_provider_defines_the_op(provider):
    assert_defines(provider, "cross_entropy_forward", "cross_entropy_backward")



def ce_case(rng, provider, dtype, N, V, smoothing, targets=None, scale=3.0, block_v=None):
    """Forward and backward of `provider` against the reference; returns dlogits.
    block_v (Triton) forces the vocabulary block, so that a row spans several blocks."""
    mod = load(provider)
    fwd, bwd = mod.cross_entropy_forward, mod.cross_entropy_backward
    if block_v is not None:
        from tensorlite.kernels import cross_entropy as KCE
        fwd = lambda *a: KCE.cross_entropy_forward(*a, block_v=block_v)  # noqa: E731
        bwd = lambda *a: KCE.cross_entropy_backward(*a, block_v=block_v)  # noqa: E731
    x = (rng.standard_normal((N, V)) * scale).astype(dtype)
    tg = rng.integers(0, V, N) if targets is None else np.asarray(targets, np.int64)
    loss, lse = fwd(x, tg, IGNORE, smoothing)
    rloss, rlse = R.cross_entropy_forward(f64(x), tg, IGNORE, smoothing)
    check(provider, loss, rloss, dtype, "loss", scale=10)
    check(provider, lse, rlse, dtype, "lse", scale=10)
    dloss = rng.standard_normal(N).astype(dtype)
    g = bwd(x, tg, lse, dloss, IGNORE, smoothing)
    check(provider, g, R.cross_entropy_backward(f64(x), tg, f64(lse), f64(dloss), IGNORE,
                                                smoothing), dtype, "dlogits")
    ignored = tg == IGNORE
    assert np.all(loss[ignored] == 0) and np.all(g[ignored] == 0)
    return g


# (provider, N, V, block_v)
SHAPES = (cases("cpp", *[(n, v, None) for n, v in [(1, 1), (5, 7), (3, 65), (0, 10), (4, 1000)]])
          + cases("triton", (9, 300, 64), (5, 50, None)))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("provider,N,V,block_v", SHAPES)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_forward_backward_match_reference(rng, provider, N, V, block_v, dtype, smoothing):
    targets = rng.integers(0, V, N)
    if N >= 2:
        targets[1] = IGNORE      # an ignored row: zero loss, zero gradient
    if N >= 1:
        targets[-1] = V - 1      # the last class
    ce_case(rng, provider, dtype, N, V, smoothing, targets=targets, block_v=block_v)


@pytest.mark.parametrize("provider,dtype,smoothing",
                         cases("cpp", (np.float32, 0.1), (np.float64, 0.1))
                         + cases("triton", (np.float32, 0.0)))
def test_gpt2_vocab(rng, provider, dtype, smoothing):
    # V = 50257, walked in the default vocabulary blocks; the last class is a target
    ce_case(rng, provider, dtype, 2, 50257, smoothing, targets=[50256, 7])


@pytest.mark.parametrize("provider", providers("cpp", "triton"))
def test_ignore_all_but_one_row(rng, provider):
    tg = [-100, -100, 4, -100, -100]
    g = ce_case(rng, provider, np.float32, 5, 9, 0.05, targets=tg)
    assert (g[[0, 1, 3, 4]] == 0).all() and (g[2] != 0).any()
    loss, _ = load(provider).cross_entropy_forward(np.zeros((5, 9), np.float32), np.array(tg),
                                                   -100, 0.0)
    assert loss[0] == 0 and loss[2] == pytest.approx(np.log(9), rel=1e-6)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("provider", providers("cpp", "triton"))
def test_logits_near_1e4(rng, provider, dtype):
    mod = load(provider)
    x = (rng.choice([-1.0, 1.0], (3, 50)) * 1e4 + rng.standard_normal((3, 50))).astype(dtype)
    tg = np.array([0, 17, 49])
    loss, lse = mod.cross_entropy_forward(x, tg, -100, 0.1)
    assert np.isfinite(loss).all() and np.isfinite(lse).all()
    rloss, rlse = R.cross_entropy_forward(f64(x), tg, -100, 0.1)
    # float32 spacing near 1e4 is ~1e-3: no float32 kernel resolves lse more finely
    atol = 4e-3 if dtype == np.float32 else 1e-9
    np.testing.assert_allclose(loss, rloss, rtol=1e-6, atol=atol)
    np.testing.assert_allclose(lse, rlse, rtol=1e-6, atol=atol)
    g = mod.cross_entropy_backward(x, tg, lse, np.ones(3, dtype), -100, 0.1)
    np.testing.assert_allclose(g, R.cross_entropy_backward(f64(x), tg, f64(lse), np.ones(3),
                                                           -100, 0.1),
                               atol=1e-2 if dtype == np.float32 else 1e-9)


@pytest.mark.parametrize("provider", providers("cpp", "triton"))
def test_non_contiguous(rng, provider):
    mod = load(provider)
    x = rng.standard_normal((20, 6)).T  # (6, 20)
    tg = np.arange(12)[::2]
    loss, lse = mod.cross_entropy_forward(x, tg, -1, 0.0)
    check(provider, loss, R.cross_entropy_forward(x, tg, -1, 0.0)[0], np.float64, "loss")
    dloss = rng.standard_normal(12)[::2]
    check(provider, mod.cross_entropy_backward(x, tg, lse, dloss, -1, 0.0),
          R.cross_entropy_backward(x, tg, lse, dloss, -1, 0.0), np.float64, "dlogits")


@needs_triton
def test_triton_float16_accumulates_in_float32(rng):
    mod = load("triton")
    x = (rng.standard_normal((6, 70)) * 2).astype(np.float16)
    tg = rng.integers(0, 70, 6)
    loss, lse = mod.cross_entropy_forward(x, tg, -100, 0.0)
    rloss, rlse = R.cross_entropy_forward(x.astype(np.float64), tg, -100, 0.0)
    assert loss.dtype == np.float16 and lse.dtype == np.float32
    assert rel_err(loss, rloss) < 2e-3 and rel_err(lse, rlse) < 1e-6


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_through_autograd_matches_reference(rng, each_provider, smoothing):
    """nn.functional.cross_entropy as a user calls it (mean over the rows not ignored): the
    loss and the gradient of the logits from the provider in use, against the reference."""
    x = rng.standard_normal((6, 11)) * 3
    tg = np.array([3, IGNORE, 0, 10, 10, 5])
    xt = t(x, requires_grad=True)
    loss = F.cross_entropy(xt, t(tg), label_smoothing=smoothing)
    loss.backward()
    rloss, lse = R.cross_entropy_forward(x, tg, IGNORE, smoothing)
    dloss = np.full(6, 1 / 5)  # the mean over the 5 rows that count
    check(each_provider, np.asarray(loss.detach()), np.asarray(rloss.sum() / 5), np.float64,
          "loss", scale=10)
    check(each_provider, np.asarray(xt.grad),
          R.cross_entropy_backward(x, tg, lse, dloss, IGNORE, smoothing), np.float64, "dlogits")


# ---------------------------------------------------------------- bad input

def test_op_boundary_rejects_bad_input(each_provider):
    p = each_provider
    x = t(np.zeros((2, 3), np.float32))
    for targets, bad in (([0, 3], 3), ([-2, 0], -2), ([-5, 0], -5), ([-1, 0], -1)):
        with pytest.raises(IndexError, match=rf"cross_entropy: target {bad} is out of range for 3 "
                                             r"classes \(ignore_index=-100\)"):
            F.cross_entropy(x, t(np.array(targets)))
    big = t(np.zeros((2, 50257), np.float32))
    with pytest.raises(IndexError, match="cross_entropy: target 50257 is out of range for 50257"):
        F.cross_entropy(big, t(np.array([50257, 0])))
    with pytest.raises(IndexError, match=r"cross_entropy: target 3 is out of range .*"
                                         r"\(ignore_index=-1\)"):
        F.cross_entropy(x, t(np.array([-1, 3])), ignore_index=-1)
    with pytest.raises(TypeError, match="cross_entropy: targets must be int64 class indices, "
                                        "got float64"):
        FusedCrossEntropy.apply(x, t(np.array([0.0, 1.0])))
    with pytest.raises(ValueError, match=r"cross_entropy: targets must have shape \(2,\) to "
                                         r"match logits \(2, 3\), got \(3,\)"):
        FusedCrossEntropy.apply(x, t(np.array([0, 1, 2])))
    with pytest.raises(ValueError, match=r"cross_entropy: logits must be \(N, V\), got shape "
                                         r"\(3,\)"):
        FusedCrossEntropy.apply(t(np.zeros(3, np.float32)), t(np.array([0, 1, 2])))
    with pytest.raises(ValueError, match=r"cross_entropy: logits have no classes, shape \(2, 0\)"):
        FusedCrossEntropy.apply(t(np.zeros((2, 0), np.float32)), t(np.array([0, 1])))
    with pytest.raises(ValueError, match=r"cross_entropy: label_smoothing must be in \[0, 1\], "
                                         r"got 1.5"):
        F.cross_entropy(x, t(np.array([0, 1])), label_smoothing=1.5)
    with pytest.raises(TypeError, match=dtype_message("cross_entropy", "logits", "int64", p)):
        FusedCrossEntropy.apply(t(np.zeros((2, 3), np.int64)), t(np.array([0, 1])))


@needs_cpp
def test_cpp_guards_name_the_kernel():
    """tensorlite._C's own checks, which keep memory safe when it is called directly."""
    C = load("cpp")
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(IndexError, match="cross_entropy_forward.*3"):
        C.cross_entropy_forward(x, np.array([0, 3]), -100, 0.0)
    with pytest.raises(IndexError):
        C.cross_entropy_forward(x, np.array([-5, 0]), -100, 0.0)
    with pytest.raises(IndexError, match="cross_entropy_backward"):
        C.cross_entropy_backward(x, np.array([0, 7]), np.zeros(2, np.float32),
                                 np.ones(2, np.float32), -100, 0.0)
    with pytest.raises(TypeError, match="targets"):
        C.cross_entropy_forward(x, np.array([0.0, 1.0]), -100, 0.0)
    with pytest.raises(ValueError, match=r"cross_entropy_forward.*\(2,\)"):
        C.cross_entropy_forward(x, np.array([0, 1, 2]), -100, 0.0)
    with pytest.raises(ValueError, match=r"\(N, V\)"):
        C.cross_entropy_forward(np.zeros(3, np.float32), np.array([0, 1, 2]), -100, 0.0)
    with pytest.raises(TypeError, match="dloss"):
        C.cross_entropy_backward(x, np.array([0, 1]), np.zeros(2, np.float32), np.ones(2),
                                 -100, 0.0)
