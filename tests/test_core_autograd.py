"""The autograd engine: backward, grad accumulation, graph release, memory, deep graphs,
grad modes, detach, autograd.grad, in-place ops and version counters, gradcheck itself,
anomaly detection."""
import gc
import warnings
import weakref

import numpy as np
import pytest

import tensorlite as tl
from tensorlite.autograd import Function, gradcheck
from tensorlite.autograd.gradcheck import GradcheckError

from _core_helpers import close, leaf, numpy_kernels, rand  # noqa: F401


@pytest.fixture
def anomaly():
    tl.set_detect_anomaly(True)
    yield
    tl.set_detect_anomaly(False)


# ---- backward -----------------------------------------------------------------------------

def test_backward_on_scalar_without_gradient():
    x = leaf([1.0, 2.0, 3.0])
    y = (x * x).sum()
    assert y.grad_fn is not None and not y.is_leaf and x.is_leaf
    y.backward()
    close(x.grad, [2.0, 4.0, 6.0])
    assert x.grad.dtype is tl.float64 and not x.grad.requires_grad
    z = leaf([3.0])  # a one-element (not 0-d) output may also omit the gradient
    (z * 2).backward()
    close(z.grad, [2.0])


def test_backward_of_non_scalar_needs_gradient():
    x = leaf(np.ones((2, 3)))
    y = x * 3
    with pytest.raises(RuntimeError, match=r"scalar outputs.*\(2, 3\).*gradient="):
        y.backward()
    g = rand((2, 3), seed=1)
    y.backward(tl.tensor(g, dtype=tl.float64))
    close(x.grad, 3 * g)
    x.grad = None
    (x * 3).backward(gradient=g)  # an array is accepted too
    close(x.grad, 3 * g)
    with pytest.raises(RuntimeError, match=r"gradient has shape \(3,\) .* \(2, 3\)"):
        (x * 3).backward(tl.ones(3, dtype=tl.float64))


def test_backward_through_tensor_that_needs_no_grad_raises():
    x = tl.ones(3)
    with pytest.raises(RuntimeError, match="does not require grad"):
        x.sum().backward()
    with tl.no_grad():
        y = leaf([1.0]) * 2
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()


