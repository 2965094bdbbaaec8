"""The NumPy reference ops (the spec): forwards against straightforward formulas,
backwards against central finite differences in float64."""
import math

import numpy as np
import pytest

import tensorlite.reference as R
from tensorlite.reference._erf import erf, erfc


def numeric_grad(f, x, h=1e-6):
    """Central-difference gradient of the scalar function f at x (float64, perturbed in place)."""
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        up = f()
        flat[i] = old - h
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * h)
    return g


def assert_grad(analytic, numeric, tol=1e-7):
    np.testing.assert_allclose(analytic, numeric, rtol=tol, atol=tol * max(1.0, np.abs(numeric).max()))


# ---------------------------------------------------------------- erf

def test_erf_matches_math_erf_on_a_grid():
    xs = np.linspace(-8, 8, 40001)
    want = np.array([math.erf(v) for v in xs])
    assert np.abs(erf(xs) - want).max() < 1e-14


def test_erfc_is_relatively_accurate_in_the_tail():
    xs = np.linspace(-5, 26, 20001)
    want = np.array([math.erfc(v) for v in xs])
    np.testing.assert_allclose(erfc(xs), want, rtol=1e-13, atol=0)


def test_erf_blockwise_path_matches_small_arrays():
    # arrays above one block are computed block by block; shape and values must not change
    x = np.linspace(-7, 7, 3 * 65536 + 5).reshape(-1, 1)
    big = erfc(x)
    assert big.shape == x.shape
    idx = np.arange(0, x.size, 997)
    np.testing.assert_array_equal(big[idx, 0], erfc(x[idx, 0]))
    np.testing.assert_array_equal(erf(x)[idx, 0], erf(x[idx, 0]))


def test_erf_special_values():
    out = erf(np.array([0.0, np.inf, -np.inf, np.nan]))
    assert out[0] == 0.0 and out[1] == 1.0 and out[2] == -1.0 and np.isnan(out[3])


# ---------------------------------------------------------------- softmax

def test_softmax_forward_matches_formula_and_is_shift_invariant(rng):
    x = rng.standard_normal((3, 4, 7))
    want = np.exp(x) / np.exp(x).sum(-1, keepdims=True)
    np.testing.assert_allclose(R.softmax_forward(x), want, rtol=1e-13)
    np.testing.assert_allclose(R.softmax_forward(x + 1000.0), want, rtol=1e-12)
    np.testing.assert_allclose(R.log_softmax_forward(x), np.log(want), rtol=1e-12, atol=1e-14)
    assert np.isfinite(R.log_softmax_forward(x * 1e4)).all()


@pytest.mark.parametrize("which", ["softmax", "log_softmax"])
def test_softmax_backward_matches_finite_differences(rng, which):
    fwd = getattr(R, f"{which}_forward")
    bwd = getattr(R, f"{which}_backward")
    x = rng.standard_normal((2, 5))
    w = rng.standard_normal((2, 5))
    num = numeric_grad(lambda: (fwd(x) * w).sum(), x)
    assert_grad(bwd(fwd(x), w), num)


def test_softmax_keeps_float32_and_rejects_ints():
    x = np.ones((2, 3), np.float32)
    assert R.softmax_forward(x).dtype == np.float32
    with pytest.raises(TypeError, match="softmax_forward"):
        R.softmax_forward(np.ones((2, 3), np.int64))
    with pytest.raises(ValueError, match="softmax_backward"):
        R.softmax_backward(x, np.ones((2, 4), np.float32))


# ---------------------------------------------------------------- layer_norm

@pytest.mark.parametrize("has_w,has_b", [(True, True), (True, False), (False, True), (False, False)])
def test_layer_norm_forward_matches_formula(rng, has_w, has_b):
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
def test_layer_norm_backward_matches_finite_differences(rng, has_w):
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


def test_layer_norm_float32_stats_and_bad_weight():
    x = np.ones((4, 3), np.float32)
    y, mean, rstd = R.layer_norm_forward(x, None, None, 1e-5)
    assert y.dtype == mean.dtype == rstd.dtype == np.float32
    with pytest.raises(ValueError, match=r"layer_norm_forward.*\(4,\)"):
        R.layer_norm_forward(x, np.ones(4, np.float32), None, 1e-5)
    with pytest.raises(TypeError, match="layer_norm_forward"):
        R.layer_norm_forward(x, np.ones(3, np.float64), None, 1e-5)


# ---------------------------------------------------------------- cross_entropy

@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_forward_matches_formula(rng, smoothing):
    x = rng.standard_normal((5, 7)) * 3
    t = np.array([0, 6, -100, 3, 3])
    loss, lse = R.cross_entropy_forward(x, t, -100, smoothing)
    logp = np.log(np.exp(x) / np.exp(x).sum(-1, keepdims=True))
    for i in range(5):
        if t[i] == -100:
            assert loss[i] == 0.0
            continue
        q = np.full(7, smoothing / 7)
        q[t[i]] += 1 - smoothing
        assert loss[i] == pytest.approx(-(q * logp[i]).sum(), rel=1e-12)
    np.testing.assert_allclose(lse, np.log(np.exp(x).sum(-1)), rtol=1e-13)


