"""Elementwise ops and matmul: forward against NumPy, backward by gradcheck in float64,
over size-1 dims, broadcasting both ways, 0-d and empty operands and non-contiguous inputs."""
import math
import operator

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import tensorlite as tl
from tensorlite.autograd import gradcheck

from _core_helpers import (BROADCAST_PAIRS, PROVIDERS, away_from, check_grad, close, leaf,
                           needs_torch, numpy_kernels, rand, torch)  # noqa: F401

# ---- binary arithmetic --------------------------------------------------------------

# name -> (tensorlite op, numpy op, domain of a, domain of b)
BINARY = {
    "add": (operator.add, np.add, (-2, 2), (-2, 2)),
    "sub": (operator.sub, np.subtract, (-2, 2), (-2, 2)),
    "mul": (operator.mul, np.multiply, (-2, 2), (-2, 2)),
    "div": (operator.truediv, np.divide, (-2, 2), (0.5, 2)),
    "pow": (operator.pow, np.power, (0.5, 2), (-2, 2)),
    "maximum": (lambda a, b: a.maximum(b), np.maximum, (-2, 2), (-2, 2)),
    "minimum": (lambda a, b: tl.minimum(a, b), np.minimum, (-2, 2), (-2, 2)),
}


def _pair(name, sa, sb, dtype=np.float64):
    _, _, da, db = BINARY[name]
    return rand(sa, *da, seed=1, dtype=dtype), rand(sb, *db, seed=2, dtype=dtype)


@pytest.mark.parametrize("shapes", BROADCAST_PAIRS, ids=str)
@pytest.mark.parametrize("name", BINARY)
def test_binary_forward_and_grad(name, shapes):
    op, ref, _, _ = BINARY[name]
    a, b = _pair(name, *shapes)
    out = op(leaf(a), leaf(b))
    assert out.dtype is tl.float64 and out.requires_grad
    close(out, ref(a, b))
    assert check_grad(op, a, b)


@pytest.mark.parametrize("name", BINARY)
def test_binary_float32_forward(name):
    op, ref, _, _ = BINARY[name]
    a, b = _pair(name, (3, 1), (4,), dtype=np.float32)
    out = op(tl.tensor(a), tl.tensor(b))
    assert out.dtype is tl.float32
    close(out, ref(a, b), rtol=1e-5)


@pytest.mark.parametrize("name", BINARY)
def test_binary_non_contiguous(name):
    # a.T and b[::2] are strided views: the ops and their backward must not assume contiguity
    op, ref, _, _ = BINARY[name]
    a, b = _pair(name, (4, 3), (6, 4))
    out = op(leaf(a).T, leaf(b)[::2])
    close(out, ref(a.T, b[::2]))
    assert check_grad(lambda x, y: op(x.T, y[::2]), a, b)


@pytest.mark.parametrize("name", BINARY)
def test_binary_only_one_side_requires_grad(name):
    op, _, _, _ = BINARY[name]
    a, b = _pair(name, (2, 3), (3,))
    x, y = leaf(a), leaf(b, requires_grad=False)
    op(x, y).sum().backward()
    assert x.grad is not None and x.grad.shape == (2, 3) and y.grad is None
    x, y = leaf(a, requires_grad=False), leaf(b)
    op(x, y).sum().backward()
    assert y.grad.shape == (3,) and x.grad is None


SCALAR_OPS = {
    "x+2": (lambda x: x + 2, lambda x: x + 2),
    "2+x": (lambda x: 2 + x, lambda x: 2 + x),
    "x-2.5": (lambda x: x - 2.5, lambda x: x - 2.5),
    "2.5-x": (lambda x: 2.5 - x, lambda x: 2.5 - x),
    "x*3": (lambda x: x * 3, lambda x: x * 3),
    "3*x": (lambda x: 3 * x, lambda x: 3 * x),
    "x/4": (lambda x: x / 4, lambda x: x / 4),
    "4/x": (lambda x: 4 / x, lambda x: 4 / x),
    "x**2": (lambda x: x ** 2, lambda x: x ** 2),
    "x**0.5": (lambda x: x ** 0.5, lambda x: x ** 0.5),
    "x**-1.5": (lambda x: x ** -1.5, lambda x: x ** -1.5),
    "2**x": (lambda x: 2 ** x, lambda x: 2.0 ** x),
    "-x": (lambda x: -x, lambda x: -x),
    "square": (lambda x: x.square(), lambda x: x * x),
}