def test_root_gradient_of_an_infinite_loss_is_one():
    # backward of an inf loss: d loss / d loss is still 1 (not 0 * inf = nan)
    x = tl.tensor([1e38], requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        loss = (x * 1e38).sum()
    loss.backward()
    close(x.grad, [1e38], rtol=1e-6)


def test_gradients_accumulate_over_two_backward_calls():
    x = leaf([1.0, -2.0])
    (x * 3).sum().backward()
    first = x.grad
    (x * x).sum().backward()
    close(x.grad, [3.0 + 2.0, 3.0 - 4.0])
    assert x.grad is first  # accumulated into the same .grad tensor, as in PyTorch
    x.grad = None
    (x * 2).sum().backward()
    close(x.grad, [2.0, 2.0])


def test_gradient_from_several_paths_adds_up():
    x = leaf([2.0])
    a = x * 3
    y = a * a + a.exp() + x  # a used twice, x used twice
    y.sum().backward()
    close(x.grad, [2 * 3 * 6.0 * 1 + 3 * np.exp(6.0) + 1])


def test_graph_is_released_after_backward():
    x = leaf([1.0, 2.0])
    y = (x.exp() * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time.*retain_graph=True"):
        y.backward()


def test_retain_graph_allows_a_second_backward():
    x = leaf([1.0, 2.0])
    y = (x.exp() * x).sum()
    y.backward(retain_graph=True)
    g1 = np.asarray(x.grad).copy()
    y.backward()
    close(x.grad, 2 * g1)
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_saved_arrays_are_freed_after_backward():
    x = leaf(rand((50, 50), seed=2))
    h = x * 2
    ref = weakref.ref(h._data)
    y = h.sin().sum()  # Sin saves its input, h's array
    del h
    gc.collect()
    assert ref() is not None  # still needed by the pending backward
    y.backward()
    gc.collect()
    assert ref() is None


def test_memory_does_not_grow_over_steps():
    x = leaf(rand((20, 20), seed=3))
    refs = []
    for _ in range(30):
        h = (x @ x).tanh()
        refs.append(weakref.ref(h._data))
        loss = (h * h).mean()
        loss.backward()
        del h, loss
    gc.collect()
    assert sum(r() is not None for r in refs) == 0


def test_deep_chain_backpropagates_iteratively():
    x = tl.tensor(1.5, requires_grad=True)
    y = x
    for _ in range(100_000):
        y = -y
    y.backward()
    assert x.grad.item() == 1.0
    del y  # freeing a 100,000-node graph must not overflow the C stack either


def test_non_leaf_grad_is_not_kept_unless_retained():
    x = leaf([1.0, 2.0])
    h = x * 2
    k = x * 3
    k.retain_grad()
    (h * k).sum().backward()
    assert h.grad is None
    close(k.grad, np.asarray(h.detach()))


def test_register_hook_can_replace_gradient():
    x = leaf([1.0, 2.0])
    h = x * 2
    seen = []
    h.register_hook(lambda g: seen.append(np.asarray(g).copy()))
    handle = x.register_hook(lambda g: g * 10)
    h.sum().backward()
    close(seen[0], [1.0, 1.0])
    close(x.grad, [20.0, 20.0])
    handle.remove()
    x.grad = None
    (x * 2).sum().backward()
    close(x.grad, [2.0, 2.0])


# ---- grad modes, detach, requires_grad ------------------------------------------------------

def test_no_grad_context_manager():
    x = leaf([1.0])
    assert tl.is_grad_enabled()
    with tl.no_grad():
        assert not tl.is_grad_enabled()
        y = x * 2
        with tl.enable_grad():
            assert tl.is_grad_enabled()
            z = x * 2
        assert not tl.is_grad_enabled()
    assert tl.is_grad_enabled()
    assert not y.requires_grad and y.grad_fn is None and y.is_leaf
    assert z.requires_grad and z.grad_fn is not None


def test_no_grad_restores_state_on_exception():
    with pytest.raises(ZeroDivisionError):
        with tl.no_grad():
            1 / 0
    assert tl.is_grad_enabled()


def test_no_grad_and_enable_grad_as_decorators():
    x = leaf([1.0])

    @tl.no_grad()
    def f(t):
        return t * 2, tl.is_grad_enabled()

    @tl.enable_grad()
    def g(t):
        return t * 2

    y, enabled = f(x)
    assert not enabled and not y.requires_grad
    assert tl.is_grad_enabled()
    with tl.no_grad():
        assert g(x).requires_grad
    assert f.__name__ == "f"


def test_set_grad_enabled():
    tl.set_grad_enabled(False)
    try:
        assert not (leaf([1.0]) * 2).requires_grad
    finally:
        tl.set_grad_enabled(True)
    assert (leaf([1.0]) * 2).requires_grad


def test_detach_shares_data_and_stops_gradient():
    x = leaf([1.0, 2.0])
    h = x * 2
    d = h.detach()
    assert not d.requires_grad and d.is_leaf and d.grad_fn is None
    assert np.shares_memory(np.asarray(d), np.asarray(h.detach()))
    (h * d).sum().backward()
    close(x.grad, 2 * np.asarray(d))  # d is treated as a constant
    e = tl.detach(x)
    assert not e.requires_grad and e._version is x._version


def test_requires_grad_flag():
    x = tl.ones(2)
    assert not x.requires_grad and x.is_leaf
    assert x.requires_grad_() is x and x.requires_grad
    x.requires_grad_(False)
    assert not x.requires_grad
    with pytest.raises(RuntimeError, match="floating point"):
        tl.tensor([1, 2]).requires_grad_()
    with pytest.raises(RuntimeError, match="floating point"):
        tl.tensor([1, 2], requires_grad=True)
    y = leaf([1.0]) * 2
    with pytest.raises(RuntimeError, match="leaf"):
        y.requires_grad_(False)


def test_integer_results_of_tensors_that_require_grad():
    x = leaf([1.5, -2.5])
    for out in (x.long(), x.int(), x.to(tl.int64), x.bool(), x > 0, x.argmax(), x.isnan()):
        assert not out.requires_grad and out.grad_fn is None
    assert x.long().tolist() == [1, -2]
    f = x.float()  # a float cast stays in the graph
    assert f.requires_grad and f.dtype is tl.float32
    f.sum().backward()
    assert x.grad.dtype is tl.float64


# ---- autograd.grad ------------------------------------------------------------------------

def test_autograd_grad_returns_without_touching_dot_grad():
    x, w = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    y = (x * w).sum()
    gx, gw = tl.autograd.grad(y, [x, w])
    close(gx, [3.0, 4.0])
    close(gw, [1.0, 2.0])
    assert x.grad is None and w.grad is None
    (g,) = tl.autograd.grad((x * x).sum(), [x])
    close(g, [2.0, 4.0])
    g = tl.autograd.grad((x * x).sum(), x)[0]  # a single input gives a 1-tuple
    close(g, [2.0, 4.0])
    s = leaf(2.0)
    close(tl.autograd.grad(s, s)[0], 1.0)
    close(tl.autograd.grad(s * 3, s)[0], 3.0)


def test_autograd_grad_results_are_owned_arrays():
    # sum's backward broadcasts (a read-only view); grad_outputs flows through an add unchanged:
    # either way the caller gets a fresh, writable array
    x = leaf([1.0, 2.0, 3.0])
    (g,) = tl.autograd.grad(x.sum(), x)
    with tl.no_grad():
        g.add_(1.0)
    close(g, [2.0, 2.0, 2.0])
    go = tl.tensor([1.0, 1.0, 1.0], dtype=tl.float64)
    (g2,) = tl.autograd.grad(x + 1, x, grad_outputs=go)
    with tl.no_grad():
        g2.mul_(5.0)
    close(go, [1.0, 1.0, 1.0])


def test_autograd_grad_unused_and_retain():
    x, z = leaf([1.0]), leaf([5.0])
    y = (x * 2).sum()
    with pytest.raises(RuntimeError, match="not used"):
        tl.autograd.grad(y, [x, z], retain_graph=True)
    gx, gz = tl.autograd.grad(y, [x, z], allow_unused=True, retain_graph=True)
    close(gx, [2.0])
    assert gz is None
    tl.autograd.grad(y, x)  # the graph was retained until now
    with pytest.raises(RuntimeError, match="second time"):
        tl.autograd.grad(y, x)
    with pytest.raises(RuntimeError, match="does not require grad"):
        tl.autograd.grad((x * 2).sum(), tl.ones(1))


def test_autograd_grad_of_intermediate_and_with_grad_outputs():
    x = leaf([1.0, 2.0])
    h = x * 3
    y = h * h
    (gh,) = tl.autograd.grad(y, h, grad_outputs=tl.tensor([1.0, 0.5], dtype=tl.float64))
    close(gh, [6.0, 6.0])
    assert x.grad is None


def test_tl_backward_function():
    x = leaf([1.0, 2.0])
    tl.autograd.backward([(x * 2).sum(), (x * x).sum()])
    close(x.grad, [4.0, 6.0])


# ---- in-place ops and version counters ------------------------------------------------------

def test_inplace_ops_under_no_grad():
    x = leaf([1.0, 2.0, 3.0])
    v = x._version.value
    with tl.no_grad():
        assert x.add_(1.0) is x
        x.add_(tl.tensor([1.0, 1.0, 1.0]), alpha=2.0)
        x.mul_(2.0)
        x.sub_(1.0)
        x.div_(tl.tensor(2.0))
    close(x, ((np.array([1.0, 2.0, 3.0]) + 3.0) * 2 - 1) / 2)
    assert x._version.value == v + 5 and x.requires_grad and x.is_leaf
    with tl.no_grad():
        x.zero_()
    close(x, [0.0, 0.0, 0.0])
    with tl.no_grad():
        x.copy_(tl.tensor([7.0, 8.0, 9.0]))
    close(x, [7.0, 8.0, 9.0])
    with tl.no_grad():
        x.copy_(tl.tensor(1.0))  # broadcasts
        x.fill_(4.0).clamp_(max=3.0)
    close(x, [3.0, 3.0, 3.0])
    assert x.dtype is tl.float64


def test_copy_shape_errors():
    x = tl.zeros(3)
    with pytest.raises(ValueError, match=r"copy_: shapes \(2,\) and \(3,\)"):
        x.copy_(tl.ones(2))
    with pytest.raises(ValueError, match=r"copy_: source of shape \(2, 3\) .* \(3,\)"):
        x.copy_(tl.ones(2, 3))


def test_inplace_on_tensor_requiring_grad_outside_no_grad_raises():
    x = leaf([1.0])
    for f in (lambda: x.add_(1.0), lambda: x.mul_(2.0), lambda: x.zero_(), lambda: x.copy_(x)):
        with pytest.raises(RuntimeError, match="in-place.*no_grad"):
            f()
    y = tl.ones(2)
    y.add_(1.0)  # tensors that need no grad can always be modified
    close(y, [2.0, 2.0])


def test_modified_saved_input_raises_at_backward():
    x = leaf([1.0, 2.0])
    y = (x * x).sum()  # Mul saves x
    with tl.no_grad():
        x.add_(1.0)
    with pytest.raises(RuntimeError, match=r"needed by Mul's backward was modified by an in-place"):
        y.backward()


def test_modified_saved_output_raises_at_backward():
    x = leaf([1.0, 2.0])
    e = x.exp()  # Exp saves its output
    y = e.sum()
    with tl.no_grad():
        e.mul_(2.0)
    with pytest.raises(RuntimeError, match="Exp's backward .* in-place .*clone"):
        y.backward()


def test_modified_saved_tensor_through_a_view_raises():
    x = leaf([1.0, 2.0, 3.0])
    y = x.sin().sum()
    with tl.no_grad():
        x[1:].zero_()  # a view of x: same storage, same version counter
    with pytest.raises(RuntimeError, match="in-place"):
        y.backward()


def test_modifying_an_unsaved_tensor_is_fine():
    x = leaf([1.0, 2.0])
    y = (x + 1).sum()  # Add saves nothing
    with tl.no_grad():
        x.mul_(5.0)
    y.backward()
    close(x.grad, [1.0, 1.0])


# ---- gradcheck itself -------------------------------------------------------------------------

class _WrongSquare(Function):
    """x*x with a backward that is wrong at two entries, most at (1, 2)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved
        err = np.zeros_like(x)
        err[0, 1], err[1, 2] = 0.5, 2.0
        return (2 * x * g + err,)


class _Square(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved
        return (2 * x * g,)


def test_gradcheck_passes_a_correct_function():
    assert gradcheck(_Square.apply, [leaf(rand((2, 3), seed=4))])


def test_gradcheck_reports_the_worst_failing_entry():
    x = leaf(rand((2, 3), seed=5))
    with pytest.raises(GradcheckError, match=r"input 0, entry \(1, 2\): analytic .* vs numerical .*"
                                             r"2 of 6 entries differ"):
        gradcheck(_WrongSquare.apply, [x])
    assert gradcheck(_WrongSquare.apply, [x], raise_exception=False) is False
    assert isinstance(GradcheckError("x"), AssertionError)


def test_gradcheck_names_the_input_and_needs_float64():
    a, b = leaf(rand((2,), seed=6)), leaf(rand((2, 3), seed=7))
    with pytest.raises(GradcheckError, match="input 1"):
        gradcheck(lambda u, v: u.sum() + _WrongSquare.apply(v).sum(), [a, b])
    with pytest.raises(TypeError, match="float64"):
        gradcheck(lambda t: t * 2, [tl.ones(2, requires_grad=True)])
    with pytest.raises(ValueError, match="no input requires grad"):
        gradcheck(lambda t: t * 2, [tl.ones(2, dtype=tl.float64)])
    assert gradcheck(lambda t: _Square.apply(t), [leaf(rand((30,), seed=8))], max_entries=5)


# ---- anomaly detection --------------------------------------------------------------------

def test_anomaly_names_the_forward_op_making_nan(anomaly):
    x = leaf([1.0, -1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy's own "invalid value in log"
        with pytest.raises(RuntimeError, match="Log forward produced NaN"):
            x.log()


def test_anomaly_names_the_backward_op_making_inf(anomaly):
    x = leaf([0.0, 4.0])
    y = x.sqrt().sum()  # finite forward; the gradient at 0 is inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(RuntimeError, match="Sqrt backward produced NaN or inf"):
            y.backward()


def test_detect_anomaly_context_manager_and_off_by_default():
    x = leaf([0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        x.sqrt().sum().backward()  # off: inf gradient, no error
        assert np.isinf(np.asarray(x.grad)).all()
        with tl.detect_anomaly():
            with pytest.raises(RuntimeError, match="Sqrt backward"):
                x.sqrt().sum().backward()
        x.sqrt().sum().backward()
