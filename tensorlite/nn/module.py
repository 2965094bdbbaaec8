"""Module: the base class of every layer and model.

Parameters, buffers and submodules are registered by assigning them as attributes,
in that order; names are dotted paths ("transformer.h.0.attn.c_attn.weight").
"""
import logging
from collections import OrderedDict

import numpy as np

from .. import _dtype as dt
from ..autograd.grad_mode import is_grad_enabled, no_grad
from ..backend.device import as_device, xp_for, to_numpy
from ..tensor import Tensor
from .backward_hook import BackwardHook
from .parameter import Parameter

_log = logging.getLogger("tensorlite.nn")


class Module:
    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_hooks", OrderedDict())
        object.__setattr__(self, "_forward_pre_hooks", OrderedDict())
        object.__setattr__(self, "_backward_hooks", OrderedDict())
        object.__setattr__(self, "training", True)

    # ---- registration -------------------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}: call super().__init__() before assigning "
                               "attributes in __init__")
        if name in self._buffers and not isinstance(value, (Parameter, Module)) \
                and (value is None or isinstance(value, Tensor)):
            # `self.mask = new_tensor` replaces the buffer's value; it stays a buffer
            # (and keeps its persistence), as in PyTorch
            self._buffers[name] = value
            return
        if name in self._parameters and isinstance(value, Tensor) and not isinstance(value, Parameter):
            # silently turning `lin.weight = tensor` into a plain attribute would drop the
            # weight from parameters(), the optimizer and the state dict
            raise TypeError(f"cannot assign a Tensor to parameter '{name}' of "
                            f"{type(self).__name__}: wrap it in nn.Parameter (or assign None)")
        for store in (self._parameters, self._buffers, self._modules):
            store.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        else:
            object.__setattr__(self, name, value)
            return
        self.__dict__.pop(name, None)

    def __getattr__(self, name):
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if store in d and name in d[store]:
                return d[store][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for store in (self._parameters, self._buffers, self._modules):
            if name in store:
                del store[name]
                return
        object.__delattr__(self, name)

    def register_buffer(self, name, tensor, persistent=True):
        """A tensor that is part of the module's state but not trained (e.g. a mask)."""
        self.__dict__.pop(name, None)  # a plain attribute of that name would shadow the buffer
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        self._buffers[name] = tensor
        skip = getattr(self, "_non_persistent", set())
        object.__setattr__(self, "_non_persistent", skip - {name} if persistent else skip | {name})

    def register_parameter(self, name, param):
        if param is None:
            self._parameters[name] = None
        else:
            setattr(self, name, param)

    def add_module(self, name, module):
        self._modules[name] = module

    # ---- traversal ----------------------------------------------------------------
    def named_modules(self, prefix="", memo=None):
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, m in self._modules.items():
            if m is not None:
                yield from m.named_modules(f"{prefix}.{name}" if prefix else name, memo)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        for name, m in self._modules.items():
            if m is not None:
                yield name, m

    def children(self):
        for _, m in self.named_children():
            yield m

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        """(name, Parameter) pairs; a parameter shared by two modules (tied weights) is
        listed once, under the first name it is reached by."""
        seen = set()
        mods = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mp, m in mods:
            for name, p in m._parameters.items():
                if p is None or (remove_duplicate and id(p) in seen):
                    continue
                seen.add(id(p))
                yield (f"{mp}.{name}" if mp else name), p

    def parameters(self, recurse=True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix=""):
        for mp, m in self.named_modules(prefix):
            for name, b in m._buffers.items():
                if b is not None:
                    yield (f"{mp}.{name}" if mp else name), b

    def buffers(self):
        for _, b in self.named_buffers():
            yield b

    def num_parameters(self, trainable_only=False):
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def apply(self, fn):
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # ---- modes ----------------------------------------------------------------------
    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, flag=True):
        for p in self.parameters():
            p.requires_grad = flag
        return self

    def zero_grad(self, set_to_none=True):
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad.zero_()

    # ---- device and dtype -----------------------------------------------------------
    def to(self, *args, dtype=None, device=None):
        for a in args:
            if isinstance(a, dt.dtype) or (isinstance(a, str) and a in dt._NAMES):
                dtype = dt.as_dtype(a)
            else:
                device = a
        dev = as_device(device) if device is not None else None

        def move(t):
            a = t._data
            if dtype is not None and t.dtype.is_floating_point:
                a = a.astype(dt.as_dtype(dtype).np)
            if dev is not None and dev != t.device:
                xp = xp_for(dev)
                a = xp.asarray(to_numpy(a)) if xp is np else xp.asarray(a)
                t._device = dev
            t._data = a
            if t.grad is not None:
                t.grad = None
        seen = set()
        for t in list(self.parameters()) + list(self.buffers()):
            if id(t) not in seen:
                seen.add(id(t))
                move(t)
        return self

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    def double(self):
        return self.to(dt.float64)

    def float(self):
        return self.to(dt.float32)

    # ---- state --------------------------------------------------------------------------
    def state_dict(self):
        """name -> tensor (detached, sharing memory), parameters then buffers, every name a
        tied parameter is reachable by included (like PyTorch)."""
        out = OrderedDict()
        for mp, m in self.named_modules():
            skip = getattr(m, "_non_persistent", set())
            for name, p in m._parameters.items():
                if p is not None:
                    out[f"{mp}.{name}" if mp else name] = p.detach()
            for name, b in m._buffers.items():
                if b is not None and name not in skip:
                    out[f"{mp}.{name}" if mp else name] = b.detach()
        return out

    def load_state_dict(self, state_dict, strict=True):
        """Copy values into this module's tensors. Missing keys, unexpected keys and shape
        mismatches are all listed by name in one error (shape mismatches always raise).
        A key whose tensor is tied to another key that is present (one Parameter reachable
        by two names, as lm_head.weight and wte.weight; safetensors' save_model keeps only
        one) is loaded through that key, so strict loading accepts its absence. It is
        still listed in missing_keys (PyTorch's meaning: absent from state_dict);
        result.tied_keys maps it to the key it was loaded through, and the tensorlite.nn
        logger says so at INFO level."""
        own = self.state_dict()
        tied = _tied_sources(own, state_dict)
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        mismatched, wrong = [], []
        for k, v in state_dict.items():
            if k in own:
                shape = tuple(v.shape)
                if shape != own[k].shape:
                    mismatched.append(f"{k}: checkpoint {shape} vs model {own[k].shape}")
                dt = getattr(v.dtype, "np", v.dtype)  # a tensorlite dtype or a NumPy one
                if own[k].dtype.is_floating_point and np.dtype(dt).kind not in "fcV":
                    # integer or bool data cast into float weights: a file of the wrong kind
                    wrong.append(f"{k}: checkpoint {np.dtype(dt).name} vs model {own[k].dtype.name}")
        problems = []
        if strict and any(k not in tied for k in missing):
            problems.append("missing keys: " + ", ".join(k for k in missing if k not in tied))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        if mismatched:
            problems.append("shape mismatch: " + "; ".join(mismatched))
        if wrong:
            problems.append("dtype mismatch: " + "; ".join(wrong))
        if problems:
            raise RuntimeError(f"error loading state_dict into {type(self).__name__}: "
                               + " | ".join(problems))
        with no_grad():
            for k, v in state_dict.items():
                if k in own:
                    target = own[k]
                    src = v._data if isinstance(v, Tensor) else v
                    xp = xp_for(target.device)
                    target._data[...] = xp.asarray(to_numpy(src) if xp is np else src)
                    target._version.value += 1
        if tied:
            _log.info("load_state_dict: %s", ", ".join(f"{k} loaded through its tied {v}"
                                                       for k, v in tied.items()))
        return _IncompatibleKeys(missing, unexpected, tied)

    # ---- calling --------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def __call__(self, *args, **kwargs):
        for hook in list(self._forward_pre_hooks.values()):
            r = hook(self, args)
            if r is not None:
                args = r if isinstance(r, tuple) else (r,)
        bw = None
        if self._backward_hooks and is_grad_enabled():
            bw = BackwardHook(self, self._backward_hooks)
            args = bw.setup_input_hook(args)
        out = self.forward(*args, **kwargs)
        for hook in list(self._forward_hooks.values()):
            r = hook(self, args, out)
            if r is not None:
                out = r
        if bw is not None:
            out = bw.setup_output_hook(out)
        return out

    def register_forward_hook(self, hook, prepend=False):
        """hook(module, args, output) after each forward; may return a replacement output."""
        return _Handle(self._forward_hooks, hook, prepend)

    def register_forward_pre_hook(self, hook, prepend=False):
        """hook(module, args) before each forward; may return replacement args."""
        return _Handle(self._forward_pre_hooks, hook, prepend)

    def register_full_backward_hook(self, hook, prepend=False):
        """hook(module, grad_input, grad_output) once the gradients w.r.t. all of the module's
        outputs and positional inputs are computed (one entry per positional input, None
        where it is not a tensor or needs no gradient). It may return a tuple to replace
        grad_input, as in PyTorch. Keyword arguments are not part of grad_input."""
        return _Handle(self._backward_hooks, hook, prepend)

    # ---- printing --------------------------------------------------------------------------
    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = []
        for name, m in self._modules.items():
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {sub}")
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n" + "\n".join(lines) + "\n)"


class _Handle:
    _next = [0]

    def __init__(self, store, hook, prepend=False):
        self.store = store
        self.id = _Handle._next[0]
        _Handle._next[0] += 1
        store[self.id] = hook
        if prepend:
            store.move_to_end(self.id, last=False)

    def remove(self):
        self.store.pop(self.id, None)


def _tied_sources(own, state_dict):
    """{missing key: present key holding the same tensor} (state_dict's values share their
    module tensor's array, so a shared array is a shared tensor)."""
    by_array = {}
    for k, v in own.items():
        if k in state_dict:
            by_array.setdefault(id(v._data), k)
    return {k: by_array[id(v._data)] for k, v in own.items()
            if k not in state_dict and id(v._data) in by_array}


class _IncompatibleKeys(tuple):
    """(missing_keys, unexpected_keys), as PyTorch returns; tied_keys is tensorlite's."""

    def __new__(cls, missing, unexpected, tied=None):
        self = super().__new__(cls, (missing, unexpected))
        self.tied_keys = dict(tied or {})
        return self

    @property
    def missing_keys(self):
        return self[0]

    @property
    def unexpected_keys(self):
        return self[1]
