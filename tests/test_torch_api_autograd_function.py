"""Custom autograd Functions written the PyTorch way: tensorlite.autograd.Function gets
and returns Tensors, ctx.save_for_backward / ctx.saved_tensors hold Tensors, and
MyFn.apply(x) links one node into the graph (tensorlite's own ops subclass the raw-array
ArrayFunction instead)."""
import numpy as np
import pytest

import tensorlite as tl
from tensorlite.autograd import gradcheck

from _core_helpers import close, leaf, needs_torch, numpy_kernels, rand, torch  # noqa: F401


class Exp(tl.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        assert isinstance(x, tl.Tensor)
        assert not tl.is_grad_enabled()  # forward runs outside the graph, as in PyTorch
        y = x.exp()
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        assert isinstance(grad, tl.Tensor)
        y, = ctx.saved_tensors
        return grad * y


class ScaledMul(tl.autograd.Function):
    """x * w * scale, with a non-tensor argument and two tensor inputs."""

    @staticmethod
    def forward(ctx, x, w, scale):
        ctx.save_for_backward(x, w)
        ctx.scale = scale
        return x * w * scale

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        gx = grad * w * ctx.scale if ctx.needs_input_grad[0] else None
        gw = (grad * x * ctx.scale).sum(0) if ctx.needs_input_grad[1] else None
        return gx, gw, None


class SplitStyle(tl.autograd.Function):
    """PyTorch 2's form: forward without ctx, setup_context saves."""

    @staticmethod
    def forward(x, k):
        return x * x * k

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, k = inputs
        ctx.save_for_backward(x)
        ctx.k = k

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        return 2 * x * grad * ctx.k, None


def test_pytorch_style_function_forward_backward_and_gradcheck():
    a = rand((2, 3), seed=1)
    x = leaf(a)
    y = Exp.apply(x)
    assert isinstance(y, tl.Tensor) and y.grad_fn.name() == "ExpBackward"
    y.sum().backward()
    close(x.grad, np.exp(a))
    assert gradcheck(Exp.apply, [leaf(a)])


def test_non_tensor_arguments_broadcast_weights_and_needs_input_grad():
    x, w = leaf(rand((4, 3), seed=2)), leaf(rand((3,), seed=3))
    assert gradcheck(lambda u, v: ScaledMul.apply(u, v, 0.5), [x, w])
    frozen = tl.tensor(rand((3,), seed=4), dtype=tl.float64)
    out = ScaledMul.apply(x, frozen, 2.0)
    out.sum().backward()
    assert frozen.grad is None


def test_setup_context_form():
    assert gradcheck(lambda u: SplitStyle.apply(u, 3.0), [leaf(rand((5,), seed=5))])


def test_no_grad_needed_means_no_node():
    out = Exp.apply(tl.ones(3))
    assert out.grad_fn is None and out.tolist() == pytest.approx([np.e] * 3)


def test_saved_tensor_modified_in_place_is_caught():
    class Square(tl.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, grad):
            x, = ctx.saved_tensors
            return 2 * x * grad

    x = leaf([1.0, 2.0])
    h = x * 1
    y = Square.apply(h)
    with tl.no_grad():
        h.add_(1)
    with pytest.raises(RuntimeError, match="modified by an in-place operation"):
        y.sum().backward()


def test_wrong_gradient_count_shape_and_multiple_outputs_are_clear_errors():
    class TooFew(tl.autograd.Function):
        @staticmethod
        def forward(ctx, x, y):
            return x + y

        @staticmethod
        def backward(ctx, grad):
            return grad

    class WrongShape(tl.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.sum()

        @staticmethod
        def backward(ctx, grad):
            return grad  # should be expanded to x's shape

    class TwoOutputs(tl.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x, x

    x = leaf([1.0, 2.0])
    with pytest.raises(RuntimeError, match="returned 1 gradients; expected 2"):
        TooFew.apply(x, x).sum().backward()
    with pytest.raises(RuntimeError, match=r"gradient 0 has shape \(\)"):
        WrongShape.apply(x).backward()
    with pytest.raises(NotImplementedError, match="one Tensor"):
        TwoOutputs.apply(x)
    with pytest.raises(TypeError, match="at least one tensor"):
        Exp.apply(1.0)


def test_array_function_is_still_there_for_ops():
    class Double(tl.autograd.ArrayFunction):
        @staticmethod
        def forward(ctx, x):
            assert isinstance(x, np.ndarray)
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return (g * 2,)

    x = leaf([1.0, 3.0])
    Double.apply(x).sum().backward()
    assert x.grad.tolist() == [2.0, 2.0]


@needs_torch
def test_same_source_runs_under_torch_and_tensorlite():
    def define(lib):
        class Cube(lib.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                ctx.save_for_backward(x)
                return x ** 3

            @staticmethod
            def backward(ctx, grad):
                x, = ctx.saved_tensors
                return 3 * x ** 2 * grad
        return Cube

    a = rand((4,), seed=6)
    tx = torch.tensor(a, requires_grad=True)
    define(torch).apply(tx).sum().backward()
    x = leaf(a)
    define(tl).apply(x).sum().backward()
    close(x.grad, tx.grad.numpy())
