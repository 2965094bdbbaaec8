"""Module full backward hooks with PyTorch's semantics: hook(module, grad_input, grad_output)
runs once per backward through the module, after the gradients w.r.t. all of its outputs
and all of its inputs are known, and may return a replacement grad_input.

How: every tensor input that requires grad is routed through a per-input identity
(_InputSlot) whose backward parks its gradient in a shared state and sends a dummy
0-d gradient on to one gather node; every tensor output goes through an identity
(_OutputSlot) that parks the output gradient and also sends a dummy to the gather
node. The engine runs a node only once every edge into it is done, so the gather node
runs exactly when every gradient the hook needs has arrived; it calls the hooks and
hands the (possibly replaced) input gradients on to the producers of the inputs.
tensorlite's Functions have one output each, hence this gather instead of PyTorch's
multi-output BackwardHookFunction.
"""
import numpy as np

from ..autograd.function import Context, Function, Node, edge_of
from ..backend.device import xp_of
from ..tensor import Tensor


def _dummy():
    # what the slots send to the gather node: only its arrival matters, never its value
    return np.zeros(())


class _InputSlot(Function):
    @staticmethod
    def forward(ctx, x, state=None, index=0):
        ctx.state, ctx.index = state, index
        return x

    @staticmethod
    def backward(ctx, g):
        ctx.state.grad_inputs[ctx.index] = g
        return (_dummy(),)


class _OutputSlot(Function):
    @staticmethod
    def forward(ctx, x, anchor, state=None, index=0):
        ctx.state, ctx.index = state, index
        return x

    @staticmethod
    def backward(ctx, g):
        ctx.state.grad_outputs[ctx.index] = g
        return g, _dummy()


class BackwardHookGather(Function):
    """The gather node's Function (never applied: BackwardHook builds its Node by hand)."""

    @staticmethod
    def forward(ctx, *args):
        raise RuntimeError("BackwardHookGather is built by BackwardHook, not applied")

    @staticmethod
    def backward(ctx, g):
        return ctx.state.fire()


class BackwardHook:
    """One forward call's worth of backward-hook plumbing for one module."""

    def __init__(self, module, hooks):
        self.module = module
        self.hooks = hooks  # the module's live dict: a handle removed before backward counts
        self.n_inputs = 0
        self.grad_inputs = []
        self.grad_outputs = []
        self.input_devices = []
        self.output_devices = []
        self.gather = None

    def setup_input_hook(self, args):
        self.n_inputs = len(args)
        self.grad_inputs = [None] * len(args)
        self.input_devices = [a.device if isinstance(a, Tensor) else None for a in args]
        needs = [isinstance(a, Tensor) and a.requires_grad for a in args]
        ctx = Context()
        ctx.state = self
        self.gather = Node(BackwardHookGather, ctx,
                           [edge_of(a) if n else None for a, n in zip(args, needs)])
        out = list(args)
        for j, (a, n) in enumerate(zip(args, needs)):
            if n:
                # an alias of the input whose producer is the gather node
                alias = Tensor._make(a._data, a._device, version=a._version)
                alias.grad_fn = self.gather
                alias._requires_grad = True
                out[j] = _alias_version(_InputSlot.apply(alias, state=self, index=j), a)
        return tuple(out)

    def setup_output_hook(self, out):
        outs = out if isinstance(out, tuple) else (out,)
        self.grad_outputs = [None] * len(outs)
        self.output_devices = [o.device if isinstance(o, Tensor) else None for o in outs]
        wrapped = list(outs)
        for i, o in enumerate(outs):
            if isinstance(o, Tensor) and o.requires_grad:
                anchor = Tensor._make(xp_of(o._data).zeros(()), o._device)
                anchor.grad_fn = self.gather
                anchor._requires_grad = True
                wrapped[i] = _alias_version(_OutputSlot.apply(o, anchor, state=self, index=i), o)
        return tuple(wrapped) if isinstance(out, tuple) else wrapped[0]

    def fire(self):
        wrap = _wrapper(self.input_devices)
        grad_input = tuple(wrap(g, j) for j, g in enumerate(self.grad_inputs))
        grad_output = tuple(_wrapper(self.output_devices)(g, i)
                            for i, g in enumerate(self.grad_outputs))
        any_input = any(n is not None for n in self.gather.next)
        for hook in list(self.hooks.values()):
            res = hook(self.module, grad_input, grad_output)
            if res is None:
                continue
            res = res if isinstance(res, tuple) else (res,)
            if not any_input and any(r is not None for r in res):
                raise RuntimeError("a backward hook of a module whose inputs need no gradient must "
                                   "return None (there is no grad_input to replace)")
            if len(res) != len(grad_input):
                raise RuntimeError(f"backward hook returned {len(res)} gradients, expected "
                                   f"{len(grad_input)} (one per positional input)")
            grad_input = res
        # reset, so that a second backward (retain_graph=True) starts from nothing
        self.grad_inputs = [None] * self.n_inputs
        self.grad_outputs = [None] * len(self.grad_outputs)
        return tuple(g._data if isinstance(g, Tensor) else g for g in grad_input)


def _wrapper(devices):
    def wrap(g, i):
        return None if g is None else Tensor._make(g, devices[i])
    return wrap


def _alias_version(t, src):
    # the slot's output shares src's array, so in-place writes to either must be seen by both
    t._version = src._version
    return t
