"""Tensor's operators and math: arithmetic, comparisons and logic, elementwise math,
reductions and the softmax family, as a mixin that tensorlite.tensor.Tensor composes.

This module does not import tensorlite.tensor (the class is defined above it): it
recognises tensors by autograd's TensorBase and makes results through the ops'
Function.apply, or, for results outside the graph, with self._make.
"""
import numbers

import numpy as np

from .. import _dtype as dt
from .._autocast import fast_dtype
from ..autograd.function import TensorBase
from ..backend.device import xp_of
from ..ops import elementwise as E, reduction as R, matmul as M
from ..ops import fused
from ..ops._util import norm_dim, norm_dims, shape_str, broadcast_shape


def _kind(x):
    """x's (dtype, category) for dtype promotion: a tensor, a 0-d tensor or a Python scalar."""
    if isinstance(x, TensorBase):
        return (x.dtype, "tensor" if x.ndim else "zerodim")
    return (dt.scalar_dtype(x), "scalar")


class OperatorMixin:
    """Part of tensorlite.tensor.Tensor; relies on its core (_data, _device, dtype, to(),
    _make) and on ShapeMixin's views."""

    # ---- arithmetic -------------------------------------------------------------
    def _binary(self, other, fn, name, reverse=False, floating=False):
        if isinstance(other, TensorBase) and other._device == self._device:
            d = self.dtype
            if other.dtype is d and (d.is_floating_point or not floating):
                # the common case: two tensors of one dtype on one device, nothing to promote
                if other._data.shape != self._data.shape:
                    broadcast_shape(self.shape, other.shape, name)
                return fn.apply(other, self) if reverse else fn.apply(self, other)
        if _is_array(other):
            other = _lift_array(other, self)
        elif not isinstance(other, (TensorBase, numbers.Number)):
            return NotImplemented  # Python then raises its usual "unsupported operand" TypeError
        res = dt.result_type(_kind(self), _kind(other))
        if floating and not res.is_floating_point:
            res = dt.get_default_dtype()
        a = self if self.dtype is res else self.to(res)
        if isinstance(other, TensorBase):
            if other._device != self._device:
                raise RuntimeError(f"{name}: tensors are on different devices ({self._device} and "
                                   f"{other._device}); move one with .to('{self._device}')")
            b = other if other.dtype is res else other.to(res)
            broadcast_shape(a.shape, b.shape, name)
        elif isinstance(other, numbers.Number):
            b = self._make(xp_of(self._data).asarray(other, dtype=res.np), self._device)
        else:
            return NotImplemented
        return fn.apply(b, a) if reverse else fn.apply(a, b)

    def __add__(self, o):
        return self._binary(o, E.Add, "add")

    def __radd__(self, o):
        return self._binary(o, E.Add, "add", reverse=True)

    def __sub__(self, o):
        return self._binary(o, E.Sub, "sub")

    def __rsub__(self, o):
        return self._binary(o, E.Sub, "sub", reverse=True)

    def __mul__(self, o):
        return self._binary(o, E.Mul, "mul")

    def __rmul__(self, o):
        return self._binary(o, E.Mul, "mul", reverse=True)

    def __truediv__(self, o):
        return self._binary(o, E.Div, "div", floating=True)

    def __rtruediv__(self, o):
        return self._binary(o, E.Div, "div", reverse=True, floating=True)

    def __pow__(self, o):
        return self._binary(o, E.Pow, "pow")

    def __rpow__(self, o):
        return self._binary(o, E.Pow, "pow", reverse=True)

    def __matmul__(self, o):
        return matmul(self, _lift_array(o, self) if _is_array(o) else o)

    def __rmatmul__(self, o):
        return matmul(_lift_array(o, self) if _is_array(o) else o, self)

    def __neg__(self):
        return E.Neg.apply(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return self.abs()

    add = __add__
    sub = __sub__
    mul = __mul__
    div = __truediv__
    pow = __pow__

    def maximum(self, other):
        return self._binary(other, E.Maximum, "maximum")

    def minimum(self, other):
        return self._binary(other, E.Minimum, "minimum")

    # ---- comparisons and logic (no gradient) -----------------------------------
    def _compare(self, other, op):
        o = other._data if isinstance(other, TensorBase) else other
        if isinstance(other, TensorBase):
            broadcast_shape(self.shape, other.shape, op.__name__)
        return self._make(xp_of(self._data).asarray(op(self._data, o)), self._device)

    def __eq__(self, o):
        return self._compare(o, np.equal)

    # defining __eq__ alone would set __hash__ to None: tensors hash by identity, so that
    # they can be dict keys and set members (an optimizer's state, a set of parameters)
    def __hash__(self):
        return id(self)

    def __ne__(self, o):
        return self._compare(o, np.not_equal)

    def __lt__(self, o):
        return self._compare(o, np.less)

    def __le__(self, o):
        return self._compare(o, np.less_equal)

    def __gt__(self, o):
        return self._compare(o, np.greater)

    def __ge__(self, o):
        return self._compare(o, np.greater_equal)

    eq, ne, lt, le, gt, ge = __eq__, __ne__, __lt__, __le__, __gt__, __ge__

    def __and__(self, o):
        return self._compare(o, np.logical_and if self.dtype is dt.bool_ else np.bitwise_and)

    def __or__(self, o):
        return self._compare(o, np.logical_or if self.dtype is dt.bool_ else np.bitwise_or)

    def __xor__(self, o):
        return self._compare(o, np.logical_xor if self.dtype is dt.bool_ else np.bitwise_xor)

    def __invert__(self):
        fn = np.logical_not if self.dtype is dt.bool_ else np.invert
        return self._make(fn(self._data), self._device)

    def logical_and(self, o):
        return self._compare(o, np.logical_and)

    def logical_or(self, o):
        return self._compare(o, np.logical_or)

    def logical_not(self):
        return self._make(np.logical_not(self._data), self._device)

    def isnan(self):
        return self._make(xp_of(self._data).isnan(self._data), self._device)

    def isfinite(self):
        return self._make(xp_of(self._data).isfinite(self._data), self._device)

    def any(self, dim=None, keepdim=False):
        return self._make(xp_of(self._data).asarray(
            self._data.any(axis=norm_dims(dim, self.ndim, "any"), keepdims=keepdim)), self._device)

    def all(self, dim=None, keepdim=False):
        return self._make(xp_of(self._data).asarray(
            self._data.all(axis=norm_dims(dim, self.ndim, "all"), keepdims=keepdim)), self._device)

    def equal(self, other):
        return self.shape == other.shape and bool((self._data == other._data).all())

    def allclose(self, other, rtol=1e-5, atol=1e-8, equal_nan=False):
        o = other._data if isinstance(other, TensorBase) else other
        return bool(xp_of(self._data).allclose(self._data, o, rtol=rtol, atol=atol, equal_nan=equal_nan))

    # ---- unary math -------------------------------------------------------------
    def _float_unary(self, fn):
        x = self if self.dtype.is_floating_point else self.to(dt.get_default_dtype())
        return fn.apply(x)

    def neg(self):
        return E.Neg.apply(self)

    def abs(self):
        return E.Abs.apply(self)

    def exp(self):
        return self._float_unary(E.Exp)

    def log(self):
        return self._float_unary(E.Log)

    def sqrt(self):
        return self._float_unary(E.Sqrt)

    def rsqrt(self):
        return self._float_unary(E.Rsqrt)

    def sin(self):
        return self._float_unary(E.Sin)

    def cos(self):
        return self._float_unary(E.Cos)

    def tanh(self):
        return self._float_unary(E.Tanh)

    def sigmoid(self):
        return self._float_unary(E.Sigmoid)

    def relu(self):
        return E.Relu.apply(self)

    def silu(self):
        return self._float_unary(E.Silu)

    def gelu(self, approximate="none"):
        if approximate not in ("none", "tanh"):
            raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
        return fused.FusedGelu.apply(self, approximate=approximate)

    def clamp(self, min=None, max=None):  # noqa: A002 - PyTorch's argument names
        if min is None and max is None:
            raise ValueError("clamp: at least one of min and max must be given")
        if isinstance(min, TensorBase) or isinstance(max, TensorBase):
            # tensor bounds broadcast and get gradients: two wheres give PyTorch's masks
            # (self where min <= self <= max, min where self < min, max where self > max)
            out = self
            if min is not None:
                out = where(out < min, min, out)
            if max is not None:
                out = where(out > max, max, out)
            return out
        return E.Clamp.apply(self, lo=min, hi=max)

    clip = clamp

    def square(self):
        return self * self

    def masked_fill(self, mask, value):
        mask = _as_tensor_like(mask, self)
        if mask.dtype is not dt.bool_:
            raise TypeError(f"masked_fill: mask must be a bool tensor, got {mask.dtype}")
        broadcast_shape(self.shape, mask.shape, "masked_fill")
        fill = self._make(xp_of(self._data).asarray(value, dtype=self._data.dtype), self._device)
        out = E.Where.apply(mask, fill, self)
        if out.shape != self.shape:
            raise ValueError(f"masked_fill: mask of shape {shape_str(mask.shape)} would broadcast "
                             f"the tensor of shape {shape_str(self.shape)}")
        return out

    # ---- reductions -------------------------------------------------------------
    def sum(self, dim=None, keepdim=False, dtype=None):
        x = self.to(dtype) if dtype is not None else self
        if x.dtype is dt.bool_ or (not x.dtype.is_floating_point and x.dtype is not dt.int64):
            x = x.to(dt.int64)  # PyTorch sums integers and bools as int64
        return R.Sum.apply(x, dims=norm_dims(dim, self.ndim, "sum"), keepdim=keepdim)

    def mean(self, dim=None, keepdim=False):
        if not self.dtype.is_floating_point:
            raise RuntimeError(f"mean: expected a floating point tensor, got {self.dtype}; "
                               "convert it with .float()")
        return R.Mean.apply(self, dims=norm_dims(dim, self.ndim, "mean"), keepdim=keepdim)

    def var(self, dim=None, unbiased=True, keepdim=False, correction=None):
        return self._var(R.Var, "var", dim, unbiased, keepdim, correction)

    def std(self, dim=None, unbiased=True, keepdim=False, correction=None):
        return self._var(R.Std, "std", dim, unbiased, keepdim, correction)

    def _var(self, fn, name, dim, unbiased, keepdim, correction):
        if not self.dtype.is_floating_point:
            raise RuntimeError(f"{name}: expected a floating point tensor, got {self.dtype}; "
                               "convert it with .float()")
        c = (1 if unbiased else 0) if correction is None else correction
        return fn.apply(self, dims=norm_dims(dim, self.ndim, name), correction=c, keepdim=keepdim)

    def _minmax(self, dim, keepdim, largest):
        name = "max" if largest else "min"
        dims = norm_dims(dim, self.ndim, name)
        # only reducing over an empty dim has no answer; (0, 3).amax(1) is a valid (0,) result
        if any(self.shape[d] == 0 for d in dims):
            raise RuntimeError(f"{name}: cannot reduce an empty tensor of shape {shape_str(self.shape)} "
                               f"over dim {dim}")
        return R.Amax.apply(self, dims=dims, keepdim=keepdim, largest=largest)

    def amax(self, dim=None, keepdim=False):
        return self._minmax(dim, keepdim, True)

    def amin(self, dim=None, keepdim=False):
        return self._minmax(dim, keepdim, False)

    def max(self, dim=None, keepdim=False):
        """Without dim: the maximum. With an int dim: (values, indices), as in PyTorch."""
        if isinstance(dim, TensorBase):
            return self.maximum(dim)
        if dim is None:
            return self.amax()
        return _MinMax(self.amax(dim, keepdim), self.argmax(dim, keepdim))

    def min(self, dim=None, keepdim=False):
        if isinstance(dim, TensorBase):
            return self.minimum(dim)
        if dim is None:
            return self.amin()
        return _MinMax(self.amin(dim, keepdim), self.argmin(dim, keepdim))

    def argmax(self, dim=None, keepdim=False):
        return self._arg(dim, keepdim, "argmax")

    def argmin(self, dim=None, keepdim=False):
        return self._arg(dim, keepdim, "argmin")

    def _arg(self, dim, keepdim, name):
        a = self._data
        if dim is None:
            r = getattr(a.reshape(-1), name)()
            r = r.reshape((1,) * self.ndim) if keepdim else r
        else:
            d = norm_dim(dim, self.ndim, name)
            r = getattr(a, name)(axis=d, keepdims=keepdim)
        return self._make(xp_of(a).asarray(r, dtype=np.int64), self._device)

    def logsumexp(self, dim, keepdim=False):
        return R.LogSumExp.apply(self._floating(), dims=norm_dims(dim, self.ndim, "logsumexp"),
                                 keepdim=keepdim)

    def prod(self, dim=None, keepdim=False):
        d = None if dim is None else norm_dim(dim, self.ndim, "prod")
        if self.ndim == 0:
            d = None  # dim 0 of a 0-d tensor is allowed but NumPy has no axis 0 there
        return R.Prod.apply(self, dim=d, keepdim=keepdim)

    def cumsum(self, dim):
        d = norm_dim(dim, self.ndim, "cumsum")
        if self.ndim == 0:  # NumPy's cumsum flattens a 0-d array to (1,)
            return self.reshape(1).cumsum(0).reshape(())
        return R.Cumsum.apply(self, dim=d)

    def _floating(self):
        return self if self.dtype.is_floating_point else self.to(dt.get_default_dtype())

    # ---- softmax family (fused kernels, last dim) -------------------------------
    def _over_last(self, fn, dim, name, **kw):
        d = norm_dim(dim, self.ndim, name)
        x = self._floating()
        if x.numel() == 0:
            return x.clone()  # nothing to normalise; providers reduce with max, undefined on empty
        if self.ndim == 0:
            return fn.apply(x.reshape(1), **kw).reshape(())
        if d == self.ndim - 1:
            return fn.apply(x, **kw)
        return fn.apply(x.transpose(d, -1), **kw).transpose(d, -1)

    def softmax(self, dim):
        return self._over_last(fused.FusedSoftmax, dim, "softmax")

    def log_softmax(self, dim):
        return self._over_last(fused.FusedLogSoftmax, dim, "log_softmax")


def where(condition, input, other):  # noqa: A002 - PyTorch's argument names
    """input where condition else other, broadcast, promoted as a binary op is; either of
    input and other may be a Python scalar. (tensorlite.where and Tensor.clamp)"""
    if condition.dtype is not dt.bool_:
        raise TypeError(f"where: condition must be a bool tensor, got {condition.dtype}")
    like = input if isinstance(input, TensorBase) else other
    res = dt.result_type(_kind(input), _kind(other))

    def lift(v):
        if isinstance(v, TensorBase):
            return v if v.dtype is res else v.to(res)
        return like._make(xp_of(like._data).asarray(v, dtype=res.np), like.device)
    a, b = lift(input), lift(other)
    broadcast_shape(broadcast_shape(condition.shape, a.shape, "where"), b.shape, "where")
    return E.Where.apply(condition, a, b)


class _MinMax(tuple):
    """(values, indices) with attribute access, like torch.return_types.max."""

    def __new__(cls, values, indices):
        return super().__new__(cls, (values, indices))

    @property
    def values(self):
        return self[0]

    @property
    def indices(self):
        return self[1]


def _is_array(x):
    return isinstance(x, np.ndarray) or type(x).__module__.startswith("cupy")


def _lift_array(a, like):
    """An ndarray operand as a tensor on like's device (no copy on the CPU), so that
    `t + a` and `a + t` (NumPy defers to Tensor's __array_priority__) both give a Tensor
    and keep t's graph; the array promotes as a tensor of its own dtype would."""
    dt.as_dtype(a.dtype)  # unsupported dtypes (int16, object, ...) raise here, by name
    return like._make(xp_of(like._data).asarray(a), like._device)


def _as_tensor_like(x, like):
    if isinstance(x, TensorBase):
        return x
    return like._make(xp_of(like._data).asarray(x), like._device)


def matmul(a, b):
    if not isinstance(a, TensorBase) or not isinstance(b, TensorBase):
        raise TypeError("matmul: both operands must be tensors")
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: both operands need at least 1 dim, got shapes "
                         f"{shape_str(a.shape)} and {shape_str(b.shape)}")
    fast = fast_dtype(a._device.type)
    if fast is not None and a.dtype.is_floating_point and b.dtype.is_floating_point:
        # autocast: both operands in the low-precision dtype, through recorded casts, so the
        # float32 master weights get float32 gradients back through the cast's backward
        a = a if a.dtype is fast else a.to(fast)
        b = b if b.dtype is fast else b.to(fast)
    if a.dtype is not b.dtype:
        raise TypeError(f"matmul: dtype mismatch ({a.dtype} and {b.dtype}); convert one, "
                        f"e.g. b.to({a.dtype})")
    if a._device != b._device:
        raise RuntimeError(f"matmul: tensors are on different devices ({a.device} and {b.device}); "
                           f"move one with .to('{a.device}')")
    ka = a.shape[-1]
    kb = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if ka != kb:
        raise ValueError(f"matmul: shapes {shape_str(a.shape)} and {shape_str(b.shape)} are not "
                         f"aligned ({ka} != {kb})")
    if a.ndim > 2 and b.ndim > 2:
        broadcast_shape(a.shape[:-2], b.shape[:-2], "matmul (batch dims)")
    return M.Matmul.apply(a, b)
