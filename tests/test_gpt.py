"""The GPT proof: tensorlite's GPT against the independent NumPy reference (tensorlite/reference/gpt.py,
float64, hand-written backward), finite differences on the whole model, agreement between
fused-op providers, overfitting a batch, dropout, the KV cache and sampling, and the
BERT-style encoder."""
import numpy as np
import pytest

from tensorlite.reference import gpt as ref
import tensorlite as tl
from tensorlite import nn, optim
from tensorlite.autograd import gradcheck
from tensorlite.models import GPT, GPTConfig, Encoder, EncoderConfig, sample_next
from tensorlite.models import gpt as gpt_module

from _nn_helpers import kernels, np_, numpy_kernels, require_provider  # noqa: F401

SMALL = dict(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16)
TINY = dict(vocab_size=7, block_size=4, n_layer=1, n_head=2, n_embd=4)


def ref_params(cfg, seed=0):
    """Reference parameters, with the LayerNorms and biases moved off their (1, 0) init so
    that every gradient is exercised with non-trivial values."""
    P = ref.init_params(cfg, seed)
    rng = np.random.default_rng(seed + 100)
    for k, v in P.items():
        if ".ln_" in k or k.endswith(".bias"):
            P[k] = v + 0.1 * rng.standard_normal(v.shape)
    return P


def gpt_from(P, cfg, dtype=tl.float64):
    model = GPT(GPTConfig(**cfg)).to(dtype)
    res = model.load_state_dict({k: tl.tensor(v) for k, v in P.items()}, strict=False)
    # the reference has no lm_head: it is the same tensor as wte, so it is loaded through it
    assert res.missing_keys == ["lm_head.weight"] and res.unexpected_keys == []
    assert model.lm_head.weight is model.transformer.wte.weight
    return model


def batch(cfg, B=3, T=None, seed=0, ignore=True):
    rng = np.random.default_rng(seed)
    T = cfg["block_size"] - 1 if T is None else T  # T < block_size: unused wpe rows get 0 grad
    idx = rng.integers(0, cfg["vocab_size"], (B, T))
    targets = rng.integers(0, cfg["vocab_size"], (B, T))
    if ignore:
        targets[0, :2] = -100  # left out of the loss (and of the mean's count)
        targets[2, -1] = -100
    return idx, targets


def grads_of(model):
    return {n: np_(p.grad).astype(np.float64) for n, p in model.named_parameters()}


def max_rel_diff(got, expect):
    """max over tensors of max|got - expect| / max|expect| (relative to each tensor's scale)."""
    return max(float(np.abs(got[k] - expect[k]).max() / max(np.abs(expect[k]).max(), 1e-300))
               for k in expect)


# ---- against the reference GPT --------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("provider", ["numpy", "cpp"])
def test_loss_and_every_gradient_match_reference(provider, bias):
    require_provider(provider)
    cfg = dict(SMALL, bias=bias)
    P = ref_params(cfg)
    idx, targets = batch(cfg)
    r_logits, r_loss, cache = ref.forward(P, idx, targets, cfg)
    r_grads = ref.backward(P, cache, cfg)

    model = gpt_from(P, cfg)
    with kernels(provider):
        logits, loss = model(tl.tensor(idx), tl.tensor(targets))
        loss.backward()
    grads = grads_of(model)
    assert set(grads) == set(r_grads)  # every parameter has a gradient, lm_head through wte
    loss_rel = abs(loss.item() - r_loss) / abs(r_loss)
    logit_rel = np.abs(np_(logits) - r_logits).max() / np.abs(r_logits).max()
    grad_rel = max_rel_diff(grads, r_grads)
    print(f"\n[{provider}, bias={bias}] vs reference_gpt: loss rel diff {loss_rel:.3g}, "
          f"logits {logit_rel:.3g}, max gradient rel diff {grad_rel:.3g}")
    assert loss_rel < 1e-6 and logit_rel < 1e-6 and grad_rel < 1e-6
    assert not grads["transformer.wpe.weight"][cfg["block_size"] - 1].any()


