"""Op-level profiler: every forward and backward op with its provider, input shapes,
wall time and estimated FLOPs and bytes (tensorlite/op_costs.py).

    with tensorlite.profiler.profile() as prof:
        loss = model(x, y)[1]
        loss.backward()
    print(prof.table(sort_by="total", row_limit=10))
    prof.export_chrome_trace("trace.json")       # chrome://tracing or ui.perfetto.dev

Function.apply and the autograd engine check one module-level variable
(autograd.function._profiler); while no profile is active nothing else runs.
Times are wall time around the op's array work only (not graph bookkeeping); on a
GPU the stream is synchronised before and after each op, so they are true op times
but the profiled run is slower than an unprofiled one.
"""
import json
import os
import time
from collections import namedtuple

from . import op_costs
from .autograd import function as _function

Event = namedtuple("Event", "name kind provider input_shapes start_ns dur_ns flops bytes")
Event.__doc__ = ("One op call. kind: 'forward' or 'backward'; provider: numpy/cpp/triton for "
                 "fused ops, '-' for plain array ops; start_ns from the profile's start.")

_SORT_KEYS = {"total": "total_ns", "avg": "avg_ns", "calls": "calls", "flops": "flops",
              "bytes": "bytes", "name": "name",
              # PyTorch's names for the same columns
              "cpu_time_total": "total_ns", "self_cpu_time_total": "total_ns",
              "cuda_time_total": "total_ns", "count": "calls"}


class OpSummary:
    """One row of key_averages(): every call of one (op, pass, provider[, input shapes])."""
    __slots__ = ("name", "kind", "provider", "input_shapes", "calls", "total_ns", "flops", "bytes")

    def __init__(self, name, kind, provider, input_shapes):
        self.name, self.kind, self.provider, self.input_shapes = name, kind, provider, input_shapes
        self.calls = self.total_ns = self.flops = self.bytes = 0

    @property
    def avg_ns(self):
        return self.total_ns / self.calls if self.calls else 0.0

    @property
    def gflops_per_s(self):
        return self.flops / self.total_ns if self.total_ns else 0.0  # FLOP/ns == GFLOP/s

    @property
    def gbytes_per_s(self):
        return self.bytes / self.total_ns if self.total_ns else 0.0


