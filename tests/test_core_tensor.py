"""Tensor basics: factories, dtypes and type promotion, attributes, conversions, repr, and the
error messages for bad input (shapes, dims, dtypes, devices, indices)."""
import numpy as np
import pytest

import tensorlite as tl

from _core_helpers import close, needs_torch, numpy_kernels, torch  # noqa: F401


# ---- factories --------------------------------------------------------------------------

def test_tensor_from_data_infers_dtype():
    assert tl.tensor([1.0, 2.0]).dtype is tl.float32
    assert tl.tensor(3.5).dtype is tl.float32 and tl.tensor(3.5).shape == ()
    assert tl.tensor([1, 2]).dtype is tl.int64
    assert tl.tensor([True, False]).dtype is tl.bool
    assert tl.tensor([]).dtype is tl.float32 and tl.tensor([]).shape == (0,)
    assert tl.tensor(np.zeros(2, dtype=np.float64)).dtype is tl.float64  # arrays keep theirs
    assert tl.tensor(np.zeros(2, dtype=np.int32)).dtype is tl.int32
    assert tl.tensor([[1, 2]], dtype=tl.float64).dtype is tl.float64
    assert tl.tensor([1, 2], dtype="float16").dtype is tl.float16
    close(tl.tensor([[1, 2], [3, 4]]), [[1, 2], [3, 4]])


def test_tensor_copies_its_data():
    a = np.ones(3, dtype=np.float32)
    t = tl.tensor(a)
    a[0] = 5
    assert t.tolist() == [1.0, 1.0, 1.0]
    u = tl.tensor(t)
    with tl.no_grad():
        u.add_(1)
    assert t.tolist() == [1.0, 1.0, 1.0]


def test_tensor_bad_data():
    with pytest.raises(ValueError, match="tensor"):
        tl.tensor([[1, 2], [3]])
    with pytest.raises(TypeError):
        tl.tensor(["a", "b"])
    with pytest.raises(TypeError, match="not supported"):
        tl.tensor([1, 2], dtype=np.int16)


def test_from_numpy_shares_memory():
    a = np.arange(6, dtype=np.float64).reshape(2, 3)
    t = tl.from_numpy(a)
    assert t.dtype is tl.float64 and t.shape == (2, 3)
    a[0, 0] = 100.0
    assert t[0, 0].item() == 100.0
    with tl.no_grad():
        t.mul_(2)
    assert a[0, 0] == 200.0
    assert np.shares_memory(t.numpy(), a)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        tl.from_numpy([1, 2])
    with pytest.raises(TypeError, match="int16"):
        tl.from_numpy(np.ones(2, dtype=np.int16))


def test_filled_factories():
    for f, v in ((tl.zeros, 0.0), (tl.ones, 1.0)):
        for t in (f(2, 3), f((2, 3)), f([2, 3])):
            assert t.shape == (2, 3) and t.dtype is tl.float32 and (np.asarray(t) == v).all()
        assert f(2, dtype=tl.int32).dtype is tl.int32
        assert f(()).shape == () and f(0, 4).shape == (0, 4)
        assert f(2, requires_grad=True).requires_grad
    assert tl.empty(2, 5).shape == (2, 5) and tl.empty(2).dtype is tl.float32
    assert tl.full((2, 2), 7).dtype is tl.int64
    assert tl.full((2,), 1.5).dtype is tl.float32
    assert tl.full(3, True).dtype is tl.bool
    close(tl.full((2, 2), 2.5, dtype=tl.float64), np.full((2, 2), 2.5))
    x = tl.ones(2, 3, dtype=tl.float64)
    for f in (tl.zeros_like, tl.ones_like, tl.empty_like):
        y = f(x)
        assert y.shape == (2, 3) and y.dtype is tl.float64
    close(tl.zeros_like(x), np.zeros((2, 3)))
    close(tl.ones_like(x, dtype=tl.int32), np.ones((2, 3)))
    assert tl.ones_like(x, dtype=tl.int32).dtype is tl.int32
    close(tl.full_like(x, 3.0), np.full((2, 3), 3.0))