def test_all_targets_of_a_row_ignored_match_reference():
    cfg = dict(SMALL, bias=True)
    P = ref_params(cfg, seed=3)
    idx, targets = batch(cfg, seed=3)
    targets[1] = -100
    _, r_loss, cache = ref.forward(P, idx, targets, cfg)
    r_grads = ref.backward(P, cache, cfg)
    model = gpt_from(P, cfg)
    _, loss = model(tl.tensor(idx), tl.tensor(targets))
    loss.backward()
    assert abs(loss.item() - r_loss) < 1e-12 * abs(r_loss)
    assert max_rel_diff(grads_of(model), r_grads) < 1e-6


def test_state_dict_keys_follow_nanogpt():
    for bias in (True, False):
        cfg = dict(SMALL, bias=bias)
        sd = GPT(GPTConfig(**cfg)).state_dict()
        shapes = ref.param_shapes(cfg)
        assert list(sd) == list(shapes) + ["lm_head.weight"]
        for k, s in shapes.items():
            assert sd[k].shape == s, k
    sd = GPT(GPTConfig(**SMALL)).state_dict()
    expected_block = ["ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
                      "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
                      "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"]
    assert list(sd) == (["transformer.wte.weight", "transformer.wpe.weight"]
                        + [f"transformer.h.{i}.{n}" for i in range(2) for n in expected_block]
                        + ["transformer.ln_f.weight", "transformer.ln_f.bias", "lm_head.weight"])


def test_tied_lm_head_counted_once():
    cfg = dict(SMALL)
    model = GPT(GPTConfig(**cfg))
    n = sum(int(np.prod(s)) for s in ref.param_shapes(cfg).values())
    assert model.num_parameters() == n
    assert model.num_parameters(non_embedding=True) == n - 8 * 16
    assert "lm_head.weight" not in dict(model.named_parameters())
    assert len(list(model.parameters())) == len(ref.param_shapes(cfg))


def test_gpt2_init_statistics():
    tl.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=32, n_layer=2, n_head=2, n_embd=64))
    for n, p in model.named_parameters():
        a = np_(p)
        if n.endswith("c_proj.weight"):
            assert abs(a.std() - 0.02 / 2) < 0.002, n
        elif ".ln_" in n:
            assert np.all(a == (1 if n.endswith("weight") else 0)), n
        elif n.endswith(".bias"):
            assert not a.any(), n
        else:
            assert abs(a.std() - 0.02) < 0.002, n


def test_gradcheck_whole_gpt():
    cfg = dict(TINY, bias=True)
    model = gpt_from(ref_params(cfg, seed=1), cfg)
    idx, targets = batch(cfg, B=2, T=4, seed=1, ignore=False)
    targets[1, 0] = -100
    idx, targets = tl.tensor(idx), tl.tensor(targets)
    params = list(model.parameters())
    assert gradcheck(lambda *ps: model(idx, targets)[1], params, max_entries=3, seed=0)
    # and through the logits (every output position, not only the loss)
    assert gradcheck(lambda *ps: model(idx)[0], params, max_entries=2, seed=1)


@pytest.mark.parametrize("provider", ["cpp", "triton"])
def test_providers_agree_on_loss_and_gradients(provider):
    require_provider(provider)
    cfg = dict(SMALL, bias=True)
    P = ref_params(cfg, seed=2)
    idx, targets = batch(cfg, seed=2)
    out = {}
    for name in ("numpy", provider):
        model = gpt_from(P, cfg, dtype=tl.float32)
        with kernels(name):
            logits, loss = model(tl.tensor(idx), tl.tensor(targets))
            loss.backward()
        out[name] = (loss.item(), np_(logits), grads_of(model))
    (l0, lg0, g0), (l1, lg1, g1) = out["numpy"], out[provider]
    assert abs(l0 - l1) < 1e-5 * abs(l0)
    np.testing.assert_allclose(lg1, lg0, rtol=1e-4, atol=1e-5)
    rel = max_rel_diff(g1, g0)
    print(f"\n[{provider} vs numpy, float32] max gradient rel diff {rel:.3g}")
    assert rel < 1e-4


