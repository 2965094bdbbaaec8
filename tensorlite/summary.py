"""tensorlite.summary(model, input_shape): parameters per module, activation memory, FLOPs
per token and, with a peak FLOP/s and a step time, model FLOPs utilisation (MFU).

    import tensorlite as tl
    s = tl.summary(model, (8, 64))                 # a GPT: int64 token ids of shape (B, T)
    print(s)
    peak = tl.summary.measure_peak_flops()         # this machine's matmul FLOP/s
    print(tl.summary(model, (8, 64), peak_flops=peak).mfu)

MFU = (FLOPs per token x tokens per step / step time) / peak FLOP/s: the share of the
machine's matmul throughput the training step turns into model arithmetic (PaLM's
definition; FLOPs per token is forward + backward, 6 per parameter plus attention).
"""
import math
import sys
import time
import types

import numpy as np

from . import _dtype as dt
from .autograd.grad_mode import no_grad
from .backend.device import as_device, xp_for
from .factories import randn, zeros
from .nn.module import Module
from .tensor import Tensor


class ModelSummary:
    """What summary() found. rows: one dict per module (name, type, depth, output_shape,
    params); totals as attributes; str() is the table."""

    def __init__(self, model_name, rows, total_params, trainable_params, param_bytes,
                 activation_bytes, tokens_per_step, flops_per_token, step_time, peak_flops):
        self.model_name, self.rows = model_name, rows
        self.total_params, self.trainable_params = total_params, trainable_params
        self.param_bytes, self.activation_bytes = param_bytes, activation_bytes
        self.tokens_per_step, self.flops_per_token = tokens_per_step, flops_per_token
        self.step_time, self.peak_flops = step_time, peak_flops

    @property
    def flops_per_step(self):
        return self.flops_per_token * self.tokens_per_step

    @property
    def mfu(self):
        if not self.step_time or not self.peak_flops:
            return None
        return self.flops_per_step / self.step_time / self.peak_flops

    def __str__(self):
        head = ("Module", "Type", "Output shape", "Params")
        body = [("  " * r["depth"] + (r["name"] or self.model_name), r["type"],
                 str(r["output_shape"]) if r["output_shape"] is not None else "-",
                 f"{r['params']:,}" + (" (tied)" if r["tied"] else "")) for r in self.rows]
        widths = [max(len(x[i]) for x in [head] + body) for i in range(4)]

        def fmt(row):
            return "  ".join(c.rjust(w) if i == 3 else c.ljust(w)
                             for i, (c, w) in enumerate(zip(row, widths))).rstrip()
        rule = "=" * len(fmt(head))
        lines = [rule, fmt(head), rule] + [fmt(b) for b in body] + [rule]
        lines += [f"Total params: {self.total_params:,} (trainable {self.trainable_params:,}), "
                  f"{_mib(self.param_bytes)}",
                  f"Activations (outputs of the leaf modules, one forward): "
                  f"{_mib(self.activation_bytes)}",
                  f"FLOPs per token (forward + backward): {self.flops_per_token:,.0f}; per step "
                  f"({self.tokens_per_step:,} tokens): {self.flops_per_step / 1e9:,.3f} GFLOP"]
        if self.step_time:
            lines.append(f"Step time (forward + backward): {self.step_time * 1e3:.2f} ms, "
                         f"{self.flops_per_step / self.step_time / 1e9:,.2f} GFLOP/s")
        if self.mfu is not None:
            lines.append(f"MFU: {100 * self.mfu:.2f}% of a peak of {self.peak_flops / 1e9:,.1f} "
                         "GFLOP/s")
        return "\n".join(lines + [rule])

    def __repr__(self):
        return self.__str__()


