"""The matrix products: csrc/gemm.cpp (a sequential MKL GEMM per block on the kernels' pool,
tensorlite/backend/blas.py) against NumPy's matmul, and ops/linear.py's Linear node against
the transpose-matmul-add it replaces (and torch.nn.functional.linear where torch is there)."""
import numpy as np
import pytest

import tensorlite as tl
from tensorlite import nn
from tensorlite.backend import blas
from tensorlite.nn import functional as F

have_mkl = pytest.mark.skipif(not blas.available()[0],
                              reason=f"the C++ GEMM path is off: {blas.available()[1]}")
TOL = {np.float32: 2e-5, np.float64: 1e-12}


def _close(got, want, dtype):
    scale = max(1.0, float(np.abs(want).max()) if want.size else 1.0)
    assert got.dtype == want.dtype
    assert np.abs(got - want).max(initial=0) <= TOL[dtype] * scale


def _operand(rng, rows, cols, dtype, layout):
    """A (rows, cols) operand stored row-major, as a transposed view, or as a strided slice."""
    if layout == "row":
        return rng.standard_normal((rows, cols)).astype(dtype)
    if layout == "transposed":
        return rng.standard_normal((cols, rows)).astype(dtype).T
    return rng.standard_normal((rows, cols + 5)).astype(dtype)[:, 2:cols + 2]  # ld > cols


@have_mkl
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("la", ["row", "transposed", "sliced"])
@pytest.mark.parametrize("lb", ["row", "transposed", "sliced"])
@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (3, 5, 7), (130, 33, 17), (17, 40, 300),
                                   (200, 0, 9), (0, 4, 5), (64, 64, 64)])
def test_gemm_matches_numpy(rng, dtype, la, lb, M, K, N):
    """Every layout the BLAS flags express, shapes that split over rows and over columns
    (M >= N and M < N), blocks not multiples of 16, an empty inner dimension."""
    gemm = blas.gemm()
    a, b = _operand(rng, M, K, dtype, la), _operand(rng, K, N, dtype, lb)
    bias = rng.standard_normal(N).astype(dtype)
    out = np.full((M, N), np.nan, dtype)
    gemm(a, b, out, False, None)
    _close(out, a @ b, dtype)
    gemm(a, b, out, False, bias)
    _close(out, a @ b + bias, dtype)
    base = rng.standard_normal((M, N)).astype(dtype)
    out[...] = base
    gemm(a, b, out, True, bias)
    _close(out, base + a @ b + bias, dtype)
    res = rng.standard_normal((M, N)).astype(dtype)  # the residual: C's start, not out's
    for bb in (None, bias):
        out[...] = np.nan
        gemm(a, b, out, False, bb, res)
        _close(out, res + a @ b + (0 if bb is None else bb), dtype)


@have_mkl
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_gemm_same_result_for_any_thread_count_split(rng, threads):
    """The split only decides which thread computes which block: every block's numbers are
    NumPy's to float32 rounding whatever the count."""
    a = rng.standard_normal((257, 96)).astype(np.float32)
    b = rng.standard_normal((96, 131)).astype(np.float32)
    old = tl.get_num_threads()
    try:
        tl.set_num_threads(threads)
        out = np.empty((257, 131), np.float32)
        blas.gemm()(a, b, out, False, None)
    finally:
        tl.set_num_threads(old)
    _close(out, a @ b, np.float32)


@have_mkl
def test_gemm_refuses_what_it_cannot_take(rng):
    gemm = blas.gemm()
    a = rng.standard_normal((4, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="one dtype"):
        gemm(a, a.T.astype(np.float64), np.empty((4, 4), np.float32), False, None)
    with pytest.raises(ValueError, match="a is 4x3 but b is 4x3"):
        gemm(a, a, np.empty((4, 3), np.float32), False, None)
    with pytest.raises(ValueError, match="C-contiguous 4x4"):
        gemm(a, a.T, np.empty((4, 4), np.float32).T, False, None)
    with pytest.raises(ValueError, match="unit stride"):
        gemm(a[::2, ::2], a[::2, ::2].T, np.empty((2, 2), np.float32), False, None)
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\)"):
        gemm(a, a.T, np.empty((4, 4), np.float32), False, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="float32 or float64"):
        gemm(a.astype(np.int32), a.T.astype(np.int32), np.empty((4, 4), np.int32), False, None)
    with pytest.raises(ValueError, match=r"residual must have shape \(4, 4\)"):
        gemm(a, a.T, np.empty((4, 4), np.float32), False, None, np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="residual and accumulate exclude each other"):
        gemm(a, a.T, np.zeros((4, 4), np.float32), True, None, np.zeros((4, 4), np.float32))


