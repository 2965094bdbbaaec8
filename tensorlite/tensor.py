"""Tensor: an array (NumPy on the CPU, CuPy on the GPU) plus what autograd needs.

Every differentiable method is a thin wrapper that checks its arguments, promotes
dtypes the way PyTorch does, and calls one Function from tensorlite/ops/.
"""
import numbers

import numpy as np

from . import _dtype as dt
from .autograd import function as _function
from .autograd import grad_mode
from .autograd.function import Function, VersionCounter
from .backend.device import as_device, xp_of, to_numpy, CPU
from .ops import elementwise as E, reduction as R, shape as S, indexing as I, matmul as M
from .ops import fused as F
from .ops._util import norm_dim, norm_dims, shape_str, broadcast_shape


def _kind(x):
    if isinstance(x, Tensor):
        return (x.dtype, "tensor" if x.ndim else "zerodim")
    return (dt.scalar_dtype(x), "scalar")


class Tensor:
    __array_priority__ = 1000  # so ndarray <op> Tensor defers to Tensor's reflected operator

    # ---- construction -----------------------------------------------------------
    def __init__(self, data, requires_grad=False):
        """Prefer tensorlite.tensor(...); this wraps an existing array without copying."""
        if isinstance(data, Tensor):
            data = data._data
        if not hasattr(data, "__array_interface__") and not hasattr(data, "__cuda_array_interface__"):
            data = np.asarray(data)
        self._init(data, CPU if isinstance(data, np.ndarray) else as_device("cuda"), requires_grad)

    def _init(self, data, device, requires_grad=False, version=None):
        if isinstance(data, np.generic):
            # NumPy hands back scalars (not 0-d arrays) from full reductions and integer
            # indexing; every method here expects an array (.get, .base, in-place writes)
            data = np.asarray(data)
        self._data = data
        self._device = device
        self.grad = None
        self.grad_fn = None
        self._version = version if version is not None else VersionCounter()
        self._acc = None
        self._retain = False
        self._requires_grad = False
        if requires_grad:
            self.requires_grad = True  # the setter checks the dtype
        self._name = None
        if data.dtype not in dt._BY_NP:
            dt.as_dtype(data.dtype)  # raises on unsupported dtypes

    @classmethod
    def _make(cls, data, device, requires_grad=False, version=None):
        t = cls.__new__(cls)
        t._init(data, device if device is not None else CPU, requires_grad, version)
        return t

    # ---- attributes -------------------------------------------------------------
    @property
    def requires_grad(self):
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, flag):
        flag = bool(flag)
        if flag and not self.dtype.is_floating_point:
            raise RuntimeError(f"only floating point tensors can require gradients (this one is {self.dtype})")
        if not flag and self.grad_fn is not None:
            raise RuntimeError("requires_grad can only be turned off on leaf tensors; use .detach()")
        self._requires_grad = flag

    def requires_grad_(self, flag=True):
        self.requires_grad = flag
        return self

    @property
    def shape(self):
        return tuple(self._data.shape)

    @property
    def ndim(self):
        return self._data.ndim

    def dim(self):
        return self._data.ndim

    def size(self, dim=None):
        if dim is None:
            return self.shape
        return self.shape[norm_dim(dim, self.ndim, "size")]

    def numel(self):
        return int(self._data.size)

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    @property
    def dtype(self):
        d = dt._BY_NP.get(self._data.dtype)  # every op asks: skip as_dtype's general path
        return d if d is not None else dt.as_dtype(self._data.dtype)

    @property
    def device(self):
        return self._device

    @property
    def is_cuda(self):
        return self._device.type == "cuda"

    @property
    def is_leaf(self):
        return self.grad_fn is None

    @property
    def data(self):
        """A tensor sharing this one's array but outside the graph (like torch's .data)."""
        return Tensor._make(self._data, self._device, version=self._version)

    @data.setter
    def data(self, value):
        self._data = value._data if isinstance(value, Tensor) else value

    @property
    def T(self):
        # every Linear takes weight.T: skip permute's argument checks for this fixed permutation
        return self._view_result(S.Permute.apply(self, dims=tuple(reversed(range(self.ndim)))))

    @property
    def mT(self):
        return self.transpose(-2, -1)

    def is_floating_point(self):
        return self.dtype.is_floating_point

    def is_contiguous(self):
        return bool(self._data.flags.c_contiguous)

    def stride(self):
        return tuple(s // self._data.itemsize for s in self._data.strides)

    def data_ptr(self):
        a = self._data
        return a.ctypes.data if isinstance(a, np.ndarray) else a.data.ptr

    # ---- conversion -------------------------------------------------------------
    def numpy(self):
        if self.requires_grad:
            raise RuntimeError("Can't call numpy() on a tensor that requires grad; "
                               "use tensor.detach().numpy()")
        if self._device.type != "cpu":
            raise TypeError("can't convert a cuda tensor to numpy; use .cpu() first")
        return self._data

    def __array__(self, dtype=None, copy=None):
        a = to_numpy(self._data)
        return a if dtype is None else a.astype(dtype)

    def __dlpack__(self, *args, **kwargs):
        return self._data.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self._data.__dlpack_device__()

    def item(self):
        if self.numel() != 1:
            raise ValueError(f"item(): only one-element tensors can be converted to a Python "
                             f"number, this one has shape {shape_str(self.shape)}")
        return to_numpy(self._data).reshape(()).item()

    def tolist(self):
        return to_numpy(self._data).tolist()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if self.dtype.is_floating_point or self.numel() != 1:
            raise TypeError("only integer tensors of a single element can be used as an index")
        return int(self.item())

    def __bool__(self):
        if self.numel() != 1:
            raise RuntimeError(f"the truth value of a tensor with shape {shape_str(self.shape)} "
                               "is ambiguous; use .any() or .all()")
        return bool(self.item())

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.shape[0]))

    def __hash__(self):
        return id(self)

    def to(self, *args, dtype=None, device=None, copy=False):
        for a in args:
            if isinstance(a, (dt.dtype, type)) or (isinstance(a, str) and a in dt._NAMES):
                dtype = a
            elif isinstance(a, Tensor):
                dtype, device = a.dtype, a.device
            else:
                device = a
        out = self
        if dtype is not None and dt.as_dtype(dtype) is not self.dtype:
            out = Cast.apply(out, dtype=dt.as_dtype(dtype).np)
        if device is not None and as_device(device) != self._device:
            out = ToDevice.apply(out, device=as_device(device))
        if copy and out is self:
            out = self.clone()
        return out

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    def float(self):
        return self.to(dt.float32)

    def double(self):
        return self.to(dt.float64)

    def half(self):
        return self.to(dt.float16)

    def long(self):
        return self.to(dt.int64)

    def int(self):
        return self.to(dt.int32)

    def bool(self):
        return self.to(dt.bool_)

    def type(self, dtype=None):
        return self.dtype if dtype is None else self.to(dtype)

    # ---- autograd ---------------------------------------------------------------
    def backward(self, gradient=None, retain_graph=False):
        from .autograd import backward
        backward(self, gradient, retain_graph=retain_graph)

    def detach(self):
        return Tensor._make(self._data, self._device, version=self._version)

    def detach_(self):
        self.grad_fn = None
        self._requires_grad = False
        return self

    def retain_grad(self):
        """Keep .grad on a non-leaf tensor after backward (PyTorch's retain_grad)."""
        if self.grad_fn is None or self._retain:
            return
        self._retain = True
        import weakref
        ref = weakref.ref(self)

        def keep(g):  # g is a Tensor: register_hook wraps the raw gradient
            t = ref()
            if t is not None:
                t._accumulate_grad(g._data)
        self.register_hook(keep)

    def register_hook(self, hook):
        """hook(grad) runs when this tensor's gradient is computed; it may return a new one."""
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require grad")
        node = self.grad_fn if self.grad_fn is not None else _function.edge_of(self)
        if self.grad_fn is None:
            self._hook_node = node  # keep the AccumulateGrad node alive with the tensor
        if node.hooks is None:
            node.hooks = []
        device = self._device

        def wrapped(g):
            out = hook(Tensor._make(g, device))
            return None if out is None else out._data
        node.hooks.append(wrapped)
        return _HookHandle(node.hooks, wrapped)

    def _accumulate_grad(self, g):
        if tuple(g.shape) != self.shape:
            raise RuntimeError(f"gradient of shape {shape_str(g.shape)} does not match the "
                               f"tensor's shape {shape_str(self.shape)}")
        if g.dtype != self._data.dtype:
            g = g.astype(self._data.dtype)
        if self.grad is None:
            self.grad = Tensor._make(xp_of(g).array(g, copy=True), self._device)
        else:
            self.grad._data = self.grad._data + g

    # ---- printing ---------------------------------------------------------------
    def __repr__(self):
        a = to_numpy(self._data)
        # PyTorch's style: whole floats print as "1.", others with 4 fixed decimals ("1.5000")
        finite = a[np.isfinite(a)] if a.dtype.kind == "f" else a
        fixed = a.dtype.kind == "f" and bool((finite != np.round(finite)).any())
        body = np.array2string(a, separator=", ", precision=4, prefix="tensor(",
                               floatmode="fixed" if fixed else "maxprec_equal")
        extras = []
        if self._device.type != "cpu":
            extras.append(f"device='{self._device}'")
        if self.numel() == 0 and self.ndim != 1:
            extras.append(f"size={shape_str(self.shape)}")  # "[]" alone does not say the shape
        if self.dtype not in (dt.float32, dt.int64, dt.bool_) or \
                (self.numel() == 0 and self.dtype is not dt.float32):
            extras.append(f"dtype={self.dtype}")
        if self.grad_fn is not None:
            extras.append(f"grad_fn=<{self.grad_fn.name()}>")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + body + "".join(", " + e for e in extras) + ")"

    # ---- arithmetic -------------------------------------------------------------
    def _binary(self, other, fn, name, reverse=False, floating=False):
        if isinstance(other, Tensor) and other._device == self._device:
            d = self.dtype
            if other.dtype is d and (d.is_floating_point or not floating):
                # the common case: two tensors of one dtype on one device, nothing to promote
                if other._data.shape != self._data.shape:
                    broadcast_shape(self.shape, other.shape, name)
                return fn.apply(other, self) if reverse else fn.apply(self, other)
        if not isinstance(other, (Tensor, numbers.Number)):
            return NotImplemented  # Python then raises its usual "unsupported operand" TypeError
        res = dt.result_type(_kind(self), _kind(other))
        if floating and not res.is_floating_point:
            res = dt.get_default_dtype()
        a = self if self.dtype is res else self.to(res)
        if isinstance(other, Tensor):
            if other._device != self._device:
                raise RuntimeError(f"{name}: tensors are on different devices ({self._device} and "
                                   f"{other._device}); move one with .to('{self._device}')")
            b = other if other.dtype is res else other.to(res)
            broadcast_shape(a.shape, b.shape, name)
        elif isinstance(other, numbers.Number):
            b = Tensor._make(xp_of(self._data).asarray(other, dtype=res.np), self._device)
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
        return matmul(self, o)

    def __rmatmul__(self, o):
        return matmul(o, self)

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
        o = other._data if isinstance(other, Tensor) else other
        if isinstance(other, Tensor):
            broadcast_shape(self.shape, other.shape, op.__name__)
        return Tensor._make(xp_of(self._data).asarray(op(self._data, o)), self._device)

    def __eq__(self, o):
        return self._compare(o, np.equal)

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
        return Tensor._make(fn(self._data), self._device)

    def logical_and(self, o):
        return self._compare(o, np.logical_and)

    def logical_or(self, o):
        return self._compare(o, np.logical_or)

    def logical_not(self):
        return Tensor._make(np.logical_not(self._data), self._device)

    def isnan(self):
        return Tensor._make(xp_of(self._data).isnan(self._data), self._device)

    def isfinite(self):
        return Tensor._make(xp_of(self._data).isfinite(self._data), self._device)

    def any(self, dim=None, keepdim=False):
        return Tensor._make(xp_of(self._data).asarray(
            self._data.any(axis=norm_dims(dim, self.ndim, "any"), keepdims=keepdim)), self._device)

    def all(self, dim=None, keepdim=False):
        return Tensor._make(xp_of(self._data).asarray(
            self._data.all(axis=norm_dims(dim, self.ndim, "all"), keepdims=keepdim)), self._device)

    def equal(self, other):
        return self.shape == other.shape and bool((self._data == other._data).all())

    def allclose(self, other, rtol=1e-5, atol=1e-8):
        return bool(xp_of(self._data).allclose(self._data, other._data, rtol=rtol, atol=atol))

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
        return F.Gelu.apply(self, approximate=approximate)

    def clamp(self, min=None, max=None):  # noqa: A002 - PyTorch's argument names
        if min is None and max is None:
            raise ValueError("clamp: at least one of min and max must be given")
        if isinstance(min, Tensor) or isinstance(max, Tensor):
            # tensor bounds broadcast and get gradients: two wheres give PyTorch's masks
            # (self where min <= self <= max, min where self < min, max where self > max)
            from .factories import where
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
        fill = Tensor._make(xp_of(self._data).asarray(value, dtype=self._data.dtype), self._device)
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
        if isinstance(dim, Tensor):
            return self.maximum(dim)
        if dim is None:
            return self.amax()
        return _MinMax(self.amax(dim, keepdim), self.argmax(dim, keepdim))

    def min(self, dim=None, keepdim=False):
        if isinstance(dim, Tensor):
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
        return Tensor._make(xp_of(a).asarray(r, dtype=np.int64), self._device)

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
        return self._over_last(F.Softmax, dim, "softmax")

    def log_softmax(self, dim):
        return self._over_last(F.LogSoftmax, dim, "log_softmax")

    # ---- shape ------------------------------------------------------------------
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

    view = reshape

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
        v = value._data if isinstance(value, Tensor) else value
        k = key if isinstance(key, tuple) else (key,)
        if all(isinstance(i, numbers.Integral) for i in k):
            key = k + (Ellipsis,)  # a 0-d destination (not a scalar slot) takes a (1,) value too
        self._data[key] = v
        self._version.value += 1

    def gather(self, dim, index):
        d = norm_dim(dim, self.ndim, "gather")
        index = _index_tensor(index, "gather")
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
        index = _index_tensor(index, "index_select")
        _check_range(index, self.shape[d], "index_select")
        return I.IndexSelect.apply(self, index, dim=d)

    def scatter_add(self, dim, index, src):
        d = norm_dim(dim, self.ndim, "scatter_add")
        index = _index_tensor(index, "scatter_add")
        _check_range(index, self.shape[d], "scatter_add")
        return I.ScatterAdd.apply(self, index, src, dim=d)

    def index_add(self, dim, index, source, alpha=1):
        d = norm_dim(dim, self.ndim, "index_add")
        index = _index_tensor(index, "index_add")
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
        v = value._data if isinstance(value, Tensor) else value
        self._data[...] = v
        self._version.value += 1
        return self

    def add_(self, other, alpha=1):
        o = other._data if isinstance(other, Tensor) else other
        return self._inplace("add_", self._data + (o * alpha if alpha != 1 else o))

    def sub_(self, other, alpha=1):
        o = other._data if isinstance(other, Tensor) else other
        return self._inplace("sub_", self._data - (o * alpha if alpha != 1 else o))

    def mul_(self, other):
        return self._inplace("mul_", self._data * (other._data if isinstance(other, Tensor) else other))

    def div_(self, other):
        return self._inplace("div_", self._data / (other._data if isinstance(other, Tensor) else other))

    def zero_(self):
        return self._inplace("zero_", 0)

    def fill_(self, value):
        return self._inplace("fill_", value)

    def copy_(self, src):
        if isinstance(src, Tensor) and src.shape != self.shape and \
                broadcast_shape(src.shape, self.shape, "copy_") != self.shape:
            raise ValueError(f"copy_: source of shape {shape_str(src.shape)} cannot be copied into "
                             f"a tensor of shape {shape_str(self.shape)}")
        return self._inplace("copy_", src)

    def clamp_(self, min=None, max=None):  # noqa: A002
        return self._inplace("clamp_", xp_of(self._data).clip(self._data, min, max))

    def normal_(self, mean=0.0, std=1.0, generator=None):
        from .random import _draw
        return self._inplace("normal_", _draw("normal", self.shape, self.dtype, self._device,
                                              generator, mean=mean, std=std))

    def uniform_(self, a=0.0, b=1.0, generator=None):
        from .random import _draw
        return self._inplace("uniform_", _draw("uniform", self.shape, self.dtype, self._device,
                                               generator, low=a, high=b))


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


