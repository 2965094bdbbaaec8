"""Module forward/backward hooks and Tensor.register_hook, against PyTorch's semantics."""
import numpy as np
import pytest

import tensorlite as tl
from tensorlite import nn


def np_(t):
    return np.asarray(t.detach())


def leaf(a):
    return tl.tensor(np.asarray(a, dtype=np.float64), requires_grad=True)


class Scale(nn.Module):
    """a * b * s: two tensor inputs and a number."""

    def forward(self, a, b, s):
        return a * b * s


class Pair(nn.Module):
    def forward(self, x):
        return x * 2, x * 3


# ---- forward hooks ------------------------------------------------------------------------------

def test_forward_pre_hook_can_replace_args_and_prepend_orders_hooks():
    lin = nn.Linear(2, 2).double()
    order = []
    lin.register_forward_hook(lambda m, a, o: order.append("second"))
    lin.register_forward_hook(lambda m, a, o: order.append("first"), prepend=True)
    lin.register_forward_pre_hook(lambda m, args: (args[0] * 0,))
    out = lin(leaf([[1.0, 2.0]]))
    np.testing.assert_allclose(np_(out), np_(lin.bias)[None])
    assert order == ["first", "second"]


def test_forward_hook_sees_the_args_and_output():
    lin = nn.Linear(3, 2)
    seen = []
    lin.register_forward_hook(lambda m, args, out: seen.append((m, args[0].shape, out.shape)))
    lin(tl.randn(5, 3))
    assert seen == [(lin, (5, 3), (5, 2))]


# ---- full backward hooks ------------------------------------------------------------------------

def test_full_backward_hook_grad_input_is_the_gradient_wrt_the_input():
    lin = nn.Linear(3, 2).double()
    x = leaf(np.arange(12.0).reshape(4, 3) / 7)
    got = []
    lin.register_full_backward_hook(lambda m, gin, gout: got.append((m, gin, gout)))
    up = tl.tensor([[1.0, -2.0]], dtype=tl.float64)
    (lin(x) * up).sum().backward()
    assert len(got) == 1
    m, gin, gout = got[0]
    assert m is lin and len(gin) == 1 and len(gout) == 1
    g = np.tile([1.0, -2.0], (4, 1))
    np.testing.assert_allclose(np_(gout[0]), g)
    np.testing.assert_allclose(np_(gin[0]), g @ np_(lin.weight))
    np.testing.assert_allclose(np_(x.grad), g @ np_(lin.weight))


def test_full_backward_hook_can_replace_grad_input():
    lin = nn.Linear(3, 2).double()
    x = leaf(np.ones((2, 3)))
    lin.register_full_backward_hook(lambda m, gin, gout: (gin[0] * 0 + 5,))
    lin(x).sum().backward()
    np.testing.assert_allclose(np_(x.grad), np.full((2, 3), 5.0))
    # the module's own parameters are upstream of the hook: their gradients are untouched
    np.testing.assert_allclose(np_(lin.weight.grad), np.full((2, 3), 2.0))


def test_full_backward_hook_with_several_inputs_and_a_number():
    a, b = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    got = []
    mod = Scale()
    mod.register_full_backward_hook(lambda m, gin, gout: got.append(gin))
    mod(a, b, 10.0).sum().backward()
    gin, = got
    assert gin[2] is None
    np.testing.assert_allclose(np_(gin[0]), [30.0, 40.0])
    np.testing.assert_allclose(np_(gin[1]), [10.0, 20.0])
    np.testing.assert_allclose(np_(a.grad), [30.0, 40.0])


def test_full_backward_hook_input_without_grad_is_none():
    a, b = leaf([1.0, 2.0]), tl.tensor([3.0, 4.0], dtype=tl.float64)
    got = []
    mod = Scale()
    mod.register_full_backward_hook(lambda m, gin, gout: got.append(gin))
    mod(a, b, 1.0).sum().backward()
    assert got[0][1] is None and got[0][2] is None
    np.testing.assert_allclose(np_(got[0][0]), [3.0, 4.0])


def test_full_backward_hook_waits_for_every_output_gradient():
    x = leaf([1.0, 2.0])
    got = []
    mod = Pair()
    mod.register_full_backward_hook(lambda m, gin, gout: got.append((gin, gout)))
    y1, y2 = mod(x)
    (y1 * 5 + y2 * 7).sum().backward()
    (gin,), gout = got[0]
    assert len(got) == 1
    np.testing.assert_allclose(np_(gout[0]), [5.0, 5.0])
    np.testing.assert_allclose(np_(gout[1]), [7.0, 7.0])
    np.testing.assert_allclose(np_(gin), [31.0, 31.0])
    # an output that does not reach the loss has no gradient
    got.clear()
    y1, y2 = mod(x)
    y1.sum().backward()
    assert got[0][1][1] is None
    np.testing.assert_allclose(np_(got[0][0][0]), [2.0, 2.0])


