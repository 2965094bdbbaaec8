"""Checks on the NumPy reference GPT (tensorlite/reference/gpt.py) itself.

tensorlite's GPT is judged against the reference, so the reference has to be
right on its own terms. Two independent checks:

* its hand-written backward against central finite differences of its own
  forward (this proves backward matches forward, whatever forward computes);
* when torch is installed, its loss and gradients against the same model
  written with torch's functional ops and autograd (this proves forward is
  the GPT-2 architecture: q|k|v order, head layout, weight orientation, tied
  lm_head, ignore_index semantics).
"""

import math

import numpy as np
import pytest

from tensorlite.reference import gpt as ref

# T (the batch's sequence length) is one shorter than block_size so the test
# also sees that the unused rows of wpe get exactly zero gradient.
TINY = dict(vocab_size=11, block_size=6, n_layer=2, n_head=2, n_embd=8)
B, T = 2, 5


def make_config(bias):
    return dict(TINY, bias=bias)


def random_params(config, seed):
    """Parameters far from GPT-2's init: larger weights, non-zero biases, LN
    weights away from 1. At the real init most of the network is nearly
    linear and every bias is zero, which would let some wrong gradients hide."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in ref.param_shapes(config).items():
        if ".ln_" in name and name.endswith(".weight"):
            params[name] = 1.0 + 0.3 * rng.standard_normal(shape)
        else:
            params[name] = 0.4 * rng.standard_normal(shape)
    return params


def make_batch(seed, with_ignored):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, TINY["vocab_size"], size=(B, T))
    idx[1, 3] = idx[0, 1]  # a repeated token: its two wte gradient rows must add up
    targets = rng.integers(0, TINY["vocab_size"], size=(B, T))
    if with_ignored:
        targets[0, 0] = targets[1, 2] = targets[1, 4] = ref.IGNORE_INDEX
    return idx, targets


def loss_of(params, idx, targets, config):
    return ref.forward(params, idx, targets, config)[1]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("with_ignored", [False, True])
def test_gradients_match_finite_differences(bias, with_ignored):
    config = make_config(bias)
    params = random_params(config, seed=1)
    idx, targets = make_batch(seed=2, with_ignored=with_ignored)
    _, _, cache = ref.forward(params, idx, targets, config)
    grads = ref.backward(params, cache, config)
    assert list(grads) == list(params)

    rng = np.random.default_rng(3)
    h = 1e-5
    checked = 0
    for name, p in params.items():
        flat = p.reshape(-1)  # a view: writing flat[i] perturbs params[name]
        # A few random entries per parameter keeps this fast; the union over
        # all parameters still touches every layer's every gradient formula.
        picks = rng.choice(flat.size, size=min(6, flat.size), replace=False)
        if name == "transformer.wte.weight":
            picks = np.append(picks, idx[0, 1] * TINY["n_embd"])  # the repeated token's row
        for i in picks:
            old = flat[i]
            flat[i] = old + h
            up = loss_of(params, idx, targets, config)
            flat[i] = old - h
            down = loss_of(params, idx, targets, config)
            flat[i] = old
            numeric = (up - down) / (2 * h)
            analytic = grads[name].reshape(-1)[i]
            # Central differences in float64 are good to ~1e-10 here; a wrong
            # formula is off by far more than this.
            assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-8), (name, i)
            checked += 1
    assert checked >= 6 * len(params)


def test_unused_positions_get_zero_wpe_gradient():
    config = make_config(True)
    params = random_params(config, seed=4)
    idx, targets = make_batch(seed=5, with_ignored=False)
    _, _, cache = ref.forward(params, idx, targets, config)
    dwpe = ref.backward(params, cache, config)["transformer.wpe.weight"]
    assert np.all(dwpe[T:] == 0.0)
    assert np.all(np.abs(dwpe[:T]).sum(axis=1) > 0)


def test_bias_false_has_no_bias_parameters():
    with_bias = ref.param_shapes(make_config(True))
    without = ref.param_shapes(make_config(False))
    assert not any(name.endswith(".bias") for name in without)
    assert set(without) == {n for n in with_bias if not n.endswith(".bias")}
    # nanoGPT's key count: 2 embeddings + 12 per block + 2 for ln_f (with bias).
    assert len(with_bias) == 2 + 12 * TINY["n_layer"] + 2


def test_ignored_positions_do_not_count():
    """With ignore_index the loss is the mean over the kept positions only:
    changing the target at an ignored position changes nothing, and the loss
    equals the mean of per-position losses computed by hand."""
    config = make_config(True)
    params = random_params(config, seed=6)
    idx, targets = make_batch(seed=7, with_ignored=True)
    logits, loss, _ = ref.forward(params, idx, targets, config)
    keep = targets != ref.IGNORE_INDEX
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    per_pos = -np.take_along_axis(logp, np.where(keep, targets, 0)[..., None], -1)[..., 0]
    assert loss == pytest.approx(per_pos[keep].mean(), rel=1e-12)

    with pytest.raises(ValueError, match="ignore_index"):
        ref.forward(params, idx, np.full_like(targets, ref.IGNORE_INDEX), config)


def test_attention_is_causal():
    """The logits at position t must not depend on tokens after t."""
    config = make_config(True)
    params = random_params(config, seed=8)
    idx, _ = make_batch(seed=9, with_ignored=False)
    logits, _, _ = ref.forward(params, idx, None, config)
    changed = idx.copy()
    changed[:, 3] = (changed[:, 3] + 1) % TINY["vocab_size"]
    logits2, _, _ = ref.forward(params, changed, None, config)
    np.testing.assert_array_equal(logits[:, :3], logits2[:, :3])
    assert not np.allclose(logits[:, 3:], logits2[:, 3:])


def test_init_statistics():
    config = dict(vocab_size=50, block_size=16, n_layer=4, n_head=4, n_embd=64)
    p = ref.init_params(config, seed=0)
    q = ref.init_params(config, seed=0)
    assert all(np.array_equal(p[k], q[k]) for k in p)
    assert np.all(p["transformer.h.0.ln_1.weight"] == 1.0)
    assert np.all(p["transformer.h.0.ln_1.bias"] == 0.0)
    assert np.all(p["transformer.h.1.mlp.c_fc.bias"] == 0.0)
    assert p["transformer.h.0.mlp.c_fc.weight"].std() == pytest.approx(0.02, rel=0.05)
    resid = 0.02 / math.sqrt(2 * config["n_layer"])
    assert p["transformer.h.2.mlp.c_proj.weight"].std() == pytest.approx(resid, rel=0.05)
    assert p["transformer.h.3.attn.c_proj.weight"].std() == pytest.approx(resid, rel=0.1)
    # At init the model is nearly uniform over the vocabulary.
    # (Random targets: with a tied lm_head, target == input token would be
    # favoured even at init, because x still holds wte[idx].)
    idx, targets = np.random.default_rng(0).integers(0, 50, size=(2, 2, 16))
    _, loss, _ = ref.forward(p, idx, targets, config)
    assert loss == pytest.approx(math.log(50), abs=0.05)


# ---------------------------------------------------------------------------
# Cross-check against torch autograd (skipped where torch is not installed).
# ---------------------------------------------------------------------------

def torch_gpt_loss(tp, idx, targets, config):
    """The same GPT in torch functional ops, written from nanoGPT's model.py."""
    import torch
    import torch.nn.functional as F

    C, nh, L = config["n_embd"], config["n_head"], config["n_layer"]
    T = idx.shape[1]
    g = tp.get
    x = tp["transformer.wte.weight"][idx] + tp["transformer.wpe.weight"][:T]
    for i in range(L):
        p = f"transformer.h.{i}."
        h = F.layer_norm(x, (C,), tp[p + "ln_1.weight"], g(p + "ln_1.bias"), eps=1e-5)
        q, k, v = F.linear(h, tp[p + "attn.c_attn.weight"], g(p + "attn.c_attn.bias")).split(C, dim=2)
        q, k, v = (a.view(a.shape[0], T, nh, C // nh).transpose(1, 2) for a in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(-1, T, C)
        x = x + F.linear(y, tp[p + "attn.c_proj.weight"], g(p + "attn.c_proj.bias"))
        h = F.layer_norm(x, (C,), tp[p + "ln_2.weight"], g(p + "ln_2.bias"), eps=1e-5)
        h = F.gelu(F.linear(h, tp[p + "mlp.c_fc.weight"], g(p + "mlp.c_fc.bias")), approximate="tanh")
        x = x + F.linear(h, tp[p + "mlp.c_proj.weight"], g(p + "mlp.c_proj.bias"))
    x = F.layer_norm(x, (C,), tp["transformer.ln_f.weight"], g("transformer.ln_f.bias"), eps=1e-5)
    logits = x @ tp["transformer.wte.weight"].T
    return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1), ignore_index=-100)


@pytest.mark.parametrize("bias", [True, False])
def test_matches_torch_autograd(bias):
    torch = pytest.importorskip("torch")
    config = make_config(bias)
    params = random_params(config, seed=10)
    idx, targets = make_batch(seed=11, with_ignored=True)
    _, loss, cache = ref.forward(params, idx, targets, config)
    grads = ref.backward(params, cache, config)

    tp = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    tloss = torch_gpt_loss(tp, torch.tensor(idx), torch.tensor(targets), config)
    tloss.backward()
    assert loss == pytest.approx(tloss.item(), rel=1e-12)
    for name in params:
        np.testing.assert_allclose(grads[name], tp[name].grad.numpy(), rtol=1e-9, atol=1e-12,
                                   err_msg=name)
