"""Function: one differentiable op, its forward and backward side by side.

A Function's forward works on raw arrays (numpy or cupy) and may stash what the
backward needs on `ctx`. Function.apply wraps it: it unwraps Tensors, runs the
forward without recording, and, if any input needs a gradient, links a Node into
the graph. Backward returns one gradient (or None) per positional argument.
"""
import weakref

import numpy as _np

from . import grad_mode

# the active tensorlite.profiler.profile, or None: read once per op, so off costs one global load
_profiler = None


class TensorBase:
    """The base class of tensorlite.Tensor: what the graph knows of a tensor, so that this
    layer never needs the Tensor class itself. apply() recognises its tensor arguments by
    this class, reads _data, _device, _requires_grad, grad_fn, _version and _acc from them,
    and builds its output with the first one's _make(array, device)."""
    __slots__ = ()


class VersionCounter:
    """Shared by a tensor and its views; bumped by every in-place write."""
    __slots__ = ("value",)

    def __init__(self):
        self.value = 0


class Context:
    """Scratch space from forward to backward. Arrays go through save_for_backward so the
    engine can check nothing saved was modified in place before the backward ran."""

    def save_for_backward(self, *arrays):
        if any(isinstance(a, TensorBase) for a in arrays):
            # a Function written the PyTorch way saves Tensors: Function.apply's version
            # check matches saved arrays against the inputs', so keep both
            self._saved_tensors = arrays
            arrays = tuple(a._data for a in arrays if isinstance(a, TensorBase))
        self.saved = arrays

    @property
    def saved_tensors(self):
        """What save_for_backward was given (PyTorch's name): Tensors for a
        tensorlite.autograd.Function, arrays for the ops' array Functions."""
        return getattr(self, "_saved_tensors", None) or getattr(self, "saved", ())


class Node:
    """A recorded op in the graph: its Function, its context and the edges to the nodes
    that produced its inputs (None for inputs that need no gradient)."""
    __slots__ = ("fn", "ctx", "next", "saved_versions", "released", "hooks", "provider",
                 "out_shape", "__weakref__")

    def __init__(self, fn, ctx, next_nodes):
        self.fn = fn
        self.ctx = ctx
        self.next = next_nodes
        self.saved_versions = ()
        self.released = False
        self.hooks = None
        self.provider = None
        self.out_shape = None

    def name(self):
        return self.fn.__name__ + "Backward"

    def __repr__(self):
        return f"<{self.name()}>"


class AccumulateGrad(Node):
    """The graph's sink for a leaf tensor: adds the arriving gradient into leaf.grad.
    hooks (Node's) run on the gradient before that; post_hooks run with the tensor after
    it (Tensor.register_post_accumulate_grad_hook)."""
    __slots__ = ("variable", "post_hooks")

    def __init__(self, variable):
        super().__init__(AccumulateGrad, None, ())
        self.variable = variable
        self.post_hooks = None

    def name(self):
        return "AccumulateGrad"


def edge_of(t):
    """The node a gradient for tensor t must flow into, or None if t needs no gradient."""
    if not t.requires_grad:
        return None
    if t.grad_fn is not None:
        return t.grad_fn
    acc = t._acc() if t._acc is not None else None
    if acc is None:
        acc = AccumulateGrad(t)
        t._acc = weakref.ref(acc)
    return acc


class Function:
    """Subclass with static forward(ctx, *args, **kwargs) and backward(ctx, grad)."""

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError

    @classmethod
    def apply(cls, *args, **kwargs):
        base = TensorBase
        first = None
        device = None
        raw = []
        needs = []
        for a in args:
            if isinstance(a, base):
                if first is None:
                    first = a
                    device = a._device
                elif a._device != device:
                    raise RuntimeError(
                        f"{cls.__name__.lower()}: expected all tensors on one device, got "
                        f"{device} and {a._device}; move one with .to('{device}')")
                raw.append(a._data)
                needs.append(a._requires_grad)
            else:
                raw.append(a)
                needs.append(False)
        if first is None:  # the result's class comes from a tensor argument
            raise TypeError(f"{cls.__name__}.apply: expected at least one tensor argument")
        record = grad_mode.is_grad_enabled() and any(needs)
        ctx = Context()
        ctx.needs_input_grad = tuple(needs)
        ctx.device = device
        prof = _profiler
        if prof is None:
            out = cls.forward(ctx, *raw, **kwargs)
        else:
            out = prof.forward(cls, ctx, raw, kwargs)
        if isinstance(out, _np.generic):  # NumPy turns 0-d results into scalars
            out = _np.asarray(out)
        # an integer or bool result (x.long(), a cast of a tensor that requires grad) has no
        # gradient: leave it out of the graph instead of failing to make it require grad
        # (kind "V": ml_dtypes' bfloat16, the one non-"f" floating dtype tensorlite allows)
        record = record and out.dtype.kind in "fV"
        result = first._make(out, getattr(ctx, "out_device", device))
        if grad_mode.is_anomaly_enabled():
            _check_finite(out, f"{cls.__name__} forward")
        if record:
            node = Node(cls, ctx, [edge_of(a) if n else None for a, n in zip(args, needs)])
            node.provider = getattr(ctx, "provider", None)
            node.out_shape = tuple(out.shape)
            saved = getattr(ctx, "saved", ())
            if saved:
                versions = []
                for s in saved:
                    if s is out:
                        versions.append((result._version, result._version.value, cls))
                        continue
                    for a in args:
                        if isinstance(a, base) and a._data is s:
                            versions.append((a._version, a._version.value, cls))
                            break
                node.saved_versions = versions
            result.grad_fn = node
            result._requires_grad = True  # a floating result (checked above): no setter needed
        return result


