"""Honest NumPy interop: np.array copies and np.asarray shares (NumPy 2's copy= protocol),
ndarray operands on either side give a Tensor that keeps the graph, as_tensor shares
memory where PyTorch does, DLPack both ways, and f"{t:.4f}" on a 0-d tensor."""
import operator

import numpy as np
import pytest

import tensorlite as tl
from tensorlite import nn

from _core_helpers import close, leaf, needs_torch, numpy_kernels, torch  # noqa: F401


# ---- __array__ and copy= --------------------------------------------------------------------

def test_np_array_copies_and_np_asarray_shares():
    lin = nn.Linear(3, 2)
    before = lin.weight.detach().clone()
    a = np.array(lin.weight)
    a[:] = 0  # the prober's bug: this zeroed the layer's weight
    assert lin.weight.allclose(before)
    t = tl.ones(3)
    view = np.asarray(t)
    view[0] = 5  # copy=None may share: here it does
    assert t.tolist() == [5.0, 1.0, 1.0]
    assert np.shares_memory(np.asarray(t), t.numpy())


def test_array_protocol_copy_false_and_dtype():
    t = tl.arange(3.0)
    assert np.shares_memory(t.__array__(copy=False), t.numpy())
    with pytest.raises(ValueError, match="needs a copy"):
        t.__array__(np.float64, copy=False)
    d = np.asarray(t, dtype=np.float64)
    assert d.dtype == np.float64 and not np.shares_memory(d, t.numpy())
    assert np.array(t, copy=True).base is None or not np.shares_memory(np.array(t), t.numpy())


# ---- ndarray operands -----------------------------------------------------------------------

@pytest.mark.parametrize("op", [operator.add, operator.sub, operator.mul, operator.truediv,
                                operator.pow])
def test_ndarray_on_either_side_gives_a_tensor_with_the_graph(op):
    x = leaf([1.0, 2.0, 3.0])
    a = np.array([0.5, 1.5, 2.0])
    xs = np.array([1.0, 2.0, 3.0])
    for out, ref in ((op(x, a), op(xs, a)), (op(a, x), op(a, xs))):
        assert isinstance(out, tl.Tensor) and out.grad_fn is not None
        close(out, ref)
    op(a, x).sum().backward()
    assert x.grad is not None


def test_ndarray_operand_promotion_matmul_and_comparisons():
    x = tl.ones(2, 3, requires_grad=True)
    m = np.ones((3, 2), dtype=np.float32)
    y = x @ m
    assert isinstance(y, tl.Tensor) and y.grad_fn is not None and y.shape == (2, 2)
    z = np.ones((4, 2), dtype=np.float32) @ x
    assert isinstance(z, tl.Tensor) and z.shape == (4, 3)
    assert (x + np.ones(3, dtype=np.float64)).dtype is tl.float64  # an array promotes like a tensor
    assert (x + np.int64(2)).dtype is tl.float32  # a NumPy scalar like a Python number
    lt = np.zeros(3) < tl.tensor([1.0, -1.0, 0.0])
    assert isinstance(lt, tl.Tensor) and lt.tolist() == [True, False, False]
    with pytest.raises(TypeError, match="not supported"):
        x + np.ones(3, dtype=np.int16)


# ---- as_tensor / from_numpy / from_dlpack ---------------------------------------------------

def test_as_tensor_shares_where_it_can():
    a = np.arange(4.0)
    t = tl.as_tensor(a)
    a[0] = 9
    assert t.tolist()[0] == 9.0  # shared, as torch.as_tensor
    c = tl.as_tensor(a, dtype=tl.float32)
    a[1] = 7
    assert c.dtype is tl.float32 and c.tolist()[1] == 1.0  # a dtype change copies
    assert tl.as_tensor(t) is t and tl.as_tensor(t, dtype=tl.float64) is t
    assert tl.as_tensor(t, dtype=tl.float32).dtype is tl.float32
    lst = tl.as_tensor([1, 2])
    assert lst.dtype is tl.int64
    with pytest.raises(TypeError, match="not supported"):
        tl.as_tensor(np.zeros(2, dtype=np.int16))


def test_from_dlpack_shares_memory_with_numpy():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = tl.from_dlpack(a)
    a[0, 0] = 42
    assert t.shape == (2, 3) and t[0, 0].item() == 42.0
    back = np.from_dlpack(t)  # Tensor.__dlpack__ the other way
    assert np.shares_memory(back, a)
    assert tl.from_dlpack(t) is t
    with pytest.raises(TypeError, match="__dlpack__"):
        tl.from_dlpack([1, 2])


@needs_torch
def test_dlpack_round_trip_with_torch():
    tt = torch.arange(4, dtype=torch.float32)
    t = tl.from_dlpack(tt)
    tt[0] = 10
    assert t.tolist() == [10.0, 1.0, 2.0, 3.0]
    t2 = tl.arange(3.0)
    back = torch.from_dlpack(t2)
    t2.add_(1)
    assert back.tolist() == [1.0, 2.0, 3.0]


# ---- printing and pinned memory -------------------------------------------------------------

def test_format_of_a_0d_tensor_and_others():
    loss = tl.tensor(1.234567)
    assert f"{loss:.4f}" == "1.2346"
    assert f"{tl.tensor(3):>4d}" == "   3"
    assert f"{loss}" == str(loss.item())  # a 0-d tensor formats as its number even here
    assert f"{tl.ones(2)}" == str(tl.ones(2))
    with pytest.raises(TypeError, match="only 0-d tensors"):
        f"{tl.ones(2):.4f}"


@needs_torch
def test_format_matches_torch():
    assert f"{tl.tensor(2.5):.3f}" == f"{torch.tensor(2.5):.3f}"
    assert f"{tl.tensor(7):d}" == f"{torch.tensor(7):d}"
    assert f"{tl.tensor(0.5)}" == f"{torch.tensor(0.5)}"


def test_pin_memory_and_non_blocking_to():
    x = tl.arange(3)
    assert x.pin_memory() is x and not x.is_pinned()
    assert x.to("cpu", non_blocking=True) is x
    assert x.to(tl.float64, non_blocking=True).dtype is tl.float64
