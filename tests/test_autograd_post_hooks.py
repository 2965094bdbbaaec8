"""Tensor.register_post_accumulate_grad_hook and autograd.queue_callback (the end-of-backward
callback), with PyTorch's semantics; torch itself, when importable, is the oracle for the
order and count of what fires."""
import threading

import numpy as np
import pytest

import tensorlite as tl


def leaf(*values):
    return tl.tensor(np.array(values, dtype=np.float32), requires_grad=True)


# ---- post accumulate grad hooks ----------------------------------------------------------
def test_post_hook_fires_once_per_backward_and_sees_the_accumulated_grad():
    x = leaf(1.0, 2.0)
    seen = []

    def hook(t):
        assert t is x
        seen.append(t.grad.numpy().copy())
    assert x.register_post_accumulate_grad_hook(hook) is not None
    # x feeds two ops: the engine sums both gradients, then accumulates (and fires) once
    ((x * 2).sum() + (x * 3).sum()).backward()
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0], [5.0, 5.0])
    (x * 4).sum().backward()  # a second backward adds into .grad: the hook sees the sum
    assert len(seen) == 2
    np.testing.assert_array_equal(seen[1], [9.0, 9.0])


def test_tensor_hooks_run_before_accumulation_post_hooks_after():
    x = leaf(1.0, 2.0)
    log = []
    # registered first, still runs after: the order is by kind, as in PyTorch
    x.register_post_accumulate_grad_hook(lambda t: log.append(("post1", t.grad.numpy().tolist())))
    x.register_hook(lambda g: log.append(("pre", g.numpy().tolist(), x.grad)))
    x.register_post_accumulate_grad_hook(lambda t: log.append(("post2",)))
    (x * 3).sum().backward()
    assert log == [("pre", [3.0, 3.0], None), ("post1", [3.0, 3.0]), ("post2",)]


def test_a_pre_hook_that_changes_the_gradient_is_what_the_post_hook_sees():
    x = leaf(1.0)
    got = []
    x.register_hook(lambda g: g * 10)
    x.register_post_accumulate_grad_hook(lambda t: got.append(t.grad.item()))
    (x * 2).sum().backward()
    assert got == [20.0]


def test_handle_remove_stops_the_hook():
    x = leaf(1.0)
    calls = []
    handle = x.register_post_accumulate_grad_hook(lambda t: calls.append(1))
    keep = x.register_post_accumulate_grad_hook(lambda t: calls.append(2))
    x.sum().backward()
    handle.remove()
    handle.remove()  # twice is harmless
    x.sum().backward()
    assert calls == [1, 2, 2]
    keep.remove()
    x.sum().backward()
    assert calls == [1, 2, 2]


def test_a_hook_may_remove_itself_while_hooks_run():
    x = leaf(1.0)
    calls = []

    def once(t):
        calls.append("once")
        handle.remove()
    handle = x.register_post_accumulate_grad_hook(once)
    x.register_post_accumulate_grad_hook(lambda t: calls.append("other"))
    x.sum().backward()
    x.sum().backward()
    assert calls == ["once", "other", "other"]


def test_non_leaf_and_no_grad_tensors_are_refused():
    x = leaf(1.0)
    y = x * 2
    with pytest.raises(RuntimeError, match="post accumulate grad hooks cannot be registered on "
                                           "non-leaf tensors"):
        y.register_post_accumulate_grad_hook(lambda t: None)
    with pytest.raises(RuntimeError, match="doesn't require grad"):
        tl.ones(2).register_post_accumulate_grad_hook(lambda t: None)


def test_autograd_grad_accumulates_nothing_so_fires_nothing():
    x = leaf(1.0, 2.0)
    calls = []
    x.register_post_accumulate_grad_hook(lambda t: calls.append(1))
    g, = tl.autograd.grad((x * x).sum(), x)
    np.testing.assert_array_equal(g.numpy(), [2.0, 4.0])
    assert calls == [] and x.grad is None


def test_a_leaf_that_gets_no_gradient_fires_nothing():
    x, unused = leaf(1.0), leaf(1.0)
    calls = []
    unused.register_post_accumulate_grad_hook(lambda t: calls.append(1))
    x.sum().backward()
    assert calls == []


def test_a_hook_returning_something_is_an_error():
    x = leaf(1.0)
    x.register_post_accumulate_grad_hook(lambda t: t.grad)
    with pytest.raises(TypeError, match="must return None"):
        x.sum().backward()


def test_a_hook_can_step_and_free_the_grad_during_backward():
    # the optimizer-in-backward pattern post accumulate grad hooks exist for
    w = leaf(1.0, 2.0)

    def sgd(t):
        t._data -= 0.5 * t.grad._data
        t.grad = None
    w.register_post_accumulate_grad_hook(sgd)
    (w * w).sum().backward()
    np.testing.assert_array_equal(w.detach().numpy(), [0.0, 0.0])
    assert w.grad is None


# ---- queue_callback -----------------------------------------------------------------------
def test_queue_callback_outside_backward_says_why():
    with pytest.raises(RuntimeError, match="only be installed during a backward"):
        tl.autograd.queue_callback(lambda: None)


