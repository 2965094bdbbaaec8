"""The backward pass: walk the graph from the outputs in reverse topological order.

Iterative (no recursion), so a chain of 100,000 ops backpropagates. Each node's
context is freed as soon as its backward has run, unless retain_graph=True.

Each call has its own queue of end-of-backward callbacks (queue_callback), kept on a
per-thread stack so that a backward run from inside a hook (reentrant) neither runs nor
swallows the outer call's callbacks.
"""
import threading

from . import function as _function
from . import grad_mode
from .function import AccumulateGrad, _check_finite


def _collect(roots):
    """Count, for every node reachable from roots, how many edges point into it."""
    deps = {}
    stack = [r for r in roots]
    seen = set(roots)
    while stack:
        node = stack.pop()
        for nxt in node.next:
            if nxt is None:
                continue
            deps[nxt] = deps.get(nxt, 0) + 1
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return deps


def run_backward(roots, root_grads, retain_graph=False, capture=None, accumulate=True):
    """roots: nodes; root_grads: arrays. capture: {node: None} to fill with the total
    gradient arriving at that node (for autograd.grad). accumulate: write leaf .grad."""
    deps = _collect(roots)
    grads = {}
    for r, g in zip(roots, root_grads):
        grads[r] = g if r not in grads else grads[r] + g
    ready = [r for r in dict.fromkeys(roots) if deps.get(r, 0) == 0]
    prof = _function._profiler  # tensorlite.profiler: read once per backward, not per node
    queues = _queues()
    callbacks = []
    queues.append(callbacks)
    try:
        with grad_mode.no_grad():
            while ready:
                node = ready.pop()
                g = grads.pop(node, None)
                if g is not None and node.hooks:
                    for hook in node.hooks:
                        out = hook(g)
                        if out is not None:
                            g = out
                if capture is not None and node in capture:
                    capture[node] = g
                if isinstance(node, AccumulateGrad):
                    if accumulate and g is not None:
                        node.variable._accumulate_grad(g)
                        if node.post_hooks:
                            _run_post_hooks(node)
                    continue
                if node.released:
                    raise RuntimeError(
                        f"Trying to backward through the graph a second time ({node.name()}): its "
                        "saved arrays were freed after the first backward. Pass retain_graph=True "
                        "to the first backward() if you need to backpropagate twice.")
                in_grads = (None,) * len(node.next)
                if g is not None:
                    for counter, version, fn in node.saved_versions:
                        if counter.value != version:
                            raise RuntimeError(
                                f"one of the arrays needed by {fn.__name__}'s backward was "
                                f"modified by an in-place operation (version {counter.value}, "
                                f"expected {version}); make a copy (.clone()) before modifying "
                                "it in place")
                    in_grads = node.fn.backward(node.ctx, g) if prof is None else prof.backward(node, g)
                    if not isinstance(in_grads, tuple):
                        in_grads = (in_grads,)
                    if grad_mode.is_anomaly_enabled():
                        for ig in in_grads:
                            if ig is not None:
                                _check_finite(ig, f"{node.fn.__name__} backward")
                if not retain_graph:
                    node.ctx = None
                    node.released = True
                for nxt, ig in zip(node.next, in_grads):
                    if nxt is None:
                        continue
                    if ig is not None:
                        prev = grads.get(nxt)
                        grads[nxt] = ig if prev is None else prev + ig
                    deps[nxt] -= 1
                    if deps[nxt] == 0:
                        ready.append(nxt)
            # a list grown while it is walked: callbacks queued by callbacks run too
            i = 0
            while i < len(callbacks):
                callbacks[i]()
                i += 1
    finally:
        queues.pop()


def _run_post_hooks(node):
    # a copy: a hook may remove itself (its handle) while they run
    for hook in tuple(node.post_hooks):
        out = hook(node.variable)
        if out is not None:
            raise TypeError(f"a post accumulate grad hook returned {type(out).__name__}; it "
                            "must return None (it may change tensor.grad in place instead)")


_local = threading.local()


def _queues():
    """This thread's stack of callback queues, one per backward call now running."""
    q = getattr(_local, "queues", None)
    if q is None:
        q = _local.queues = []
    return q


def queue_callback(fn):
    """Run fn() once at the end of the backward pass now running: after every leaf's
    .grad is accumulated and every hook has run, in the order queued (PyTorch's
    Variable._execution_engine.queue_callback). Only callable while a backward runs,
    e.g. from a tensor hook; an inner backward run from a hook has its own queue."""
    q = _queues()
    if not q:
        raise RuntimeError("queue_callback: final callbacks can only be installed during a "
                           "backward pass (call it from a hook that backward runs); none is "
                           "running now")
    q[-1].append(fn)
