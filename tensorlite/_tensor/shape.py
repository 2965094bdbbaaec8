"""Tensor's shape, indexing and in-place methods, as a mixin that tensorlite.tensor.Tensor
composes: reshape and the other views, split, getitem/setitem, gather and the other index
ops, and the in-place writes optimizers and initialisers use.

This module does not import tensorlite.tensor (the class is defined above it): it
recognises tensors by autograd's TensorBase and makes results through the ops'
Function.apply.
"""
import numbers

import numpy as np

from .. import _dtype as dt
from ..autograd import grad_mode
from ..autograd.function import TensorBase
from ..backend.device import xp_of, CPU
from ..ops import shape as S, indexing as I
from ..ops._util import norm_dim, norm_dims, shape_str, broadcast_shape
from ..random import _draw


class ShapeMixin:
    """Part of tensorlite.tensor.Tensor; relies on its core (_data, _device, _version,
    dtype, requires_grad, _make)."""

    # ---- shape ------------------------------------------------------------------
    @property
    def T(self):
        # every Linear takes weight.T: skip permute's argument checks for this fixed permutation
        return self._view_result(S.Permute.apply(self, dims=tuple(reversed(range(self.ndim)))))

    @property
    def mT(self):
        return self.transpose(-2, -1)

    def reshape(self, *shape):
        shape = _shape_arg(shape)
        n = self.numel()
        known = 1
        for s in shape:
            if s != -1:
                known *= s
        if shape.count(-1) > 1 or (-1 not in shape and known != n) or \
                (-1 in shape and (known == 0 or n % known)):
            raise RuntimeError(f"reshape: shape {shape_str(shape)} is invalid for a tensor of "
                               f"{n} elements with shape {shape_str(self.shape)}")
        return self._view_result(S.Reshape.apply(self, shape=shape))

    def view(self, *shape):
        """reshape that never copies: PyTorch refuses a view whose shape the strides cannot
        express (x.T.view(-1)), and so do we, rather than silently copying."""
        out = self.reshape(*shape)
        probe = self._data.view()
        try:
            probe.shape = out.shape  # NumPy refuses exactly when the new shape needs a copy
        except (AttributeError, ValueError):
            raise RuntimeError(f"view: shape {shape_str(out.shape)} is not compatible with the "
                               f"tensor's shape {shape_str(self.shape)} and strides (a copy would "
                               f"be needed); use .reshape(...) or .contiguous().view(...)") from None
        return out

    def view_as(self, other):
        return self.reshape(other.shape)

    def flatten(self, start_dim=0, end_dim=-1):
        if self.ndim == 0:
            return self.reshape(1)
        s = norm_dim(start_dim, self.ndim, "flatten")
        e = norm_dim(end_dim, self.ndim, "flatten")
        shape = self.shape
        mid = 1
        for x in shape[s:e + 1]:
            mid *= x
        return self.reshape(shape[:s] + (mid,) + shape[e + 1:])

    def squeeze(self, dim=None):
        if dim is None:
            return self.reshape(tuple(s for s in self.shape if s != 1))
        dims = norm_dims(dim, self.ndim, "squeeze")
        return self.reshape(tuple(s for i, s in enumerate(self.shape) if not (i in dims and s == 1)))

    def unsqueeze(self, dim):
        d = norm_dim(dim, self.ndim + 1, "unsqueeze")
        s = list(self.shape)
        s.insert(d, 1)
        return self.reshape(tuple(s))

    def expand(self, *shape):
        shape = _shape_arg(shape)
        if len(shape) < self.ndim:
            raise ValueError(f"expand: target shape {shape_str(shape)} has fewer dims than the "
                             f"tensor's shape {shape_str(self.shape)}")
        lead = len(shape) - self.ndim
        if -1 in shape[:lead]:  # (shape[i - lead] would silently read the wrong dim)
            raise ValueError(f"expand: -1 is not allowed for the new leading dims of "
                             f"{shape_str(shape)}; the tensor's shape is {shape_str(self.shape)}")
        full = tuple(self.shape[i - lead] if s == -1 else s for i, s in enumerate(shape))
        for i, s in enumerate(self.shape):
            if s != 1 and s != full[i + lead]:
                raise ValueError(f"expand: the tensor's shape {shape_str(self.shape)} cannot be "
                                 f"expanded to {shape_str(shape)}")
        return self._view_result(S.Expand.apply(self, shape=full))

    def expand_as(self, other):
        return self.expand(other.shape)

    broadcast_to = expand

    def permute(self, *dims):
        dims = _shape_arg(dims)
        if len(dims) != self.ndim:
            raise ValueError(f"permute: got {len(dims)} dims {dims} for a tensor with {self.ndim} dims")
        d = tuple(norm_dim(x, self.ndim, "permute") for x in dims)
        if sorted(d) != list(range(self.ndim)):
            raise ValueError(f"permute: dims {dims} are not a permutation of 0..{self.ndim - 1}")
        return self._view_result(S.Permute.apply(self, dims=d))

    def transpose(self, dim0, dim1):
        if self.ndim == 0:
            return self
        p = list(range(self.ndim))
        a, b = norm_dim(dim0, self.ndim, "transpose"), norm_dim(dim1, self.ndim, "transpose")
        p[a], p[b] = p[b], p[a]
        # p is a permutation by construction: skip permute's argument checks
        return self._view_result(S.Permute.apply(self, dims=tuple(p)))

    def t(self):
        if self.ndim > 2:
            raise ValueError(f"t(): expects a tensor with <= 2 dims, got {self.ndim}; use transpose")
        return self.T

    def swapaxes(self, a, b):
        return self.transpose(a, b)

    def contiguous(self):
        return self if self.is_contiguous() else S.Contiguous.apply(self)

    def clone(self):
        return S.Clone.apply(self)

    def repeat(self, *reps):
        reps = _shape_arg(reps)
        if len(reps) < self.ndim:
            raise ValueError(f"repeat: {len(reps)} repeat counts given for a tensor with {self.ndim} dims")
        return S.Repeat.apply(self, reps=reps)

    def split(self, split_size, dim=0):
        d = norm_dim(dim, self.ndim, "split")
        n = self.shape[d]
        sizes = [split_size] * (n // split_size) + ([n % split_size] if n % split_size else []) \
            if isinstance(split_size, int) else list(split_size)
        if sum(sizes) != n:
            raise ValueError(f"split: sizes {sizes} do not add up to {n}, the size of dim {dim}")
        out, start = [], 0
        for s in sizes:
            idx = [slice(None)] * self.ndim
            idx[d] = slice(start, start + s)
            out.append(self[tuple(idx)])
            start += s
        return tuple(out)

    def chunk(self, chunks, dim=0):
        n = self.shape[norm_dim(dim, self.ndim, "chunk")]
        return self.split(max(1, -(-n // chunks)), dim)

    def unbind(self, dim=0):
        d = norm_dim(dim, self.ndim, "unbind")
        return tuple(self.select(d, i) for i in range(self.shape[d]))

    def select(self, dim, index):
        d = norm_dim(dim, self.ndim, "select")
        idx = [slice(None)] * self.ndim
        idx[d] = index
        return self[tuple(idx)]

    def flip(self, *dims):
        """Reverse the order along dims (a copy, as in PyTorch). flip(0, 1) or flip((0, 1))."""
        dims = _shape_arg(dims)
        if self.ndim == 0:
            norm_dims(dims, 0, "flip")
            return self.clone()
        return S.Flip.apply(self, dims=norm_dims(dims, self.ndim, "flip"))

    def fliplr(self):
        _need_2d(self, "fliplr")
        return self.flip(1)

    def flipud(self):
        if self.ndim < 1:
            raise ValueError("flipud: expects a tensor with at least 1 dim")
        return self.flip(0)

    def triu(self, diagonal=0):
        _need_2d(self, "triu")
        return S.Tri.apply(self, diagonal=diagonal, upper=True)

    def tril(self, diagonal=0):
        _need_2d(self, "tril")
        return S.Tri.apply(self, diagonal=diagonal, upper=False)

    def _view_result(self, out):
        # views share the version counter, so an in-place write through either is seen by both.
        # (not `.base is not None`: NumPy's copies from fancy indexing or from reshaping a
        # strided array often have a base too, and sharing with them gives false version errors)
        if isinstance(self._data, np.ndarray) and np.may_share_memory(out._data, self._data):
            out._version = self._version
        return out

    # ---- indexing ---------------------------------------------------------------
    def __getitem__(self, key):
        key = _index_key(key, self)
        return self._view_result(I.GetItem.apply(self, key=key))

    def __setitem__(self, key, value):
        self._check_inplace("__setitem__")
        key = _index_key(key, self)
        v = value._data if isinstance(value, TensorBase) else value
        k = key if isinstance(key, tuple) else (key,)
        if all(isinstance(i, numbers.Integral) for i in k):
            key = k + (Ellipsis,)  # a 0-d destination (not a scalar slot) takes a (1,) value too
        self._data[key] = v
        self._version.value += 1

    def gather(self, dim, index):
        d = norm_dim(dim, self.ndim, "gather")
        index = _index_tensor(index, "gather", self)
        if index.ndim != self.ndim:
            raise ValueError(f"gather: index has {index.ndim} dims but the input has {self.ndim}")
        for i, (si, sx) in enumerate(zip(index.shape, self.shape)):
            if i != d and si > sx:
                raise ValueError(f"gather: index shape {shape_str(index.shape)} exceeds input "
                                 f"shape {shape_str(self.shape)} in dim {i}")
        _check_range(index, self.shape[d], "gather")
        return I.Gather.apply(self, index, dim=d)

    def index_select(self, dim, index):
        d = norm_dim(dim, self.ndim, "index_select")
        index = _index_tensor(index, "index_select", self)
        _check_range(index, self.shape[d], "index_select")
        return I.IndexSelect.apply(self, index, dim=d)

    def scatter_add(self, dim, index, src):
        d = norm_dim(dim, self.ndim, "scatter_add")
        index = _index_tensor(index, "scatter_add", self)
        _check_range(index, self.shape[d], "scatter_add")
        return I.ScatterAdd.apply(self, index, src, dim=d)

    def index_add(self, dim, index, source, alpha=1):
        d = norm_dim(dim, self.ndim, "index_add")
        index = _index_tensor(index, "index_add", self)
        _check_range(index, self.shape[d], "index_add")
        return I.IndexAdd.apply(self, index, source, dim=d, alpha=alpha)

    # ---- in place (for optimizers; never recorded) ------------------------------
    def _check_inplace(self, name):
        if grad_mode.is_grad_enabled() and self.requires_grad:
            raise RuntimeError(
                f"{name}: in-place operation on a tensor that requires grad; wrap it in "
                "`with tensorlite.no_grad():` (as optimizers do) or work on a .clone()")

    def _inplace(self, name, value):
        self._check_inplace(name)
        v = value._data if isinstance(value, TensorBase) else value
        self._data[...] = v
        self._version.value += 1
        return self

    def add_(self, other, alpha=1):
        o = other._data if isinstance(other, TensorBase) else other
        return self._inplace("add_", self._data + (o * alpha if alpha != 1 else o))

    def sub_(self, other, alpha=1):
        o = other._data if isinstance(other, TensorBase) else other
        return self._inplace("sub_", self._data - (o * alpha if alpha != 1 else o))

    def mul_(self, other):
        return self._inplace("mul_", self._data * (other._data if isinstance(other, TensorBase) else other))

    def div_(self, other):
        return self._inplace("div_", self._data / (other._data if isinstance(other, TensorBase) else other))

    def zero_(self):
        return self._inplace("zero_", 0)

    def fill_(self, value):
        return self._inplace("fill_", value)

    def copy_(self, src):
        if isinstance(src, TensorBase) and src.shape != self.shape and \
                broadcast_shape(src.shape, self.shape, "copy_") != self.shape:
            raise ValueError(f"copy_: source of shape {shape_str(src.shape)} cannot be copied into "
                             f"a tensor of shape {shape_str(self.shape)}")
        return self._inplace("copy_", src)

    def masked_fill_(self, mask, value):
        """Write value where mask (bool, broadcastable to this tensor's shape) is True.
        On a tensor in the graph (a non-leaf that requires grad, under grad mode) the write
        is recorded: the tensor takes masked_fill's result and history. Its array is then a
        new one, so that arrays saved for earlier backwards stay intact; views taken of it
        before the write do not see the write (in PyTorch they would)."""
        if isinstance(value, TensorBase):
            if value.ndim:
                raise ValueError(f"masked_fill_: value must be a number or a 0-d tensor, got "
                                 f"shape {shape_str(value.shape)}")
            value = value.item()
        if grad_mode.is_grad_enabled() and self.requires_grad:
            if self.grad_fn is None:
                self._check_inplace("masked_fill_")  # a leaf that requires grad: raises
            out = self.masked_fill(mask, value)
            self._data, self.grad_fn, self._version = out._data, out.grad_fn, out._version
            return self
        if not isinstance(mask, TensorBase):
            mask = self._make(xp_of(self._data).asarray(mask), self._device)
        if mask.dtype is not dt.bool_:
            raise TypeError(f"masked_fill_: mask must be a bool tensor, got {mask.dtype}")
        if broadcast_shape(self.shape, mask.shape, "masked_fill_") != self.shape:
            raise ValueError(f"masked_fill_: mask of shape {shape_str(mask.shape)} would broadcast "
                             f"the tensor of shape {shape_str(self.shape)}")
        xp = xp_of(self._data)
        xp.copyto(self._data, xp.asarray(value, dtype=self._data.dtype), where=mask._data)
        self._version.value += 1
        return self

    def clamp_(self, min=None, max=None):  # noqa: A002
        return self._inplace("clamp_", xp_of(self._data).clip(self._data, min, max))

    def normal_(self, mean=0.0, std=1.0, generator=None):
        return self._inplace("normal_", _draw("normal", self.shape, self.dtype, self._device,
                                              generator, mean=mean, std=std))

    def uniform_(self, a=0.0, b=1.0, generator=None):
        return self._inplace("uniform_", _draw("uniform", self.shape, self.dtype, self._device,
                                               generator, low=a, high=b))


def _shape_arg(shape):
    """A shape given as ints or one tuple/list of ints; 2.5 or "3" are refused, not truncated."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    out = []
    for s in shape:
        if isinstance(s, bool) or not hasattr(s, "__index__"):
            raise TypeError(f"size must be a sequence of ints, got {s!r} in {tuple(shape)!r}")
        out.append(s.__index__())
    return tuple(out)


def _need_2d(t, name):
    if t.ndim < 2:
        raise ValueError(f"{name}: expects a tensor with at least 2 dims, got shape {shape_str(t.shape)}")


def _index_tensor(index, op, like):
    if not isinstance(index, TensorBase):
        index = like._make(np.asarray(index), CPU)
    if index.dtype not in (dt.int64, dt.int32):
        raise TypeError(f"{op}: index must be an integer tensor, got {index.dtype}")
    return index


def _check_range(index, size, op):
    a = index._data
    if a.size and (int(a.max()) >= size or int(a.min()) < -size):
        bad = int(a.max()) if int(a.max()) >= size else int(a.min())
        raise IndexError(f"{op}: index {bad} is out of range for a dim of size {size}")


def _index_key(key, t):
    """Turn Tensors inside an index into arrays, and check integer indices against the size."""
    items = key if isinstance(key, tuple) else (key,)
    out = []
    for k in items:
        if isinstance(k, TensorBase):
            k = k._data
        elif isinstance(k, list):
            k = np.asarray(k)
        out.append(k)
    # check plain integer indices here, so the message names the index and the size
    dim = 0
    n_ellipsis_fill = t.ndim - sum(1 for k in out if k is not None and k is not Ellipsis and
                                   not (hasattr(k, "dtype") and k.dtype == np.bool_)) \
        - sum(k.ndim - 1 for k in out if hasattr(k, "dtype") and k.dtype == np.bool_)
    for k in out:
        if k is Ellipsis:
            dim += max(n_ellipsis_fill, 0)
            continue
        if k is None:
            continue
        if isinstance(k, numbers.Integral) and not isinstance(k, bool):
            if dim >= t.ndim:
                raise IndexError(f"too many indices for a tensor of dimension {t.ndim}")
            size = t.shape[dim]
            if not -size <= k < size:
                raise IndexError(f"index {k} is out of range for dim {dim} with size {size}")
        if hasattr(k, "dtype") and k.dtype == np.bool_:
            dim += max(k.ndim, 1)
        else:
            dim += 1
    return tuple(out) if isinstance(key, tuple) else out[0]