def summary(model, input_shape, dtype=None, device=None, depth=3, peak_flops=None,
            step_time=None):
    """Summarise model for an input of input_shape. dtype: default int64 for a model with
    a vocabulary (a GPT's token ids), float32 otherwise. With peak_flops (FLOP/s, e.g.
    measure_peak_flops()) MFU is reported, for step_time (seconds per forward +
    backward) if given, else for one timed forward + backward run here."""
    if not isinstance(model, Module):
        raise TypeError(f"summary: expected a tensorlite Module, got {type(model).__name__}")
    input_shape = tuple(int(s) for s in input_shape)
    is_tokens = dtype is None and hasattr(getattr(model, "config", None), "vocab_size")
    dtype = dt.int64 if is_tokens else (dtype or dt.float32)
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else "cpu"
    x = _example_input(input_shape, dtype, device)

    outputs, act_bytes, handles = {}, [0], []
    leaves = {id(m) for m in model.modules() if not any(True for _ in m.children())}
    for name, m in model.named_modules():
        handles.append(m.register_forward_hook(_recorder(name, id(m) in leaves, outputs, act_bytes)))
    was_training = model.training
    model.eval()  # no dropout: the same shapes, and no randomness consumed
    try:
        with no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    rows, seen = [], set()
    for name, m in model.named_modules():
        d = 0 if not name else name.count(".") + 1
        params, tied = 0, False
        for p in m.parameters():
            params += p.numel()
        own_tied = [p for p in m._parameters.values() if p is not None and id(p) in seen]
        seen.update(id(p) for p in m._parameters.values() if p is not None)
        tied = bool(own_tied)
        if d <= depth:
            rows.append({"name": name, "type": type(m).__name__, "depth": d,
                         "output_shape": outputs.get(name), "params": params, "tied": tied})
    unique = list(model.parameters())
    tokens = math.prod(input_shape) if is_tokens else math.prod(input_shape[:-1] or (1,))
    fpt = _flops_per_token(model, input_shape, is_tokens, sum(p.numel() for p in unique))
    if peak_flops is not None and step_time is None:
        step_time = measure_step_time(model, x)
    return ModelSummary(type(model).__name__, rows, sum(p.numel() for p in unique),
                        sum(p.numel() for p in unique if p.requires_grad),
                        sum(p._data.nbytes for p in unique), act_bytes[0], tokens, fpt,
                        step_time, peak_flops)


def _example_input(shape, dtype, device):
    if dtype.is_floating_point:
        return randn(*shape, dtype=dtype, device=device)
    return zeros(*shape, dtype=dtype, device=device)  # token 0 exists in every vocabulary


def _recorder(name, is_leaf, outputs, act_bytes):
    def hook(module, args, out):
        tensors = [t for t in (out if isinstance(out, tuple) else (out,)) if isinstance(t, Tensor)]
        if name not in outputs and tensors:
            outputs[name] = tensors[0].shape if len(tensors) == 1 else [t.shape for t in tensors]
        if is_leaf:
            act_bytes[0] += sum(t._data.nbytes for t in tensors)
    return hook


def _flops_per_token(model, input_shape, is_tokens, n_params):
    f = getattr(model, "flops_per_token", None)
    if f is None:
        return 6 * n_params
    try:
        return f(input_shape[-1]) if is_tokens else f()
    except TypeError:
        return f()


def measure_step_time(model, x, repeats=3):
    """Seconds per forward + backward of model on x (the best of repeats, after a warm-up).
    A GPT is given x as its own targets; any other model backpropagates sum(output)."""
    was_training = model.training
    model.train()

    def step():
        try:
            out = model(x, x) if hasattr(getattr(model, "config", None), "vocab_size") else model(x)
            loss = out[1] if isinstance(out, tuple) and out[1] is not None else \
                (out[0] if isinstance(out, tuple) else out).sum()
            loss.backward()
            _sync(x.device)
        finally:
            model.zero_grad()
    try:
        step()
        best = math.inf
        for _ in range(repeats):
            t = time.perf_counter()
            step()
            best = min(best, time.perf_counter() - t)
    finally:
        model.train(was_training)
    return best


def measure_peak_flops(n=1024, dtype="float32", device="cpu", repeats=5):
    """This machine's matmul FLOP/s: the best of repeats timed n x n @ n x n products
    (NumPy's BLAS on the CPU, CuPy/cuBLAS on a GPU), 2 n^3 FLOPs each."""
    dev = as_device(device)
    xp = xp_for(dev)
    rng = np.random.default_rng(0)
    a = xp.asarray(rng.standard_normal((n, n)).astype(dtype))
    b = xp.asarray(rng.standard_normal((n, n)).astype(dtype))
    a @ b  # warm-up: thread pools, cuBLAS handles
    _sync(dev)
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        _sync(dev)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


class MFUMeter:
    """`tensorlite train --mfu`: the machine's peak is measured once; each step's MFU is
    then model FLOPs per step / step time / peak."""

    def __init__(self, model, tokens_per_step, block_size, device):
        self.peak = measure_peak_flops(device=device)
        self.flops_per_step = model.flops_per_token(block_size) * tokens_per_step

    def __call__(self, seconds):
        return self.flops_per_step / seconds / self.peak if seconds > 0 else None


def _sync(device):
    if as_device(device).type == "cuda":
        import cupy
        cupy.cuda.get_current_stream().synchronize()


def _mib(n):
    return f"{n / 2 ** 20:,.2f} MiB"


class _CallableModule(types.ModuleType):
    # tensorlite.summary is this module (so tensorlite.summary.measure_peak_flops works)
    # and also the function: tensorlite.summary(model, input_shape)
    def __call__(self, *args, **kwargs):
        return summary(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
