"""tensorlite.nn: Module mechanics, the layers against their formulas in NumPy, containers,
attention and the transformer Block, and the functional ops by finite differences."""
import math
from collections import OrderedDict

import numpy as np
import pytest

import tensorlite as tl
from tensorlite import nn
from tensorlite.autograd import gradcheck
from tensorlite.nn import functional as F

from _nn_helpers import (np_, np_attention, np_block, np_gelu, np_layer_norm, np_linear,  # noqa: F401
                         numpy_kernels, params_np, t64)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(tl.ones(3))
        self.fc = nn.Linear(3, 4)
        self.register_buffer("steps", tl.zeros(2, dtype=tl.int64))
        self.register_buffer("running", tl.zeros(4))
        self.register_buffer("scratch", tl.zeros(5), persistent=False)
        self.act = nn.GELU()
        self.head = nn.Linear(4, 2, bias=False)
        self.not_registered = 7

    def forward(self, x):
        return self.head(self.act(self.fc(x * self.scale)))


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(5, 3)
        self.out = nn.Linear(3, 5, bias=False)
        self.out.weight = self.emb.weight


# ---- Module: registration and traversal ------------------------------------------------------
def test_registration_by_attribute_and_names():
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == ["scale", "fc.weight", "fc.bias", "head.weight"]
    assert [p for p in net.parameters()] == [p for _, p in net.named_parameters()]
    assert net.fc.weight.shape == (4, 3) and net.head.bias is None
    assert net.not_registered == 7 and "not_registered" not in net._parameters
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in net.parameters())
    assert [n for n, _ in net.named_parameters(recurse=False)] == ["scale"]
    # reassigning a plain value in place of a parameter unregisters it; del removes it
    net.scale = 3.0
    assert "scale" not in dict(net.named_parameters()) and net.scale == 3.0
    del net.head
    assert [n for n, _ in net.named_parameters()] == ["fc.weight", "fc.bias"]
    with pytest.raises(AttributeError, match="head"):
        net.head