# ---- training -----------------------------------------------------------------------------------
def test_overfits_one_batch():
    tl.manual_seed(0)
    cfg = GPTConfig(vocab_size=16, block_size=8, n_layer=1, n_head=2, n_embd=32)
    model = GPT(cfg)
    rng = np.random.default_rng(0)
    data = rng.integers(0, 16, (4, 9))
    x, y = tl.tensor(data[:, :-1]), tl.tensor(data[:, 1:])
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    opt = optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
                      lr=1e-2)
    losses = []
    for step in range(300):
        _, loss = model(x, y)
        losses.append(loss.item())
        if losses[-1] < 0.05:
            break
        opt.zero_grad()
        loss.backward()
        optim.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    print(f"\noverfit: loss {losses[0]:.3f} -> {losses[-1]:.4f} in {len(losses) - 1} steps")
    assert losses[0] > 2.0 and losses[-1] < 0.05


@pytest.mark.filterwarnings("ignore:scaled_dot_product_attention")  # attention dropout: unfused path
def test_dropout_train_vs_eval_and_seeding():
    tl.manual_seed(0)
    model = GPT(GPTConfig(**SMALL, dropout=0.2))
    idx = tl.tensor(batch(SMALL)[0])
    model.eval()
    e1, e2 = np_(model(idx)[0]), np_(model(idx)[0])
    np.testing.assert_array_equal(e1, e2)
    model.train()
    tl.manual_seed(7)
    t1 = np_(model(idx)[0])
    tl.manual_seed(7)
    t2 = np_(model(idx)[0])
    t3 = np_(model(idx)[0])
    assert not np.allclose(t1, e1)
    np.testing.assert_array_equal(t1, t2)
    assert not np.array_equal(t2, t3)
    # and it trains: gradients flow through the dropout masks
    tl.manual_seed(7)
    _, loss = model(idx, tl.tensor(batch(SMALL)[1]))
    loss.backward()
    assert all(np.isfinite(np_(p.grad)).all() for p in model.parameters())


# ---- the KV cache and sampling -------------------------------------------------------------------
@pytest.fixture
def small_model():
    cfg = dict(SMALL, bias=True)
    return gpt_from(ref_params(cfg, seed=4), cfg).eval()