def test_ranges_and_eye():
    t = tl.arange(5)
    assert t.dtype is tl.int64 and t.tolist() == [0, 1, 2, 3, 4]
    assert tl.arange(2, 8, 3).tolist() == [2, 5]
    assert tl.arange(5, 0, -2).tolist() == [5, 3, 1]
    f = tl.arange(0, 1, 0.25)
    assert f.dtype is tl.float32
    close(f, [0, 0.25, 0.5, 0.75])
    assert tl.arange(3, dtype=tl.float64).dtype is tl.float64
    assert tl.arange(0).shape == (0,)
    with pytest.raises(ValueError, match="step"):
        tl.arange(0, 3, 0)
    lin = tl.linspace(0, 1, 5)
    assert lin.dtype is tl.float32
    close(lin, [0, 0.25, 0.5, 0.75, 1.0])
    assert tl.linspace(-1, 1, 1).tolist() == [-1.0]
    close(tl.eye(3), np.eye(3))
    close(tl.eye(2, 3, dtype=tl.float64), np.eye(2, 3))


def test_random_factories_are_seeded():
    tl.manual_seed(123)
    a = (tl.rand(3, 4), tl.randn(2, 3), tl.randint(0, 10, (5,)), tl.randn(2, dtype=tl.float64))
    tl.manual_seed(123)
    b = (tl.rand(3, 4), tl.randn(2, 3), tl.randint(0, 10, (5,)), tl.randn(2, dtype=tl.float64))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert tl.initial_seed() == 123
    r, n, i, d = a
    assert r.dtype is tl.float32 and n.dtype is tl.float32 and i.dtype is tl.int64
    assert d.dtype is tl.float64
    assert ((np.asarray(r) >= 0) & (np.asarray(r) < 1)).all()
    assert ((np.asarray(i) >= 0) & (np.asarray(i) < 10)).all()
    assert tl.randint(5, size=(3,)).tolist() != [] and (np.asarray(tl.randint(5, size=(50,))) < 5).all()
    assert tl.randint(0, 3, (2,), dtype=tl.int32).dtype is tl.int32
    assert tl.randn(3, requires_grad=True).requires_grad
    assert tl.rand((2, 2)).shape == (2, 2)
    with pytest.raises(ValueError, match="randint"):
        tl.randint(5, 5, (2,))
    # a different seed gives different numbers; the state round-trips
    tl.manual_seed(124)
    assert not np.array_equal(np.asarray(tl.rand(3, 4)), np.asarray(a[0]))
    state = tl.get_rng_state()
    x = tl.randn(4)
    tl.set_rng_state(state)
    np.testing.assert_array_equal(np.asarray(tl.randn(4)), np.asarray(x))
    big = np.asarray(tl.randn(20000, dtype=tl.float64))
    assert abs(big.mean()) < 0.05 and abs(big.std() - 1) < 0.05


# ---- dtypes and promotion ------------------------------------------------------------------

@pytest.mark.parametrize("dtype,np_dtype", [(tl.float32, np.float32), (tl.float64, np.float64),
                                            (tl.float16, np.float16), (tl.int64, np.int64),
                                            (tl.int32, np.int32), (tl.bool, np.bool_)])
def test_dtypes(dtype, np_dtype):
    t = tl.zeros(2, dtype=dtype)
    assert t.dtype is dtype and t.numpy().dtype == np_dtype
    assert t.is_floating_point() == (np.dtype(np_dtype).kind == "f")
    assert tl.tensor([1, 0], dtype=dtype).to(tl.float64).dtype is tl.float64
    assert repr(dtype) == f"tensorlite.{dtype.name}"


def test_default_dtype_and_aliases():
    assert tl.get_default_dtype() is tl.float32
    assert tl.float is tl.float32 and tl.double is tl.float64 and tl.half is tl.float16
    assert tl.long is tl.int64 and tl.int is tl.int32
    tl.set_default_dtype(tl.float64)
    try:
        assert tl.ones(2).dtype is tl.float64 and tl.tensor([1.5]).dtype is tl.float64
        assert (tl.tensor([1]) * 0.5).dtype is tl.float64
    finally:
        tl.set_default_dtype(tl.float32)
    with pytest.raises(TypeError, match="floating"):
        tl.set_default_dtype(tl.int64)


