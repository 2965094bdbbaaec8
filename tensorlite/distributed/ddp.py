"""DistributedDataParallel: data parallelism with PyTorch's semantics, over the default
process group (tensorlite.distributed.init_process_group).

Each rank holds a full replica and runs its own part of the batch. At construction rank 0's
parameters and buffers are copied to every rank. During backward, a hook on each parameter
(Tensor.register_post_accumulate_grad_hook, which the engine runs right after adding the
parameter's gradient into .grad) copies .grad, divided by the world size, into a flat
bucket; reading the accumulated .grad is what folds in gradients accumulated under
no_sync(). A bucket whose parameters are all in is all-reduced at once, non-blocking,
while the backward goes on with the layers below. Buckets hold parameters in reverse
order (roughly the order backward produces their gradients) and are launched strictly in
bucket order, the same on every rank, as collectives require.

The hook of the last parameter to arrive queues an end-of-backward callback
(autograd.queue_callback), as PyTorch's reducer does: once backward has finished, it
waits for every bucket and writes the averages into .grad, so that loss.backward()
returns with synchronised gradients. When some parameters get no gradient that hook
never comes: call finish_gradient_sync() after backward (it is a no-op when the sync
already finished), or pass find_unused_parameters=True so forward finds them by walking
the graph.
"""
import contextlib
import time

import numpy as np

from ..autograd.engine import queue_callback
from ..autograd.function import AccumulateGrad
from ..autograd.grad_mode import is_grad_enabled
from ..backend.device import xp_of
from ..nn.module import Module
from ..tensor import Tensor
from . import process_group as pg

_FIRST_BUCKET_BYTES = 1 << 20  # PyTorch's: a small first bucket starts communication early


class _Bucket:
    __slots__ = ("index", "params", "buf", "pending", "req")

    def __init__(self, index, params, buf):
        self.index, self.params, self.buf = index, params, buf
        self.pending = len(params)
        self.req = None


