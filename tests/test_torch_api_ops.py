"""The PyTorch ops a ported script reaches for: sort/argsort/topk, flip, norm, einsum, bmm,
isclose/allclose, masked_fill_, the new_* constructors, multinomial, randint's two forms
and bfloat16. Forward against NumPy, torch as an optional oracle, gradcheck in float64."""
import math

import numpy as np
import pytest

import tensorlite as tl
from tensorlite.autograd import gradcheck

from _core_helpers import close, leaf, needs_torch, numpy_kernels, rand, torch  # noqa: F401


def distinct(shape, seed=0):
    """Values with no ties (so sort orders, and so gradients, are unambiguous)."""
    rng = np.random.default_rng(seed)
    return rng.permutation(int(np.prod(shape))).reshape(shape).astype(np.float64) / 7 - 1


# ---- sort / argsort / topk ----------------------------------------------------------------

@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("descending", [False, True])
def test_sort_matches_numpy(dim, descending):
    a = distinct((4, 5), seed=1)
    v, i = tl.tensor(a).sort(dim=dim, descending=descending)
    order = np.argsort(-a if descending else a, axis=dim)
    close(v, np.take_along_axis(a, order, dim))
    np.testing.assert_array_equal(np.asarray(i), order)
    assert i.dtype is tl.int64
    np.testing.assert_array_equal(np.asarray(tl.tensor(a).argsort(dim, descending)), order)


def test_sort_is_stable_both_ways_and_puts_nan_where_torch_does():
    a = np.array([2.0, 1.0, 2.0, np.nan, 1.0, 2.0])
    _, up = tl.tensor(a).sort(stable=True)
    _, down = tl.tensor(a).sort(descending=True, stable=True)
    assert up.tolist() == [1, 4, 0, 2, 5, 3]  # ties keep their order; NaN last
    assert down.tolist() == [3, 0, 2, 5, 1, 4]  # NaN first, ties still in order
    ints = tl.tensor([3, np.iinfo(np.int64).min, 3, 0])
    assert ints.sort(descending=True).indices.tolist() == [0, 2, 3, 1]  # no overflow from negation


@needs_torch
def test_sort_and_topk_match_torch_with_ties():
    a = np.array([[3.0, 1.0, 3.0, 2.0, np.nan], [0.0, 0.0, -1.0, 5.0, 5.0]], dtype=np.float32)
    for desc in (False, True):
        tv, ti = torch.sort(torch.tensor(a), dim=1, descending=desc, stable=True)
        v, i = tl.sort(tl.tensor(a), dim=1, descending=desc, stable=True)
        np.testing.assert_array_equal(np.asarray(v), tv.numpy())
        np.testing.assert_array_equal(np.asarray(i), ti.numpy())
    tv, _ = torch.topk(torch.tensor(a), 3, dim=1)
    np.testing.assert_array_equal(np.asarray(tl.topk(tl.tensor(a), 3, dim=1).values), tv.numpy())


@pytest.mark.parametrize("largest", [True, False])
def test_topk_values_indices_and_attributes(largest):
    a = distinct((3, 6), seed=2)
    r = tl.tensor(a).topk(2, dim=1, largest=largest)
    order = np.argsort(-a if largest else a, axis=1)[:, :2]
    close(r.values, np.take_along_axis(a, order, 1))
    assert r.indices.tolist() == order.tolist()
    v, i = tl.tensor(a).topk(3, 0)  # unpacks as a tuple too
    assert v.shape == (3, 6) and i.shape == (3, 6)


def test_topk_k_out_of_range_and_bad_dim():
    x = tl.zeros(2, 3)
    with pytest.raises(RuntimeError, match=r"topk: k \(4\) is out of range for dim -1 of size 3"):
        x.topk(4)
    with pytest.raises(RuntimeError, match="out of range"):
        x.topk(-1)
    with pytest.raises(IndexError, match="dim 2 is out of range"):
        x.topk(1, dim=2)
    with pytest.raises(TypeError, match="k must be an integer"):
        x.topk(1.5)
    assert x.topk(0).values.shape == (2, 0)
    v, i = tl.tensor(5.0).topk(1)  # 0-d, as torch
    assert v.shape == () and i.item() == 0