@pytest.mark.parametrize("name", SCALAR_OPS)
def test_ops_with_python_scalars(name):
    op, ref = SCALAR_OPS[name]
    a = rand((2, 3), 0.5, 2)
    close(op(leaf(a)), ref(a))
    assert check_grad(op, a)


def test_pow_at_zero_base_has_finite_grads():
    # d/dx x**2 at 0 is 0; d/db 0**b is defined as 0 (PyTorch does the same)
    x = leaf([0.0, 1.0])
    (x ** 2).sum().backward()
    close(x.grad, [0.0, 2.0])
    x.grad = None
    with np.errstate(all="raise"):  # d/dx x**0 is 0 everywhere, also at 0 (no 0 * inf)
        (x ** 0).sum().backward()
        (x ** 1).sum().backward()
    close(x.grad, [1.0, 1.0])
    base, e = leaf([0.0, 2.0]), leaf([2.0, 3.0])
    (base ** e).sum().backward()
    assert np.isfinite(np.asarray(e.grad)).all()
    close(e.grad, [0.0, 8 * math.log(2)])


@pytest.mark.parametrize("fn,ga_want", [(lambda a, b: a.maximum(b), [0.5, 0.0, 1.0]),
                                        (lambda a, b: a.minimum(b), [0.5, 1.0, 0.0])],
                         ids=["maximum", "minimum"])
def test_maximum_minimum_ties_split_grad(fn, ga_want):
    a, b = leaf([1.0, 2.0, 3.0]), leaf([1.0, 5.0, 0.0])
    fn(a, b).sum().backward()
    np.testing.assert_array_equal(np.asarray(a.grad), ga_want)
    np.testing.assert_array_equal(np.asarray(b.grad), 1 - np.asarray(ga_want))


@settings(max_examples=15, deadline=None)
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3,
                                                min_side=0, max_side=3),
       name=st.sampled_from(["add", "sub", "mul", "div"]))
def test_binary_hypothesis_broadcast(shapes, name):
    op, ref, _, _ = BINARY[name]
    (sa, sb), result = shapes.input_shapes, shapes.result_shape
    a, b = _pair(name, sa, sb)
    out = op(leaf(a), leaf(b))
    assert out.shape == tuple(result)
    close(out, ref(a, b))
    assert check_grad(op, a, b)


# ---- unary --------------------------------------------------------------------------

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _gelu_exact(x):
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


# name -> (tensorlite op, numpy reference, domain, kinks to keep finite differences away from)
UNARY = {
    "neg": (lambda x: x.neg(), np.negative, (-2, 2), ()),
    "abs": (lambda x: x.abs(), np.abs, (-2, 2), (0,)),
    "exp": (lambda x: x.exp(), np.exp, (-2, 2), ()),
    "log": (lambda x: x.log(), np.log, (0.2, 3), ()),
    "sqrt": (lambda x: x.sqrt(), np.sqrt, (0.2, 3), ()),
    "rsqrt": (lambda x: x.rsqrt(), lambda x: 1 / np.sqrt(x), (0.2, 3), ()),
    "sin": (lambda x: x.sin(), np.sin, (-3, 3), ()),
    "cos": (lambda x: tl.cos(x), np.cos, (-3, 3), ()),
    "tanh": (lambda x: x.tanh(), np.tanh, (-3, 3), ()),
    "sigmoid": (lambda x: x.sigmoid(), lambda x: 1 / (1 + np.exp(-x)), (-4, 4), ()),
    "relu": (lambda x: x.relu(), lambda x: np.maximum(x, 0), (-2, 2), (0,)),
    "gelu": (lambda x: x.gelu(), _gelu_exact, (-3, 3), ()),
    "gelu_tanh": (lambda x: x.gelu(approximate="tanh"), _gelu_tanh, (-3, 3), ()),
    "silu": (lambda x: x.silu(), lambda x: x / (1 + np.exp(-x)), (-4, 4), ()),
    "clamp": (lambda x: x.clamp(-0.5, 1.0), lambda x: np.clip(x, -0.5, 1.0), (-2, 2), (-0.5, 1.0)),
    "clamp_min": (lambda x: x.clamp(min=0.25), lambda x: np.maximum(x, 0.25), (-2, 2), (0.25,)),
    "clamp_max": (lambda x: tl.clamp(x, max=0.25), lambda x: np.minimum(x, 0.25), (-2, 2), (0.25,)),
}

