"""Ways to make a tensor: from data, filled, ranges, random (PyTorch's names and defaults)."""
import numbers

import numpy as np

from . import _dtype as dt
from .backend.device import as_device, xp_for, xp_of, to_numpy
from ._tensor.operators import where as _where3
from ._tensor.shape import _shape_arg
from .random import _draw
from .tensor import Tensor


def _finish(a, device, requires_grad):
    d = as_device(device)
    xp = xp_for(d)
    if xp is not np and isinstance(a, np.ndarray):
        a = xp.asarray(a)
    return Tensor._make(a, d, requires_grad=requires_grad)


def _infer_dtype(arr, data):
    """PyTorch's rule: Python floats become the default dtype; NumPy arrays keep theirs."""
    if isinstance(data, np.ndarray) or isinstance(data, np.generic):
        return dt.as_dtype(arr.dtype)
    if arr.dtype.kind == "f":
        return dt.get_default_dtype()
    if arr.dtype.kind in "iu":
        return dt.int64
    if arr.dtype.kind == "b":
        return dt.bool_
    raise TypeError(f"tensor: cannot make a tensor from data of type {arr.dtype}")


def tensor(data, dtype=None, device=None, requires_grad=False):
    """A new tensor holding a copy of data (nested lists, numbers, arrays or tensors)."""
    if isinstance(data, Tensor):
        src = data._data
        device = device or data.device
        arr = to_numpy(src).copy() if as_device(device).type == "cpu" else src.copy()
        d = dt.as_dtype(dtype) or data.dtype
        return _finish(arr.astype(d.np, copy=False), device, requires_grad)
    if type(data).__module__.startswith("cupy"):
        arr = data.copy()
        device = device or "cuda"
    else:
        try:
            arr = np.array(data)
        except ValueError as e:
            raise ValueError(f"tensor: could not build an array from the data ({e})") from None
        if arr.dtype == object:
            raise TypeError("tensor: data must be numbers or nested sequences of equal length")
    d = dt.as_dtype(dtype) or _infer_dtype(arr, data)
    return _finish(arr.astype(d.np, copy=False), device, requires_grad)


def as_tensor(data, dtype=None, device=None):
    """data as a tensor, sharing its memory where dtype and device allow (a tensor, a NumPy
    array on the CPU, a CuPy array on the GPU), otherwise a converted copy, as in PyTorch."""
    d = dt.as_dtype(dtype)
    if isinstance(data, Tensor):
        if (d is None or d is data.dtype) and (device is None or as_device(device) == data.device):
            return data
        return data.to(dtype=d, device=device)
    on_gpu = type(data).__module__.startswith("cupy")
    if isinstance(data, np.ndarray) or on_gpu:
        dev = as_device(device if device is not None else ("cuda" if on_gpu else "cpu"))
        own = dt.as_dtype(data.dtype)  # raises, by name, for dtypes tensorlite lacks
        if (d is None or d is own) and (dev.type == "cuda") == on_gpu:
            return _finish(data, dev, False)
    return tensor(data, dtype=dtype, device=device)