def test_sort_and_topk_gradients():
    a = distinct((3, 4), seed=3)
    assert gradcheck(lambda x: x.sort(dim=1, descending=True).values * tl.arange(4.0, dtype=tl.float64),
                     [leaf(a)])
    assert gradcheck(lambda x: x.topk(2, dim=0).values, [leaf(a)])
    assert gradcheck(lambda x: x.msort(), [leaf(a)])


# ---- flip -----------------------------------------------------------------------------------

def test_flip_forward_gradient_and_copy():
    a = rand((2, 3, 4), seed=4)
    close(tl.tensor(a).flip(0, 2), np.flip(a, (0, 2)))
    close(tl.flip(tl.tensor(a), (1,)), np.flip(a, 1))
    close(tl.tensor(a[0]).fliplr(), np.fliplr(a[0]))
    close(tl.tensor(a).flipud(), np.flipud(a))
    assert gradcheck(lambda x: x.flip(-1) * tl.arange(4.0, dtype=tl.float64), [leaf(a)])
    t = tl.tensor(a)
    f = t.flip(0)
    f[...] = 0  # a copy, as in PyTorch: the source is untouched
    assert float(t.abs().sum()) > 0
    with pytest.raises(ValueError, match="more than once"):
        t.flip(0, 0)


# ---- norm -----------------------------------------------------------------------------------

@pytest.mark.parametrize("p", ["fro", 1, 2, 3, 0.5, math.inf, -math.inf, 0])
def test_norm_matches_numpy(p):
    a = rand((3, 4), seed=5)
    a[0, 0] = 0.0
    flat = a.reshape(-1)
    ref = {"fro": np.linalg.norm(flat), 0: np.count_nonzero(flat)}.get(
        p, np.linalg.norm(flat, ord=p) if p not in ("fro", 0) else None)
    close(tl.tensor(a).norm(p), np.asarray(ref), rtol=1e-10)
    pn = 2 if p == "fro" else p
    by_row = np.linalg.norm(a, ord=pn, axis=1) if p != 0 else np.count_nonzero(a, axis=1)
    close(tl.norm(tl.tensor(a), p, dim=1), by_row, rtol=1e-10)
    close(tl.tensor(a).norm(p, dim=1, keepdim=True), by_row[:, None], rtol=1e-10)


@pytest.mark.parametrize("p", [1, 2, 3, 1.5, math.inf, -math.inf])
def test_norm_gradient(p):
    a = distinct((3, 4), seed=6) + 0.05  # no zeros (|x| has a kink there), no ties for inf
    assert gradcheck(lambda x: x.norm(p, dim=(0, 1)), [leaf(a)])
    assert gradcheck(lambda x: x.norm(p, dim=1, keepdim=True), [leaf(a)])


@needs_torch
def test_norm_gradient_at_zero_and_ties_matches_torch():
    for p, a in ((2, [0.0, 0.0, 0.0]), (3, [0.0, 0.0]), (math.inf, [1.0, -3.0, 3.0, 2.0])):
        x = leaf(a)
        x.norm(p).backward()
        tx = torch.tensor(a, dtype=torch.float64, requires_grad=True)
        tx.norm(p).backward()
        np.testing.assert_allclose(np.asarray(x.grad), tx.grad.numpy())


def test_norm_errors():
    with pytest.raises(NotImplementedError, match="nuc"):
        tl.ones(2, 2).norm("nuc")
    with pytest.raises(TypeError, match="floating point"):
        tl.tensor([1, 2]).norm()
    close(tl.tensor([3, 4]).norm(dtype=tl.float64), np.asarray(5.0))
    close(tl.tensor(-2.0).norm(), np.asarray(2.0))


# ---- einsum and bmm -------------------------------------------------------------------------

EQUATIONS = [
    ("ij,jk->ik", [(2, 3), (3, 4)]),
    ("bij,bjk->bik", [(2, 2, 3), (2, 3, 4)]),
    ("bhqd,bhkd->bhqk", [(1, 2, 3, 4), (1, 2, 5, 4)]),
    ("ij->ji", [(2, 3)]),
    ("ij->", [(2, 3)]),
    ("ii->i", [(3, 3)]),
    ("ii", [(3, 3)]),
    ("i,j->ij", [(2,), (3,)]),
    ("ij,jk", [(2, 3), (3, 4)]),
    ("...ij,...jk->...ik", [(5, 2, 3), (5, 3, 2)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)]),
    ("iij,jk->ik", [(2, 2, 3), (3, 4)]),
    ("ba", [(2, 3)]),
]