def test_conversions_between_dtypes():
    x = tl.tensor([1.7, -2.2])
    assert x.double().dtype is tl.float64 and x.half().dtype is tl.float16
    assert x.long().tolist() == [1, -2] and x.int().dtype is tl.int32
    assert x.bool().tolist() == [True, True] and x.float() is x
    assert x.to("float64").dtype is tl.float64 and x.to(dtype=tl.int64).dtype is tl.int64
    assert x.type() is tl.float32 and x.type(tl.float64).dtype is tl.float64
    assert x.to(tl.zeros(1, dtype=tl.float64)).dtype is tl.float64
    y = x.to(tl.float32, copy=True)
    assert y is not x and not np.shares_memory(np.asarray(y), np.asarray(x))


def test_promotion_float32_with_python_float_stays_float32():
    x = tl.ones(3)
    for out in (x * 2.5, 2.5 * x, x + 1e-3, x / 3.0, x - 1, x ** 2.0, 1.0 - x, x.maximum(tl.tensor(0.5))):
        assert out.dtype is tl.float32
    assert (tl.ones(2, dtype=tl.float16) * 2.5).dtype is tl.float16


def test_promotion_int_tensor_with_float_gives_float32():
    i = tl.tensor([1, 2, 3])
    for out in (i * 1.5, 1.5 * i, i + 0.5, i - 0.5, i ** 0.5):
        assert out.dtype is tl.float32
    close(i * 1.5, [1.5, 3.0, 4.5])
    assert (i * 2).dtype is tl.int64 and (i * 2).tolist() == [2, 4, 6]
    assert (tl.tensor([1], dtype=tl.int32) + 5).dtype is tl.int32
    assert (tl.tensor([1], dtype=tl.int32) + tl.tensor([1])).dtype is tl.int64
    assert (tl.tensor([True]) + 1).dtype is tl.int64
    assert (tl.tensor([1]) + tl.ones(1, dtype=tl.float16)).dtype is tl.float16


def test_int_true_division_gives_float():
    a, b = tl.tensor([3, 4]), tl.tensor([2, 8])
    for out in (a / b, a / 2, 3 / b, tl.div(a, b)):
        assert out.dtype is tl.float32
    close(a / b, [1.5, 0.5])
    close(3 / b, [1.5, 0.375])


def test_float32_plus_float64_gives_float64_and_float32_grad():
    a = tl.tensor([1.0, 2.0], dtype=tl.float32, requires_grad=True)
    b = tl.tensor([3.0, 4.0], dtype=tl.float64, requires_grad=True)
    out = a + b
    assert out.dtype is tl.float64
    (out * b).sum().backward()
    assert a.grad.dtype is tl.float32 and b.grad.dtype is tl.float64
    close(a.grad, [3.0, 4.0])
    close(b.grad, [1.0 + 6.0, 2.0 + 8.0])


def test_zero_dim_tensors_promote_like_scalars():
    f32 = tl.ones(2)
    assert (f32 + tl.tensor(1.0, dtype=tl.float64)).dtype is tl.float32
    assert (tl.tensor([1, 2]) + tl.tensor(1.0, dtype=tl.float64)).dtype is tl.float64
    assert (tl.tensor(1.0) + tl.tensor(1.0, dtype=tl.float64)).dtype is tl.float64
    assert tl.promote_types(tl.int32, tl.float16) is tl.float16
    assert tl.promote_types(tl.uint8, tl.int32) is tl.int32
    assert tl.promote_types(tl.bool, tl.int32) is tl.int32