class _HookHandle:
    def __init__(self, hooks, fn):
        self.hooks, self.fn = hooks, fn

    def remove(self):
        if self.fn in self.hooks:
            self.hooks.remove(self.fn)


class Cast(Function):
    forward = E.Cast.forward
    backward = E.Cast.backward


class ToDevice(Function):
    @staticmethod
    def forward(ctx, x, device=None):
        from .backend.device import xp_for
        ctx.src = xp_of(x)
        ctx.out_device = device  # Function.apply puts the result here, not on x's device
        xp = xp_for(device)
        return xp.asarray(to_numpy(x)) if xp is np else xp.asarray(x)

    @staticmethod
    def backward(ctx, g):
        return (ctx.src.asarray(to_numpy(g)) if ctx.src is np else ctx.src.asarray(g),)


# ---- helpers used by the methods above --------------------------------------------

def _shape_arg(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return tuple(int(s) for s in shape)


def _need_2d(t, name):
    if t.ndim < 2:
        raise ValueError(f"{name}: expects a tensor with at least 2 dims, got shape {shape_str(t.shape)}")


def _as_tensor_like(x, like):
    if isinstance(x, Tensor):
        return x
    return Tensor._make(xp_of(like._data).asarray(x), like._device)


def _index_tensor(index, op):
    if not isinstance(index, Tensor):
        index = Tensor(np.asarray(index))
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
        if isinstance(k, Tensor):
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


def matmul(a, b):
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise TypeError("matmul: both operands must be tensors")
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: both operands need at least 1 dim, got shapes "
                         f"{shape_str(a.shape)} and {shape_str(b.shape)}")
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


_function._Tensor = Tensor