def test_assigning_before_super_init_raises():
    class Bad(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(2, 2)
            super().__init__()
    with pytest.raises(RuntimeError, match=r"super\(\)\.__init__\(\)"):
        Bad()


def test_tied_weights_listed_once():
    m = Tied()
    assert m.out.weight is m.emb.weight
    assert [n for n, _ in m.named_parameters()] == ["emb.weight"]
    assert m.num_parameters() == 15
    # state_dict has every name the tied tensor is reachable by, as PyTorch does
    assert list(m.state_dict()) == ["emb.weight", "out.weight"]


def test_buffers():
    net = Net()
    assert [n for n, _ in net.named_buffers()] == ["steps", "running", "scratch"]
    assert len(list(net.buffers())) == 3
    assert not any(b.requires_grad for b in net.buffers())
    # a buffer is not a parameter, and a non-persistent one is not saved
    assert "running" not in dict(net.named_parameters())
    # per module, its parameters then its buffers, then its children (PyTorch's order)
    assert list(net.state_dict()) == ["scale", "steps", "running", "fc.weight", "fc.bias", "head.weight"]
    # assigning a tensor to a buffer's name replaces the buffer (it stays registered)
    net.running = tl.ones(4)
    assert "running" in dict(net.named_buffers())
    np.testing.assert_array_equal(np_(net.state_dict()["running"]), np.ones(4))


def test_children_and_modules():
    net = Net()
    assert [n for n, _ in net.named_children()] == ["fc", "act", "head"]
    assert [type(m).__name__ for m in net.children()] == ["Linear", "GELU", "Linear"]
    assert [n for n, _ in net.named_modules()] == ["", "fc", "act", "head"]
    shared = nn.Linear(2, 2)
    seq = nn.Sequential(shared, nn.ReLU(), shared)
    assert len(list(seq.modules())) == 3  # the shared Linear once
    assert len(list(seq.parameters())) == 2


def test_train_eval_propagate():
    m = nn.Sequential(nn.Linear(2, 2), nn.ModuleList([nn.Dropout(0.5), nn.Sequential(nn.Dropout(0.1))]))
    assert all(x.training for x in m.modules())
    assert m.eval() is m
    assert not any(x.training for x in m.modules())
    m.train()
    assert all(x.training for x in m.modules())
    m[1].eval()
    assert m.training and m[0].training and not m[1][1][0].training


def test_zero_grad():
    lin = nn.Linear(3, 2)
    lin(tl.randn(4, 3)).sum().backward()
    assert lin.weight.grad is not None
    lin.zero_grad(set_to_none=False)
    assert lin.weight.grad is not None and not np_(lin.weight.grad).any()
    lin(tl.randn(4, 3)).sum().backward()
    lin.zero_grad()
    assert lin.weight.grad is None and lin.bias.grad is None


def test_to_dtype_keeps_ties_and_integer_buffers():
    m = Tied()
    m.register_buffer("count", tl.zeros(1, dtype=tl.int64))
    m.register_buffer("stat", tl.zeros(3))
    assert m.double() is m
    assert m.emb.weight.dtype is tl.float64 and m.out.weight is m.emb.weight
    assert m.stat.dtype is tl.float64 and m.count.dtype is tl.int64
    y = m.out(m.emb(tl.tensor([1, 2])))
    assert y.dtype is tl.float64
    m.to(tl.float32)
    assert all(p.dtype is tl.float32 for p in m.parameters())
    m.to("float64")
    assert m.emb.weight.dtype is tl.float64


def test_to_device_emulated_cuda(monkeypatch):
    monkeypatch.setenv("TENSORLITE_EMULATE_CUDA", "1")
    net = Net()
    x = tl.randn(2, 3)
    ref = np_(net(x))
    assert net.to("cuda") is net
    assert all(p.device.type == "cuda" for p in net.parameters())
    assert all(b.device.type == "cuda" for b in net.buffers())
    y = net(x.to("cuda"))
    assert y.device.type == "cuda"
    np.testing.assert_allclose(np_(y), ref, rtol=1e-6)
    y.sum().backward()
    assert net.fc.weight.grad.device.type == "cuda"
    net.cpu()
    assert all(p.device.type == "cpu" for p in net.parameters())
    np.testing.assert_allclose(np_(net(x)), ref, rtol=1e-6)
    net.to(tl.float64, "cuda")
    assert all(p.device.type == "cuda" and p.dtype is tl.float64 for p in net.parameters())


def test_apply_and_num_parameters():
    net = Net()
    seen = []
    assert net.apply(lambda m: seen.append(type(m).__name__)) is net
    assert seen == ["Linear", "GELU", "Linear", "Net"]  # children before parents, as PyTorch
    assert net.num_parameters() == 3 + 12 + 4 + 8
    net.fc.requires_grad_(False)
    assert net.num_parameters(trainable_only=True) == 3 + 8
    net.apply(lambda m: nn.init.zeros_(m.weight) if isinstance(m, nn.Linear) else None)
    assert not np_(net.fc.weight).any() and not np_(net.head.weight).any()


def test_repr_is_readable():
    r = repr(Net())
    assert r.startswith("Net(\n")
    assert "  (fc): Linear(in_features=3, out_features=4, bias=True)" in r
    assert "  (head): Linear(in_features=4, out_features=2, bias=False)" in r
    assert "  (act): GELU(approximate='none')" in r
    seq = repr(nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.ReLU(), nn.Dropout(0.1))))
    assert "  (1): Sequential(\n    (0): ReLU()\n    (1): Dropout(p=0.1)\n  )" in seq
    assert repr(nn.LayerNorm(4)) == "LayerNorm((4,), eps=1e-05, elementwise_affine=True)"
    assert "Parameter containing" in repr(nn.Parameter(tl.zeros(2)))


# ---- Module: state_dict -----------------------------------------------------------------------
def test_state_dict_roundtrip_and_sharing():
    a, b = Net(), Net()
    sd = a.state_dict()
    assert not any(v.requires_grad for v in sd.values())
    b.load_state_dict(sd)
    x = tl.randn(2, 3)
    np.testing.assert_array_equal(np_(a(x)), np_(b(x)))
    # loaded by copy: changing a afterwards leaves b alone
    with tl.no_grad():
        a.fc.weight.fill_(0.5)
    assert not np.array_equal(np_(a.fc.weight), np_(b.fc.weight))
    # values may be NumPy arrays too; the buffer keeps its dtype
    sd = {k: np_(v) for k, v in b.state_dict().items()}
    sd["steps"] = np.array([3, 4])
    a.load_state_dict(sd)
    np.testing.assert_array_equal(np_(a.steps), [3, 4])
    assert a.steps.dtype is tl.int64


def test_load_state_dict_missing_key():
    net = Net()
    sd = net.state_dict()
    del sd["fc.bias"], sd["steps"]
    with pytest.raises(RuntimeError, match="missing keys: steps, fc.bias"):
        net.load_state_dict(sd)
    missing, unexpected = net.load_state_dict(sd, strict=False)
    assert missing == ["steps", "fc.bias"] and unexpected == []


