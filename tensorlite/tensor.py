"""Tensor: an array (NumPy on the CPU, CuPy on the GPU) plus what autograd needs.

Every differentiable method is a thin wrapper that checks its arguments, promotes
dtypes the way PyTorch does, and calls one Function from tensorlite/ops/. The class
itself holds the core (construction, attributes, conversion and devices, the autograd
glue, printing); its operators and math (tensorlite/_tensor/operators.py), its
shape, indexing and in-place methods (tensorlite/_tensor/shape.py), sorting and sampling
(selection.py), norms and products (linalg.py) and new_* constructors (creation.py) are
mixins it composes, which never import this module.
"""
import weakref

import numpy as np

from . import _dtype as dt
from ._tensor.operators import OperatorMixin, matmul  # noqa: F401 (re-exported: tensorlite.matmul)
from ._tensor.shape import ShapeMixin
from ._tensor.selection import SelectionMixin
from ._tensor.linalg import LinalgMixin
from ._tensor.creation import CreationMixin
from .autograd import api as _autograd
from .autograd.function import Function, TensorBase, VersionCounter, edge_of
from .backend.device import as_device, xp_for, xp_of, to_numpy, CPU
from .ops import elementwise as E
from .ops._util import norm_dim, shape_str


class Tensor(OperatorMixin, ShapeMixin, SelectionMixin, LinalgMixin, CreationMixin, TensorBase):
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

    @staticmethod
    def _make(data, device, requires_grad=False, version=None):
        """A Tensor wrapping data as is. Function.apply and the mixins make their results
        through a tensor they were given (x._make), so that layer needs no Tensor class;
        a staticmethod, not a classmethod, so that an op on a Parameter (or any subclass)
        still gives a plain Tensor, as in PyTorch, and no method is bound per op."""
        t = Tensor.__new__(Tensor)
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
        # NumPy 2's protocol: np.array(t) passes copy=True and must get an array of its own
        # (writing into it must not change t); np.asarray(t) passes copy=None and may share
        # t's memory; copy=False must share or fail
        a = self._data
        on_cpu = isinstance(a, np.ndarray)
        if not on_cpu:
            if copy is False:
                raise ValueError("__array__(copy=False): this tensor is on the GPU; a NumPy array "
                                 "of it needs a copy to host memory")
            a = to_numpy(a)  # already a copy of its own
        if dtype is not None and np.dtype(dtype) != a.dtype:
            if copy is False:
                raise ValueError(f"__array__(copy=False): converting {self.dtype} to "
                                 f"{np.dtype(dtype)} needs a copy")
            return a.astype(dtype)
        return a.copy() if copy and on_cpu else a

    def __format__(self, spec):
        # f"{loss:.4f}": a 0-d tensor formats as its number, as in PyTorch; other tensors
        # only take the empty spec (str), as object.__format__ does
        if self.ndim == 0:
            return format(self.item(), spec)
        if spec:
            raise TypeError(f"unsupported format string {spec!r} for a tensor of shape "
                            f"{shape_str(self.shape)}; only 0-d tensors format as numbers "
                            "(use .item() or .tolist())")
        return str(self)

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

    def to(self, *args, dtype=None, device=None, copy=False, non_blocking=False, memory_format=None):
        """to(device), to(dtype), to(device, dtype), to(other). non_blocking and memory_format
        are accepted for PyTorch's signature: copies here are synchronous and every tensor
        is dense and row-major."""
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

    def pin_memory(self):
        """Returns self: NumPy arrays have no page-locked variant, and tensorlite's host to
        GPU copies are synchronous anyway."""
        return self

    def is_pinned(self):
        return False

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

    def bfloat16(self):
        return self.to(dt.bfloat16)

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
        _autograd.backward(self, gradient, retain_graph=retain_graph)

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
        node = self.grad_fn if self.grad_fn is not None else edge_of(self)
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

    def register_post_accumulate_grad_hook(self, hook):
        """hook(tensor) runs during backward right after this leaf's .grad was accumulated
        (after the register_hook hooks, which see the gradient before it is added); it
        returns None. Not run by autograd.grad, which accumulates nothing."""
        if self.grad_fn is not None:
            raise RuntimeError("post accumulate grad hooks cannot be registered on non-leaf "
                               "tensors: a non-leaf tensor accumulates no .grad (use "
                               "register_hook, or retain_grad)")
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require grad")
        node = edge_of(self)
        self._hook_node = node  # keep the AccumulateGrad node alive with the tensor
        if node.post_hooks is None:
            node.post_hooks = []
        node.post_hooks.append(hook)
        return _HookHandle(node.post_hooks, hook)

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
        if a.dtype.kind == "V":  # bfloat16 (ml_dtypes): print its values as floats
            a = a.astype(np.float32)
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
        ctx.src = xp_of(x)
        ctx.out_device = device  # Function.apply puts the result here, not on x's device
        xp = xp_for(device)
        return xp.asarray(to_numpy(x)) if xp is np else xp.asarray(x)

    @staticmethod
    def backward(ctx, g):
        return (ctx.src.asarray(to_numpy(g)) if ctx.src is np else ctx.src.asarray(g),)