def test_callback_runs_once_after_every_grad_and_hook():
    a, b = leaf(1.0, 2.0), leaf(3.0, 4.0)
    log = []
    h = a * 2  # its hook runs before a's gradient is accumulated

    def early(g):
        log.append("early")
        tl.autograd.queue_callback(lambda: log.append(("cb", a.grad is not None,
                                                       b.grad is not None)))
    h.register_hook(early)
    a.register_post_accumulate_grad_hook(lambda t: log.append("post a"))
    b.register_post_accumulate_grad_hook(lambda t: log.append("post b"))
    (h * b).sum().backward()
    assert sorted(log[:3]) == ["early", "post a", "post b"]
    assert log.index("early") < log.index("post a")  # queued before a's grad existed
    assert log[3:] == [("cb", True, True)]
    (a * b).sum().backward()  # nothing queued this time: the old callback does not rerun
    assert log.count(("cb", True, True)) == 1


def test_callbacks_run_in_order_and_may_queue_more():
    x = leaf(1.0)
    order = []

    def first():
        order.append(1)
        tl.autograd.queue_callback(lambda: order.append(4))

    def hook(t):
        for fn in (first, lambda: order.append(2), lambda: order.append(3)):
            tl.autograd.queue_callback(fn)
    x.register_post_accumulate_grad_hook(hook)
    x.sum().backward()
    assert order == [1, 2, 3, 4]


def test_callbacks_run_with_autograd_grad_too():
    x = leaf(2.0)
    ran = []
    y = x * x
    y.register_hook(lambda g: tl.autograd.queue_callback(lambda: ran.append(1)))
    tl.autograd.grad(y.sum(), x)
    assert ran == [1]


def test_a_backward_inside_a_hook_has_its_own_callback_queue():
    x, z = leaf(1.0), leaf(5.0)
    log = []

    def inner_cb():
        log.append(("inner cb", z.grad.item()))

    def outer_hook(t):
        tl.autograd.queue_callback(lambda: log.append("outer cb"))
        z.register_post_accumulate_grad_hook(lambda s: tl.autograd.queue_callback(inner_cb))
        with tl.autograd.enable_grad():  # hooks run under no_grad, as in PyTorch
            (z * 3).sum().backward()  # reentrant: runs inner_cb, not the outer callback
        log.append("after inner backward")
    x.register_post_accumulate_grad_hook(outer_hook)
    x.sum().backward()
    assert log == [("inner cb", 3.0), "after inner backward", "outer cb"]
    with pytest.raises(RuntimeError, match="during a backward"):
        tl.autograd.queue_callback(lambda: None)  # both queues are gone


def test_a_failing_backward_drops_its_queue():
    x = leaf(1.0)
    ran = []

    def hook(t):
        tl.autograd.queue_callback(lambda: ran.append(1))
        raise ValueError("boom")
    x.register_post_accumulate_grad_hook(hook)
    with pytest.raises(ValueError, match="boom"):
        x.sum().backward()
    assert ran == []  # as in PyTorch: a failed backward runs no final callbacks
    with pytest.raises(RuntimeError, match="during a backward"):
        tl.autograd.queue_callback(lambda: None)


def test_another_threads_backward_is_not_this_threads():
    x = leaf(1.0)
    started, release, errors = threading.Event(), threading.Event(), []

    def hook(t):
        started.set()
        release.wait(10)
    x.register_post_accumulate_grad_hook(hook)
    worker = threading.Thread(target=lambda: x.sum().backward())
    worker.start()
    assert started.wait(10)
    try:
        tl.autograd.queue_callback(lambda: None)
    except RuntimeError as e:
        errors.append(e)
    release.set()
    worker.join(10)
    assert len(errors) == 1


# ---- torch as the oracle --------------------------------------------------------------------
def _trace(make, queue):
    """Per-leaf events and the callback's, over two backwards of one small graph."""
    leaves = {"a": make([1.0, 2.0]), "b": make([3.0, -1.0])}
    a, b = leaves["a"], leaves["b"]
    events = {"a": [], "b": [], "cb": []}

    def record(name, t):
        def pre(g):  # the gradient, and .grad before it is added
            events[name].append(("pre", g.tolist(), None if t.grad is None else t.grad.tolist()))
            if name == "a":
                queue(lambda: events["cb"].append(
                    ("cb", a.grad.tolist(), b.grad.tolist(), len(events["a"]), len(events["b"]))))

        def post(t):
            events[name].append(("post", t.grad.tolist()))
        t.register_post_accumulate_grad_hook(post)
        t.register_hook(pre)
    for name, t in leaves.items():
        record(name, t)
    for _ in range(2):
        c = a * b
        ((c * c).sum() + (a * 2).sum()).backward()
    return events


def test_firing_order_and_count_match_torch():
    torch = pytest.importorskip("torch")
    ours = _trace(lambda v: tl.tensor(np.array(v, dtype=np.float32), requires_grad=True),
                  tl.autograd.queue_callback)
    theirs = _trace(lambda v: torch.tensor(v, requires_grad=True),
                    torch.autograd.Variable._execution_engine.queue_callback)
    assert ours == theirs
    assert len(ours["a"]) == 4 and len(ours["cb"]) == 2
