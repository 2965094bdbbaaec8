"""Reductions (sum, mean, var/std, max/min, logsumexp, argmax/argmin, prod, cumsum) and
softmax/log_softmax: forward against NumPy, backward by gradcheck in float64, over
dim=None/int/negative/tuple with keepdim, size-1, empty and non-contiguous inputs."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import tensorlite as tl

from _core_helpers import (PROVIDERS, check_grad, close, leaf, needs_torch,  # noqa: F401
                           numpy_kernels, rand, torch)


def _np_lse(a, axis, keepdims):
    m = np.max(a, axis=axis, keepdims=True)
    out = np.log(np.exp(a - m).sum(axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


# name -> (tensorlite op(x, dim, keepdim), numpy reference(a, axis, keepdims))
REDUCTIONS = {
    "sum": (lambda x, d, k: x.sum(d, keepdim=k), lambda a, d, k: a.sum(axis=d, keepdims=k)),
    "mean": (lambda x, d, k: x.mean(d, keepdim=k), lambda a, d, k: a.mean(axis=d, keepdims=k)),
    "var": (lambda x, d, k: x.var(d, keepdim=k), lambda a, d, k: a.var(axis=d, ddof=1, keepdims=k)),
    "var_biased": (lambda x, d, k: x.var(d, unbiased=False, keepdim=k),
                   lambda a, d, k: a.var(axis=d, keepdims=k)),
    "std": (lambda x, d, k: x.std(d, keepdim=k), lambda a, d, k: a.std(axis=d, ddof=1, keepdims=k)),
    "std_biased": (lambda x, d, k: tl.std(x, d, False, k), lambda a, d, k: a.std(axis=d, keepdims=k)),
    "amax": (lambda x, d, k: x.amax(d, keepdim=k), lambda a, d, k: a.max(axis=d, keepdims=k)),
    "amin": (lambda x, d, k: x.amin(d, keepdim=k), lambda a, d, k: a.min(axis=d, keepdims=k)),
    "logsumexp": (lambda x, d, k: x.logsumexp(d, keepdim=k), _np_lse),
}

DIMS = [None, 0, -1, 1, (0, 2), (-1, 0, 1)]


@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("dim", DIMS, ids=str)
@pytest.mark.parametrize("name", REDUCTIONS)
def test_reduction_forward_and_grad(name, dim, keepdim):
    if name == "logsumexp" and dim is None:
        dim = (0, 1, 2)  # logsumexp needs a dim, as in PyTorch
    op, ref = REDUCTIONS[name]
    a = rand((2, 3, 4), seed=1)
    out = op(leaf(a), dim, keepdim)
    close(out, ref(a, dim, keepdim))
    assert check_grad(lambda x: op(x, dim, keepdim), a)


_SIZE_ONE = [((1, 4), 0), ((3, 1), 1), ((5,), 0), ((1,), None), ((2, 1, 3), (1, 2))]


def _n_reduced(shape, dim):
    return int(np.prod([shape[d] for d in np.atleast_1d(dim if dim is not None else range(len(shape)))]))


@pytest.mark.parametrize("name,shape,dim", [
    (n, s, d) for n in REDUCTIONS for s, d in _SIZE_ONE
    # the unbiased variance of a single sample is nan: nothing to check there
    if not (n in ("var", "std") and _n_reduced(s, d) < 2)], ids=str)
def test_reduction_size_one_dims(name, shape, dim):
    op, ref = REDUCTIONS[name]
    if name == "logsumexp" and dim is None:
        dim = 0
    a = rand(shape, seed=2)
    close(op(leaf(a), dim, False), ref(a, dim, False))
    assert check_grad(lambda x: op(x, dim, False), a)


@pytest.mark.parametrize("name", REDUCTIONS)
def test_reduction_non_contiguous(name):
    op, ref = REDUCTIONS[name]
    a = rand((6, 4), seed=3)
    for dim in (0, 1):
        close(op(leaf(a).T[:, ::2], dim, False), ref(a.T[:, ::2], dim, False))
        assert check_grad(lambda x: op(x.T[:, ::2], dim, False), a)


def test_reductions_of_0d_tensor():
    a = np.array(1.5)
    for name in ("sum", "mean", "amax", "amin", "logsumexp"):
        op, ref = REDUCTIONS[name]
        for dim in ((None, 0, -1) if name != "logsumexp" else (0, -1)):
            out = op(leaf(a), dim, False)
            assert out.shape == ()
            close(out, 1.5)
            assert check_grad(lambda x: op(x, dim, False), a)


def test_reductions_over_empty_dims():
    a = np.zeros((0, 3))
    close(leaf(a).sum(), 0.0)
    close(leaf(a).sum(0), np.zeros(3))
    close(leaf(a).sum(1), np.zeros(0))
    close(leaf(a).amax(1), np.zeros(0))
    close(leaf(a).prod(0), np.ones(3))
    assert check_grad(lambda x: x.sum(0), a)
    assert check_grad(lambda x: x.prod(0), a)
    with pytest.raises(RuntimeError, match="empty"):
        leaf(a).max()


def test_numpy_integer_dims():
    a = rand((2, 3), seed=12)
    close(leaf(a).sum(np.int64(1)), a.sum(1))
    close(leaf(a).mean((np.int32(0), 1)), a.mean())
    close(leaf(a).softmax(np.int64(0)), _np_softmax(a, 0))


def test_softmax_and_logsumexp_over_an_empty_dim():
    for shape, dim in (((3, 0), -1), ((3, 0), 0), ((0, 3), -1)):
        x = leaf(np.zeros(shape))
        for f in (lambda t: t.softmax(dim), lambda t: t.log_softmax(dim)):
            out = f(x)
            assert out.shape == shape
            out.sum().backward()
            assert x.grad.shape == shape
    close(leaf(np.zeros((3, 0))).logsumexp(1), np.full(3, -np.inf))
    close(leaf(np.zeros((0, 3))).logsumexp(1), np.zeros(0))


def test_sum_dtypes():
    assert tl.tensor([True, True, False]).sum().dtype is tl.int64
    assert tl.tensor([1, 2], dtype=tl.int32).sum().dtype is tl.int64
    s = tl.tensor([1, 2, 3]).sum()
    assert s.dtype is tl.int64 and s.item() == 6
    assert tl.ones(3).sum(dtype=tl.float64).dtype is tl.float64
    with pytest.raises(RuntimeError, match="mean"):
        tl.tensor([1, 2]).mean()
    with pytest.raises(RuntimeError, match="var"):
        tl.tensor([1, 2]).var()
    with pytest.raises(RuntimeError, match="std"):
        tl.tensor([1, 2]).std()


def test_var_unbiased_flag_and_correction():
    a = np.array([[1.0, 2.0, 4.0], [0.0, 0.0, 3.0]])
    close(leaf(a).var(1), a.var(1, ddof=1))
    close(leaf(a).var(1, unbiased=False), a.var(1))
    close(leaf(a).var(1, correction=0), a.var(1))
    close(leaf(a).std(), a.std(ddof=1))
    close(leaf(a).std(unbiased=False), a.std())


def test_std_of_constant_rows_has_zero_gradient():
    # PyTorch masks the 1 / (2 std) factor where std == 0: no nan from 0 * inf
    x = leaf([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0]])
    with np.errstate(all="raise"):
        x.std(1).sum().backward()
    close(x.grad, [[0.0, 0.0, 0.0], [-0.5, 0.0, 0.5]])
    y = leaf([2.0])
    y.std(unbiased=False).backward()
    close(y.grad, [0.0])


# ---- max/min values and indices, ties ---------------------------------------------------

@pytest.mark.parametrize("largest", [True, False])
def test_max_min_with_dim_returns_values_and_indices(largest):
    a = rand((3, 4), seed=4)
    x = leaf(a)
    fn, npf, arg = (x.max, np.max, np.argmax) if largest else (x.min, np.min, np.argmin)
    for dim in (0, 1, -1):
        for keepdim in (False, True):
            r = fn(dim, keepdim=keepdim)
            values, indices = r
            assert r.values is values and r.indices is indices
            close(values, npf(a, axis=dim, keepdims=keepdim))
            assert indices.dtype is tl.int64
            want = arg(a, axis=dim)
            np.testing.assert_array_equal(np.asarray(indices),
                                          np.expand_dims(want, dim) if keepdim else want)
    close(fn(), npf(a))
    assert check_grad(lambda t: (t.max(1)[0] if largest else t.min(1)[0]), a)
    assert check_grad(lambda t: (t.max() if largest else t.min()), a)


@pytest.mark.parametrize("op", ["max", "min", "amax", "amin"])
def test_max_min_ties_split_gradient_evenly(op):
    x = leaf([[1.0, 3.0, 3.0, 2.0], [5.0, 5.0, 5.0, 5.0]]) if op in ("max", "amax") else \
        leaf([[1.0, -3.0, -3.0, 2.0], [5.0, 5.0, 5.0, 5.0]])
    f = getattr(x, op)
    out = f(1) if op in ("amax", "amin") else f(1)[0]
    out.sum().backward()
    close(x.grad, [[0.0, 0.5, 0.5, 0.0], [0.25, 0.25, 0.25, 0.25]])
    x.grad = None
    f().backward()  # over everything: the two ... four tied entries of the extreme share it
    g = np.asarray(x.grad)
    np.testing.assert_allclose(g.sum(), 1.0)
    assert (g[g > 0] == g.max()).all()


def test_max_with_tensor_is_maximum():
    a, b = tl.tensor([1.0, 4.0]), tl.tensor([3.0, 2.0])
    close(a.max(b), [3.0, 4.0])
    close(tl.min(a, b), [1.0, 2.0])


@pytest.mark.parametrize("name", ["argmax", "argmin"])
def test_argmax_argmin(name):
    a = rand((3, 4, 2), seed=5)
    x = tl.tensor(a)
    f, ref = getattr(x, name), getattr(np, name)
    assert f().item() == ref(a) and f().dtype is tl.int64 and f().shape == ()
    assert f(keepdim=True).shape == (1, 1, 1)
    for dim in (0, 1, -1):
        np.testing.assert_array_equal(np.asarray(f(dim)), ref(a, axis=dim))
        np.testing.assert_array_equal(np.asarray(f(dim, keepdim=True)), ref(a, axis=dim, keepdims=True))
    assert not getattr(leaf(a), name)().requires_grad
    with pytest.raises(IndexError, match="dim 3"):
        f(3)


# ---- prod, cumsum ----------------------------------------------------------------------

@pytest.mark.parametrize("dim", [None, 0, 1, -1])
@pytest.mark.parametrize("zeros", [0, 1, 2])
def test_prod_forward_and_grad_with_zeros(dim, zeros):
    a = rand((3, 4), 0.5, 1.5, seed=6)
    if zeros >= 1:
        a[1, 2] = 0.0
    if zeros >= 2:
        a[1, 0] = 0.0
        a[2, 2] = 0.0
    for keepdim in (False, True):
        if dim is None and keepdim:
            continue
        out = leaf(a).prod(dim, keepdim=keepdim) if dim is not None else leaf(a).prod()
        close(out, a.prod(axis=dim, keepdims=keepdim))
        assert check_grad(lambda x: x.prod(dim, keepdim=keepdim), a)
    # exact values of the gradient: product of the other entries
    x = leaf(a)
    x.prod().backward()
    want = np.array([np.prod(np.delete(a.reshape(-1), i)) for i in range(a.size)]).reshape(a.shape)
    close(x.grad, want)


def test_prod_of_empty_and_0d():
    x = leaf(np.zeros(0))
    out = x.prod()
    close(out, 1.0)
    out.backward()
    assert x.grad.shape == (0,)
    close(leaf(np.array(3.0)).prod(), 3.0)
    assert check_grad(lambda t: t.prod(), np.array(3.0))


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_cumsum(dim):
    a = rand((3, 4), seed=7)
    close(leaf(a).cumsum(dim), np.cumsum(a, axis=dim))
    assert check_grad(lambda x: x.cumsum(dim), a)
    assert check_grad(lambda x: x.T.cumsum(dim), a)


def test_cumsum_int_and_0d():
    np.testing.assert_array_equal(np.asarray(tl.tensor([1, 2, 3]).cumsum(0)), [1, 3, 6])
    out = tl.tensor(2.0).cumsum(0)
    assert out.shape == () and out.item() == 2.0


# ---- logsumexp ---------------------------------------------------------------------------

def test_logsumexp_stable_for_large_and_neg_inf_inputs():
    x = leaf([[1000.0, 1000.0], [-1000.0, -1000.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        out = x.logsumexp(1)
        out.sum().backward()
    close(out, [1000.0 + np.log(2), -1000.0 + np.log(2)])
    close(x.grad, np.full((2, 2), 0.5))
    y = tl.tensor([[-np.inf, -np.inf], [0.0, -np.inf]])
    close(y.logsumexp(1), [-np.inf, 0.0])


# ---- softmax / log_softmax -----------------------------------------------------------------

def _np_softmax(a, axis):
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("dim", [0, 1, 2, -1, -2])
@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
def test_softmax_any_dim(provider, dim, log):
    tl.set_kernels(provider)
    a = rand((2, 3, 4), -3, 3, seed=8)
    fn = (lambda x: x.log_softmax(dim)) if log else (lambda x: x.softmax(dim))
    want = _np_softmax(a, dim)
    close(fn(leaf(a)), np.log(want) if log else want)
    assert check_grad(fn, a)
    assert check_grad(lambda x: fn(x.transpose(0, 2)), a)  # non-contiguous input


@pytest.mark.parametrize("provider", PROVIDERS)
def test_softmax_stable_for_large_inputs(provider):
    tl.set_kernels(provider)
    a = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1000.0, -1000.0]])
    for dtype in (tl.float32, tl.float64):
        x = tl.tensor(a, dtype=dtype, requires_grad=True)
        with np.errstate(over="raise", invalid="raise"):
            s = x.softmax(-1)
            ls = x.log_softmax(-1)
            (s.sum() + ls.sum()).backward()
        assert s.dtype is dtype
        # float32 can only be asked for rounding at the inputs' magnitude (1000 * eps)
        atol = 1000 * np.finfo(np.float32).eps if dtype is tl.float32 else 1e-9
        close(s, _np_softmax(a, -1), rtol=1e-5, atol=atol)
        close(ls, np.log(_np_softmax(a, -1)), rtol=1e-5, atol=atol)
        assert np.isfinite(np.asarray(x.grad)).all()


def test_softmax_0d_int_and_bad_dim():
    close(tl.tensor(3.0).softmax(0), 1.0)
    s = tl.tensor([1, 2, 3]).softmax(0)
    assert s.dtype is tl.float32
    close(s, _np_softmax(np.array([1.0, 2.0, 3.0]), 0), rtol=1e-6)
    with pytest.raises(IndexError, match=r"softmax: dim 2 .* 2 dims"):
        tl.ones(2, 3).softmax(2)


@needs_torch
def test_softmax_and_reductions_against_torch():
    a = rand((3, 5), -3, 3, seed=9)
    tx = torch.tensor(a, requires_grad=True)
    x = leaf(a)
    w = rand((3, 5), seed=10)
    (tx.log_softmax(0) * torch.tensor(w)).sum().backward()
    (x.log_softmax(0) * tl.tensor(w)).sum().backward()
    close(x.grad, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    close(x.var(1), tx.detach().var(1).numpy())
    close(x.logsumexp((0, 1)), tx.detach().logsumexp((0, 1)).numpy())


# ---- hypothesis: random shapes, random dims ---------------------------------------------------

@st.composite
def _shape_and_dims(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4))
    dims = draw(st.none() | st.lists(st.integers(0, len(shape) - 1), min_size=1, max_size=len(shape),
                                     unique=True))
    if dims is not None:
        dims = tuple(d - len(shape) if draw(st.booleans()) else d for d in dims)
        if len(dims) == 1 and draw(st.booleans()):
            dims = dims[0]
    return shape, dims


@settings(max_examples=20, deadline=None)
@given(sd=_shape_and_dims(), keepdim=st.booleans(),
       name=st.sampled_from(["sum", "mean", "amax", "amin", "var_biased", "logsumexp"]))
def test_reductions_hypothesis(sd, keepdim, name):
    shape, dim = sd
    if name == "logsumexp" and dim is None:
        dim = tuple(range(len(shape)))
    op, ref = REDUCTIONS[name]
    a = rand(shape, seed=11)
    close(op(leaf(a), dim, keepdim), ref(a, dim, keepdim))
    assert check_grad(lambda x: op(x, dim, keepdim), a)
