"""The Triton kernels (the "triton" provider), run through Triton's interpreter on
NumPy arrays, against the NumPy reference (tensorlite/reference).

Shapes are small because the interpreter runs every program as NumPy calls. Block
sizes are forced small where a test needs tails (T, V, C not multiples of a block)
or the loop kernels used for rows wider than one register tile.
"""
import os
import subprocess
import sys

os.environ.setdefault("TRITON_INTERPRET", "1")  # conftest sets it too; this file alone works

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("triton", reason="triton is not installed: the triton provider needs it")
import triton.language as tl  # noqa: E402

from tensorlite import reference as R  # noqa: E402
from tensorlite.kernels import _launch  # noqa: E402
from tensorlite.kernels import attention as KA  # noqa: E402
from tensorlite.kernels import cross_entropy as KCE  # noqa: E402
from tensorlite.kernels import layernorm as KLN  # noqa: E402
from tensorlite.kernels import provider as P  # noqa: E402
from tensorlite.kernels import softmax as KS  # noqa: E402

if not _launch.interpreting():
    pytest.skip("TRITON_INTERPRET was not set before the kernels were imported: these "
                "tests run the kernels on NumPy arrays through Triton's interpreter",
                allow_module_level=True)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = {np.float32: 1e-5, np.float64: 1e-12}