@needs_torch
def test_promotion_matches_torch():
    cases = [(np.float32, 2.5), (np.int64, 2.5), (np.int32, 3), (np.bool_, 1), (np.float16, 0.5),
             (np.int64, True)]
    for npd, s in cases:
        a = tl.tensor(np.ones(2, dtype=npd))
        ta = torch.tensor(np.ones(2, dtype=npd))
        assert (a * s).dtype.name == str((ta * s).dtype).replace("torch.", "")
    pairs = [(np.float32, np.float64), (np.int32, np.int64), (np.int32, np.float16), (np.bool_, np.int32)]
    for x, y in pairs:
        a, b = tl.tensor(np.ones(2, dtype=x)), tl.tensor(np.ones(2, dtype=y))
        want = (torch.tensor(np.ones(2, dtype=x)) + torch.tensor(np.ones(2, dtype=y))).dtype
        assert (a + b).dtype.name == str(want).replace("torch.", "")


# ---- attributes and conversions ------------------------------------------------------------

def test_attributes():
    x = tl.zeros(2, 3, 4)
    assert x.shape == (2, 3, 4) and x.ndim == 3 and x.dim() == 3
    assert x.size() == (2, 3, 4) and x.size(1) == 3 and x.size(-1) == 4
    assert x.numel() == 24 and len(x) == 2
    assert x.dtype is tl.float32 and x.device == tl.device("cpu") and str(x.device) == "cpu"
    assert not x.requires_grad and x.grad is None and x.is_leaf and x.grad_fn is None
    assert x.T.shape == (4, 3, 2) and x[0].T.shape == (4, 3)
    assert not x.is_cuda
    assert [t.shape for t in x] == [(3, 4), (3, 4)]
    assert tl.is_tensor(x) and not tl.is_tensor(np.zeros(1))
    with pytest.raises(IndexError, match="size: dim 3"):
        x.size(3)
    with pytest.raises(TypeError, match="0-d"):
        len(tl.tensor(1.0))


def test_numpy_item_tolist():
    x = tl.tensor([[1.5, 2.0], [3.0, 4.0]])
    a = x.numpy()
    assert isinstance(a, np.ndarray) and np.shares_memory(a, np.asarray(x))
    assert x.tolist() == [[1.5, 2.0], [3.0, 4.0]]
    assert tl.tensor([1, 2]).tolist() == [1, 2] and isinstance(tl.tensor([1]).tolist()[0], int)
    assert x[1, 0].item() == 3.0 and isinstance(x[0, 0].item(), float)
    assert tl.tensor([[7]]).item() == 7 and isinstance(tl.tensor(7).item(), int)
    assert tl.tensor(True).item() is True
    assert float(tl.tensor(2.5)) == 2.5 and int(tl.tensor(3)) == 3
    assert bool(tl.tensor([1.0])) and not bool(tl.tensor(0))
    assert [10, 20, 30][tl.tensor(1)] == 20  # __index__
    with pytest.raises(ValueError, match=r"one-element.*\(2,\)"):
        tl.tensor([1.0, 2.0]).item()
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(tl.tensor([1.0, 2.0]))
    r = tl.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"detach\(\).numpy\(\)"):
        r.numpy()
    assert r.detach().numpy().tolist() == [1.0, 1.0]


def test_array_protocols():
    x = tl.tensor([[1.0, 2.0], [3.0, 4.0]])
    a = np.asarray(x)
    assert a.dtype == np.float32 and a.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert np.asarray(x, dtype=np.float64).dtype == np.float64
    d = np.from_dlpack(x)
    assert np.shares_memory(d, x.numpy())
    np.testing.assert_array_equal(d, a)
    np.testing.assert_array_equal(np.from_dlpack(x.T), a.T)
    assert np.from_dlpack(tl.tensor([1, 2])).dtype == np.int64


def test_ndarray_and_numpy_scalars_with_tensors():
    x = tl.tensor([1.0, 2.0])
    for out in (np.float64(2.0) * x, x * np.float32(2.0), np.int64(2) + x):
        assert isinstance(out, tl.Tensor) and out.dtype is tl.float32
    with pytest.raises(TypeError):
        x + [1, 2]