class DistributedDataParallel(Module):
    """Wrap `module` for data-parallel training. The arguments are PyTorch's; device_ids,
    output_device, dim, check_reduction, gradient_as_bucket_view and static_graph are
    accepted and ignored (one device per process, no scatter of inputs). Only the default
    process group is supported."""

    def __init__(self, module, device_ids=None, output_device=None, dim=0, broadcast_buffers=True,
                 process_group=None, bucket_cap_mb=25, find_unused_parameters=False,
                 check_reduction=False, gradient_as_bucket_view=False, static_graph=False):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel: module must be a tensorlite Module, got "
                            f"{type(module).__name__}")
        if not bucket_cap_mb > 0:
            raise ValueError(f"DistributedDataParallel: bucket_cap_mb must be > 0, got {bucket_cap_mb}")
        self._backend = pg._group(process_group, "DistributedDataParallel")
        self.module = module
        self.world_size = self._backend.world_size
        self.broadcast_buffers = broadcast_buffers
        self.find_unused_parameters = find_unused_parameters
        self.require_backward_grad_sync = True
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if not named:
            raise RuntimeError("DistributedDataParallel: the module has no parameter that "
                               "requires a gradient")
        self._names = [n for n, _ in named]
        self._params = [p for _, p in named]
        self._check_same_model()
        self._sync_module_states()
        self._build_buckets(float(bucket_cap_mb) * (1 << 20))
        self._reset()
        self._armed = False
        self.comm_stats = {"wait_s": 0.0, "launches": 0, "bytes": 0, "syncs": 0}
        self._hook_handles = [p.register_post_accumulate_grad_hook(self._hook_for(i))
                              for i, p in enumerate(self._params)]

    # ---- construction ---------------------------------------------------------------
    def _check_same_model(self):
        mine = np.array([len(self._params), sum(p.numel() for p in self._params)], dtype=np.int64)
        every = np.zeros((self.world_size, 2), dtype=np.int64)
        pg._wait(self._backend.host.iallgather(mine, every), "DistributedDataParallel (model check)")
        for r, row in enumerate(every):
            n, numel = int(row[0]), int(row[1])
            if (n, numel) != (int(mine[0]), int(mine[1])):
                raise RuntimeError(
                    f"DistributedDataParallel: rank {r} has {n} trainable parameters "
                    f"({numel} elements) but rank {self._backend.rank} has {mine[0]} ({mine[1]}): "
                    "every rank must wrap the same model")

    def _sync_module_states(self):
        # every replica starts from rank 0's weights, whatever seed each rank used
        for t in list(self.module.parameters()) + list(self.module.buffers()):
            pg.broadcast(t, src=0)

    def _build_buckets(self, cap):
        """Reverse parameter order, cut at `cap` bytes (the first bucket at 1 MiB) and
        wherever the dtype or the device changes: one flat buffer per bucket."""
        n = len(self._params)
        self._buckets, self._slot, self._bucket_of = [], [None] * n, [None] * n
        group, size, limit = [], 0, min(_FIRST_BUCKET_BYTES, cap)
        for i in reversed(range(n)):
            a = self._params[i]._data
            if group:
                first = self._params[group[0]]._data
                if size + a.nbytes > limit or a.dtype != first.dtype or xp_of(a) is not xp_of(first):
                    self._add_bucket(group)
                    group, size, limit = [], 0, cap
            group.append(i)
            size += a.nbytes
        self._add_bucket(group)

    def _add_bucket(self, idx):
        first = self._params[idx[0]]._data
        total = sum(self._params[i].numel() for i in idx)
        b = _Bucket(len(self._buckets), idx, xp_of(first).zeros(total, dtype=first.dtype))
        off = 0
        for i in idx:
            n = self._params[i].numel()
            self._slot[i] = b.buf[off:off + n]
            self._bucket_of[i] = b
            off += n
        self._buckets.append(b)

    @property
    def bucket_sizes(self):
        """How many parameters each bucket holds, in launch order."""
        return [len(b.params) for b in self._buckets]

    # ---- forward ----------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        if self._armed and (self._n_ready or self._next):
            self._unfinished_error()
        if self.broadcast_buffers and self.training:
            for b in self.module.buffers():
                pg.broadcast(b, src=0)
        out = self.module(*args, **kwargs)
        self._armed = False
        if is_grad_enabled() and self.require_backward_grad_sync:
            self._prepare(out)
        return out

    def _unfinished_error(self):
        missing = [n for n, r in zip(self._names, self._ready) if not r]
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise RuntimeError(
            f"DistributedDataParallel: the previous backward produced no gradient for "
            f"{len(missing)} parameter(s) ({shown}), so the gradient sync never finished. "
            "Call ddp.finish_gradient_sync() after backward, or pass "
            "find_unused_parameters=True")

    def _reset(self):
        self._ready = [False] * len(self._params)  # its gradient is in its bucket slot
        self._got = [False] * len(self._params)    # ... and came from this backward
        self._n_ready = self._next = 0              # _next: the first bucket not launched
        for b in self._buckets:
            b.pending, b.req = len(b.params), None

    def _prepare(self, out):
        self._armed = True
        self._reset()
        for b in self._buckets:
            if xp_of(self._params[b.params[0]]._data) is not xp_of(b.buf):
                raise RuntimeError("DistributedDataParallel: the module moved to another device "
                                   "after it was wrapped; move it first, then wrap it")
        if self.find_unused_parameters:
            used = _reachable_leaves(out)
            for i, p in enumerate(self._params):
                if id(p) not in used:
                    self._mark_ready(i, got=False)
            if self._n_ready == len(self._params):  # no gradient will come: sync now
                self._finalize()

    # ---- the gradient hooks -----------------------------------------------------------
    def _hook_for(self, i):
        def hook(p):
            if not self._armed:
                return  # no_sync(), eval, or a forward that bypassed the wrapper
            if self._ready[i]:
                raise RuntimeError(
                    f"DistributedDataParallel: parameter {self._names[i]} got a second gradient "
                    "in one synced backward (backward twice after one forward?)")
            self._mark_ready(i, got=True)
            if self._n_ready == len(self._params):
                # not _finalize here: hooks of other leaves may still run in this backward
                queue_callback(self._end_of_backward)
        return hook

    def _end_of_backward(self):
        if self._armed:  # unless finish_gradient_sync already ran from a hook
            self._finalize()

    def _mark_ready(self, i, got):
        """Put parameter i's .grad (the sum of this backward's gradient, if got, and what
        accumulated before; zeros if it has none) into its bucket slot, pre-divided by the
        world size as PyTorch does."""
        p, slot = self._params[i], self._slot[i]
        if p.grad is None:
            slot[...] = 0
        else:
            slot[...] = p.grad._data.reshape(-1)
        if self.world_size > 1:
            slot /= self.world_size
        self._ready[i] = True
        self._got[i] = got
        self._n_ready += 1
        b = self._bucket_of[i]
        b.pending -= 1
        if b.pending == 0:
            self._launch_ready()
        for done in self._buckets[:self._next]:
            done.req.test()  # MPI advances a non-blocking collective only inside MPI calls

    def _launch_ready(self):
        while self._next < len(self._buckets) and self._buckets[self._next].pending == 0:
            b = self._buckets[self._next]
            b.req = self._backend.iallreduce(b.buf, pg.ReduceOp.SUM)
            self.comm_stats["launches"] += 1
            self.comm_stats["bytes"] += b.buf.nbytes
            self._next += 1

    def finish_gradient_sync(self):
        """Finish this backward's gradient sync: parameters that got no gradient count as
        zero (or as their gradient accumulated under no_sync), every bucket is all-reduced
        and .grad holds the average over ranks. Every rank must call it; a no-op when the
        sync already finished inside backward (or the last forward was under no_sync)."""
        if not self._armed:
            return
        for i in range(len(self._params)):
            if not self._ready[i]:
                self._mark_ready(i, got=False)
        self._finalize()

    def _finalize(self):
        self._launch_ready()
        t0 = time.perf_counter()
        n = len(self._buckets)
        for b in self._buckets:
            pg._wait(b.req, f"DistributedDataParallel gradient all_reduce (bucket {b.index + 1} of {n})")
        used = self._globally_used() if self.find_unused_parameters else None
        self.comm_stats["wait_s"] += time.perf_counter() - t0
        self.comm_stats["syncs"] += 1
        self._armed = False
        for i, p in enumerate(self._params):
            if used is not None and not used[i]:
                continue
            avg = self._slot[i].reshape(p.shape)
            if p.grad is None:
                p.grad = Tensor._make(avg.copy(), p.device)
            else:
                p.grad._data[...] = avg
                p.grad._version.value += 1

    def _globally_used(self):
        """Whether any rank has a gradient for each parameter: one where none has stays
        None everywhere (as without DDP), instead of becoming zeros on every rank."""
        flags = np.array([1 if (self._got[i] or p.grad is not None) else 0
                          for i, p in enumerate(self._params)], dtype=np.int32)
        req = self._backend.host.iallreduce(flags, pg.ReduceOp.MAX)
        pg._wait(req, "DistributedDataParallel unused-parameter all_reduce")
        return flags.astype(bool)

    # ---- gradient accumulation, state, printing ---------------------------------------
    @contextlib.contextmanager
    def no_sync(self):
        """Backward passes of forwards run inside this block only accumulate gradients
        locally; the first synced backward after it averages the accumulated gradients."""
        old = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = old

    def state_dict(self):
        """The wrapped module's state dict, without PyTorch's "module." prefix: checkpoints
        of a DDP run load into a plain model and back."""
        return self.module.state_dict()

    def load_state_dict(self, state_dict, strict=True):
        """Accepts keys with or without a leading "module." (PyTorch DDP checkpoints)."""
        keys = list(state_dict)
        if keys and all(k.startswith("module.") for k in keys):
            state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
        return self.module.load_state_dict(state_dict, strict=strict)

    def extra_repr(self):
        return f"world_size={self.world_size}, buckets={len(self._buckets)}"


def _reachable_leaves(out):
    """ids of the leaf tensors whose gradient the graph behind out can produce."""
    roots, stack, found = [], [out], set()
    while stack:
        o = stack.pop()
        if isinstance(o, Tensor):
            if o.grad_fn is not None:
                roots.append(o.grad_fn)
            elif o.requires_grad:
                found.add(id(o))
        elif isinstance(o, (tuple, list)):
            stack.extend(o)
        elif isinstance(o, dict):
            stack.extend(o.values())
    seen = set(roots)
    while roots:
        node = roots.pop()
        if isinstance(node, AccumulateGrad):
            found.add(id(node.variable))
            continue
        for nxt in node.next:
            if nxt is not None and nxt not in seen:
                seen.add(nxt)
                roots.append(nxt)
    return found