def from_numpy(a):
    """A tensor sharing memory with the NumPy array a."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"from_numpy: expected a numpy.ndarray, got {type(a).__name__}")
    return Tensor._make(a, as_device("cpu"))


def from_dlpack(ext_tensor):
    """A tensor sharing memory with any object that speaks DLPack (a torch tensor, a NumPy
    or CuPy array, a JAX array): its __dlpack__ and __dlpack_device__ say where it lives."""
    if isinstance(ext_tensor, Tensor):
        return ext_tensor
    if not hasattr(ext_tensor, "__dlpack__"):
        raise TypeError(f"from_dlpack: expected an object with __dlpack__ (a tensor or array), got "
                        f"{type(ext_tensor).__name__}; a bare DLPack capsule is not accepted")
    kind = ext_tensor.__dlpack_device__()[0] if hasattr(ext_tensor, "__dlpack_device__") else 1
    if kind == 1:  # kDLCPU
        return Tensor._make(np.from_dlpack(ext_tensor), as_device("cpu"))
    if kind == 2:  # kDLCUDA
        xp = xp_for(as_device("cuda"))
        return Tensor._make(xp.from_dlpack(ext_tensor), as_device("cuda"))
    raise TypeError(f"from_dlpack: DLPack device type {kind} is not supported (only CPU and CUDA)")


def _filled(shape, value, dtype, device, requires_grad, fn):
    shape = _shape_arg(shape)
    d = dt.as_dtype(dtype) or dt.get_default_dtype()
    xp = xp_for(as_device(device))
    return Tensor._make(fn(xp, shape, d.np, value), as_device(device), requires_grad=requires_grad)


def zeros(*size, dtype=None, device=None, requires_grad=False):
    return _filled(size, 0, dtype, device, requires_grad, lambda xp, s, d, v: xp.zeros(s, dtype=d))


def ones(*size, dtype=None, device=None, requires_grad=False):
    return _filled(size, 1, dtype, device, requires_grad, lambda xp, s, d, v: xp.ones(s, dtype=d))


def empty(*size, dtype=None, device=None, requires_grad=False):
    return _filled(size, 0, dtype, device, requires_grad, lambda xp, s, d, v: xp.empty(s, dtype=d))


def full(size, fill_value, dtype=None, device=None, requires_grad=False):
    if dtype is None:
        dtype = dt.scalar_dtype(fill_value)
    return _filled((size,) if isinstance(size, int) else size, fill_value, dtype, device,
                   requires_grad, lambda xp, s, d, v: xp.full(s, v, dtype=d))


def zeros_like(t, dtype=None, device=None, requires_grad=False):
    return zeros(t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def ones_like(t, dtype=None, device=None, requires_grad=False):
    return ones(t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def full_like(t, fill_value, dtype=None, device=None, requires_grad=False):
    return full(t.shape, fill_value, dtype=dtype or t.dtype, device=device or t.device,
                requires_grad=requires_grad)


def empty_like(t, dtype=None, device=None, requires_grad=False):
    return empty(t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False):
    if end is None:
        start, end = 0, start
    if step == 0:
        raise ValueError("arange: step must be nonzero")
    if dtype is None:
        ints = all(isinstance(v, numbers.Integral) for v in (start, end, step))
        dtype = dt.int64 if ints else dt.get_default_dtype()
    d = dt.as_dtype(dtype)
    a = np.arange(start, end, step, dtype=np.float64 if d.is_floating_point else np.int64)
    return _finish(a.astype(d.np), device, requires_grad)


def linspace(start, end, steps, dtype=None, device=None, requires_grad=False):
    d = dt.as_dtype(dtype) or dt.get_default_dtype()
    return _finish(np.linspace(start, end, steps).astype(d.np), device, requires_grad)


def eye(n, m=None, dtype=None, device=None, requires_grad=False):
    d = dt.as_dtype(dtype) or dt.get_default_dtype()
    return _finish(np.eye(n, m, dtype=d.np), device, requires_grad)


def rand(*size, dtype=None, device=None, requires_grad=False, generator=None):
    d = dt.as_dtype(dtype) or dt.get_default_dtype()
    a = _draw("uniform", _shape_arg(size), d, device, generator)
    return Tensor._make(a, as_device(device), requires_grad=requires_grad)


def randn(*size, dtype=None, device=None, requires_grad=False, generator=None):
    d = dt.as_dtype(dtype) or dt.get_default_dtype()
    a = _draw("normal", _shape_arg(size), d, device, generator)
    return Tensor._make(a, as_device(device), requires_grad=requires_grad)


def randint(low, high=None, size=(), dtype=None, device=None, generator=None):
    """Integers in [low, high): randint(high, size) or randint(low, high, size), as torch."""
    if isinstance(high, (tuple, list)):  # randint(high, size): the size came second
        low, high, size = 0, low, high
    elif high is None:
        low, high = 0, low
    if high <= low:
        raise ValueError(f"randint: high ({high}) must be greater than low ({low})")
    d = dt.as_dtype(dtype) or dt.int64
    a = _draw("integers", _shape_arg((size,) if isinstance(size, int) else size), d, device,
              generator, low=low, high=high)
    return Tensor._make(a, as_device(device))


def randperm(n, dtype=None, device=None, generator=None):
    d = dt.as_dtype(dtype) or dt.int64
    return Tensor._make(_draw("permutation", (n,), d, device, generator, n=n), as_device(device))


def normal(mean, std, size, generator=None, dtype=None, device=None):
    d = dt.as_dtype(dtype) or dt.get_default_dtype()
    return Tensor._make(_draw("normal", _shape_arg(size), d, device, generator, mean=mean, std=std),
                        as_device(device))


def _check_same(tensors, op):
    if not tensors:
        raise ValueError(f"{op}: expected a non-empty sequence of tensors")
    for t in tensors:
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: expected tensors, got {type(t).__name__}")


def cat(tensors, dim=0):
    from .ops._util import norm_dim, shape_str
    from .ops.shape import Cat
    tensors = list(tensors)
    _check_same(tensors, "cat")
    ref = tensors[0]
    d = norm_dim(dim, ref.ndim, "cat")
    res = ref.dtype
    for t in tensors[1:]:
        res = dt.promote_types(res, t.dtype)
        if t.ndim != ref.ndim or any(a != b for i, (a, b) in enumerate(zip(t.shape, ref.shape)) if i != d):
            raise ValueError(f"cat: shapes {shape_str(ref.shape)} and {shape_str(t.shape)} differ "
                             f"outside dim {d}")
    tensors = [t if t.dtype is res else t.to(res) for t in tensors]
    return Cat.apply(*tensors, dim=d)


def stack(tensors, dim=0):
    from .ops._util import norm_dim, shape_str
    tensors = list(tensors)
    _check_same(tensors, "stack")
    for t in tensors[1:]:
        if t.shape != tensors[0].shape:
            raise ValueError(f"stack: all tensors must have one shape, got {shape_str(tensors[0].shape)} "
                             f"and {shape_str(t.shape)}")
    d = norm_dim(dim, tensors[0].ndim + 1, "stack")
    return cat([t.unsqueeze(d) for t in tensors], dim=d)


def where(condition, input=None, other=None):  # noqa: A002
    """where(cond, a, b): a where cond else b (broadcast); where(cond): indices of True."""
    if input is None and other is None:
        return tuple(Tensor._make(xp_of(i).asarray(i, dtype=np.int64), condition.device)
                     for i in xp_of(condition._data).nonzero(condition._data))
    return _where3(condition, input, other)