@needs_torch
def test_dlpack_to_torch():
    x = tl.tensor([[1.0, 2.0], [3.0, 4.0]])
    t = torch.from_dlpack(x)
    assert t.tolist() == x.tolist()


# ---- repr -------------------------------------------------------------------------------------

def test_repr_like_pytorch():
    assert repr(tl.tensor([1.0, 2.0, 3.0])) == "tensor([1., 2., 3.])"
    assert repr(tl.tensor([1.5, 2.0, -3.25])) == "tensor([ 1.5000,  2.0000, -3.2500])"
    assert repr(tl.tensor(2.5)) == "tensor(2.5000)"
    assert repr(tl.tensor([1, 2])) == "tensor([1, 2])"
    assert repr(tl.tensor([True, False])) == "tensor([ True, False])"
    assert repr(tl.tensor([1, 2], dtype=tl.int32)) == "tensor([1, 2], dtype=tensorlite.int32)"
    assert repr(tl.ones(2, dtype=tl.float64)) == "tensor([1., 1.], dtype=tensorlite.float64)"
    assert repr(tl.zeros(0)) == "tensor([])"
    assert repr(tl.zeros(0, 3)) == "tensor([], size=(0, 3))"
    assert repr(tl.zeros(0, dtype=tl.int64)) == "tensor([], dtype=tensorlite.int64)"
    x = tl.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    assert repr(x) == "tensor([[1., 2.],\n        [3., 4.]], requires_grad=True)"
    assert repr(x * 2) == "tensor([[2., 4.],\n        [6., 8.]], grad_fn=<MulBackward>)"
    assert repr((x * 2).sum()).endswith("grad_fn=<SumBackward>)")
    assert "grad_fn=<AddBackward>" in repr(x + 1) and "grad_fn=<ExpBackward>" in repr(x.exp())
    with tl.no_grad():
        assert repr(x * 2) == "tensor([[2., 4.],\n        [6., 8.]])"
    assert str(tl.tensor([1.0])) == repr(tl.tensor([1.0]))


@needs_torch
def test_repr_matches_torch_values():
    for data in ([1.0, 2.0], [1.5, -2.25], [[0.1234567, 1.0], [2.0, 3.0]], [1e10, 1.5], 2.5):
        assert repr(tl.tensor(data)) == repr(torch.tensor(data))


# ---- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("op,name", [(lambda a, b: a + b, "add"), (lambda a, b: a - b, "sub"),
                                     (lambda a, b: a * b, "mul"), (lambda a, b: a / b, "div"),
                                     (lambda a, b: a ** b, "pow"), (lambda a, b: a.maximum(b), "maximum"),
                                     (lambda a, b: tl.where(a > 0, a, b), "where")])
def test_shape_mismatch_names_op_and_both_shapes(op, name):
    with pytest.raises(ValueError, match=rf"{name}.*\(2, 3\).*\(4,\)"):
        op(tl.ones(2, 3), tl.ones(4))


@pytest.mark.parametrize("call", [
    lambda x: x.sum(3), lambda x: x.mean(-4), lambda x: x.amax((0, 5)), lambda x: x.softmax(3),
    lambda x: x.argmax(3), lambda x: x.transpose(0, 3), lambda x: x.cumsum(3), lambda x: x.prod(3),
    lambda x: x.var(3), lambda x: x.logsumexp(3), lambda x: x.squeeze(3), lambda x: x.flatten(0, 3),
    lambda x: tl.cat([x, x], 3), lambda x: x.index_select(3, tl.tensor([0])),
])
def test_dim_out_of_range_names_dim_and_ndim(call):
    with pytest.raises(IndexError, match=r"dim -?\d+ is out of range for a tensor with 3 dims"):
        call(tl.ones(2, 3, 4))


def test_dim_out_of_range_message():
    with pytest.raises(IndexError) as e:
        tl.ones(2, 3).sum(2)
    assert str(e.value) == ("sum: dim 2 is out of range for a tensor with 2 dims "
                            "(expected a value in [-2, 1])")
    with pytest.raises(ValueError, match="more than once"):
        tl.ones(2, 3).sum((0, -2))