@pytest.mark.parametrize("eq, shapes", EQUATIONS)
def test_einsum_forward_and_gradient(eq, shapes):
    arrays = [rand(s, seed=10 + k) for k, s in enumerate(shapes)]
    close(tl.einsum(eq, *[tl.tensor(a) for a in arrays]), np.einsum(eq, *arrays), rtol=1e-10)
    assert gradcheck(lambda *xs: tl.einsum(eq, *xs), [leaf(a) for a in arrays])


@needs_torch
def test_einsum_matches_torch_with_broadcasting_and_list_operands():
    a, b = rand((2, 1, 3), seed=20), rand((3, 4), seed=21)
    ref = torch.einsum("bij,jk->bik", torch.tensor(a), torch.tensor(b)).numpy()
    close(tl.einsum("bij,jk->bik", [tl.tensor(a), tl.tensor(b)]), ref)
    u, v = rand((2, 1), seed=22), rand((2, 3), seed=23)
    ref = torch.einsum("ij,ij->i", torch.tensor(u), torch.tensor(v)).numpy()
    close(tl.einsum("ij, ij -> i", tl.tensor(u), tl.tensor(v)), ref)
    assert gradcheck(lambda x, y: tl.einsum("ij,ij->i", x, y), [leaf(u), leaf(v)])


def test_einsum_errors():
    x = tl.ones(2, 3)
    with pytest.raises(ValueError, match="2 operand"):
        tl.einsum("ij,jk->ik", x)
    with pytest.raises(ValueError, match="sizes 3 and 2"):
        tl.einsum("ij,jk->ik", x, tl.ones(2, 2))
    with pytest.raises(ValueError, match="do not fit"):
        tl.einsum("ijk->i", x)
    with pytest.raises(ValueError, match="output subscript 'z'"):
        tl.einsum("ij->z", x)
    with pytest.raises(TypeError, match="equation string"):
        tl.einsum(x, [0, 1])


def test_bmm_forward_gradient_and_no_broadcasting():
    a, b = rand((2, 3, 4), seed=30), rand((2, 4, 5), seed=31)
    close(tl.bmm(tl.tensor(a), tl.tensor(b)), a @ b, rtol=1e-10)
    assert gradcheck(lambda x, y: x.bmm(y), [leaf(a), leaf(b)])
    with pytest.raises(ValueError, match="batch sizes differ"):
        tl.bmm(tl.ones(2, 3, 4), tl.ones(1, 4, 5))
    with pytest.raises(ValueError, match="3-D"):
        tl.bmm(tl.ones(3, 4), tl.ones(4, 5))


# ---- isclose / allclose ---------------------------------------------------------------------

def test_isclose_and_allclose():
    a = tl.tensor([1.0, 2.0, float("nan")])
    b = tl.tensor([1.0 + 1e-9, 2.1, float("nan")])
    assert tl.isclose(a, b).tolist() == [True, False, False]
    assert a.isclose(b, equal_nan=True).tolist() == [True, False, True]
    assert a.isclose(b, atol=0.2, equal_nan=True).all()
    assert tl.allclose(a, b, atol=0.2, equal_nan=True) is True
    assert tl.allclose(a[:1], b[:1])
    assert tl.tensor([1.0]).allclose(1.0)


# ---- masked_fill_ -------------------------------------------------------------------------

def test_masked_fill_in_place_shares_with_views_outside_the_graph():
    t = tl.arange(6.0).reshape(2, 3)
    view = t[0]
    out = t.masked_fill_(t > 3, -1.0)
    assert out is t
    assert t.tolist() == [[0.0, 1.0, 2.0], [3.0, -1.0, -1.0]]
    t.masked_fill_(tl.tensor([True, False, True]), tl.tensor(9.0))  # broadcast mask, 0-d value
    assert view.tolist() == [9.0, 1.0, 9.0]  # a view sees an in-place write
    with pytest.raises(ValueError, match="would broadcast"):
        tl.zeros(3).masked_fill_(tl.ones(2, 3).bool(), 1.0)
    with pytest.raises(TypeError, match="bool"):
        tl.zeros(3).masked_fill_(tl.ones(3), 1.0)