UNARY_SHAPES = [(), (1,), (5,), (3, 1, 4), (0, 3)]


@pytest.mark.parametrize("shape", UNARY_SHAPES, ids=str)
@pytest.mark.parametrize("name", UNARY)
def test_unary_forward_and_grad(name, shape):
    op, ref, dom, kinks = UNARY[name]
    a = away_from(rand(shape, *dom, seed=3), kinks)
    out = op(leaf(a))
    assert out.shape == a.shape and out.dtype is tl.float64
    close(out, ref(a))
    assert check_grad(op, a)


@pytest.mark.parametrize("name", UNARY)
def test_unary_non_contiguous(name):
    op, ref, dom, kinks = UNARY[name]
    a = away_from(rand((6, 4), *dom, seed=4), kinks)
    close(op(leaf(a).T[:, ::2]), ref(a.T[:, ::2]))
    assert check_grad(lambda x: op(x.T[:, ::2]), a)


@pytest.mark.parametrize("name", UNARY)
def test_unary_float32(name):
    op, ref, dom, _ = UNARY[name]
    a = rand((3, 4), *dom, seed=5, dtype=np.float32)
    out = op(tl.tensor(a))
    assert out.dtype is tl.float32
    close(out, ref(a.astype(np.float64)), rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_providers(provider, approximate):
    tl.set_kernels(provider)
    a = rand((3, 5), -4, 4, seed=6)
    ref = _gelu_exact if approximate == "none" else _gelu_tanh
    close(leaf(a).gelu(approximate=approximate), ref(a))
    assert check_grad(lambda x: x.gelu(approximate=approximate), a)


def test_gelu_rejects_unknown_approximation():
    with pytest.raises(ValueError, match="approximate"):
        tl.ones(2).gelu(approximate="erf")


def test_unary_on_int_tensors_gives_float():
    t = tl.tensor([1, 4, 9])
    for out in (t.sqrt(), t.exp(), t.log(), t.sigmoid(), t.sin()):
        assert out.dtype is tl.float32
    close(t.sqrt(), [1.0, 2.0, 3.0])


def test_sigmoid_silu_stable_for_large_inputs():
    x = leaf([-1000.0, -50.0, 0.0, 50.0, 1000.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # no overflow anywhere
        s = x.sigmoid()
        s.sum().backward()
        y = tl.tensor([-1000.0, 1000.0]).silu()
    close(s, [0.0, 1 / (1 + math.exp(50)), 0.5, 1 / (1 + math.exp(-50)), 1.0])
    assert np.isfinite(np.asarray(x.grad)).all()
    close(y, [0.0, 1000.0])


def test_clamp_needs_a_bound():
    with pytest.raises(ValueError, match="clamp"):
        tl.ones(2).clamp()


@pytest.mark.parametrize("ls,hs", [((4,), (4,)), ((3, 1), ()), ((), (1, 4)), (None, (4,)), ((4,), None)],
                         ids=str)
def test_clamp_with_tensor_bounds(ls, hs):
    a = rand((3, 4), seed=23)
    lo = None if ls is None else away_from(rand(ls, -1.5, -0.1, seed=24), a.reshape(-1).tolist(), 0.01)
    hi = None if hs is None else away_from(rand(hs, 0.1, 1.5, seed=25), a.reshape(-1).tolist(), 0.01)
    want = np.clip(a, -np.inf if lo is None else lo, np.inf if hi is None else hi)
    close(leaf(a).clamp(None if lo is None else leaf(lo), None if hi is None else leaf(hi)), want)
    arrays = [x for x in (a, lo, hi) if x is not None]

    def f(x, *bounds):
        it = iter(bounds)
        return x.clamp(next(it) if lo is not None else None, next(it) if hi is not None else None)
    assert check_grad(f, *arrays)


def test_clamp_grad_passes_at_bounds_only_inside():
    x = leaf([-1.0, -0.5, 0.0, 1.0, 2.0])
    x.clamp(-0.5, 1.0).sum().backward()
    close(x.grad, [0.0, 1.0, 1.0, 1.0, 0.0])


@needs_torch
def test_unary_against_torch():
    a = rand((4, 5), -3, 3, seed=7)
    tx = torch.tensor(a)
    pairs = [(lambda x: x.gelu(), torch.nn.functional.gelu(tx)),
             (lambda x: x.gelu(approximate="tanh"), torch.nn.functional.gelu(tx, approximate="tanh")),
             (lambda x: x.silu(), torch.nn.functional.silu(tx)),
             (lambda x: x.sigmoid(), tx.sigmoid()),
             (lambda x: x.rsqrt().abs(), tx.abs().rsqrt())]
    for op, want in pairs[:4]:
        close(op(leaf(a)), want.numpy(), rtol=1e-10, atol=1e-12)
    close(leaf(np.abs(a)).rsqrt(), pairs[4][1].numpy(), rtol=1e-10)


# ---- where / masked_fill --------------------------------------------------------------

@pytest.mark.parametrize("sc,sa,sb", [((3, 4), (3, 4), (3, 4)), ((3, 1), (1, 4), (4,)),
                                      ((4,), (3, 1), ()), ((0, 2), (1, 2), (2,))], ids=str)
def test_where_forward_and_grad(sc, sa, sb):
    cond = rand(sc, seed=8) > 0
    a, b = rand(sa, seed=9), rand(sb, seed=10)
    c = tl.tensor(cond)
    close(tl.where(c, leaf(a), leaf(b)), np.where(cond, a, b))
    assert check_grad(lambda x, y: tl.where(c, x, y), a, b)


def test_where_with_scalar_and_rejects_non_bool_condition():
    x = leaf([1.0, -2.0, 3.0])
    close(tl.where(x > 0, x, 0.0), [1.0, 0.0, 3.0])
    with pytest.raises(TypeError, match="bool"):
        tl.where(tl.tensor([1, 0, 1]), x, x)


@pytest.mark.parametrize("ms", [(3, 4), (4,), (3, 1), ()], ids=str)
def test_masked_fill_forward_and_grad(ms):
    a = rand((3, 4), seed=11)
    mask = rand(ms, seed=12) > 0
    m = tl.tensor(mask)
    close(leaf(a).masked_fill(m, -7.0), np.where(mask, -7.0, a))
    assert check_grad(lambda x: x.masked_fill(m, -7.0), a)
    x = leaf(a)
    x.masked_fill(m, 0.0).sum().backward()
    close(x.grad, np.broadcast_to(~mask, (3, 4)).astype(float))


def test_masked_fill_bad_masks():
    x = tl.ones(3, 4)
    with pytest.raises(TypeError, match="bool"):
        x.masked_fill(tl.tensor([1, 0, 1, 0]), 0.0)
    with pytest.raises(ValueError, match="masked_fill"):
        x.masked_fill(tl.ones(2, 3, 4).bool(), 0.0)
    with pytest.raises(ValueError, match="masked_fill"):
        x.masked_fill(tl.ones(5).bool(), 0.0)


# ---- comparisons and logic (no gradient) ---------------------------------------------

CMP = {"eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal,
       "gt": np.greater, "ge": np.greater_equal}


@pytest.mark.parametrize("name", CMP)
def test_comparisons(name):
    a = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    b = np.array([2.0, 2.0, 2.0])
    x, y = leaf(a), leaf(b)
    for out, want in [(getattr(x, name)(y), CMP[name](a, b)),
                      (getattr(tl, name)(x, 2.0), CMP[name](a, 2.0)),
                      (getattr(x, f"__{name}__")(y), CMP[name](a, b))]:
        assert out.dtype is tl.bool and not out.requires_grad and out.grad_fn is None
        np.testing.assert_array_equal(np.asarray(out), want)


def test_comparison_operators_and_logic():
    x = tl.tensor([1, 2, 3])
    np.testing.assert_array_equal(np.asarray(x == 2), [False, True, False])
    np.testing.assert_array_equal(np.asarray(x != 2), [True, False, True])
    np.testing.assert_array_equal(np.asarray(x < 2), [True, False, False])
    np.testing.assert_array_equal(np.asarray(x >= 2), [False, True, True])
    p, q = tl.tensor([True, True, False, False]), tl.tensor([True, False, True, False])
    np.testing.assert_array_equal(np.asarray(p & q), [True, False, False, False])
    np.testing.assert_array_equal(np.asarray(p | q), [True, True, True, False])
    np.testing.assert_array_equal(np.asarray(p ^ q), [False, True, True, False])
    np.testing.assert_array_equal(np.asarray(~p), [False, False, True, True])
    np.testing.assert_array_equal(np.asarray(p.logical_and(q)), [True, False, False, False])
    np.testing.assert_array_equal(np.asarray(tl.logical_or(p, q)), [True, True, True, False])
    np.testing.assert_array_equal(np.asarray(tl.logical_not(p)), [False, False, True, True])
    assert (p & q).dtype is tl.bool
    f = tl.tensor([1.0, float("nan"), float("inf")])
    np.testing.assert_array_equal(np.asarray(f.isnan()), [False, True, False])
    np.testing.assert_array_equal(np.asarray(f.isfinite()), [True, False, False])
    assert bool(p.any()) and not bool(p.all())
    np.testing.assert_array_equal(np.asarray(tl.tensor([[True, False], [True, True]]).all(dim=1)),
                                  [False, True])


def test_comparison_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(2,\).*\(3,\)"):
        tl.ones(2) < tl.ones(3)


# ---- matmul ---------------------------------------------------------------------------

MATMUL_SHAPES = [
    ((3,), (3,)),
    ((3,), (3, 4)),
    ((2, 3), (3,)),
    ((2, 3), (3, 4)),
    ((5, 2, 3), (3, 4)),
    ((2, 3), (5, 3, 4)),
    ((5, 2, 3), (5, 3, 4)),
    ((5, 1, 2, 3), (4, 3, 2)),
    ((1, 2, 3), (4, 3, 2)),
    ((3,), (2, 3, 4)),
    ((2, 2, 3), (3,)),
    ((0, 3), (3, 2)),
    ((2, 0), (0, 3)),
]


@pytest.mark.parametrize("sa,sb", MATMUL_SHAPES, ids=str)
def test_matmul_forward_and_grad(sa, sb):
    a, b = rand(sa, seed=13), rand(sb, seed=14)
    out = leaf(a) @ leaf(b)
    close(out, np.matmul(a, b))
    assert check_grad(lambda x, y: x @ y, a, b)
    assert check_grad(lambda x, y: tl.matmul(x, y), a, b)


def test_matmul_non_contiguous():
    a, b = rand((4, 3), seed=15), rand((4, 6), seed=16)
    close(leaf(a).T @ leaf(b)[:, ::2], a.T @ b[:, ::2])
    assert check_grad(lambda x, y: x.T @ y[:, ::2], a, b)


def test_matmul_float32_and_int():
    a, b = rand((2, 3), seed=17, dtype=np.float32), rand((3, 2), seed=18, dtype=np.float32)
    out = tl.tensor(a) @ tl.tensor(b)
    assert out.dtype is tl.float32
    close(out, a @ b, rtol=1e-5)
    i = tl.tensor([[1, 2], [3, 4]])
    assert (i @ i).dtype is tl.int64
    np.testing.assert_array_equal(np.asarray(i @ i), [[7, 10], [15, 22]])


def test_matmul_errors():
    with pytest.raises(ValueError, match=r"matmul.*\(2, 3\).*\(4, 5\)"):
        tl.ones(2, 3) @ tl.ones(4, 5)
    with pytest.raises(ValueError, match="matmul"):
        tl.ones(2, 3, 4) @ tl.ones(5, 4, 2)  # batch dims 2 and 5 do not broadcast
    with pytest.raises(ValueError, match="at least 1 dim"):
        tl.ones(()) @ tl.ones(3)


@st.composite
def _matmul_shapes(draw):
    m, k, n = (draw(st.integers(1, 3)) for _ in range(3))
    batch = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=2,
                                                   min_side=1, max_side=3))
    ba, bb = batch.input_shapes
    sa = ba + (m, k) if draw(st.booleans()) else (k,)
    sb = bb + (k, n) if draw(st.booleans()) else (k,)
    return sa, sb


@settings(max_examples=15, deadline=None)
@given(shapes=_matmul_shapes())
def test_matmul_hypothesis(shapes):
    sa, sb = shapes
    a, b = rand(sa, seed=19), rand(sb, seed=20)
    close(leaf(a) @ leaf(b), np.matmul(a, b))
    assert check_grad(lambda x, y: x @ y, a, b)


def test_gradcheck_of_composite_expression():
    # a small expression mixing many ops: the engine must add the gradients of shared inputs
    a, b = rand((3, 4), seed=21), rand((4,), 0.5, 2, seed=22)

    def f(x, y):
        h = (x * y - x / y).tanh() @ y
        return (h.exp() + x.sum(1) * h).sigmoid()
    assert gradcheck(f, [leaf(a), leaf(b)])