def test_dtype_mismatch_in_matmul_says_how_to_fix():
    a, b = tl.ones(2, 3), tl.ones(3, 2, dtype=tl.float64)
    with pytest.raises(TypeError, match=r"matmul: dtype mismatch \(tensorlite.float32 and "
                                        r"tensorlite.float64\).*b.to\(tensorlite.float32\)"):
        a @ b


@pytest.fixture
def emulated_cuda(monkeypatch):
    monkeypatch.setenv("TENSORLITE_EMULATE_CUDA", "1")
    assert tl.cuda.is_available()


@pytest.mark.parametrize("op,name", [(lambda a, b: a + b, "add"), (lambda a, b: a * b, "mul"),
                                     (lambda a, b: a @ b, "matmul"), (lambda a, b: tl.cat([a, b]), "cat"),
                                     (lambda a, b: tl.where(a > 0, a, b), "where")])
def test_device_mismatch_says_which_and_how_to_fix(emulated_cuda, op, name):
    c = tl.ones(2, device="cuda")
    assert c.device.type == "cuda" and c.is_cuda
    with pytest.raises(RuntimeError, match=rf"{name}: .*(cuda and cpu|cpu and cuda).*\.to\('"):
        op(c, tl.ones(2))
    with pytest.raises(RuntimeError, match=rf"{name}: .*\.to\('cpu'\)"):
        op(tl.ones(2), c)


def test_emulated_cuda_round_trip(emulated_cuda):
    x = tl.tensor([1.0, 2.0], requires_grad=True)
    c = x.to("cuda")
    assert c.device == tl.device("cuda") and "device='cuda'" in repr(c)
    y = (c * c).sum()
    assert y.device.type == "cuda"
    y.backward()
    close(x.grad, [2.0, 4.0])
    assert x.grad.device.type == "cpu"
    with pytest.raises(TypeError, match=r"\.cpu\(\)"):
        c.detach().numpy()
    assert c.cpu().device.type == "cpu"


def test_cuda_unavailable_has_a_clear_message(monkeypatch):
    monkeypatch.delenv("TENSORLITE_EMULATE_CUDA", raising=False)
    if tl.cuda.is_available():
        pytest.skip("a real GPU is visible")
    with pytest.raises(RuntimeError, match="cuda.*cannot be used"):
        tl.ones(2, device="cuda")
    with pytest.raises(ValueError, match="unknown device"):
        tl.ones(2, device="tpu")


def test_index_out_of_range_is_index_error_with_index_and_size():
    x = tl.ones(3, 4)
    with pytest.raises(IndexError, match="index 5 is out of range for dim 1 with size 4"):
        x[0, 5]
    with pytest.raises(IndexError, match="index -4 is out of range for dim 0 with size 3"):
        x[-4]
    with pytest.raises(IndexError, match="gather: index 4 .* size 4"):
        x.gather(1, tl.tensor([[4]]))


def test_other_bad_input():
    with pytest.raises(TypeError, match="matmul"):
        tl.ones(2) @ 3
    with pytest.raises(TypeError, match="Tensor as the first argument"):
        tl.exp([1.0])
    with pytest.raises(ValueError, match="stack"):
        tl.stack([tl.ones(2), tl.ones(3)])
    with pytest.raises(TypeError, match="unknown dtype|not supported"):
        tl.ones(2, dtype="complex64")


def test_set_num_threads_reaches_openblas_and_the_kernels():
    import tensorlite as tl
    from tensorlite import _threads
    before = tl.get_num_threads()
    try:
        tl.set_num_threads(1)
        assert tl.get_num_threads() == 1
        # NumPy wheels bundle OpenBLAS: its thread setter must have been found
        if "openblas" in str(np.show_config(mode="dicts")).lower():
            assert _threads._blas_setters(), "OpenBLAS is loaded but its thread setter was not found"
        with pytest.raises(ValueError, match="n must be >= 1"):
            tl.set_num_threads(0)
    finally:
        tl.set_num_threads(before)