def test_load_state_dict_unexpected_key():
    net = Net()
    sd = net.state_dict()
    sd["fc.extra"] = tl.zeros(2)
    with pytest.raises(RuntimeError, match=r"unexpected keys: fc\.extra") as e:
        net.load_state_dict(sd)
    assert "missing" not in str(e.value)
    res = net.load_state_dict(sd, strict=False)
    assert res.unexpected_keys == ["fc.extra"] and res.missing_keys == []


def test_load_state_dict_wrong_shape_lists_names_and_loads_nothing():
    net = Net()
    before = np_(net.fc.bias)
    sd = net.state_dict()
    sd = {k: tl.zeros(*v.shape, dtype=v.dtype) for k, v in sd.items()}
    sd["fc.weight"] = tl.zeros(3, 4)
    sd["head.weight"] = tl.zeros(2, 5)
    for strict in (True, False):
        with pytest.raises(RuntimeError) as e:
            net.load_state_dict(sd, strict=strict)
        msg = str(e.value)
        assert "fc.weight: checkpoint (3, 4) vs model (4, 3)" in msg
        assert "head.weight: checkpoint (2, 5) vs model (2, 4)" in msg
    np.testing.assert_array_equal(np_(net.fc.bias), before)  # nothing half-loaded


def test_load_state_dict_all_problems_in_one_error():
    net = Net()
    sd = net.state_dict()
    del sd["scale"]
    sd["bogus"] = tl.zeros(1)
    sd["fc.bias"] = tl.zeros(7)
    with pytest.raises(RuntimeError) as e:
        net.load_state_dict(sd)
    msg = str(e.value)
    assert "missing keys: scale" in msg and "unexpected keys: bogus" in msg and "fc.bias" in msg


# ---- Module: hooks -------------------------------------------------------------------------------
def test_forward_hooks():
    lin = nn.Linear(3, 2)
    calls = []
    h1 = lin.register_forward_pre_hook(lambda m, args: calls.append(("pre", args[0].shape)))
    h2 = lin.register_forward_hook(lambda m, args, out: out * 2)
    x = tl.randn(4, 3)
    base = np_linear(np_(x), np_(lin.weight), np_(lin.bias))
    np.testing.assert_allclose(np_(lin(x)), 2 * base, rtol=1e-6)
    assert calls == [("pre", (4, 3))]
    h1.remove()
    h2.remove()
    np.testing.assert_allclose(np_(lin(x)), base, rtol=1e-6)
    assert len(calls) == 1


def test_full_backward_hook_sees_output_grad():
    lin = nn.Linear(3, 2)
    got = []
    h = lin.register_full_backward_hook(lambda m, gin, gout: got.append(np_(gout[0])))
    x = tl.randn(4, 3)
    (lin(x) * tl.tensor([[1.0, 2.0]])).sum().backward()
    assert len(got) == 1
    np.testing.assert_array_equal(got[0], np.tile([1.0, 2.0], (4, 1)))
    h.remove()
    lin(x).sum().backward()
    assert len(got) == 1


# ---- layers against NumPy ------------------------------------------------------------------------
def test_linear_matches_numpy_forward_and_backward(rng):
    lin = nn.Linear(5, 3).double()
    assert lin.weight.shape == (3, 5) and lin.bias.shape == (3,)
    bound = 1 / math.sqrt(5)
    assert np.abs(np_(lin.weight)).max() <= bound
    x = t64(rng.standard_normal((2, 4, 5)), requires_grad=True)
    y = lin(x)
    W, b, xn = np_(lin.weight), np_(lin.bias), np_(x)
    np.testing.assert_allclose(np_(y), xn @ W.T + b, rtol=1e-12)
    dy = rng.standard_normal((2, 4, 3))
    y.backward(t64(dy))
    np.testing.assert_allclose(np_(lin.weight.grad), dy.reshape(-1, 3).T @ xn.reshape(-1, 5), rtol=1e-12)
    np.testing.assert_allclose(np_(lin.bias.grad), dy.sum((0, 1)), rtol=1e-12)
    np.testing.assert_allclose(np_(x.grad), dy @ W, rtol=1e-12)
    nb = nn.Linear(5, 3, bias=False)
    assert nb.bias is None and len(list(nb.parameters())) == 1
    with pytest.raises(ValueError, match="5"):
        lin(t64(np.zeros((2, 4))))


def test_embedding_forward_and_repeated_ids(rng):
    emb = nn.Embedding(6, 4).double()
    idx = np.array([[1, 3, 1], [5, 1, 0]])
    out = emb(tl.tensor(idx))
    W = np_(emb.weight)
    np.testing.assert_array_equal(np_(out), W[idx])
    dy = rng.standard_normal((2, 3, 4))
    out.backward(t64(dy))
    expect = np.zeros_like(W)
    np.add.at(expect, idx.reshape(-1), dy.reshape(-1, 4))
    np.testing.assert_allclose(np_(emb.weight.grad), expect, rtol=1e-12)
    with pytest.raises(IndexError, match="6"):
        emb(tl.tensor([6]))
    with pytest.raises(TypeError):
        emb(tl.tensor([1.0]))