class profile:  # noqa: N801 (PyTorch's name: torch.profiler.profile)
    def __init__(self, record_shapes=True):
        self.record_shapes = record_shapes
        self.events = []
        self._t0 = None

    def __enter__(self):
        if _function._profiler is not None:
            raise RuntimeError("tensorlite.profiler.profile: another profile is already active")
        self.events = []
        self._t0 = time.perf_counter_ns()
        _function._profiler = self
        return self

    def __exit__(self, *exc):
        _function._profiler = None
        return False

    # ---- called by Function.apply and the engine while this profile is active -----------
    def forward(self, cls, ctx, raw, kwargs):
        sync = _sync_for(raw)
        sync()
        t = time.perf_counter_ns()
        out = cls.forward(ctx, *raw, **kwargs)
        sync()
        dur = time.perf_counter_ns() - t
        flops = op_costs.forward_flops(cls.__name__, raw, out, kwargs)
        ctx.profiled_flops = flops  # the backward's estimate is a multiple of it
        self.events.append(Event(
            cls.__name__, "forward", getattr(ctx, "provider", None) or "-",
            op_costs.shapes(raw) if self.record_shapes else None, t - self._t0, dur, flops,
            op_costs.total_bytes([a for a in raw if hasattr(a, "nbytes")] + [out])))
        return out

    def backward(self, node, g):
        sync = _sync_for((g,))
        ctx = node.ctx
        saved = list(getattr(ctx, "saved", ()) or ())
        sync()
        t = time.perf_counter_ns()
        in_grads = node.fn.backward(ctx, g)
        sync()
        dur = time.perf_counter_ns() - t
        name = node.fn.__name__
        outs = in_grads if isinstance(in_grads, tuple) else (in_grads,)
        flops = op_costs.backward_flops(name, getattr(ctx, "profiled_flops", None), g)
        self.events.append(Event(
            name, "backward", node.provider or "-",
            op_costs.shapes([g]) if self.record_shapes else None, t - self._t0, dur, flops,
            op_costs.total_bytes([g] + [s for s in saved if hasattr(s, "nbytes")] + list(outs))))
        return in_grads

    # ---- results --------------------------------------------------------------------------
    def key_averages(self, group_by_input_shape=False):
        rows = {}
        for e in self.events:
            shapes = str(e.input_shapes) if group_by_input_shape else ""
            key = (e.name, e.kind, e.provider, shapes)
            r = rows.get(key)
            if r is None:
                r = rows[key] = OpSummary(e.name, e.kind, e.provider, shapes)
            r.calls += 1
            r.total_ns += e.dur_ns
            r.flops += e.flops
            r.bytes += e.bytes
        return list(rows.values())

    def table(self, sort_by="total", row_limit=None, group_by_input_shape=False):
        """A per-op summary (a string, like torch's key_averages().table()). sort_by: total,
        avg, calls, flops, bytes or name (largest first, name alphabetically)."""
        if sort_by not in _SORT_KEYS:
            raise ValueError(f"profile.table: unknown sort_by {sort_by!r}; choose one of "
                             f"{', '.join(_SORT_KEYS)}")
        attr = _SORT_KEYS[sort_by]
        rows = sorted(self.key_averages(group_by_input_shape), key=lambda r: getattr(r, attr),
                      reverse=attr != "name")
        total_ns = sum(r.total_ns for r in rows)
        shown = rows if row_limit is None else rows[:row_limit]
        head = ["Name", "Pass", "Provider", "Calls", "Total ms", "Avg ms", "% time",
                "GFLOP/s", "GB/s"] + (["Input shapes"] if group_by_input_shape else [])
        body = [[r.name, r.kind, r.provider, str(r.calls), f"{r.total_ns / 1e6:.3f}",
                 f"{r.avg_ns / 1e6:.4f}", f"{100 * r.total_ns / total_ns if total_ns else 0:.1f}",
                 f"{r.gflops_per_s:.2f}" if r.flops else "-", f"{r.gbytes_per_s:.2f}"]
                + ([r.input_shapes] if group_by_input_shape else []) for r in shown]
        widths = [max(len(row[i]) for row in [head] + body) for i in range(len(head))]
        left = {0, 1, 2, len(head) - 1} if group_by_input_shape else {0, 1, 2}

        def fmt(row):
            return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                             for i, (c, w) in enumerate(zip(row, widths))).rstrip()
        rule = "-" * max(len(fmt(r)) for r in [head] + body)
        lines = [rule, fmt(head), rule] + [fmt(r) for r in body] + [rule]
        lines.append(f"{len(self.events)} op calls, {total_ns / 1e6:.3f} ms in ops"
                     + (f" ({len(rows) - len(shown)} more rows not shown)" if len(shown) < len(rows) else ""))
        return "\n".join(lines)

    def __str__(self):
        return self.table()

    def export_chrome_trace(self, path):
        """Chrome trace event JSON: one complete ("X") event per op, forward and backward
        on two lanes. Open in chrome://tracing or https://ui.perfetto.dev."""
        pid = os.getpid()
        lanes = {"forward": 1, "backward": 2}
        events = [{"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": kind}}
                  for kind, tid in lanes.items()]
        for e in self.events:
            events.append({
                "name": e.name if e.kind == "forward" else e.name + "Backward",
                "cat": e.kind, "ph": "X", "ts": e.start_ns / 1e3, "dur": e.dur_ns / 1e3,
                "pid": pid, "tid": lanes[e.kind],
                "args": {"provider": e.provider, "input_shapes": e.input_shapes,
                         "flops": e.flops, "bytes": e.bytes}})
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump({"traceEvents": events, "displayTimeUnit": "ms"}, f)
        os.replace(tmp, path)
        return path


def _no_sync():
    pass


def _sync_for(arrays):
    # a GPU op returns before it has run: time it between two stream synchronisations
    for a in arrays:
        if type(a).__module__.startswith("cupy"):
            import cupy
            return cupy.cuda.get_current_stream().synchronize
    return _no_sync