def test_masked_fill_in_place_is_recorded_in_the_graph():
    a = rand((3, 4), seed=40)
    mask = tl.tensor(a > 0.5)

    def f(x):
        y = x * 2
        y.masked_fill_(mask, 0.0)
        return y * x  # uses both the filled y and (through Mul's saved x) the original

    assert gradcheck(f, [leaf(a)])
    x = leaf(a)
    y = x * 1
    y.masked_fill_(mask, 0.0)
    assert y.grad_fn is not None
    y.sum().backward()
    close(x.grad, (a <= 0.5).astype(np.float64))
    with pytest.raises(RuntimeError, match="in-place"):
        leaf(a).masked_fill_(mask, 0.0)  # a leaf that requires grad, as in PyTorch


# ---- new_* ----------------------------------------------------------------------------------

def test_new_constructors_take_dtype_and_device_from_self():
    t = tl.ones(2, dtype=tl.float64)
    z = t.new_zeros(2, 3)
    assert z.shape == (2, 3) and z.dtype is tl.float64 and z.sum().item() == 0
    assert t.new_ones((4,)).tolist() == [1.0] * 4
    f = t.new_full((2,), 7, dtype=tl.int64)
    assert f.dtype is tl.int64 and f.tolist() == [7, 7]
    assert t.new_empty(3).shape == (3,)
    src = np.array([1, 2, 3])
    n = t.new_tensor(src)
    assert n.dtype is tl.float64 and n.tolist() == [1.0, 2.0, 3.0]
    src[0] = 100  # new_tensor copies
    assert n.tolist()[0] == 1.0
    assert t.new_tensor(tl.tensor([5])).dtype is tl.float64
    assert t.new_zeros(2, requires_grad=True).requires_grad
    with pytest.raises(ValueError, match="non-negative"):
        t.new_zeros(-1)


@needs_torch
def test_new_constructors_match_torch_defaults():
    for name, args in (("new_zeros", (2, 3)), ("new_ones", ((2,),)), ("new_full", ((2,), 3.5))):
        ours = getattr(tl.ones(1, dtype=tl.float64), name)(*args)
        theirs = getattr(torch.ones(1, dtype=torch.float64), name)(*args)
        np.testing.assert_array_equal(np.asarray(ours), theirs.numpy())
        assert ours.dtype.name == str(theirs.dtype).split(".")[-1]


# ---- multinomial and randint ----------------------------------------------------------------

def test_multinomial_with_replacement_follows_the_probabilities():
    tl.manual_seed(0)
    p = tl.tensor([0.1, 0.0, 0.6, 0.3])
    s = tl.multinomial(p, 20000, replacement=True)
    assert s.shape == (20000,) and s.dtype is tl.int64
    freq = np.bincount(np.asarray(s), minlength=4) / 20000
    np.testing.assert_allclose(freq, [0.1, 0.0, 0.6, 0.3], atol=0.015)
    assert freq[1] == 0  # zero weight: never drawn
    w = tl.tensor([[1.0, 3.0], [5.0, 0.0]])  # unnormalised rows
    s2 = w.multinomial(1000, True)
    assert s2.shape == (2, 1000) and (s2[1] == 0).all()


def test_multinomial_without_replacement():
    tl.manual_seed(1)
    p = tl.tensor([[0.5, 0.2, 0.0, 0.3], [0.25, 0.25, 0.25, 0.25]])
    s = p.multinomial(3)
    assert s.shape == (2, 3)
    for row in s.tolist():
        assert len(set(row)) == 3
    assert 2 not in s[0].tolist()
    # the first draw follows p; over many rows the first column's frequencies match p
    firsts = tl.tensor(np.tile([0.5, 0.2, 0.0, 0.3], (20000, 1))).multinomial(2)[:, 0]
    np.testing.assert_allclose(np.bincount(np.asarray(firsts), minlength=4) / 20000,
                               [0.5, 0.2, 0.0, 0.3], atol=0.015)
    assert tl.tensor([0.0, 1.0]).multinomial(1).item() == 1