def test_full_backward_hook_without_input_grad_must_return_none():
    lin = nn.Linear(2, 2)
    lin.register_full_backward_hook(lambda m, gin, gout: (tl.ones(3, 2),))
    with pytest.raises(RuntimeError, match="must return None"):
        lin(tl.ones(3, 2)).sum().backward()


def test_full_backward_hook_fires_once_per_backward_with_retain_graph():
    lin = nn.Linear(2, 1).double()
    x = leaf([[1.0, 1.0]])
    calls = []
    lin.register_full_backward_hook(lambda m, gin, gout: calls.append(np_(gin[0]).copy()))
    y = lin(x).sum()
    y.backward(retain_graph=True)
    y.backward()
    assert len(calls) == 2
    np.testing.assert_allclose(calls[0], calls[1])


def test_full_backward_hook_is_not_set_up_under_no_grad_and_removal_works():
    lin = nn.Linear(2, 2)
    calls = []
    h = lin.register_full_backward_hook(lambda m, gin, gout: calls.append(1))
    with tl.no_grad():
        out = lin(tl.ones(1, 2))
    assert out.grad_fn is None
    h.remove()
    lin(leaf([[1.0, 2.0]]).float()).sum().backward()
    assert calls == []


def test_full_backward_hooks_on_an_mlp_match_the_chain_rule_in_reverse_order():
    rng = np.random.default_rng(0)
    w1, b1 = rng.standard_normal((4, 3)), rng.standard_normal(4)
    w2, b2 = rng.standard_normal((2, 4)), rng.standard_normal(2)
    xv = rng.standard_normal((5, 3))
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    for p, v in zip(net.parameters(), [w1, b1, w2, b2]):
        p.data = tl.tensor(v, dtype=tl.float64)
    log = []
    for i, m in enumerate(net):
        m.register_full_backward_hook(lambda m, gin, gout, i=i: log.append((i, np_(gin[0]), np_(gout[0]))))
    (net(leaf(xv)) ** 2).sum().backward()
    # by hand: y = relu(x W1^T + b1) W2^T + b2, loss = sum(y^2)
    h1 = xv @ w1.T + b1
    y = np.maximum(h1, 0) @ w2.T + b2
    g2_out = 2 * y
    g2_in = g2_out @ w2
    g1_in = g2_in * (h1 > 0)
    g0_in = g1_in @ w1
    expected = [(2, g2_in, g2_out), (1, g1_in, g2_in), (0, g0_in, g1_in)]
    assert [i for i, *_ in log] == [2, 1, 0]
    for (i, gi, go), (j, ei, eo) in zip(log, expected):
        np.testing.assert_allclose(gi, ei, rtol=1e-12)
        np.testing.assert_allclose(go, eo, rtol=1e-12)


# ---- Tensor.register_hook -----------------------------------------------------------------------

def test_tensor_hook_on_intermediate_replaces_gradient_upstream_and_handle_removes_it():
    x = leaf([1.0, 2.0])
    h = x * 3
    handle = h.register_hook(lambda g: g * 0 + 1)
    (h * h).sum().backward()
    np.testing.assert_allclose(np_(x.grad), [3.0, 3.0])
    handle.remove()
    x.grad = None
    h = x * 3
    (h * h).sum().backward()
    np.testing.assert_allclose(np_(x.grad), [18.0, 36.0])


def test_tensor_hook_sees_the_total_gradient_once():
    x = leaf([1.0])
    h = x * 2
    seen = []
    h.register_hook(lambda g: seen.append(float(g.item())))
    (h * 3 + h * 4).sum().backward()
    assert seen == [7.0]


def test_tensor_hook_on_leaf_runs_before_accumulation():
    x = leaf([1.0, 1.0])
    x.register_hook(lambda g: g * 2)
    (x * 5).sum().backward()
    (x * 5).sum().backward()
    np.testing.assert_allclose(np_(x.grad), [20.0, 20.0])


def test_tensor_hook_needs_grad():
    with pytest.raises(RuntimeError, match="doesn't require grad"):
        tl.ones(2).register_hook(lambda g: g)