class TensorFunction(Function):
    """A custom op written the PyTorch way; this is tensorlite.autograd.Function.

        class Exp(tl.autograd.Function):
            @staticmethod
            def forward(ctx, x):             # x: a Tensor (outside the graph)
                y = x.exp()
                ctx.save_for_backward(y)
                return y                     # one Tensor
            @staticmethod
            def backward(ctx, grad):         # grad: a Tensor
                y, = ctx.saved_tensors
                return grad * y              # one Tensor (or None) per forward input

        Exp.apply(x)

    forward runs under no_grad on Tensors that share the inputs' arrays and need no
    gradient; backward gets and returns Tensors. PyTorch 2's split form (forward without
    ctx plus setup_context(ctx, inputs, output)) works too. Underneath, apply runs one
    array Function (the kind tensorlite's own ops subclass, which get raw arrays and skip
    the wrapping), so the graph, version checks and profiler see one node as for any op.
    Unlike PyTorch: one output per Function (the engine's one-output nodes)."""

    @classmethod
    def apply(cls, *args, **kwargs):
        adapter = cls.__dict__.get("_array_adapter")
        if adapter is None:
            adapter = type(cls.__name__, (_TensorAdapter,), {"user": cls, "__module__": cls.__module__})
            cls._array_adapter = adapter
        maker = next((a for a in args if isinstance(a, TensorBase)), None)
        if maker is None:
            raise TypeError(f"{cls.__name__}.apply: expected at least one tensor argument")
        is_tensor = tuple(isinstance(a, TensorBase) for a in args)
        return adapter.apply(*args, _tl_maker=maker, _tl_is_tensor=is_tensor, **kwargs)


def _defines_setup_context(cls):
    return any("setup_context" in k.__dict__ for k in cls.__mro__
               if k not in (TensorFunction, Function, object))


class _TensorAdapter(Function):
    """The array Function behind one TensorFunction subclass (`user`): wraps arrays into
    Tensors for the user's forward and backward, and unwraps what they return."""
    user = None

    @classmethod
    def forward(cls, ctx, *raw, _tl_maker=None, _tl_is_tensor=(), **kwargs):
        device = ctx.device
        ctx._tl_maker = _tl_maker
        ctx._tl_shapes = tuple(tuple(a.shape) if t else None for a, t in zip(raw, _tl_is_tensor))
        inputs = tuple(_tl_maker._make(a, device) if t else a for a, t in zip(raw, _tl_is_tensor))
        user = cls.user
        with grad_mode.no_grad():
            if _defines_setup_context(user):
                out = user.forward(*inputs, **kwargs)
                user.setup_context(ctx, inputs, out)
            else:
                out = user.forward(ctx, *inputs, **kwargs)
        if isinstance(out, (tuple, list)):
            raise NotImplementedError(f"{user.__name__}.forward returned {len(out)} outputs; a "
                                      "tensorlite Function returns one Tensor (split it into "
                                      "one Function per output)")
        return out._data if isinstance(out, TensorBase) else out

    @classmethod
    def backward(cls, ctx, g):
        user = cls.user
        grads = user.backward(ctx, ctx._tl_maker._make(g, ctx.device))
        if not isinstance(grads, (tuple, list)):
            grads = (grads,)
        n = len(ctx.needs_input_grad)
        if len(grads) != n:
            raise RuntimeError(f"{user.__name__}.backward returned {len(grads)} gradients; "
                               f"expected {n}, one (or None) per argument of forward")
        out = tuple(x._data if isinstance(x, TensorBase) else x for x in grads)
        for i, (x, shape) in enumerate(zip(out, ctx._tl_shapes)):
            # the engine would broadcast a wrongly shaped gradient into the next node silently
            if x is not None and shape is not None and tuple(x.shape) != shape:
                raise RuntimeError(f"{user.__name__}.backward: gradient {i} has shape "
                                   f"{tuple(x.shape)}, but input {i} has shape {shape}")
        return out


def _check_finite(a, where):
    xp = type(a).__module__.startswith("cupy")
    import numpy as np
    if xp:
        import cupy
        ok = bool(cupy.isfinite(a).all()) if a.dtype.kind == "f" else True
    else:
        ok = bool(np.isfinite(a).all()) if a.dtype.kind == "f" else True
    if not ok:
        raise RuntimeError(f"anomaly detected: {where} produced NaN or inf")
