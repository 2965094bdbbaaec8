"""The C++ kernels (tensorlite._C through the cpp provider) against the NumPy reference.

float64 must agree to ~1e-10 relative, float32 to ~1e-5. float32 kernels are compared
with the reference evaluated in float64 on the same (float32) inputs."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("tensorlite._C", reason="tensorlite._C is not built (run setup.py build_ext --inplace)")

import tensorlite.reference as R  # noqa: E402
from tensorlite import _C  # noqa: E402
from tensorlite import _C as C  # noqa: E402

DTYPES = [np.float32, np.float64]


def tol(dtype):
    return (1e-5, 1e-6) if dtype == np.float32 else (1e-10, 1e-12)


def close(got, want, dtype, scale=1.0):
    """got (dtype) vs want (float64 reference): relative, with an absolute floor scaled to the data."""
    assert got.dtype == dtype, (got.dtype, dtype)
    rtol, atol = tol(dtype)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * scale)


def f64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


@pytest.fixture
def threads():
    """Restores the kernels' thread count after a test that changes it."""
    before = _C.get_num_threads()
    yield
    _C.set_num_threads(before)


def test_provider_exposes_the_whole_contract():
    for name in R.__all__:
        assert callable(getattr(C, name)), name


# ---------------------------------------------------------------- softmax

SOFTMAX_SHAPES = [(1, 7), (3, 5, 33), (2, 1), (0, 10), (17,), (4, 1000), (2, 0, 3)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SOFTMAX_SHAPES)
@pytest.mark.parametrize("which", ["softmax", "log_softmax"])
def test_softmax_forward_backward(rng, dtype, shape, which):
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    fwd, bwd = getattr(C, f"{which}_forward"), getattr(C, f"{which}_backward")
    y = fwd(x)
    close(y, getattr(R, f"{which}_forward")(f64(x)), dtype, scale=10)
    assert y.shape == x.shape
    y_in = y  # the backward is checked on the kernel's own output, as autograd uses it
    close(bwd(y_in, dy), getattr(R, f"{which}_backward")(f64(y_in), f64(dy)), dtype, scale=10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_extreme_logits_stay_finite(dtype):
    x = np.array([[1e4, -1e4, 0.0, 9999.0], [-1e4, -1e4, -1e4, -1e4]], dtype)
    y = C.softmax_forward(x)
    close(y, R.softmax_forward(f64(x)), dtype)
    ly = C.log_softmax_forward(x)
    assert np.isfinite(ly).all()
    np.testing.assert_allclose(ly, R.log_softmax_forward(f64(x)), rtol=1e-6, atol=2e-3)


def test_float32_exp_is_accurate_across_its_range():
    # log_softmax_backward with sum(dy) = 1 and dy = 0 elsewhere returns -exp(y): a
    # direct look at the kernels' vectorised float32 exp
    y = np.concatenate([[0.0], np.linspace(-87.0, 0.0, 100001)]).astype(np.float32)[None, :]
    dy = np.zeros_like(y)
    dy[0, 0] = 1.0
    got = -C.log_softmax_backward(y, dy)[0, 1:].astype(np.float64)
    want = np.exp(y[0, 1:].astype(np.float64))
    assert np.abs(got / want - 1).max() < 3e-7
    assert C.log_softmax_backward(np.array([[0.0, -200.0]], np.float32),
                                  np.array([[1.0, 0.0]], np.float32))[0, 1] == 0.0


def test_softmax_non_contiguous_inputs(rng):
    base = rng.standard_normal((6, 40))
    for x in (base[:, ::3], base.T, base[::2]):
        close(C.softmax_forward(x), R.softmax_forward(x), np.float64)
        y = R.softmax_forward(x)
        dy = np.asfortranarray(rng.standard_normal(x.shape))
        close(C.softmax_backward(y, dy), R.softmax_backward(y, dy), np.float64)


def test_softmax_errors_name_the_op():
    with pytest.raises(TypeError, match="softmax_forward.*int64"):
        C.softmax_forward(np.ones((2, 3), np.int64))
    with pytest.raises(TypeError, match="log_softmax_forward.*float16"):
        C.log_softmax_forward(np.ones((2, 3), np.float16))
    with pytest.raises(TypeError, match="softmax_backward.*dy"):
        C.softmax_backward(np.ones((2, 3), np.float32), np.ones((2, 3), np.float64))
    with pytest.raises(ValueError, match=r"softmax_backward.*\(2, 3\).*\(3, 2\)"):
        C.softmax_backward(np.ones((2, 3)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="softmax_forward"):
        C.softmax_forward(np.array(1.0))


@settings(max_examples=15, deadline=None)
@given(lead=st.lists(st.integers(0, 4), min_size=0, max_size=3), C_=st.integers(1, 70),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_softmax_hypothesis_shapes(lead, C_, dtype, seed):
    r = np.random.default_rng(seed)
    x = (r.standard_normal((*lead, C_)) * 3).astype(dtype)
    close(C.softmax_forward(x), R.softmax_forward(f64(x)), dtype, scale=10)
    close(C.log_softmax_forward(x), R.log_softmax_forward(f64(x)), dtype, scale=10)


# ---------------------------------------------------------------- layer_norm

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 5), (3, 4, 33), (7, 1), (0, 8), (2, 0, 6), (9,), (16, 768)])
@pytest.mark.parametrize("has_w,has_b", [(True, True), (True, False), (False, True), (False, False)])
def test_layer_norm_forward_backward(rng, dtype, shape, has_w, has_b):
    Cn = shape[-1]
    x = (rng.standard_normal(shape) * 2 + 3).astype(dtype)
    w = rng.standard_normal(Cn).astype(dtype) if has_w else None
    b = rng.standard_normal(Cn).astype(dtype) if has_b else None
    dy = rng.standard_normal(shape).astype(dtype)
    y, mean, rstd = C.layer_norm_forward(x, w, b, 1e-5)
    ry, rmean, rrstd = R.layer_norm_forward(f64(x), f64(w), f64(b), 1e-5)
    close(y, ry, dtype, scale=10)
    close(mean, rmean, dtype, scale=10)
    close(rstd, rrstd, dtype)
    assert mean.shape == rstd.shape == shape[:-1]
    dx, dw, db = C.layer_norm_backward(dy, x, w, mean, rstd)
    rdx, rdw, rdb = R.layer_norm_backward(f64(dy), f64(x), f64(w), f64(mean), f64(rstd))
    rows = max(1, int(np.prod(shape[:-1])))
    # dx's terms are of size rstd*|dy*w| and cancel (exactly, when C == 1)
    close(dx, rdx, dtype, scale=10 * max(1.0, float(rrstd.max(initial=0))))
    close(db, rdb, dtype, scale=10 * rows)
    if has_w:
        close(dw, rdw, dtype, scale=10 * rows)
    else:
        assert dw is None