def assert_close(ours, ref, tol, what=""):
    """max |ours - ref| <= tol * max |ref|, same shape and dtype, same non-finite entries."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape, (what, ours.shape, ref.shape)
    assert ours.dtype == ref.dtype, (what, ours.dtype, ref.dtype)
    fin = np.isfinite(ref)
    np.testing.assert_array_equal(np.isfinite(ours), fin, err_msg=what)
    np.testing.assert_array_equal(ours[~fin], ref[~fin], err_msg=what)
    if fin.any():
        scale = max(float(np.abs(ref[fin]).max()), 1e-30)
        e = float(np.abs(ours[fin].astype(np.float64) - ref[fin]).max()) / scale
        assert e <= tol, f"{what}: relative error {e:.3g} > {tol:.1g}"


def rel_err(a, ref64):
    fin = np.isfinite(ref64)
    return float(np.abs(a[fin].astype(np.float64) - ref64[fin]).max()
                 / max(float(np.abs(ref64[fin]).max()), 1e-30))


# ----------------------------------------------------------------------------- softmax

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("shape,loop_block", [((3, 5, 37), None), ((4, 50), 16), ((2, 1), None)])
def test_softmax(rng, dtype, log, shape, loop_block):
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    fwd = R.log_softmax_forward if log else R.softmax_forward
    bwd = R.log_softmax_backward if log else R.softmax_backward
    y = KS._forward(x, log, loop_block=loop_block)
    assert_close(y, fwd(x), TOL[dtype], "forward")
    yr = fwd(x)
    assert_close(KS._backward(yr, dy, log, loop_block=loop_block), bwd(yr, dy), TOL[dtype],
                 "backward")


def test_softmax_contract_entry_points_and_edge_shapes(rng):
    x = rng.standard_normal((3, 7)).astype(np.float32)
    assert_close(P.softmax_forward(x), R.softmax_forward(x), 1e-5)
    assert_close(P.log_softmax_forward(x), R.log_softmax_forward(x), 1e-5)
    # Non-contiguous input, 0-size leading dim, -inf entries (masked logits).
    xt = rng.standard_normal((7, 3)).astype(np.float32).T
    assert_close(P.softmax_forward(xt), R.softmax_forward(np.ascontiguousarray(xt)), 1e-5)
    assert P.softmax_forward(np.zeros((0, 5), np.float32)).shape == (0, 5)
    assert P.softmax_forward(np.zeros((3, 0), np.float32)).shape == (3, 0)
    xm = x.copy()
    xm[:, ::2] = -np.inf
    y = P.softmax_forward(xm)
    assert np.all(y[:, ::2] == 0) and np.allclose(y.sum(-1), 1, atol=1e-6)
    with pytest.raises(TypeError, match="softmax_forward"):
        P.softmax_forward(np.zeros((2, 3), np.int64))
    with pytest.raises(ValueError, match="softmax_backward"):
        P.softmax_backward(x, x[:, :2])


# ----------------------------------------------------------------------------- layer_norm

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape,loop_block", [((3, 5, 37), None), ((7, 40), 16)])
def test_layer_norm(rng, dtype, affine, shape, loop_block):
    c = shape[-1]
    x = (rng.standard_normal(shape) * 2 + 3).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal(c).astype(dtype) if affine else None
    b = rng.standard_normal(c).astype(dtype) if affine else None
    y, mean, rstd = KLN.layer_norm_forward(x, w, b, 1e-5, loop_block=loop_block)
    ry, rmean, rrstd = R.layer_norm_forward(x, w, b, 1e-5)
    stat = np.float64 if dtype == np.float64 else np.float32
    assert mean.dtype == rstd.dtype == stat and mean.shape == x.shape[:-1]
    assert_close(y, ry, TOL[dtype], "y")
    assert_close(mean, rmean.astype(stat), TOL[dtype], "mean")
    assert_close(rstd, rrstd.astype(stat), TOL[dtype], "rstd")
    # groups=3 splits the rows unevenly over the partial-sum programs.
    dx, dw, db = KLN.layer_norm_backward(dy, x, w, mean, rstd, loop_block=loop_block, groups=3)
    rdx, rdw, rdb = R.layer_norm_backward(dy, x, w, rmean, rrstd)
    assert_close(dx, rdx, 10 * TOL[dtype], "dx")  # dx cancels: a few ulps of its terms
    assert_close(db, rdb, TOL[dtype], "dbias")
    if affine:
        assert_close(dw, rdw, TOL[dtype], "dweight")
    else:
        assert dw is None


def test_layer_norm_edge_cases(rng):
    x = rng.standard_normal((0, 6)).astype(np.float32)
    y, mean, rstd = P.layer_norm_forward(x, None, None, 1e-5)
    assert y.shape == (0, 6) and mean.shape == (0,)
    dx, dw, db = P.layer_norm_backward(x, x, np.ones(6, np.float32), mean, rstd)
    assert dx.shape == (0, 6) and np.all(dw == 0) and np.all(db == 0)
    with pytest.raises(ValueError, match="layer_norm_forward"):
        P.layer_norm_forward(np.zeros((2, 3), np.float32), np.ones(4, np.float32), None, 1e-5)


# ----------------------------------------------------------------------------- gelu

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", ["none", "tanh"])
def test_gelu(rng, dtype, mode):
    x = (rng.standard_normal((5, 301)) * 3).astype(dtype)
    x[0, :6] = [0.0, -30.0, 30.0, 1e-4, -1e-4, 6.0]  # saturated tanh / erf, tiny values
    dy = rng.standard_normal(x.shape).astype(dtype)
    # The erf form 1 + erf(x/sqrt2) loses relative accuracy in the far negative tail
    # (where gelu ~ 0) as PyTorch's does; the errors are measured against the scale.
    assert_close(P.gelu_forward(x, mode), R.gelu_forward(x, mode), 2 * TOL[dtype], "forward")
    assert_close(P.gelu_backward(x, dy, mode), R.gelu_backward(x, dy, mode), 2 * TOL[dtype],
                 "backward")
    with pytest.raises(ValueError, match="approximate"):
        P.gelu_forward(x, "erf")


# ----------------------------------------------------------------------------- cross_entropy

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("n,v,block_v", [(9, 300, 64), (5, 50, None)])
def test_cross_entropy(rng, dtype, smoothing, n, v, block_v):
    x = (rng.standard_normal((n, v)) * 3).astype(dtype)
    t = rng.integers(0, v, n)
    t[1] = -100
    t[-1] = v - 1
    dl = rng.standard_normal(n).astype(dtype)
    loss, lse = KCE.cross_entropy_forward(x, t, -100, smoothing, block_v=block_v)
    rloss, rlse = R.cross_entropy_forward(x, t, -100, smoothing)
    assert loss[1] == 0
    assert_close(loss, rloss, TOL[dtype], "loss")
    assert_close(lse, rlse, TOL[dtype], "lse")
    dx = KCE.cross_entropy_backward(x, t, rlse, dl, -100, smoothing, block_v=block_v)
    rdx = R.cross_entropy_backward(x, t, rlse, dl, -100, smoothing)
    assert np.all(dx[1] == 0)
    assert_close(dx, rdx, TOL[dtype], "dlogits")


def test_cross_entropy_gpt2_vocab_and_errors(rng):
    # V = 50257 (GPT-2) walked in the default vocabulary blocks.
    x = rng.standard_normal((2, 50257)).astype(np.float32)
    t = np.array([50256, 7])
    loss, lse = P.cross_entropy_forward(x, t, -100, 0.0)
    rloss, rlse = R.cross_entropy_forward(x, t, -100, 0.0)
    assert_close(loss, rloss, 1e-5)
    assert_close(lse, rlse, 1e-5)
    dl = np.ones(2, np.float32)
    assert_close(P.cross_entropy_backward(x, t, lse, dl, -100, 0.0),
                 R.cross_entropy_backward(x, t, rlse, dl, -100, 0.0), 1e-5)
    with pytest.raises(IndexError):
        P.cross_entropy_forward(x, np.array([50257, 0]), -100, 0.0)
    with pytest.raises(IndexError):
        P.cross_entropy_forward(x, np.array([-1, 0]), -100, 0.0)


# ----------------------------------------------------------------------------- adamw

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adamw(rng, dtype):
    shapes = [(3, 7), (1000,), (2, 3, 4), (0,)]
    ours = [[rng.standard_normal(s).astype(dtype) for s in shapes]]
    grads = [rng.standard_normal(s).astype(dtype) for s in shapes]
    ours += [[np.zeros(s, dtype) for s in shapes] for _ in range(2)]
    ref = [[a.copy() for a in group] for group in ours]
    hp = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1)
    for step in (1, 2, 3):
        assert P.adamw_step(ours[0], grads, ours[1], ours[2], step=step, **hp) is None
        R.adamw_step(ref[0], grads, ref[1], ref[2], step=step, **hp)
    for group_o, group_r, what in zip(ours, ref, ("param", "exp_avg", "exp_avg_sq")):
        for a, b in zip(group_o, group_r):
            if a.size:
                assert_close(a, b, 2 * TOL[dtype], what)


def test_adamw_rejects_noncontiguous():
    p = np.zeros((4, 4), np.float32)[:, ::2]
    with pytest.raises(ValueError, match="contiguous"):
        P.adamw_step([p], [p], [p], [p], lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                     weight_decay=0.0, step=1)


# ----------------------------------------------------------------------------- attention

def _attn_inputs(rng, b, h, tq, tk, d, dtype=np.float32):
    q = rng.standard_normal((b, h, tq, d)).astype(dtype)
    k = rng.standard_normal((b, h, tk, d)).astype(dtype)
    v = rng.standard_normal((b, h, tk, d)).astype(dtype)
    do = rng.standard_normal((b, h, tq, d)).astype(dtype)
    return q, k, v, do


def _check_flash_rule(ours, ref32, ref64, atol, what):
    """FlashAttention's rule: error vs float64 <= 2 x the fp32 reference's error + atol."""
    for i, (o, r32, r64) in enumerate(zip(ours, ref32, ref64)):
        assert o.dtype == r32.dtype and o.shape == r32.shape, (what, i)
        np.testing.assert_array_equal(np.isfinite(o), np.isfinite(r64), err_msg=f"{what}[{i}]")
        e, e32 = rel_err(o, r64), rel_err(r32, r64)
        assert e <= 2 * e32 + atol, f"{what}[{i}]: error {e:.3g} vs fp32 reference {e32:.3g}"


def _run_attention(rng, b, h, tq, tk, d, causal, mask=None, blocks=(None, None)):
    q, k, v, do = _attn_inputs(rng, b, h, tq, tk, d)
    sc = d ** -0.5
    f64 = [None if a is None else a.astype(np.float64) for a in (q, k, v, do, mask)]
    o, lse = KA._fwd(q, k, v, mask, causal, sc, *blocks)
    ro, rlse = R.attention_forward(q, k, v, mask, causal, sc)
    ro64, rlse64 = R.attention_forward(f64[0], f64[1], f64[2], f64[4], causal, sc)
    _check_flash_rule([o, lse], [ro, rlse], [ro64, rlse64], 1e-6, "forward")
    grads = KA._bwd(q, k, v, o, lse, do, mask, causal, sc, *blocks)
    rgrads = R.attention_backward(q, k, v, ro, rlse, do, mask, causal, sc)
    rgrads64 = R.attention_backward(*f64[:3], ro64, rlse64, f64[3], f64[4], causal, sc)
    _check_flash_rule(grads, rgrads, rgrads64, 1e-6, "backward")
    return o, lse, grads


@pytest.mark.parametrize("b,h,tq,tk,d,causal,blocks", [
    (1, 2, 37, 37, 16, False, (16, 16)),   # T not a multiple of the block
    (1, 2, 37, 37, 16, True, (16, 16)),
    (2, 1, 20, 45, 32, True, (16, 16)),    # causal, Tq < Tk
    (1, 2, 45, 20, 32, True, (16, 32)),    # causal, Tq > Tk, BLOCK_M != BLOCK_N
    (1, 1, 50, 50, 32, True, (32, 16)),
    (1, 1, 40, 24, 64, False, (None, None)),
    (1, 1, 19, 19, 24, True, (None, None)),  # D padded to 32
])
def test_attention(rng, b, h, tq, tk, d, causal, blocks):
    _run_attention(rng, b, h, tq, tk, d, causal, blocks=blocks)


@pytest.mark.parametrize("mshape", ["1H", "B1", "11"])
def test_attention_broadcast_mask_and_fully_masked_rows(rng, mshape):
    b, h, tq, tk, d = 2, 2, 21, 27, 16
    shape = {"1H": (1, h, tq, tk), "B1": (b, 1, 1, tk), "11": (1, 1, tq, tk)}[mshape]
    mask = np.where(rng.random(shape) < 0.3, -np.inf, rng.standard_normal(shape))
    mask = mask.astype(np.float32)
    if shape[2] == tq:
        mask[..., 4, :] = -np.inf  # query row 4 attends nothing
    o, lse, (dq, dk, dv) = _run_attention(rng, b, h, tq, tk, d, True, mask, (16, 16))
    if shape[2] == tq:
        assert np.all(o[:, :, 4] == 0) and np.all(lse[:, :, 4] == np.inf)
        assert np.all(dq[:, :, 4] == 0)
    for a in (o, dq, dk, dv):
        assert np.isfinite(a).all()


def test_attention_float64_and_noncontiguous(rng):
    b, t, h, d = 1, 23, 2, 16
    # (B, T, H, D) -> (B, H, T, D) views, as a model's attention layer produces them.
    q, k, v, do = (rng.standard_normal((b, t, h, d)).transpose(0, 2, 1, 3) for _ in range(4))
    o, lse = KA._fwd(q, k, v, None, True, 0.3, 16, 16)
    ro, rlse = R.attention_forward(q, k, v, None, True, 0.3)
    assert_close(o, ro, 1e-12, "o")
    assert_close(lse, rlse, 1e-12, "lse")
    for g, rg in zip(KA._bwd(q, k, v, o, lse, do, None, True, 0.3, 16, 16),
                     R.attention_backward(q, k, v, ro, rlse, do, None, True, 0.3)):
        assert_close(g, rg, 1e-12, "grad")


def test_attention_float16_accumulates_in_float32(rng):
    q, k, v, do = _attn_inputs(rng, 1, 1, 24, 24, 16, np.float16)
    up = [a.astype(np.float64) for a in (q, k, v, do)]
    o, lse = P.attention_forward(q, k, v, None, True, 0.25)
    assert o.dtype == np.float16 and lse.dtype == np.float32
    ro, rlse = R.attention_forward(*up[:3], None, True, 0.25)
    assert rel_err(o, ro) < 5e-3 and rel_err(lse, rlse) < 1e-6
    grads = P.attention_backward(q, k, v, o, lse, do, None, True, 0.25)
    for g, rg in zip(grads, R.attention_backward(*up[:3], ro, rlse, up[3], None, True, 0.25)):
        assert g.dtype == np.float16 and rel_err(g, rg) < 1e-2


def test_attention_without_keys(rng):
    q = rng.standard_normal((1, 2, 3, 16)).astype(np.float32)
    k = np.zeros((1, 2, 0, 16), np.float32)
    o, lse = P.attention_forward(q, k, k, None, False, 0.25)
    assert np.all(o == 0) and np.all(lse == np.inf)
    dq, dk, dv = P.attention_backward(q, k, k, o, lse, q, None, False, 0.25)
    assert np.all(dq == 0) and dk.shape == dv.shape == (1, 2, 0, 16)


def test_attention_argument_errors(rng):
    q, k, v, _ = _attn_inputs(rng, 1, 1, 4, 5, 16)
    with pytest.raises(ValueError, match="mask"):
        P.attention_forward(q, k, v, np.zeros((1, 1, 3, 5), np.float32), False, 0.25)
    with pytest.raises(TypeError, match="mask"):
        P.attention_forward(q, k, v, np.zeros((1, 1, 4, 5), np.float64), False, 0.25)
    with pytest.raises(ValueError, match="attention_forward"):
        P.attention_forward(q, k[..., :8], v, None, False, 0.25)


# ----------------------------------------------------------------------------- float16

def test_row_ops_take_float16_and_accumulate_in_float32(rng):
    """The GPU half-precision path (fp16 storage, fp32 math), as far as NumPy can carry it."""
    x = (rng.standard_normal((6, 70)) * 2).astype(np.float16)
    x64 = x.astype(np.float64)
    y = P.softmax_forward(x)
    assert y.dtype == np.float16 and rel_err(y, R.softmax_forward(x64)) < 2e-3
    y, mean, rstd = P.layer_norm_forward(x, None, None, 1e-5)
    ry, rmean, rrstd = R.layer_norm_forward(x64, None, None, 1e-5)
    assert y.dtype == np.float16 and mean.dtype == rstd.dtype == np.float32
    assert rel_err(y, ry) < 2e-3 and rel_err(mean, rmean) < 1e-6 and rel_err(rstd, rrstd) < 1e-6
    assert rel_err(P.gelu_forward(x, "tanh"), R.gelu_forward(x64, "tanh")) < 2e-3
    t = rng.integers(0, 70, 6)
    loss, lse = P.cross_entropy_forward(x, t, -100, 0.0)
    rloss, rlse = R.cross_entropy_forward(x64, t, -100, 0.0)
    assert loss.dtype == np.float16 and lse.dtype == np.float32
    assert rel_err(loss, rloss) < 2e-3 and rel_err(lse, rlse) < 1e-6


# ----------------------------------------------------------------------------- launch layer

def test_import_tensorlite_kernels_does_not_import_triton():
    code = ("import sys, tensorlite.kernels; "
            "assert 'triton' not in sys.modules, 'tensorlite.kernels imported triton'")
    env = dict(os.environ, PYTHONPATH=ROOT)
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT, timeout=60)


def _double(X, N, BLOCK: tl.constexpr):  # decorated inside the test, interpreter off
    offs = tl.arange(0, BLOCK)
    tl.store(X + offs, tl.load(X + offs, mask=offs < N) * 2, mask=offs < N)


def test_numpy_array_to_compiled_kernel_says_how_to_fix(monkeypatch):
    import triton
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    compiled = triton.jit(_double)
    assert not _launch._is_interpreted(compiled)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        _launch.launch(compiled, (1,), np.ones(4, np.float32), 4, BLOCK=4)


def test_provider_without_gpu_or_interpreter_raises_clearly(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    try:
        _launch.check_usable()
    except RuntimeError as e:
        assert "TRITON_INTERPRET=1" in str(e) and "no GPU" in str(e)
    else:
        pytest.skip("a GPU is available here: the provider is usable without the interpreter")