def test_multinomial_generator_and_errors():
    g1, g2 = tl.Generator().manual_seed(5), tl.Generator().manual_seed(5)
    p = tl.ones(10)
    assert tl.multinomial(p, 4, generator=g1).tolist() == tl.multinomial(p, 4, generator=g2).tolist()
    with pytest.raises(RuntimeError, match="without replacement"):
        p.multinomial(11)
    with pytest.raises(RuntimeError, match="fewer than 2 categories"):
        tl.tensor([1.0, 0.0, 0.0]).multinomial(2)
    with pytest.raises(RuntimeError, match="sums to 0"):
        tl.zeros(3).multinomial(1)
    with pytest.raises(RuntimeError, match="negative"):
        tl.tensor([1.0, -1.0]).multinomial(1)
    with pytest.raises(RuntimeError, match="nan"):
        tl.tensor([1.0, float("nan")]).multinomial(1)
    with pytest.raises(ValueError, match="num_samples"):
        p.multinomial(0)
    with pytest.raises(ValueError, match="1-D or 2-D"):
        tl.ones(2, 2, 2).multinomial(1)
    with pytest.raises(TypeError, match="floating point"):
        tl.tensor([1, 2]).multinomial(1)


def test_randint_both_forms_and_generator():
    tl.manual_seed(0)
    a = tl.randint(10, (1000,))
    assert a.shape == (1000,) and a.dtype is tl.int64 and 0 <= int(a.min()) and int(a.max()) < 10
    b = tl.randint(5, 8, (3, 4))
    assert b.shape == (3, 4) and 5 <= int(b.min()) and int(b.max()) < 8
    assert tl.randint(3, size=(2,)).shape == (2,)
    g1, g2 = tl.Generator().manual_seed(3), tl.Generator().manual_seed(3)
    assert tl.randint(100, (5,), generator=g1).tolist() == tl.randint(100, (5,), generator=g2).tolist()
    with pytest.raises(ValueError, match="greater than low"):
        tl.randint(5, 5, (2,))


# ---- bfloat16 -------------------------------------------------------------------------------

def test_bfloat16_is_a_dtype_name():
    assert isinstance(tl.bfloat16, tl.dtype) and tl.bfloat16.is_floating_point
    assert tl.bfloat16.itemsize == 2 and repr(tl.bfloat16) == "tensorlite.bfloat16"


def test_bfloat16_tensors_with_ml_dtypes():
    pytest.importorskip("ml_dtypes", reason="ml_dtypes is not installed (bfloat16's NumPy dtype)")
    import ml_dtypes
    # an array made by ml_dtypes directly (as a safetensors reader does) is recognised
    assert tl.from_numpy(np.zeros(2, dtype=ml_dtypes.bfloat16)).dtype is tl.bfloat16
    x = tl.tensor([1.0, 2.5, 3.0]).to(tl.bfloat16)
    assert x.dtype is tl.bfloat16 and x.bfloat16().dtype is tl.bfloat16
    assert (x @ x).dtype is tl.bfloat16  # ml_dtypes' matmul returns float32; ops keep the dtype
    assert (x + tl.ones(3)).dtype is tl.float32  # promotes to float32, as PyTorch
    assert x.float().tolist() == [1.0, 2.5, 3.0]
    assert "dtype=tensorlite.bfloat16" in repr(x) and "2.5" in repr(x)
    w = tl.ones(3, dtype=tl.bfloat16, requires_grad=True)
    (w * 2.0).sum().backward()
    assert w.grad.dtype is tl.bfloat16 and w.grad.float().tolist() == [2.0, 2.0, 2.0]


def test_bfloat16_without_ml_dtypes_names_the_package():
    from tensorlite import _dtype
    missing = _dtype._OptionalDtype("bfloat16", "no_such_package_xyz", "bfloat16", 2)
    with pytest.raises(TypeError, match="pip install no_such_package_xyz"):
        tl.zeros(2, dtype=missing)
    assert tl.promote_types(tl.float32, tl.float32) is tl.float32