def test_layer_norm_matches_numpy(rng):
    x = rng.standard_normal((3, 4, 6)) * 3 + 1
    ln = nn.LayerNorm(6).double()
    with tl.no_grad():
        ln.weight.copy_(t64(rng.standard_normal(6)))
        ln.bias.copy_(t64(rng.standard_normal(6)))
    np.testing.assert_allclose(np_(ln(t64(x))), np_layer_norm(x, np_(ln.weight), np_(ln.bias)),
                               rtol=1e-10, atol=1e-12)
    plain = nn.LayerNorm(6, elementwise_affine=False)
    assert list(plain.parameters()) == []
    np.testing.assert_allclose(np_(plain(t64(x))), np_layer_norm(x), rtol=1e-10, atol=1e-12)
    nobias = nn.LayerNorm(6, bias=False)
    assert [n for n, _ in nobias.named_parameters()] == ["weight"]
    two = nn.LayerNorm((4, 6)).double()
    flat = np_layer_norm(x.reshape(3, 24)).reshape(3, 4, 6)
    np.testing.assert_allclose(np_(two(t64(x))), flat, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="normalized_shape"):
        nn.LayerNorm(5)(t64(x))


def test_dropout_train_eval_and_seed():
    x = tl.ones(200, 50)
    d = nn.Dropout(0.3)
    tl.manual_seed(123)
    a = np_(d(x))
    tl.manual_seed(123)
    b = np_(d(x))
    np.testing.assert_array_equal(a, b)
    kept = a[a != 0]
    np.testing.assert_allclose(kept, 1 / 0.7, rtol=1e-6)  # survivors scaled by 1/(1-p)
    assert abs((a == 0).mean() - 0.3) < 0.02
    c = np_(d(x))  # the generator moved on: a different mask
    assert not np.array_equal(a, c)
    d.eval()
    np.testing.assert_array_equal(np_(d(x)), np_(x))
    assert np_(nn.Dropout(0.0)(x)).min() == 1
    assert not np_(nn.Dropout(1.0)(x)).any()
    with pytest.raises(ValueError):
        nn.Dropout(1.5)


def test_dropout_gradient_uses_the_same_mask():
    x = tl.ones(30, 30, requires_grad=True)
    y = F.dropout(x, 0.5, training=True)
    y.sum().backward()
    np.testing.assert_array_equal(np_(x.grad), np_(y))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_matches_formula(approximate):
    x = np.linspace(-6, 6, 101)
    np.testing.assert_allclose(np_(nn.GELU(approximate)(t64(x))), np_gelu(x, approximate),
                               rtol=1e-10, atol=1e-12)


def test_simple_activations():
    x = np.linspace(-3, 3, 13)
    np.testing.assert_allclose(np_(nn.ReLU()(t64(x))), np.maximum(x, 0))
    np.testing.assert_allclose(np_(nn.Tanh()(t64(x))), np.tanh(x), rtol=1e-12)
    np.testing.assert_allclose(np_(nn.SiLU()(t64(x))), x / (1 + np.exp(-x)), rtol=1e-12)
    np.testing.assert_array_equal(np_(nn.Identity()(t64(x))), x)
    s = np_(nn.Softmax(-1)(t64(x.reshape(1, -1))))
    np.testing.assert_allclose(s.sum(), 1.0, rtol=1e-12)


def test_cross_entropy_loss_module(rng):
    logits = rng.standard_normal((5, 4))
    t = np.array([0, 3, -100, 1, 2])
    loss = nn.CrossEntropyLoss()(t64(logits), tl.tensor(t))
    lse = np.log(np.exp(logits).sum(-1))
    keep = t != -100
    expect = (lse[keep] - logits[keep, t[keep]]).mean()
    np.testing.assert_allclose(loss.item(), expect, rtol=1e-12)


# ---- containers ----------------------------------------------------------------------------------
def test_sequential():
    seq = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert len(seq) == 3 and isinstance(seq[-1], nn.Linear) and isinstance(seq[1], nn.ReLU)
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    x = tl.randn(5, 3)
    manual = seq[2](seq[1](seq[0](x)))
    np.testing.assert_array_equal(np_(seq(x)), np_(manual))
    assert [type(m).__name__ for m in seq] == ["Linear", "ReLU", "Linear"]
    named = nn.Sequential(OrderedDict(inp=nn.Linear(3, 3), act=nn.Tanh()))
    assert [n for n, _ in named.named_children()] == ["inp", "act"]
    assert named(x).shape == (5, 3)
    head = seq[:2]  # a slice is a Sequential that runs
    assert isinstance(head, nn.Sequential) and head[0] is seq[0]
    np.testing.assert_array_equal(np_(head(x)), np_(seq[1](seq[0](x))))
    assert [n for n, _ in named[1:].named_children()] == ["act"]