def test_cross_entropy_is_stable_for_huge_logits():
    x = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], np.float32)
    loss, lse = R.cross_entropy_forward(x, np.array([1, 2]), -100, 0.0)
    # float32 spacing at 1e4 is ~1e-3, which bounds what any float32 loss can resolve
    np.testing.assert_allclose(loss, [2e4, math.log(3)], rtol=1e-6, atol=2e-3)
    assert lse.dtype == loss.dtype == np.float32


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_backward_matches_finite_differences(rng, smoothing):
    x = rng.standard_normal((4, 6))
    t = np.array([2, -1, 0, 5])
    dloss = rng.standard_normal(4)

    def total():
        return (R.cross_entropy_forward(x, t, -1, smoothing)[0] * dloss).sum()

    _, lse = R.cross_entropy_forward(x, t, -1, smoothing)
    g = R.cross_entropy_backward(x, t, lse, dloss, -1, smoothing)
    assert_grad(g, numeric_grad(total, x))
    assert (g[1] == 0).all()


def test_cross_entropy_bad_target_raises_index_error():
    x = np.zeros((2, 3))
    with pytest.raises(IndexError, match="cross_entropy_forward"):
        R.cross_entropy_forward(x, np.array([0, 3]), -100, 0.0)
    with pytest.raises(IndexError):
        R.cross_entropy_forward(x, np.array([-2, 0]), -100, 0.0)
    with pytest.raises(TypeError):
        R.cross_entropy_forward(x, np.array([0.0, 1.0]), -100, 0.0)


# ---------------------------------------------------------------- gelu

def test_gelu_forward_matches_formulas(rng):
    x = np.concatenate([rng.standard_normal(50) * 3, [0.0, -10.0, 10.0]])
    exact = np.array([v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x])
    np.testing.assert_allclose(R.gelu_forward(x, "none"), exact, rtol=1e-13, atol=1e-15)
    k = math.sqrt(2 / math.pi)
    tanh = 0.5 * x * (1 + np.tanh(k * (x + 0.044715 * x ** 3)))
    np.testing.assert_allclose(R.gelu_forward(x, "tanh"), tanh, rtol=1e-13, atol=1e-15)
    # the far tail is computed through erfc, so it stays relatively accurate
    tail = R.gelu_forward(np.array([-20.0]), "none")[0]
    assert tail == pytest.approx(-20.0 * 0.5 * math.erfc(20 / math.sqrt(2)), rel=1e-12)


@pytest.mark.parametrize("mode", ["none", "tanh"])
def test_gelu_backward_matches_finite_differences(rng, mode):
    x = rng.standard_normal(12) * 2
    dy = rng.standard_normal(12)
    num = numeric_grad(lambda: (R.gelu_forward(x, mode) * dy).sum(), x)
    assert_grad(R.gelu_backward(x, dy, mode), num)


def test_gelu_rejects_unknown_mode():
    with pytest.raises(ValueError, match="approximate"):
        R.gelu_forward(np.zeros(3), "erf")


# ---------------------------------------------------------------- adamw

def test_adamw_matches_a_textbook_loop_over_three_steps(rng):
    shapes = [(3, 4), (5,)]
    params = [rng.standard_normal(s) for s in shapes]
    ms = [np.zeros(s) for s in shapes]
    vs = [np.zeros(s) for s in shapes]
    want = [p.copy() for p in params]
    wm = [np.zeros(s) for s in shapes]
    wv = [np.zeros(s) for s in shapes]
    hp = dict(lr=1e-2, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1)
    for step in (1, 2, 3):
        grads = [rng.standard_normal(s) for s in shapes]
        R.adamw_step(params, grads, ms, vs, step=step, **hp)
        for p, g, m, v in zip(want, grads, wm, wv):
            for i in np.ndindex(p.shape):
                p[i] = p[i] - hp["lr"] * hp["weight_decay"] * p[i]
                m[i] = hp["beta1"] * m[i] + (1 - hp["beta1"]) * g[i]
                v[i] = hp["beta2"] * v[i] + (1 - hp["beta2"]) * g[i] ** 2
                mhat = m[i] / (1 - hp["beta1"] ** step)
                vhat = v[i] / (1 - hp["beta2"] ** step)
                p[i] = p[i] - hp["lr"] * mhat / (math.sqrt(vhat) + hp["eps"])
    for got, exp in zip(params + ms + vs, want + wm + wv):
        np.testing.assert_allclose(got, exp, rtol=1e-13, atol=1e-15)


def test_adamw_checks_shapes_and_lengths():
    p = [np.zeros(3)]
    with pytest.raises(ValueError, match="length"):
        R.adamw_step(p, [], [np.zeros(3)], [np.zeros(3)], lr=1e-3, beta1=0.9, beta2=0.99,
                     eps=1e-8, weight_decay=0.0, step=1)
    with pytest.raises(ValueError, match="shape"):
        R.adamw_step(p, [np.zeros(4)], [np.zeros(3)], [np.zeros(3)], lr=1e-3, beta1=0.9,
                     beta2=0.99, eps=1e-8, weight_decay=0.0, step=1)
