"""backward() and grad(): the entry points from tensors into the engine. grad() returns
tensors made by its inputs' own _make, so this layer never imports the Tensor class."""
from ..backend.device import xp_of
from . import engine
from .function import edge_of


def _root_grad(t, gradient):
    if gradient is None:
        if t.numel() != 1:
            raise RuntimeError(f"grad can be implicitly created only for scalar outputs; this "
                               f"output has shape {t.shape}: pass gradient= to backward()")
        # ones_like, not 1 + 0 * t: an inf or nan loss must still get d loss / d loss = 1
        return xp_of(t._data).ones_like(t._data)
    g = gradient._data if hasattr(gradient, "_data") else gradient
    if tuple(g.shape) != t.shape:
        raise RuntimeError(f"backward: gradient has shape {tuple(g.shape)} but the output has "
                           f"shape {t.shape}")
    return g.astype(t._data.dtype, copy=False)


def backward(tensors, grad_tensors=None, retain_graph=False):
    """Accumulate d(tensors)/d(leaf) into every leaf's .grad (torch.autograd.backward)."""
    tensors = [tensors] if not isinstance(tensors, (list, tuple)) else list(tensors)
    if grad_tensors is None or not isinstance(grad_tensors, (list, tuple)):
        grad_tensors = [grad_tensors] * len(tensors)
    roots, grads = [], []
    for t, g in zip(tensors, grad_tensors):
        if not t.requires_grad:
            raise RuntimeError("element 0 of tensors does not require grad and does not have a "
                               "grad_fn: nothing to differentiate (did you forget requires_grad=True?)")
        roots.append(edge_of(t))
        grads.append(_root_grad(t, g))
    # looked up on the module at each call, so a replaced engine.run_backward (as
    # benchmarks/profiler_overhead.py installs) is the one that runs
    engine.run_backward(roots, grads, retain_graph=retain_graph)


def grad(outputs, inputs, grad_outputs=None, retain_graph=False, allow_unused=False):
    """Gradients of outputs with respect to inputs, returned (not written into .grad)."""
    single = not isinstance(inputs, (list, tuple))
    inputs = [inputs] if single else list(inputs)
    outputs = [outputs] if not isinstance(outputs, (list, tuple)) else list(outputs)
    if grad_outputs is None or not isinstance(grad_outputs, (list, tuple)):
        grad_outputs = [grad_outputs] * len(outputs)
    for i, x in enumerate(inputs):
        if not x.requires_grad:
            raise RuntimeError(f"grad: input {i} does not require grad")
    nodes = [edge_of(x) for x in inputs]
    capture = {n: None for n in nodes}
    roots = [edge_of(o) for o in outputs]
    engine.run_backward(roots, [_root_grad(o, g) for o, g in zip(outputs, grad_outputs)],
                 retain_graph=retain_graph, capture=capture, accumulate=False)
    result = []
    for i, (x, n) in enumerate(zip(inputs, nodes)):
        g = capture[n]
        if g is None and not allow_unused:
            raise RuntimeError(f"grad: input {i} was not used to compute the outputs "
                               "(pass allow_unused=True to get None for it)")
        # a copy the caller owns: g may be a read-only broadcast view (from sum's backward)
        # or the very array passed as grad_outputs
        result.append(None if g is None else
                      x._make(xp_of(g).array(g, copy=True), x.device))
    return tuple(result)