def test_module_list():
    ml = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    ml.append(nn.Linear(2, 1))
    ml.extend([nn.ReLU()])
    assert len(ml) == 5 and isinstance(ml[-1], nn.ReLU) and ml[-2].out_features == 1
    assert [n for n, _ in ml.named_parameters()][:2] == ["0.weight", "0.bias"]
    assert len(ml[1:3]) == 2 and ml[1:3][0] is ml[1]
    assert len(list(ml)) == 5
    for bad in (5, -6):  # out of range: IndexError, no wrap-around
        with pytest.raises(IndexError):
            ml[bad]


def test_module_dict():
    md = nn.ModuleDict({"a": nn.Linear(2, 3), "b": nn.ReLU()})
    md["c"] = nn.Linear(3, 1)
    assert list(md.keys()) == ["a", "b", "c"] and "b" in md and len(md) == 3
    assert list(md) == ["a", "b", "c"]
    assert [n for n, _ in md.named_parameters()] == ["a.weight", "a.bias", "c.weight", "c.bias"]
    assert md.a is md["a"]  # attribute access reaches the registered module


# ---- attention and blocks ------------------------------------------------------------------------
def _attn_params(m):
    return (np_(m.c_attn.weight), np_(m.c_attn.bias), np_(m.c_proj.weight), np_(m.c_proj.bias))


def test_causal_attention_matches_numpy(rng):
    tl.manual_seed(0)
    m = nn.CausalSelfAttention(8, 2).double()
    x = rng.standard_normal((2, 5, 8))
    y = m(t64(x))
    np.testing.assert_allclose(np_(y), np_attention(x, *_attn_params(m), 2, causal=True),
                               rtol=1e-10, atol=1e-12)
    # causal: changing the last token changes nothing before it
    x2 = x.copy()
    x2[:, -1] += 1
    np.testing.assert_allclose(np_(m(t64(x2)))[:, :-1], np_(y)[:, :-1], rtol=1e-12, atol=1e-14)


def test_bidirectional_attention_with_key_padding_mask(rng):
    tl.manual_seed(1)
    m = nn.MultiHeadAttention(8, 4, causal=False).double()
    x = rng.standard_normal((3, 6, 8))
    mask = np.ones((3, 6), dtype=bool)
    mask[0, 4:] = False
    mask[2, 1:] = False
    expect = np_attention(x, *_attn_params(m), 4, causal=False, key_mask=mask)
    for given in (tl.tensor(mask), tl.tensor(mask.astype(np.int64))):
        np.testing.assert_allclose(np_(m(t64(x), given)), expect, rtol=1e-10, atol=1e-12)
    # without the mask every position sees the future too
    np.testing.assert_allclose(np_(m(t64(x))), np_attention(x, *_attn_params(m), 4, causal=False),
                               rtol=1e-10, atol=1e-12)
    # padded keys do not influence real tokens
    x2 = x.copy()
    x2[0, 4:] = 100
    np.testing.assert_allclose(np_(m(t64(x2), tl.tensor(mask)))[0, :4], expect[0, :4], rtol=1e-10)
    with pytest.raises(ValueError, match="attention_mask"):
        m(t64(x), tl.tensor(mask[:, :5]))
    with pytest.raises(ValueError, match="divisible"):
        nn.MultiHeadAttention(10, 4)


def test_attention_gradients_vs_finite_differences(rng):
    m = nn.MultiHeadAttention(4, 2, causal=False).double()
    mask = tl.tensor(np.array([[1, 1, 1, 0], [1, 1, 0, 0]]))
    x = t64(rng.standard_normal((2, 4, 4)), requires_grad=True)
    params = list(m.parameters())
    assert gradcheck(lambda x, *ps: m(x, mask), [x] + params, max_entries=6)