def test_layer_norm_large_mean_float64(rng):
    x = rng.standard_normal((4, 64)) + 1e6
    y, mean, rstd = C.layer_norm_forward(x, None, None, 1e-5)
    ry, _, rrstd = R.layer_norm_forward(x, None, None, 1e-5)
    np.testing.assert_allclose(y, ry, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(rstd, rrstd, rtol=1e-8)


def test_layer_norm_non_contiguous(rng):
    x = rng.standard_normal((10, 12)).T  # (12, 10), not C-contiguous
    w = rng.standard_normal(20)[::2]
    dy = rng.standard_normal((10, 12)).T
    y, mean, rstd = C.layer_norm_forward(x, w, None, 1e-5)
    close(y, R.layer_norm_forward(x, w, None, 1e-5)[0], np.float64)
    for got, want in zip(C.layer_norm_backward(dy, x, w, mean, rstd),
                         R.layer_norm_backward(dy, x, w, mean, rstd)):
        close(got, want, np.float64, scale=10)


def test_layer_norm_errors():
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


@settings(max_examples=15, deadline=None)
@given(lead=st.lists(st.integers(0, 4), min_size=0, max_size=3), C_=st.integers(1, 70),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_layer_norm_hypothesis_shapes(lead, C_, dtype, seed):
    r = np.random.default_rng(seed)
    x = r.standard_normal((*lead, C_)).astype(dtype)
    w = r.standard_normal(C_).astype(dtype)
    y, mean, rstd = C.layer_norm_forward(x, w, None, 1e-5)
    close(y, R.layer_norm_forward(f64(x), f64(w), None, 1e-5)[0], dtype, scale=10)
    dy = r.standard_normal(x.shape).astype(dtype)
    dx = C.layer_norm_backward(dy, x, w, mean, rstd)[0]
    close(dx, R.layer_norm_backward(f64(dy), f64(x), f64(w), f64(mean), f64(rstd))[0], dtype,
          scale=100)


# ---------------------------------------------------------------- cross_entropy

def ce_case(rng, dtype, N, V, smoothing, ignore=-100, targets=None, scale=3.0):
    x = (rng.standard_normal((N, V)) * scale).astype(dtype)
    t = rng.integers(0, V, N) if targets is None else np.asarray(targets, np.int64)
    loss, lse = C.cross_entropy_forward(x, t, ignore, smoothing)
    rloss, rlse = R.cross_entropy_forward(f64(x), t, ignore, smoothing)
    close(loss, rloss, dtype, scale=10)
    close(lse, rlse, dtype, scale=10)
    dloss = rng.standard_normal(N).astype(dtype)
    g = C.cross_entropy_backward(x, t, lse, dloss, ignore, smoothing)
    close(g, R.cross_entropy_backward(f64(x), t, f64(lse), f64(dloss), ignore, smoothing), dtype)
    return g


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,V", [(1, 1), (5, 7), (3, 65), (0, 10), (4, 1000)])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_shapes(rng, dtype, N, V, smoothing):
    ce_case(rng, dtype, N, V, smoothing)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_gpt2_vocab(rng, dtype):
    ce_case(rng, dtype, 2, 50257, 0.1)


def test_cross_entropy_ignore_all_but_one_row(rng):
    t = [-100, -100, 4, -100, -100]
    g = ce_case(rng, np.float32, 5, 9, 0.05, targets=t)
    assert (g[[0, 1, 3, 4]] == 0).all() and (g[2] != 0).any()
    loss, _ = C.cross_entropy_forward(np.zeros((5, 9), np.float32), np.array(t), -100, 0.0)
    assert loss[0] == 0 and loss[2] == pytest.approx(np.log(9), rel=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_logits_near_1e4(rng, dtype):
    x = (rng.choice([-1.0, 1.0], (3, 50)) * 1e4 + rng.standard_normal((3, 50))).astype(dtype)
    t = np.array([0, 17, 49])
    loss, lse = C.cross_entropy_forward(x, t, -100, 0.1)
    assert np.isfinite(loss).all() and np.isfinite(lse).all()
    rloss, rlse = R.cross_entropy_forward(f64(x), t, -100, 0.1)
    # float32 spacing near 1e4 is ~1e-3: no float32 kernel resolves lse more finely
    atol = 4e-3 if dtype == np.float32 else 1e-9
    np.testing.assert_allclose(loss, rloss, rtol=1e-6, atol=atol)
    np.testing.assert_allclose(lse, rlse, rtol=1e-6, atol=atol)
    g = C.cross_entropy_backward(x, t, lse, np.ones(3, dtype), -100, 0.1)
    np.testing.assert_allclose(g, R.cross_entropy_backward(f64(x), t, f64(lse), np.ones(3), -100, 0.1),
                               atol=1e-2 if dtype == np.float32 else 1e-9)


def test_cross_entropy_non_contiguous(rng):
    x = rng.standard_normal((20, 6)).T  # (6, 20)
    t = np.arange(12)[::2]
    loss, lse = C.cross_entropy_forward(x, t, -1, 0.0)
    close(loss, R.cross_entropy_forward(x, t, -1, 0.0)[0], np.float64)
    dloss = rng.standard_normal(12)[::2]
    close(C.cross_entropy_backward(x, t, lse, dloss, -1, 0.0),
          R.cross_entropy_backward(x, t, lse, dloss, -1, 0.0), np.float64)


def test_cross_entropy_errors():
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
        C.cross_entropy_backward(x, np.array([0, 1]), np.zeros(2, np.float32), np.ones(2), -100, 0.0)


# ---------------------------------------------------------------- gelu

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["none", "tanh"])
def test_gelu_forward_backward(rng, dtype, mode):
    x = np.concatenate([np.linspace(-12, 12, 2001), rng.standard_normal(999) * 3]).astype(dtype)
    x = x.reshape(3, 1000)
    dy = rng.standard_normal(x.shape).astype(dtype)
    close(C.gelu_forward(x, mode), R.gelu_forward(f64(x), mode), dtype)
    close(C.gelu_backward(x, dy, mode), R.gelu_backward(f64(x), f64(dy), mode), dtype)


def test_gelu_float32_exact_tail_is_relatively_accurate():
    # y = x * Phi(x) is tiny for x << 0; the kernel must not return noise or flush to 0 there
    x = np.linspace(-6, -2, 4001).astype(np.float32)
    got = C.gelu_forward(x, "none").astype(np.float64)
    want = R.gelu_forward(x.astype(np.float64), "none")
    assert np.abs(got / want - 1).max() < 2e-6


@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_odd_sizes_and_views(rng, dtype):
    for shape in [(1,), (0, 4), (5, 4097), ()]:
        x = np.asarray(rng.standard_normal(shape), dtype=dtype)
        close(C.gelu_forward(x, "none"), R.gelu_forward(f64(x), "none"), dtype)
    x = rng.standard_normal((50, 30)).astype(dtype).T
    close(C.gelu_backward(x, x, "tanh"), R.gelu_backward(f64(x), f64(x), "tanh"), dtype, scale=10)


def test_gelu_errors():
    with pytest.raises(ValueError, match="gelu_forward.*approximate"):
        C.gelu_forward(np.zeros(3), "erf")
    with pytest.raises(TypeError, match="gelu_forward"):
        C.gelu_forward(np.zeros(3, np.int32), "none")
    with pytest.raises(ValueError, match="gelu_backward"):
        C.gelu_backward(np.zeros(3), np.zeros(4), "none")


# ---------------------------------------------------------------- adamw

HP = dict(lr=1e-2, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1)


def adam_state(rng, shapes, dtype):
    ps = [rng.standard_normal(s).astype(dtype) for s in shapes]
    return ps, [np.zeros(s, dtype) for s in shapes], [np.zeros(s, dtype) for s in shapes]


@pytest.mark.parametrize("dtype", DTYPES)
def test_adamw_matches_reference_over_three_steps(rng, dtype):
    shapes = [(3, 40000), (7,), (0,), (1,)]
    ps, ms, vs = adam_state(rng, shapes, dtype)
    rps, rms, rvs = [p.astype(np.float64) for p in ps], [m.astype(np.float64) for m in ms], \
        [v.astype(np.float64) for v in vs]
    for step in (1, 2, 3):
        gs = [rng.standard_normal(s).astype(dtype) for s in shapes]
        assert C.adamw_step(ps, gs, ms, vs, step=step, **HP) is None
        R.adamw_step(rps, [f64(g) for g in gs], rms, rvs, step=step, **HP)
    for got, want in zip(ps + ms + vs, rps + rms + rvs):
        close(got, want, dtype, scale=10)


def test_adamw_mixed_dtypes_in_one_call(rng):
    p32, p64 = np.ones(5, np.float32), np.ones(5, np.float64)
    g32, g64 = np.full(5, 0.5, np.float32), np.full(5, 0.5)
    m, v = [np.zeros(5, np.float32), np.zeros(5)], [np.zeros(5, np.float32), np.zeros(5)]
    C.adamw_step([p32, p64], [g32, g64], m, v, step=1, **HP)
    np.testing.assert_allclose(p32, p64, rtol=1e-6)
    assert p64[0] < 1.0


def test_adamw_errors():
    p, g, m, v = (np.zeros((2, 3), np.float32) for _ in range(4))
    kw = dict(step=1, **HP)
    with pytest.raises(ValueError, match="length"):
        C.adamw_step([p], [], [m], [v], **kw)
    with pytest.raises(ValueError, match=r"adamw_step.*\(2, 3\).*\(3, 2\)"):
        C.adamw_step([p], [np.zeros((3, 2), np.float32)], [m], [v], **kw)
    with pytest.raises(ValueError, match="contiguous"):
        C.adamw_step([np.zeros((3, 2), np.float32).T], [g], [m], [v], **kw)
    ro = np.zeros((2, 3), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        C.adamw_step([p], [g], [ro], [v], **kw)
    with pytest.raises(TypeError, match="exp_avg_sq"):
        C.adamw_step([p], [g], [m], [np.zeros((2, 3))], **kw)
    with pytest.raises(TypeError, match="numpy array"):
        C.adamw_step([[0.0, 1.0]], [g], [m], [v], **kw)
    with pytest.raises(ValueError, match="step"):
        C.adamw_step([p], [g], [m], [v], **{**kw, "step": 0})
    with pytest.raises(TypeError):
        C.adamw_step([p], [g], [m], [v], 1e-3, 0.9, 0.99, 1e-8, 0.0, 1)  # keyword-only


# ---------------------------------------------------------------- threads

def test_thread_count_does_not_change_results(rng, threads):
    # big enough (> 2^17 elements) for the kernels to actually use both threads
    x = rng.standard_normal((613, 300)).astype(np.float32)
    w = rng.standard_normal(300).astype(np.float32)
    t = rng.integers(0, 300, 613)

    def run_all():
        y, mean, rstd = C.layer_norm_forward(x, w, w, 1e-5)
        loss, lse = C.cross_entropy_forward(x, t, -100, 0.1)
        return [C.softmax_forward(x), C.log_softmax_backward(x, x), y, mean, rstd,
                *C.layer_norm_backward(x, x, w, mean, rstd), loss, lse,
                C.cross_entropy_backward(x, t, lse, loss, -100, 0.1),
                C.gelu_forward(x, "none"), C.gelu_backward(x, x, "tanh")]

    _C.set_num_threads(1)
    assert _C.get_num_threads() == 1
    one = run_all()
    _C.set_num_threads(2)
    assert _C.get_num_threads() == 2
    two = run_all()
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


def test_thread_count_defaults_to_omp_num_threads():
    import os
    import subprocess
    import sys
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", "from tensorlite import _C; print(_C.get_num_threads())"],
                         capture_output=True, text=True, env=env, timeout=60,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == "1", out.stderr


def test_set_num_threads_rejects_zero():
    with pytest.raises(ValueError, match="set_num_threads"):
        _C.set_num_threads(0)