def test_mm_falls_back_to_numpy_for_what_gemm_does_not_take(rng):
    """Half dtypes, mixed dtypes and arrays without a unit stride multiply in NumPy."""
    a = rng.standard_normal((6, 4))
    for x, y in [(a.astype(np.float16), a.T.astype(np.float16)), (a[::2, ::2], a[::2, ::2].T),
                 (a.astype(np.float32), a.T)]:
        np.testing.assert_allclose(blas.mm(x, y), x @ y, rtol=1e-3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lead", [(5,), (2, 3), (0,)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_node_matches_matmul_and_add(rng, dtype, lead, bias):
    """F.linear's one node against the same layer built from a transpose, a matmul and an
    add, forward and every gradient."""
    x = rng.standard_normal(lead + (7,)).astype(dtype)
    w = rng.standard_normal((4, 7)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    g = rng.standard_normal(lead + (4,)).astype(dtype)
    got, want = [], []
    for fused in (True, False):
        xt, wt, bt = (tl.tensor(a, requires_grad=True) for a in (x, w, b))
        y = F.linear(xt, wt, bt if bias else None) if fused else \
            (xt @ wt.T + bt if bias else xt @ wt.T)
        assert (y.grad_fn.name() == "LinearBackward") == fused
        (y * tl.tensor(g)).sum().backward()
        (got if fused else want).append([y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy()]
                                        + ([bt.grad.numpy()] if bias else []))
    for a, e in zip(got[0], want[0]):
        _close(a, e, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_with_residual_matches_the_add(rng, dtype, bias):
    """F._linear_residual (the skip connection inside the GEMM) against linear + add:
    the output and every gradient, the residual's being g itself."""
    x = rng.standard_normal((2, 5, 7)).astype(dtype)
    w = rng.standard_normal((4, 7)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    r = rng.standard_normal((2, 5, 4)).astype(dtype)
    g = rng.standard_normal((2, 5, 4)).astype(dtype)
    results = []
    for fused in (True, False):
        xt, wt, bt, rt = (tl.tensor(a, requires_grad=True) for a in (x, w, b, r))
        bb = bt if bias else None
        y = F._linear_residual(xt, wt, bb, rt) if fused else rt + F.linear(xt, wt, bb)
        assert (y.grad_fn.name() == "LinearBackward") == fused
        (y * tl.tensor(g)).sum().backward()
        results.append([y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), rt.grad.numpy()]
                       + ([bt.grad.numpy()] if bias else []))
    for a, e in zip(*results):
        _close(a, e, dtype)
    np.testing.assert_array_equal(results[0][3], g)


def test_linear_with_residual_falls_back_where_the_gemm_cannot_add_it(rng):
    """A residual that broadcasts (or of another dtype) is added as written."""
    x = tl.tensor(rng.standard_normal((3, 7)).astype(np.float32))
    w = tl.tensor(rng.standard_normal((4, 7)).astype(np.float32))
    for r in (tl.tensor(rng.standard_normal(4).astype(np.float32)),
              tl.tensor(rng.standard_normal((3, 4)))):
        y = F._linear_residual(x, w, None, r)
        np.testing.assert_allclose(y.numpy(), (r + F.linear(x, w)).numpy(), rtol=1e-6)


@pytest.mark.parametrize("prenorm", [True, False])
def test_block_skip_connections_inside_the_gemm_match_the_modules(rng, prenorm):
    """Block adds its skip connections inside the projections' GEMMs; with a hook on the
    projections (which must see their own output) it runs the modules, then the adds: the
    two agree, forward and backward, and the hooks do see the projection alone."""
    from tensorlite.nn.transformer import Block
    tl.manual_seed(0)
    blk = Block(32, 4, prenorm=prenorm, causal=prenorm)
    x = rng.standard_normal((2, 6, 32)).astype(np.float32)
    results, seen = [], []
    for hooked in (False, True):
        handles = [blk.attn.c_proj.register_forward_hook(lambda m, a, o: seen.append(o.shape)),
                   blk.mlp.c_proj.register_forward_hook(lambda m, a, o: None)] if hooked else []
        blk.zero_grad()
        xt = tl.tensor(x, requires_grad=True)
        y = blk(xt)
        y.square().sum().backward()
        results.append([y.detach().numpy(), xt.grad.numpy()]
                       + [p.grad.numpy() for p in blk.parameters()])
        for h in handles:
            h.remove()
    assert seen == [(2, 6, 32)]
    for a, e in zip(*results):
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-5)


def test_linear_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((3, 5, 16)).astype(np.float32)
    lin = nn.Linear(16, 8)
    ref = torch.nn.Linear(16, 8)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(lin.weight.detach().numpy()))
        ref.bias.copy_(torch.from_numpy(lin.bias.detach().numpy()))
    xt = tl.tensor(x, requires_grad=True)
    xr = torch.from_numpy(x).requires_grad_()
    lin(xt).square().sum().backward()
    ref(xr).square().sum().backward()
    for a, e in [(xt.grad, xr.grad), (lin.weight.grad, ref.weight.grad),
                 (lin.bias.grad, ref.bias.grad)]:
        np.testing.assert_allclose(a.numpy(), e.numpy(), rtol=1e-5, atol=1e-5)


def test_blas_choice_is_validated(monkeypatch):
    monkeypatch.setenv("TENSORLITE_BLAS", "openblas")
    with pytest.raises(ValueError, match="TENSORLITE_BLAS='openblas': expected 'mkl', 'numpy'"):
        blas._load()
    monkeypatch.setenv("TENSORLITE_BLAS", "numpy")
    assert blas._load() == (None, "TENSORLITE_BLAS=numpy")