@pytest.mark.parametrize("causal", [True, False])
def test_packed_attention_path_matches_the_unfused_one(rng, causal):
    # without a mask, cache or dropout, attention runs as one fused op on the packed q/k/v
    # projection (PackedSelfAttention); record_attention takes the split/reshape path
    m = nn.MultiHeadAttention(8, 2, causal=causal).double()
    x = rng.standard_normal((2, 5, 8))
    g = rng.standard_normal((2, 5, 8))
    out = {}
    for record in (False, True):
        m.record_attention = record
        xt = t64(x, requires_grad=True)
        m.zero_grad()
        y = m(xt)
        (y * t64(g)).sum().backward()
        out[record] = (np_(y), np_(xt.grad), np_(m.c_attn.weight.grad), np_(m.c_proj.bias.grad))
    for fused, unfused in zip(out[False], out[True]):
        np.testing.assert_allclose(fused, unfused, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out[False][0], np_attention(x, *_attn_params(m), 2, causal=causal),
                               rtol=1e-10, atol=1e-12)
    m.record_attention = False
    xt = t64(rng.standard_normal((2, 4, 8)), requires_grad=True)
    assert gradcheck(lambda x, *ps: m(x), [xt] + list(m.parameters()), max_entries=6)


def test_record_attention_probabilities(rng):
    m = nn.CausalSelfAttention(8, 2).double()
    m.record_attention = True
    m(t64(rng.standard_normal((1, 4, 8))))
    p = np_(m.last_attention)
    assert p.shape == (1, 2, 4, 4)
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-12)
    assert not np.triu(p[0, 0], 1).any()


def test_attention_kv_cache_matches_full(rng):
    m = nn.CausalSelfAttention(8, 2).double().eval()
    x = t64(rng.standard_normal((2, 7, 8)))
    full = np_(m(x))
    cache = nn.KVCache(1)
    parts = []
    for lo, hi in ((0, 3), (3, 4), (4, 7)):  # a prefill, one token, then a chunk of three
        parts.append(np_(m(x[:, lo:hi], cache=cache.layer(0))))
        cache.pos += hi - lo
    np.testing.assert_allclose(np.concatenate(parts, 1), full, rtol=1e-10, atol=1e-12)
    assert cache.k[0].shape == (2, 2, 7, 4)


