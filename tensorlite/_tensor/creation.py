"""Tensor's new_* methods (new_zeros, new_ones, new_full, new_empty, new_tensor): new
tensors that take this one's dtype and device unless told otherwise, as in PyTorch. A
mixin that tensorlite.tensor.Tensor composes; results are made with self._make."""
import numpy as np

from .. import _dtype as dt
from ..autograd.function import TensorBase
from ..backend.device import as_device, xp_for, to_numpy
from .shape import _shape_arg


class CreationMixin:
    """Part of tensorlite.tensor.Tensor; relies on its core (_data, _device, dtype, _make)."""

    def _new(self, shape, fill, dtype, device, requires_grad, name):
        d = dt.as_dtype(dtype) or self.dtype
        dev = self._device if device is None else as_device(device)
        shape = _shape_arg(shape)
        if any(s < 0 for s in shape):
            raise ValueError(f"{name}: sizes must be non-negative, got {shape}")
        xp = xp_for(dev)
        a = xp.empty(shape, dtype=d.np) if fill is None else xp.full(shape, fill, dtype=d.np)
        return self._make(a, dev, requires_grad=requires_grad)

    def new_zeros(self, *size, dtype=None, device=None, requires_grad=False):
        return self._new(size, 0, dtype, device, requires_grad, "new_zeros")

    def new_ones(self, *size, dtype=None, device=None, requires_grad=False):
        return self._new(size, 1, dtype, device, requires_grad, "new_ones")

    def new_empty(self, *size, dtype=None, device=None, requires_grad=False):
        return self._new(size, None, dtype, device, requires_grad, "new_empty")

    def new_full(self, size, fill_value, dtype=None, device=None, requires_grad=False):
        return self._new((size,), fill_value, dtype, device, requires_grad, "new_full")

    def new_tensor(self, data, dtype=None, device=None, requires_grad=False):
        """A copy of data (numbers, nested lists, arrays or tensors) in this tensor's dtype
        and on its device unless told otherwise; never shares memory, as in PyTorch."""
        d = dt.as_dtype(dtype) or self.dtype
        dev = self._device if device is None else as_device(device)
        src = data._data if isinstance(data, TensorBase) else data
        if type(src).__module__.startswith("cupy"):
            src = to_numpy(src)
        try:
            a = np.array(src, dtype=d.np)
        except (TypeError, ValueError) as e:
            raise TypeError(f"new_tensor: cannot make a {d} tensor from {type(data).__name__} ({e})") \
                from None
        xp = xp_for(dev)
        return self._make(a if xp is np else xp.asarray(a), dev, requires_grad=requires_grad)