def test_incremental_logits_equal_full_recompute(small_model):
    model = small_model
    bs = SMALL["block_size"]
    idx = tl.tensor(np.random.default_rng(5).integers(0, 13, (2, bs)))
    full = np_(model(idx)[0])
    # token by token
    cache = nn.KVCache(SMALL["n_layer"])
    for t in range(bs):
        step = np_(model(idx[:, t:t + 1], kv_cache=cache)[0])
        np.testing.assert_allclose(step[:, 0], full[:, t], rtol=1e-10, atol=1e-12, err_msg=f"t={t}")
    assert cache.pos == bs
    with pytest.raises(ValueError, match="block_size"):
        model(idx[:, :1], kv_cache=cache)
    # a prefill of three, then chunks of one and four
    cache = nn.KVCache(SMALL["n_layer"])
    parts = [np_(model(idx[:, a:b], kv_cache=cache)[0]) for a, b in ((0, 3), (3, 4), (4, 8))]
    np.testing.assert_allclose(np.concatenate(parts, 1), full, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("prompt_len", [3, 10])
def test_generate_with_cache_equals_full_recompute_every_step(small_model, monkeypatch, prompt_len):
    """Record the logits generate() samples from at each step (with the KV cache, and past
    block_size), and recompute each from scratch on the last block_size tokens."""
    model = small_model
    bs = SMALL["block_size"]
    seen = []
    real = gpt_module.sample_next

    def recording(logits, *a, **kw):
        seen.append(np.array(logits))
        return real(logits, *a, **kw)
    monkeypatch.setattr(gpt_module, "sample_next", recording)
    prompt = np.random.default_rng(6).integers(0, 13, (2, prompt_len))
    n_new = 2 * bs
    out = np_(model.generate(tl.tensor(prompt), n_new, temperature=1.0, generator=tl.Generator(3)))
    assert out.shape == (2, prompt_len + n_new) and len(seen) == n_new
    np.testing.assert_array_equal(out[:, :prompt_len], prompt)
    for s in range(n_new):
        L = prompt_len + s
        ctx = tl.tensor(out[:, max(0, L - bs):L])
        expect = np_(model(ctx)[0])[:, -1]
        np.testing.assert_allclose(seen[s], expect, rtol=1e-10, atol=1e-12, err_msg=f"step {s}")
    # the uncached path samples the same tokens from the same generator state
    nocache = np_(model.generate(tl.tensor(prompt), n_new, temperature=1.0, use_cache=False,
                                 generator=tl.Generator(3)))
    np.testing.assert_array_equal(nocache, out)


def test_greedy_generate_is_argmax_decoding(small_model):
    model = small_model
    prompt = np.random.default_rng(8).integers(0, 13, (2, 2))
    got = np_(model.generate(tl.tensor(prompt), 10, temperature=0))
    seq = prompt
    for _ in range(10):
        logits = np_(model(tl.tensor(seq[:, -SMALL["block_size"]:]))[0])[:, -1]
        seq = np.concatenate([seq, logits.argmax(-1)[:, None]], 1)
    np.testing.assert_array_equal(got, seq)
    np.testing.assert_array_equal(np_(model.generate(tl.tensor(prompt), 10, top_k=1)), seq)


def test_generate_streams_restores_mode_and_is_seeded(small_model):
    model = small_model.train()
    streamed = []
    a = np_(model.generate(tl.tensor([[1, 2]]), 5, generator=tl.Generator(0), stream=streamed.append))
    assert model.training
    np.testing.assert_array_equal(np.concatenate(streamed), a[0, 2:])
    b = np_(model.generate(tl.tensor([[1, 2]]), 5, generator=tl.Generator(0)))
    np.testing.assert_array_equal(a, b)


def test_top_k_and_top_p_restrict_the_sampled_set():
    rng = np.random.default_rng(0)
    n = 4000
    logits = np.log(np.array([0.05, 0.4, 0.1, 0.25, 0.2]))
    rows = np.tile(logits, (n, 1))
    # top_k=3 keeps tokens 1, 3, 4, renormalised
    s = sample_next(rows, 1.0, top_k=3, rng=rng)
    assert set(np.unique(s)) == {1, 3, 4}
    np.testing.assert_allclose(np.bincount(s, minlength=5)[[1, 3, 4]] / n, np.array([.4, .25, .2]) / .85,
                               atol=0.03)
    # top_p=0.6: the smallest set reaching 0.6 is {1, 3} (0.4 + 0.25)
    s = sample_next(rows, 1.0, top_p=0.6, rng=rng)
    assert set(np.unique(s)) == {1, 3}
    np.testing.assert_allclose(np.bincount(s, minlength=5)[1] / n, .4 / .65, atol=0.03)
    # both: top_k first, then the nucleus of what is left
    s = sample_next(rows, 1.0, top_k=2, top_p=0.99, rng=rng)
    assert set(np.unique(s)) == {1, 3}
    # plain sampling follows softmax(logits / temperature)
    s = sample_next(rows, 0.5, rng=rng)
    p = np.array([0.05, 0.4, 0.1, 0.25, 0.2]) ** 2
    np.testing.assert_allclose(np.bincount(s, minlength=5) / n, p / p.sum(), atol=0.03)
    np.testing.assert_array_equal(sample_next(rows[:3], 0), [1, 1, 1])


def test_generate_with_top_k_stays_in_top_k(small_model, monkeypatch):
    model = small_model
    seen, chosen = [], []
    real = gpt_module.sample_next

    def recording(logits, *a, **kw):
        tok = real(logits, *a, **kw)
        seen.append(np.array(logits))
        chosen.append(tok)
        return tok
    monkeypatch.setattr(gpt_module, "sample_next", recording)
    model.generate(tl.tensor(np.zeros((4, 1), dtype=np.int64)), 12, temperature=2.0, top_k=3,
                   generator=tl.Generator(1))
    for logits, tok in zip(seen, chosen):
        top3 = np.argsort(-logits, -1)[:, :3]
        assert all(t in row for t, row in zip(tok, top3))


# ---- model surgery and facts ---------------------------------------------------------------------
def test_crop_block_size(small_model):
    model = small_model
    idx = tl.tensor(np.random.default_rng(9).integers(0, 13, (2, 4)))
    before = np_(model(idx)[0])
    wpe = np_(model.transformer.wpe.weight)
    model.crop_block_size(4)
    assert model.config.block_size == 4 and model.transformer.wpe.weight.shape == (4, 16)
    np.testing.assert_array_equal(np_(model.transformer.wpe.weight), wpe[:4])
    np.testing.assert_array_equal(np_(model(idx)[0]), before)
    with pytest.raises(ValueError, match="block_size"):
        model(tl.tensor(np.zeros((1, 5), dtype=np.int64)))
    with pytest.raises(ValueError, match="larger"):
        model.crop_block_size(8)
    assert model.generate(idx, 6, temperature=0).shape == (2, 10)  # slides over the 4 positions


def test_crop_block_size_leaves_models_sharing_the_config_alone():
    cfg = GPTConfig(**SMALL)
    a, b = GPT(cfg), GPT(cfg)
    a.crop_block_size(4)
    assert a.config.block_size == 4 and b.config.block_size == 8 and cfg.block_size == 8
    b(tl.tensor(np.zeros((1, 8), dtype=np.int64)))  # still takes its full context


def test_flops_per_token():
    cfg = dict(SMALL)
    model = GPT(GPTConfig(**cfg))
    n = sum(int(np.prod(s)) for s in ref.param_shapes(cfg).values()) - 8 * 16  # minus wpe
    L, C, T = cfg["n_layer"], cfg["n_embd"], cfg["block_size"]
    assert model.flops_per_token() == 6 * n + 12 * L * C * T
    assert model.flops_per_token(T=4) == 6 * n + 12 * L * C * 4
    # GPT-2 small (124M): about 6 * 85M + attention, the figure nanoGPT's MFU estimate uses
    big = GPTConfig(vocab_size=50304, block_size=1024, n_layer=12, n_head=12, n_embd=768)
    n_big = (50304 * 768 + 12 * (12 * 768 * 768 + 13 * 768) + 2 * 768)
    fpt = 6 * n_big + 12 * 12 * 768 * 1024
    assert 7.0e8 < fpt < 9.0e8
    assert GPT.flops_per_token.__doc__


def test_config_roundtrip_and_errors():
    cfg = GPTConfig(**SMALL, dropout=0.1, bias=False)
    assert GPTConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        GPTConfig.from_dict(dict(SMALL, n_embed=3))
    with pytest.raises(ValueError, match="divisible"):
        GPT(GPTConfig(**dict(SMALL, n_head=3)))
    model = GPT(GPTConfig(**SMALL))
    logits, loss = model(tl.tensor(np.zeros((2, 5), dtype=np.int64)))
    assert logits.shape == (2, 5, 13) and loss is None
    with pytest.raises(ValueError, match="block_size"):
        model(tl.tensor(np.zeros((1, 9), dtype=np.int64)))


# ---- the BERT-style encoder ----------------------------------------------------------------------
ENC = dict(vocab_size=11, block_size=6, n_layer=2, n_head=2, n_embd=8)


@pytest.mark.parametrize("prenorm", [True, False], ids=["preLN", "postLN"])
def test_encoder_padding_does_not_leak(prenorm):
    tl.manual_seed(0)
    enc = Encoder(EncoderConfig(**ENC, prenorm=prenorm)).double().eval()
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 11, (2, 6))
    mask = np.ones((2, 6), dtype=np.int64)
    mask[1, 4:] = 0
    h1 = np_(enc(tl.tensor(idx), tl.tensor(mask))[0])
    idx2 = idx.copy()
    idx2[1, 4:] = (idx2[1, 4:] + 3) % 11  # different tokens under the padding
    h2 = np_(enc(tl.tensor(idx2), tl.tensor(mask))[0])
    np.testing.assert_allclose(h2[1, :4], h1[1, :4], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(h2[0], h1[0])
    # the padded row's real tokens equal the sequence run alone, unpadded
    alone = np_(enc(tl.tensor(idx[1:, :4]))[0])
    np.testing.assert_allclose(h1[1, :4], alone[0], rtol=1e-10, atol=1e-12)
    # bidirectional: an early token sees a later one
    idx3 = idx.copy()
    idx3[0, 5] = (idx3[0, 5] + 1) % 11
    h3 = np_(enc(tl.tensor(idx3), tl.tensor(mask))[0])
    assert not np.allclose(h3[0, 0], h1[0, 0])


@pytest.mark.parametrize("prenorm", [True, False], ids=["preLN", "postLN"])
def test_encoder_runs_and_backprops(prenorm):
    tl.manual_seed(1)
    enc = Encoder(EncoderConfig(**ENC, prenorm=prenorm))
    names = list(enc.state_dict())
    assert ("transformer.ln_f.weight" in names) == prenorm and "transformer.ln_e.weight" in names
    assert enc.lm_head.weight is enc.transformer.wte.weight
    idx = tl.tensor(np.random.default_rng(1).integers(0, 11, (2, 6)))
    targets = np.full((2, 6), -100)
    targets[0, 1], targets[1, 3] = 4, 7  # masked-LM: only some positions are scored
    mask = tl.tensor(np.array([[1] * 6, [1] * 5 + [0]]))
    hidden, logits, loss = enc(idx, mask, tl.tensor(targets))
    assert hidden.shape == (2, 6, 8) and logits.shape == (2, 6, 11) and np.isfinite(loss.item())
    loss.backward()
    for n, p in enc.named_parameters():
        assert p.grad is not None and np.isfinite(np_(p.grad)).all(), n
        assert np_(p.grad).any(), n
    assert enc(idx)[1] is None
    with pytest.raises(ValueError, match="block_size"):
        enc(tl.tensor(np.zeros((1, 7), dtype=np.int64)))


def test_gradcheck_encoder():
    tl.manual_seed(2)
    enc = Encoder(EncoderConfig(vocab_size=5, block_size=3, n_layer=1, n_head=2, n_embd=4)).double()
    idx = tl.tensor(np.array([[1, 2, 4], [0, 3, 3]]))
    mask = tl.tensor(np.array([[1, 1, 1], [1, 1, 0]]))
    assert gradcheck(lambda *ps: enc(idx, mask)[0], list(enc.parameters()), max_entries=2)


@pytest.mark.parametrize("provider", ["numpy", "triton"])
def test_gpt_on_emulated_cuda_matches_cpu(monkeypatch, provider):
    """TENSORLITE_EMULATE_CUDA=1 makes 'cuda' a NumPy-backed device: the whole cuda code path
    (moving the model, fused ops on cuda tensors, the optimizer, generate) runs on the CPU."""
    require_provider(provider)
    monkeypatch.setenv("TENSORLITE_EMULATE_CUDA", "1")
    cfg = dict(TINY, bias=True)  # small: the triton interpreter is slow
    P = ref_params(cfg, seed=5)
    idx, targets = batch(cfg, seed=5)
    cpu = gpt_from(P, cfg, dtype=tl.float32)
    _, loss = cpu(tl.tensor(idx), tl.tensor(targets))
    loss.backward()
    gpu = gpt_from(P, cfg, dtype=tl.float32).to("cuda")
    assert all(p.device.type == "cuda" for p in gpu.parameters())
    with kernels(provider):
        _, loss_c = gpu(tl.tensor(idx, device="cuda"), tl.tensor(targets, device="cuda"))
        loss_c.backward()
        assert gpu.transformer.wte.weight.grad.device.type == "cuda"
        assert abs(loss_c.item() - loss.item()) < 1e-5 * abs(loss.item())
        assert max_rel_diff(grads_of(gpu), grads_of(cpu)) < 1e-4
        optim.AdamW(gpu.parameters(), lr=1e-3).step()
        out = gpu.generate(tl.tensor(idx[:, :2], device="cuda"), 3, temperature=0)
    assert out.device.type == "cuda" and out.shape == (3, 5)