@pytest.mark.parametrize("prenorm", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_block_matches_numpy(rng, prenorm, bias):
    tl.manual_seed(2)
    blk = nn.Block(8, 2, bias=bias, prenorm=prenorm, causal=True).double()
    with tl.no_grad():  # non-trivial norms, so their placement matters
        for n, p in blk.named_parameters():
            if ".ln_" in "." + n:
                p.copy_(t64(1 + 0.3 * rng.standard_normal(p.shape)))
    x = rng.standard_normal((2, 5, 8))
    expect = np_block(x, params_np(blk), 2, causal=True, prenorm=prenorm)
    np.testing.assert_allclose(np_(blk(t64(x))), expect, rtol=1e-10, atol=1e-12)


def test_mlp_shapes_and_formula(rng):
    mlp = nn.MLP(6, approximate="none").double()
    assert mlp.c_fc.weight.shape == (24, 6) and mlp.c_proj.weight.shape == (6, 24)
    x = rng.standard_normal((3, 6))
    P = params_np(mlp)
    expect = np_linear(np_gelu(np_linear(x, P["c_fc.weight"], P["c_fc.bias"])), P["c_proj.weight"],
                       P["c_proj.bias"])
    np.testing.assert_allclose(np_(mlp(t64(x))), expect, rtol=1e-10, atol=1e-12)


# ---- init and gradient utilities -----------------------------------------------------------------
def test_gpt2_init():
    tl.manual_seed(0)
    blocks = nn.ModuleList([nn.Block(64, 4) for _ in range(4)])
    nn.init.gpt2_init_(blocks, n_layer=4)
    for n, p in blocks.named_parameters():
        a = np_(p)
        if n.endswith("c_proj.weight"):
            assert abs(a.std() - 0.02 / math.sqrt(8)) < 0.002, n
        elif ".ln_" in "." + n:
            assert np.all(a == (1.0 if n.endswith("weight") else 0.0)), n
        elif n.endswith("bias"):
            assert not a.any(), n
        else:
            assert abs(a.std() - 0.02) < 0.002 and abs(a.mean()) < 0.002, n


def test_init_functions_are_seeded():
    a, b = tl.zeros(100), tl.zeros(100)
    tl.manual_seed(5)
    nn.init.normal_(a, 1.0, 2.0)
    tl.manual_seed(5)
    nn.init.normal_(b, 1.0, 2.0)
    np.testing.assert_array_equal(np_(a), np_(b))
    w = tl.zeros(30, 20)
    nn.init.xavier_uniform_(w)
    assert np.abs(np_(w)).max() <= math.sqrt(6 / 50)
    nn.init.constant_(w, 0.25)
    assert np.all(np_(w) == 0.25)


def test_clip_grad_norm_returns_preclip_norm_and_clips(rng):
    ps = [nn.Parameter(tl.zeros(3, 4)), nn.Parameter(tl.zeros(5)), nn.Parameter(tl.zeros(2))]
    gs = [rng.standard_normal((3, 4)), rng.standard_normal(5)]
    for p, g in zip(ps, gs):
        p.grad = tl.tensor(g, dtype=tl.float32)  # the third keeps grad None: ignored
    norm = math.sqrt(sum((g.astype(np.float32).astype(np.float64) ** 2).sum() for g in gs))
    got = nn.utils.clip_grad_norm_((p for p in ps), 1e9)  # a generator, as model.parameters() gives
    np.testing.assert_allclose(got, norm, rtol=1e-6)
    got = nn.clip_grad_norm_(ps, 1.0)
    np.testing.assert_allclose(got, norm, rtol=1e-6)
    after = math.sqrt(sum((np_(p.grad).astype(np.float64) ** 2).sum() for p in ps[:2]))
    np.testing.assert_allclose(after, 1.0, rtol=1e-5)
    np.testing.assert_allclose(np_(ps[0].grad), gs[0] / norm, rtol=1e-5)
    # under the limit: untouched
    before = np_(ps[1].grad)
    assert nn.clip_grad_norm_(ps, 10.0) == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_array_equal(np_(ps[1].grad), before)
    # the max norm
    ps[0].grad = tl.tensor([[0.0, -3.0, 1.0, 0.0]] * 3)
    assert nn.clip_grad_norm_(ps[:1], 1.5, norm_type=float("inf")) == pytest.approx(3.0)
    assert np.abs(np_(ps[0].grad)).max() == pytest.approx(1.5, rel=1e-5)
    assert nn.clip_grad_norm_([nn.Parameter(tl.zeros(2))], 1.0) == 0.0
    # a single tensor is accepted as PyTorch does
    one = nn.Parameter(tl.zeros(3))
    one.grad = tl.tensor([3.0, 0.0, 4.0])
    assert nn.clip_grad_norm_(one, 1.0) == pytest.approx(5.0)
    np.testing.assert_allclose(np_(one.grad), [0.6, 0.0, 0.8], rtol=1e-5)


# ---- functional ops by finite differences (float64, numpy provider) ------------------------------
def _leaf(rng, *shape, lo=-2.0, hi=2.0):
    return t64(rng.uniform(lo, hi, shape), requires_grad=True)


def test_gradcheck_linear(rng):
    assert gradcheck(F.linear, [_leaf(rng, 3, 4), _leaf(rng, 2, 4), _leaf(rng, 2)])
    assert gradcheck(lambda x, w: F.linear(x, w), [_leaf(rng, 2, 3, 4), _leaf(rng, 5, 4)])


@pytest.mark.parametrize("fn", [F.softmax, F.log_softmax])
def test_gradcheck_softmaxes(rng, fn):
    assert gradcheck(lambda x: fn(x, -1), [_leaf(rng, 3, 5)])
    assert gradcheck(lambda x: fn(x, 0), [_leaf(rng, 4, 3)])


def test_gradcheck_layer_norm(rng):
    assert gradcheck(lambda x, w, b: F.layer_norm(x, 5, w, b),
                     [_leaf(rng, 2, 3, 5), _leaf(rng, 5), _leaf(rng, 5)])
    assert gradcheck(lambda x: F.layer_norm(x, (2, 3)), [_leaf(rng, 4, 2, 3)])


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gradcheck_gelu(rng, approximate):
    assert gradcheck(lambda x: F.gelu(x, approximate), [_leaf(rng, 4, 6, lo=-4, hi=4)])


def test_gradcheck_relu_away_from_kink(rng):
    a = rng.uniform(0.1, 2, (3, 4)) * rng.choice([-1, 1], (3, 4))
    assert gradcheck(F.relu, [t64(a, requires_grad=True)])


def test_gradcheck_dropout_with_fixed_generator(rng):
    def fn(x):
        return F.dropout(x, 0.4, training=True, generator=tl.Generator(7))
    assert gradcheck(fn, [_leaf(rng, 5, 6)])


def test_gradcheck_embedding(rng):
    idx = tl.tensor([[0, 2, 2], [4, 0, 1]])
    assert gradcheck(lambda w: F.embedding(idx, w), [_leaf(rng, 5, 3)])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gradcheck_cross_entropy(rng, reduction):
    t = tl.tensor([1, -100, 4, 0, 4])
    assert gradcheck(lambda x: F.cross_entropy(x, t, reduction=reduction), [_leaf(rng, 5, 6)])
    assert gradcheck(lambda x: F.cross_entropy(x, t, reduction=reduction, label_smoothing=0.2),
                     [_leaf(rng, 5, 6)])


def test_cross_entropy_value_and_class_dim_second(rng):
    x = rng.standard_normal((2, 4, 3))  # (N, C, d1)
    t = np.array([[0, 3, 1], [2, 2, -100]])
    got = F.cross_entropy(t64(x), tl.tensor(t), reduction="none")
    logp = x - np.log(np.exp(x).sum(1, keepdims=True))
    expect = np.where(t == -100, 0, -np.take_along_axis(logp, np.maximum(t, 0)[:, None], 1)[:, 0])
    np.testing.assert_allclose(np_(got), expect, rtol=1e-12)
    assert math.isnan(F.cross_entropy(t64(x[:, :, 0]), tl.tensor([-100, -100])).item())
    with pytest.raises(IndexError):
        F.cross_entropy(t64(x[:, :, 0]), tl.tensor([0, 4]))


def test_gradcheck_nll_and_mse(rng):
    t = tl.tensor([1, 0, -100])
    assert gradcheck(lambda x: F.nll_loss(x, t), [_leaf(rng, 3, 4)])
    y = t64(rng.standard_normal((3, 4)))
    assert gradcheck(lambda x: F.mse_loss(x, y), [_leaf(rng, 3, 4)])


@pytest.mark.parametrize("causal", [False, True])
def test_gradcheck_scaled_dot_product_attention(rng, causal):
    mask = np.ones((2, 1, 1, 4), dtype=bool)
    mask[1, ..., 3] = False
    q, k, v = (_leaf(rng, 2, 2, 4, 3) for _ in range(3))
    fn = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=tl.tensor(mask),  # noqa: E731
                                                        is_causal=causal)
    assert gradcheck(fn, [q, k, v])
    # and the value: softmax(q k^T / sqrt(d) + mask) v
    Q, K, V = np_(q), np_(k), np_(v)
    s = Q @ K.transpose(0, 1, 3, 2) / math.sqrt(3)
    allowed = np.broadcast_to(mask, s.shape)
    if causal:
        allowed = allowed & np.tril(np.ones((4, 4), dtype=bool))
    expect = np_softmax_masked(s, allowed) @ V
    np.testing.assert_allclose(np_(fn(q, k, v)), expect, rtol=1e-10, atol=1e-12)
    assert gradcheck(lambda q, k: F.attention_probs(q, k, tl.tensor(mask), causal), [q, k])


