"""Shape ops (reshape/view, flatten, squeeze/unsqueeze, expand, transpose/permute, contiguous,
cat/stack, split/chunk, repeat, triu/tril, pad) and indexing (x[key], gather, index_select,
scatter_add, index_add, __setitem__): forward against NumPy, backward by gradcheck."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import tensorlite as tl
from tensorlite.ops import shape as S

from _core_helpers import check_grad, close, leaf, numpy_kernels, rand  # noqa: F401

try:
    from tensorlite.nn.functional import pad as _pad
except ImportError:  # nn is written by someone else: test the Function through a tiny wrapper
    def _pad(x, pad, value=0.0):
        return S.Pad.apply(x, pad=tuple(pad), value=value)


# ---- views and reshapes ------------------------------------------------------------------

# name -> (input shape, tensorlite op, numpy reference)
SHAPE_OPS = {
    "reshape": ((2, 3, 4), lambda x: x.reshape(4, 6), lambda a: a.reshape(4, 6)),
    "reshape_tuple_-1": ((2, 3, 4), lambda x: x.reshape((-1, 4)), lambda a: a.reshape(-1, 4)),
    "view": ((2, 3, 4), lambda x: x.view(6, -1), lambda a: a.reshape(6, -1)),
    "reshape_0d": ((1, 1), lambda x: x.reshape(()), lambda a: a.reshape(())),
    "reshape_empty": ((0, 3), lambda x: x.reshape(3, -1, 1), lambda a: a.reshape(3, -1, 1)),
    "flatten": ((2, 3, 4), lambda x: x.flatten(), lambda a: a.reshape(-1)),
    "flatten_1_2": ((2, 3, 4), lambda x: x.flatten(1), lambda a: a.reshape(2, 12)),
    "flatten_0_1": ((2, 3, 4), lambda x: tl.flatten(x, 0, 1), lambda a: a.reshape(6, 4)),
    "flatten_0d": ((), lambda x: x.flatten(), lambda a: a.reshape(1)),
    "squeeze": ((1, 3, 1, 2), lambda x: x.squeeze(), lambda a: a.reshape(3, 2)),
    "squeeze_dim": ((1, 3, 1, 2), lambda x: x.squeeze(2), lambda a: a.reshape(1, 3, 2)),
    "squeeze_neg": ((1, 3, 1, 2), lambda x: x.squeeze(-4), lambda a: a.reshape(3, 1, 2)),
    "squeeze_non1": ((1, 3, 1, 2), lambda x: x.squeeze(1), lambda a: a),
    "squeeze_tuple": ((1, 3, 1, 2), lambda x: x.squeeze((0, 2)), lambda a: a.reshape(3, 2)),
    "unsqueeze0": ((3, 2), lambda x: x.unsqueeze(0), lambda a: a[None]),
    "unsqueeze_last": ((3, 2), lambda x: x.unsqueeze(-1), lambda a: a[..., None]),
    "unsqueeze_mid": ((3, 2), lambda x: tl.unsqueeze(x, 1), lambda a: a[:, None]),
    "unsqueeze_0d": ((), lambda x: x.unsqueeze(0), lambda a: a[None]),
    "expand": ((3, 1), lambda x: x.expand(2, 3, 4), lambda a: np.broadcast_to(a, (2, 3, 4))),
    "expand_-1": ((3, 1), lambda x: x.expand(-1, 5), lambda a: np.broadcast_to(a, (3, 5))),
    "broadcast_to": ((1, 4), lambda x: x.broadcast_to((3, 4)), lambda a: np.broadcast_to(a, (3, 4))),
    "broadcast_to_0": ((1, 4), lambda x: tl.broadcast_to(x, (0, 4)), lambda a: np.broadcast_to(a, (0, 4))),
    "expand_as": ((4,), lambda x: x.expand_as(tl.ones(2, 4)), lambda a: np.broadcast_to(a, (2, 4))),
    "transpose": ((2, 3, 4), lambda x: x.transpose(0, 2), lambda a: a.transpose(2, 1, 0)),
    "transpose_neg": ((2, 3, 4), lambda x: tl.transpose(x, -1, -2), lambda a: a.swapaxes(-1, -2)),
    "swapaxes": ((2, 3), lambda x: x.swapaxes(0, 1), lambda a: a.T),
    "permute": ((2, 3, 4), lambda x: x.permute(1, 2, 0), lambda a: a.transpose(1, 2, 0)),
    "permute_tuple": ((2, 3, 4), lambda x: x.permute((2, 0, 1)), lambda a: a.transpose(2, 0, 1)),
    "T": ((2, 3, 4), lambda x: x.T, lambda a: a.T),
    "mT": ((2, 3, 4), lambda x: x.mT, lambda a: a.swapaxes(-1, -2)),
    "t": ((2, 3), lambda x: x.t(), lambda a: a.T),
    "t_1d": ((3,), lambda x: x.t(), lambda a: a),
    "contiguous": ((3, 4), lambda x: x.T.contiguous(), lambda a: a.T),
    "clone": ((3, 4), lambda x: x.clone(), lambda a: a),
    "view_as": ((3, 4), lambda x: x.view_as(tl.ones(2, 6)), lambda a: a.reshape(2, 6)),
    "repeat": ((2, 3), lambda x: x.repeat(2, 3), lambda a: np.tile(a, (2, 3))),
    "repeat_more_dims": ((2, 3), lambda x: x.repeat(2, 1, 2), lambda a: np.tile(a, (2, 1, 2))),
    "repeat_zero": ((2, 3), lambda x: x.repeat(0, 1), lambda a: np.tile(a, (0, 1))),
    "triu": ((3, 4), lambda x: x.triu(), lambda a: np.triu(a)),
    "triu_1": ((4, 3), lambda x: x.triu(1), lambda a: np.triu(a, 1)),
    "tril": ((3, 4), lambda x: x.tril(), lambda a: np.tril(a)),
    "tril_-1_batched": ((2, 3, 4), lambda x: tl.tril(x, -1), lambda a: np.tril(a, -1)),
    "select": ((2, 3, 4), lambda x: x.select(1, -1), lambda a: a[:, -1]),
    "pad_last": ((2, 3), lambda x: _pad(x, (1, 2)), lambda a: np.pad(a, ((0, 0), (1, 2)))),
    "pad_two_dims": ((2, 3), lambda x: _pad(x, (0, 1, 2, 0), value=-1.0),
                     lambda a: np.pad(a, ((2, 0), (0, 1)), constant_values=-1.0)),
    "pad_negative_crops": ((3, 4), lambda x: _pad(x, (-1, 2, 1, -2)),
                           lambda a: np.pad(a[:1, 1:], ((1, 0), (0, 2)))),
}


@pytest.mark.parametrize("name", SHAPE_OPS)
def test_shape_op_forward_and_grad(name):
    shape, op, ref = SHAPE_OPS[name]
    a = rand(shape, seed=1)
    close(op(leaf(a)), ref(a))
    assert check_grad(op, a)
    # the same op on a non-contiguous view of the input (when it has >= 2 dims)
    if len(shape) >= 2:
        b = rand(shape[:-2] + (shape[-1], 2 * shape[-2]), seed=2)

        def view(x):
            return x[..., ::2].mT

        if name == "view":  # these strides cannot be merged without a copy: PyTorch refuses too
            with pytest.raises(RuntimeError, match="view: shape .* not compatible .* strides"):
                op(view(leaf(b)))
            return
        close(op(view(leaf(b))), ref(np.swapaxes(b[..., ::2], -1, -2)))
        assert check_grad(lambda x: op(view(x)), b)


def test_views_share_memory_and_version():
    x = tl.zeros(2, 3)
    for v in (x.reshape(6), x.view(3, 2), x.T, x.transpose(0, 1), x[0], x[:, 1], x.unsqueeze(0),
              x.squeeze(), x.permute(1, 0), x.expand(4, 2, 3), x[0, 1]):
        assert np.shares_memory(np.asarray(v), np.asarray(x))
        assert v._version is x._version
    x[0].fill_(5.0)  # writing through a view (here x[0]) shows in the base, as in PyTorch
    np.testing.assert_array_equal(np.asarray(x)[0], [5.0, 5.0, 5.0])
    c = x.clone()
    assert not np.shares_memory(np.asarray(c), np.asarray(x)) and c._version is not x._version


def test_copies_do_not_share_version_with_their_source():
    # advanced indexing and reshape of a non-contiguous tensor copy the data: an in-place write
    # to the copy must not look like a write to the source (a spurious version error)
    x = leaf(rand((3, 4), seed=3))
    y = x.exp()  # saves its output for the backward
    for c in (y[:, [0, 1]], y.T.reshape(-1), y[y > 0]):
        with tl.no_grad():
            c.zero_()
    close(y, np.exp(np.asarray(x.detach())))
    y.sum().backward()
    close(x.grad, np.exp(np.asarray(x.detach())))


def test_contiguous_returns_self_when_contiguous():
    x = tl.ones(2, 3)
    assert x.contiguous() is x and x.is_contiguous()
    assert not x.T.is_contiguous() and x.T.contiguous().is_contiguous()
    assert x.T.stride() == (1, 3)


def test_shape_errors():
    x = tl.ones(2, 3)
    with pytest.raises(RuntimeError, match=r"reshape: shape \(4, 2\) is invalid .* 6 elements"):
        x.reshape(4, 2)
    with pytest.raises(RuntimeError, match="reshape"):
        x.reshape(-1, -1)
    with pytest.raises(RuntimeError, match="reshape"):
        tl.ones(0, 3).reshape(0, -1)
    with pytest.raises(ValueError, match=r"expand: .*\(2, 3\).*\(4, 3\)"):
        x.expand(4, 3)
    with pytest.raises(ValueError, match="expand: -1 is not allowed"):
        tl.ones(3).expand(-1, 3)
    with pytest.raises(ValueError, match="permutation"):
        x.permute(0, 0)
    with pytest.raises(ValueError, match="permute"):
        x.permute(0)
    with pytest.raises(IndexError, match=r"transpose: dim 2 .* 2 dims"):
        x.transpose(0, 2)
    with pytest.raises(IndexError, match=r"unsqueeze: dim 3 .*\[-3, 2\]"):
        x.unsqueeze(3)
    with pytest.raises(ValueError, match="repeat"):
        x.repeat(2)
    with pytest.raises(ValueError, match="triu"):
        tl.ones(3).triu()
    with pytest.raises(ValueError, match="t\\(\\)"):
        tl.ones(2, 2, 2).t()


# ---- cat / stack / split / chunk ------------------------------------------------------------

@pytest.mark.parametrize("shapes,dim", [
    ([(2, 3), (4, 3)], 0),
    ([(2, 3), (2, 1), (2, 2)], 1),
    ([(2, 3), (2, 3)], -1),
    ([(2, 0), (2, 3)], 1),
    ([(1, 2, 3), (2, 2, 3)], -3),
    ([(3,)], 0),
], ids=str)
def test_cat(shapes, dim):
    arrays = [rand(s, seed=i) for i, s in enumerate(shapes)]
    close(tl.cat([leaf(a) for a in arrays], dim), np.concatenate(arrays, dim))
    assert check_grad(lambda *xs: tl.cat(xs, dim=dim), *arrays)
    assert check_grad(lambda *xs: tl.concat([x * 2 for x in xs], dim), *arrays)


def test_cat_promotes_and_mixes_grad():
    a, b = tl.ones(2, dtype=tl.float32, requires_grad=True), tl.zeros(3, dtype=tl.float64)
    out = tl.cat([a, b])
    assert out.dtype is tl.float64
    out.sum().backward()
    assert a.grad.dtype is tl.float32 and b.grad is None
    assert tl.cat([tl.tensor([1, 2]), tl.tensor([3])]).dtype is tl.int64


def test_cat_stack_errors():
    with pytest.raises(ValueError, match=r"cat: shapes \(2, 3\) and \(2, 4\) differ outside dim 0"):
        tl.cat([tl.ones(2, 3), tl.ones(2, 4)])
    with pytest.raises(IndexError, match="cat: dim 2"):
        tl.cat([tl.ones(2, 3), tl.ones(2, 3)], dim=2)
    with pytest.raises(ValueError, match="non-empty"):
        tl.cat([])
    with pytest.raises(ValueError, match=r"stack: .*\(2, 3\).*\(3, 2\)"):
        tl.stack([tl.ones(2, 3), tl.ones(3, 2)])


@pytest.mark.parametrize("dim", [0, 1, 2, -1, -3])
def test_stack(dim):
    arrays = [rand((2, 3), seed=i) for i in range(3)]
    close(tl.stack([leaf(a) for a in arrays], dim), np.stack(arrays, dim))
    assert check_grad(lambda *xs: tl.stack(xs, dim), *arrays)


@pytest.mark.parametrize("size,dim", [(2, 0), (3, 1), ([1, 3], 1), ((2, 0, 3), -1), (5, 0)], ids=str)
def test_split(size, dim):
    a = rand((5, 4) if dim == 0 else (3, 4) if size != (2, 0, 3) else (2, 5), seed=4)
    parts = leaf(a).split(size, dim)
    if isinstance(size, int):
        bounds = list(range(size, a.shape[dim], size))
    else:
        bounds = list(np.cumsum(size)[:-1])
    want = np.split(a, bounds, axis=dim)
    assert len(parts) == len(want)
    for p, w in zip(parts, want):
        close(p, w)
    assert check_grad(lambda x: tl.cat([p * (i + 1) for i, p in enumerate(x.split(size, dim))], dim), a)


def test_split_chunk_unbind():
    a = rand((7, 2), seed=5)
    x = leaf(a)
    chunks = x.chunk(3)
    assert [c.shape[0] for c in chunks] == [3, 3, 1]
    assert [c.shape[1] for c in tl.chunk(x, 2, 1)] == [1, 1]
    with pytest.raises(ValueError, match="do not add up"):
        x.split([3, 3])
    parts = x.unbind(1)
    assert len(parts) == 2 and parts[1].shape == (7,)
    close(parts[1], a[:, 1])
    # only the chunks used get a gradient; the others contribute zeros
    chunks[1].sum().backward()
    close(x.grad, np.concatenate([np.zeros((3, 2)), np.ones((3, 2)), np.zeros((1, 2))]))


# ---- indexing ---------------------------------------------------------------------------------

# name -> (key builder given nothing, applied to a (4, 5, 3) tensor and its array)
KEYS = {
    "int": lambda: 1,
    "neg_int": lambda: -1,
    "int_int": lambda: (2, -3),
    "int3": lambda: (1, 2, 0),
    "slice": lambda: slice(1, 3),
    "slice_step": lambda: (slice(None, None, 2), slice(4, 0, -2)),
    "slice_neg_step": lambda: slice(None, None, -1),
    "slice_empty": lambda: slice(3, 1),
    "none": lambda: (None, 1),
    "none_mid": lambda: (slice(None), None, 2),
    "ellipsis": lambda: (Ellipsis, 1),
    "ellipsis_none": lambda: (0, Ellipsis, None),
    "int_array": lambda: np.array([0, 2, 3]),
    "int_array_repeated": lambda: np.array([1, 1, 3, 1]),
    "int_list": lambda: [0, -1],
    "int_tensor": lambda: tl.tensor([[0, 1], [1, 3]]),
    "int_tensor_0d": lambda: tl.tensor(2),
    "two_arrays": lambda: (np.array([0, 1, 1]), np.array([4, 0, 4])),
    "array_slice_array": lambda: (np.array([0, 3]), slice(None), np.array([2, 2])),
    "slice_array": lambda: (slice(1, None), np.array([0, 0, 4])),
    "array_ellipsis": lambda: (Ellipsis, np.array([1, 0, 1])),
    "bool_mask_full": lambda: rand((4, 5, 3), seed=6) > 0,
    "bool_mask_rows": lambda: np.array([True, False, True, True]),
    "bool_tensor_mask": lambda: tl.tensor(rand((4, 5), seed=7) > 0),
    "bool_mask_then_int": lambda: (np.array([True, False, True, False]), 1),
}


def _np_key(k):
    if isinstance(k, tuple):
        return tuple(_np_key(i) for i in k)
    return np.asarray(k) if isinstance(k, tl.Tensor) else k


@pytest.mark.parametrize("name", KEYS)
def test_getitem_forward_and_grad(name):
    key = KEYS[name]()
    a = rand((4, 5, 3), seed=8)
    close(leaf(a)[key], a[_np_key(key)])
    assert check_grad(lambda x: x[key], a)
    # on a non-contiguous input: a permuted view of the same values
    b = np.ascontiguousarray(a.transpose(2, 0, 1))
    close(leaf(b).permute(1, 2, 0)[key], a[_np_key(key)])
    assert check_grad(lambda x: x.permute(1, 2, 0)[key], b)


def test_repeated_indices_accumulate_gradient():
    x = leaf([10.0, 20.0, 30.0])
    x[[0, 2, 2, 2]].sum().backward()
    close(x.grad, [1.0, 0.0, 3.0])
    y = leaf(np.ones((3, 2)))
    (y[tl.tensor([1, 1]), tl.tensor([0, 0])] * 5).sum().backward()
    close(y.grad, [[0, 0], [10, 0], [0, 0]])


def test_getitem_index_errors():
    x = tl.ones(3, 4)
    with pytest.raises(IndexError, match="index 3 is out of range for dim 0 with size 3"):
        x[3]
    with pytest.raises(IndexError, match="index -5 is out of range for dim 1 with size 4"):
        x[0, -5]
    with pytest.raises(IndexError, match="index 7 .* size 4"):
        x[..., 7]
    with pytest.raises(IndexError, match="(5.*3)|(3.*5)"):
        x[np.array([0, 5])]
    with pytest.raises(IndexError, match="(4.*4)"):
        x[:, tl.tensor([4])]
    with pytest.raises(IndexError, match="too many indices"):
        x[0, 0, 0]


def test_setitem_on_no_grad_tensors():
    x = tl.zeros(3, 4)
    v0 = x._version.value
    x[0] = 1.0
    x[1, ::2] = tl.tensor([2.0, 3.0])
    x[x > 2.5] = -1.0
    x[[2, 2], [0, 3]] = 7.0
    x[2, 1] = tl.tensor([5.0])  # a one-element value at an integer position, as in PyTorch
    want = np.zeros((3, 4))
    want[0] = 1.0
    want[1, ::2] = [2.0, 3.0]
    want[want > 2.5] = -1.0
    want[[2, 2], [0, 3]] = 7.0
    want[2, 1] = 5.0
    np.testing.assert_array_equal(np.asarray(x), want)
    assert x._version.value == v0 + 5
    with pytest.raises(IndexError, match="index 3 .* size 3"):
        x[3] = 0.0
    w = tl.zeros(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="in-place .*requires grad.*no_grad"):
        w[0] = 1.0
    with tl.no_grad():
        w[0] = 1.0
    np.testing.assert_array_equal(np.asarray(w.detach()), [1.0, 0.0])


@st.composite
def _shape_and_key(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5))
    key = []
    for s in shape:
        kind = draw(st.sampled_from(["slice", "int", "array", "full", "none"]))
        if kind == "slice":
            start = draw(st.none() | st.integers(-s, s))
            stop = draw(st.none() | st.integers(-s, s))
            step = draw(st.sampled_from([None, 1, 2, -1, -2, 3]))
            key.append(slice(start, stop, step))
        elif kind == "int":
            key.append(draw(st.integers(-s, s - 1)))
        elif kind == "array":
            key.append(np.array(draw(st.lists(st.integers(-s, s - 1), min_size=1, max_size=4))))
        elif kind == "none":
            key.append(None)
            key.append(slice(None))
        else:
            key.append(slice(None))
    if sum(isinstance(k, np.ndarray) for k in key) > 1:  # keep advanced indices one-dimensional
        n = min(k.size for k in key if isinstance(k, np.ndarray))
        key = [k[:n] if isinstance(k, np.ndarray) else k for k in key]
    return shape, tuple(key)


@settings(max_examples=25, deadline=None)
@given(sk=_shape_and_key())
def test_getitem_hypothesis(sk):
    shape, key = sk
    a = rand(shape, seed=9)
    close(leaf(a)[key], a[key])
    assert check_grad(lambda x: x[key], a)


# ---- gather / index_select / scatter_add / index_add --------------------------------------------

def _np_gather(a, dim, idx):
    out = np.empty(idx.shape)
    for pos in np.ndindex(idx.shape):
        src = list(pos)
        src[dim] = idx[pos]
        out[pos] = a[tuple(src)]
    return out


def _np_scatter_add(a, dim, idx, src):
    out = a.copy()
    for pos in np.ndindex(idx.shape):
        dst = list(pos)
        dst[dim] = idx[pos]
        out[tuple(dst)] += src[pos]
    return out


@pytest.mark.parametrize("dim,ishape", [(0, (2, 4)), (1, (3, 6)), (-1, (2, 2)), (0, (5, 1)),
                                        (1, (3, 0))], ids=str)
def test_gather(dim, ishape):
    a = rand((3, 4), seed=10)
    idx = np.random.default_rng(11).integers(0, a.shape[dim], size=ishape)
    t = tl.tensor(idx)
    close(leaf(a).gather(dim, t), _np_gather(a, dim % 2, idx))
    assert check_grad(lambda x: x.gather(dim, t), a)
    assert check_grad(lambda x: tl.gather(x.T.contiguous().T, dim, t), a)


def test_gather_repeated_indices_accumulate():
    x = leaf([[1.0, 2.0], [3.0, 4.0]])
    x.gather(1, tl.tensor([[0, 0, 0], [1, 0, 1]])).sum().backward()
    close(x.grad, [[3.0, 0.0], [1.0, 2.0]])


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_index_select(dim):
    a = rand((3, 4, 2), seed=12)
    idx = np.array([1, 0, 1, 1])
    close(leaf(a).index_select(dim, tl.tensor(idx)), np.take(a, idx, axis=dim))
    assert check_grad(lambda x: x.index_select(dim, tl.tensor(idx)), a)
    assert check_grad(lambda x: tl.index_select(x.transpose(0, 2), dim, idx), a.transpose(2, 1, 0).copy())


@pytest.mark.parametrize("dim,ishape,sshape", [(0, (2, 4), (2, 4)), (1, (3, 5), (3, 6)),
                                               (0, (2, 3), (3, 4)), (1, (2, 2), (2, 2))], ids=str)
def test_scatter_add(dim, ishape, sshape):
    a, src = rand((3, 4), seed=13), rand(sshape, seed=14)
    idx = np.random.default_rng(15).integers(0, a.shape[dim], size=ishape)
    t = tl.tensor(idx)
    close(leaf(a).scatter_add(dim, t, leaf(src)),
          _np_scatter_add(a, dim, idx, src[tuple(slice(0, s) for s in ishape)]))
    assert check_grad(lambda x, s: x.scatter_add(dim, t, s), a, src)
    assert check_grad(lambda s: tl.zeros(3, 4, dtype=tl.float64).scatter_add(dim, t, s), src)


@pytest.mark.parametrize("dim", [0, 1])
def test_index_add(dim):
    a = rand((3, 4), seed=16)
    idx = np.array([2, 0, 2])
    src = rand((3, 4) if dim == 0 else (3, 3), seed=17)
    want = a.copy()
    for i, j in enumerate(idx):
        if dim == 0:
            want[j] += 2.0 * src[i]
        else:
            want[:, j] += 2.0 * src[:, i]
    t = tl.tensor(idx)
    close(leaf(a).index_add(dim, t, leaf(src), alpha=2.0), want)
    assert check_grad(lambda x, s: x.index_add(dim, t, s, alpha=2.0), a, src)


def test_index_op_errors():
    x = tl.ones(3, 4)
    with pytest.raises(IndexError, match="gather: index 4 is out of range for a dim of size 4"):
        x.gather(1, tl.tensor([[0, 4]]))
    with pytest.raises(IndexError, match="index_select: index -4 .* size 3"):
        x.index_select(0, tl.tensor([-4]))
    with pytest.raises(IndexError, match="scatter_add: index 3 .* size 3"):
        x.scatter_add(0, tl.tensor([[3]]), tl.ones(1, 1))
    with pytest.raises(IndexError, match="index_add: index 9 .* size 4"):
        x.index_add(1, tl.tensor([9]), tl.ones(3, 1))
    with pytest.raises(TypeError, match="integer"):
        x.gather(0, tl.tensor([[0.0]]))
    with pytest.raises(ValueError, match="gather: index has 1 dims"):
        x.gather(0, tl.tensor([0]))
    with pytest.raises(IndexError, match=r"gather: dim 2 .* 2 dims"):
        x.gather(2, tl.tensor([[0]]))