def np_softmax_masked(s, allowed):
    s = np.where(allowed, s, -np.inf)
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_sdpa_fully_masked_row_gives_zeros(rng):
    q, k, v = (t64(rng.standard_normal((1, 1, 3, 2)), requires_grad=True) for _ in range(3))
    mask = tl.tensor(np.array([[True, True, False], [False, False, False], [True, False, True]]))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert np.isfinite(np_(out)).all() and not np_(out)[0, 0, 1].any()
    out.sum().backward()
    assert np.isfinite(np_(q.grad)).all() and not np_(q.grad)[0, 0, 1].any()
    p = np_(F.attention_probs(q, k, mask))
    assert not p[0, 0, 1].any() and np.isfinite(p).all()


def test_gradcheck_pad_and_one_hot(rng):
    assert gradcheck(lambda x: F.pad(x, (1, 2, 0, 1), value=3.0), [_leaf(rng, 2, 3)])
    out = np_(F.pad(t64(np.ones((2, 3))), (1, 2)))
    assert out.shape == (2, 6) and out[:, 0].sum() == 0 and out[:, 1:4].min() == 1
    oh = F.one_hot(tl.tensor([2, 0, 1]), 4)
    np.testing.assert_array_equal(np_(oh), np.eye(4, dtype=np.int64)[[2, 0, 1]])
    assert F.one_hot(tl.tensor([[3]])).shape == (1, 1, 4)
    with pytest.raises(IndexError):
        F.one_hot(tl.tensor([4]), 3)


def test_register_buffer_over_plain_attribute_and_tensor_into_parameter_slot():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.mask = None
            self.register_buffer("mask", tl.ones(2))
            self.lin = nn.Linear(2, 2)
    m = M()
    assert m.mask is not None and "mask" in dict(m.named_buffers())
    with pytest.raises(TypeError, match="nn.Parameter"):
        m.lin.weight = tl.zeros(2, 2)
    assert "weight" in dict(m.lin.named_parameters())
    m.lin.weight = nn.Parameter(tl.zeros(2, 2))
    assert not np_(dict(m.named_parameters())["lin.weight"]).any()
    m.lin.bias = None
    assert [n for n, _ in m.named_parameters()] == ["lin.weight"]
