"""nn.MultiheadAttention and nn.Transformer (encoder-decoder): PyTorch's semantics.

Without torch: cross-attention against a NumPy softmax(q k^T) v, gradients by gradcheck,
state-dict keys listed by hand (so a torch checkpoint's names are known to match), the
incremental-decoding cache against full recomputation. With torch (an optional oracle):
the same weights in both, outputs and every gradient compared on every provider."""
import importlib
import math

import numpy as np
import pytest

import tensorlite as tl
from tensorlite import nn
from tensorlite.autograd import gradcheck

from _nn_helpers import kernels, np_, np_softmax, numpy_kernels, require_provider  # noqa: F401

PROVIDERS = ["numpy", "cpp", "triton"]
# torch's own advice about its fast paths (nested tensors, mask dtypes): not about us
pytestmark = [pytest.mark.filterwarnings("ignore:enable_nested_tensor is True"),
              pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")]


def t64(a, requires_grad=False):
    return tl.tensor(np.asarray(a, dtype=np.float64), requires_grad=requires_grad)


def np_mha(q, k, v, P, H, kpm=None, attn_mask=None):
    """PyTorch-convention multi-head attention in NumPy, batch-first: q (B, L, E),
    k/v (B, S, E); kpm (B, S) True = pad; attn_mask (L, S) bool True = blocked, or float.
    Returns (output (B, L, E), head-averaged weights (B, L, S))."""
    B, L, E = q.shape
    S, D = k.shape[1], E // H
    W, b = P["in_proj_weight"], P["in_proj_bias"]
    Q, K, V = (x @ W[i * E:(i + 1) * E].T + b[i * E:(i + 1) * E] for i, x in enumerate((q, k, v)))
    out = np.zeros((B, L, E))
    weights = np.zeros((B, L, S))
    for bi in range(B):
        for h in range(H):
            sl = slice(h * D, (h + 1) * D)
            s = Q[bi, :, sl] @ K[bi, :, sl].T / math.sqrt(D)
            if attn_mask is not None:
                s = np.where(attn_mask, -np.inf, s) if attn_mask.dtype == bool else s + attn_mask
            if kpm is not None:
                s = np.where(kpm[bi][None, :], -np.inf, s)
            p = np_softmax(s)
            out[bi, :, sl] = p @ V[bi, :, sl]
            weights[bi] += p / H
    return out @ P["out_proj.weight"].T + P["out_proj.bias"], weights


def _params(m):
    return {k: np_(v) for k, v in m.state_dict().items()}


# ---- state-dict names: what a torch checkpoint holds --------------------------------------
def test_multihead_attention_state_dict_keys():
    assert list(nn.MultiheadAttention(8, 2).state_dict()) == [
        "in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]
    m = nn.MultiheadAttention(8, 2, kdim=4, vdim=6, bias=False)
    assert list(m.state_dict()) == ["q_proj_weight", "k_proj_weight", "v_proj_weight",
                                    "out_proj.weight"]
    assert m.k_proj_weight.shape == (8, 4) and m.v_proj_weight.shape == (8, 6)
    assert nn.MultiheadAttention(8, 2).in_proj_weight.shape == (24, 8)


def test_transformer_state_dict_keys_are_torchs():
    def attn(p):
        return [f"{p}.in_proj_weight", f"{p}.in_proj_bias", f"{p}.out_proj.weight",
                f"{p}.out_proj.bias"]

    def wb(*names):
        return [f"{n}.{s}" for n in names for s in ("weight", "bias")]
    enc, dec = "encoder.layers.0", "decoder.layers.0"
    expect = (attn(f"{enc}.self_attn") + wb(f"{enc}.linear1", f"{enc}.linear2", f"{enc}.norm1",
                                            f"{enc}.norm2") + wb("encoder.norm")
              + attn(f"{dec}.self_attn") + attn(f"{dec}.multihead_attn")
              + wb(f"{dec}.linear1", f"{dec}.linear2", f"{dec}.norm1", f"{dec}.norm2",
                   f"{dec}.norm3") + wb("decoder.norm"))
    m = nn.Transformer(8, 2, 1, 1, 16)
    assert list(m.state_dict()) == expect
    keys = list(nn.Transformer(8, 2, 3, 2, 16).state_dict())
    assert "encoder.layers.2.norm2.bias" in keys and "decoder.layers.1.norm3.weight" in keys
    assert not any(".dropout" in k or "activation" in k for k in keys)


def test_generate_square_subsequent_mask():
    m = nn.Transformer.generate_square_subsequent_mask(4)
    assert m.dtype == tl.float32 and m.shape == (4, 4)
    expect = np.triu(np.full((4, 4), -np.inf), 1)
    np.testing.assert_array_equal(np_(m), expect)


# ---- MultiheadAttention against NumPy ------------------------------------------------------------
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("mask_kind", ["none", "bool", "float"])
def test_cross_attention_matches_numpy(batch_first, mask_kind):
    rng = np.random.default_rng(1)
    B, L, S, E, H = 3, 4, 6, 8, 2
    m = nn.MultiheadAttention(E, H, batch_first=batch_first).double()
    with tl.no_grad():
        m.in_proj_bias.copy_(t64(rng.standard_normal(3 * E) * 0.1))
    P = _params(m)
    q, kv = rng.standard_normal((B, L, E)), rng.standard_normal((B, S, E))
    kpm = np.zeros((B, S), bool)
    kpm[0, 4:] = True
    kpm[2, 0] = True
    attn_mask = None
    if mask_kind == "bool":
        attn_mask = rng.random((L, S)) < 0.3
        attn_mask[:, 1] = False  # every query keeps a key
    elif mask_kind == "float":
        attn_mask = rng.standard_normal((L, S))
    ref, ref_w = np_mha(q, kv, kv, P, H, kpm, attn_mask)
    tq, tkv = (t64(x if batch_first else x.transpose(1, 0, 2)) for x in (q, kv))
    out, w = m(tq, tkv, tkv, key_padding_mask=kpm, attn_mask=attn_mask)
    out = np_(out) if batch_first else np_(out).transpose(1, 0, 2)
    np.testing.assert_allclose(out, ref, atol=1e-12)
    np.testing.assert_allclose(np_(w), ref_w, atol=1e-12)
    _, w_heads = m(tq, tkv, tkv, key_padding_mask=kpm, attn_mask=attn_mask,
                   average_attn_weights=False)
    assert w_heads.shape == (B, H, L, S)
    np.testing.assert_allclose(np_(w_heads).mean(1), ref_w, atol=1e-12)
    assert m(tq, tkv, tkv, need_weights=False)[1] is None


@pytest.mark.parametrize("provider", PROVIDERS)
def test_cross_attention_every_provider(provider):
    _require(provider)
    rng = np.random.default_rng(10)
    B, L, S, E, H = 2, 3, 5, 4, 2
    m = nn.MultiheadAttention(E, H, batch_first=True).double()
    q, kv = rng.standard_normal((B, L, E)), rng.standard_normal((B, S, E))
    kpm = np.array([[False, False, False, True, True], [False] * 5])
    attn_mask = rng.standard_normal((L, S))
    ref, ref_w = np_mha(q, kv, kv, _params(m), H, kpm, attn_mask)
    with kernels(provider):
        out, w = m(t64(q), t64(kv), t64(kv), key_padding_mask=kpm, attn_mask=attn_mask)
    np.testing.assert_allclose(np_(out), ref, atol=1e-12)
    np.testing.assert_allclose(np_(w), ref_w, atol=1e-12)


def test_per_head_3d_mask_and_unbatched_input():
    rng = np.random.default_rng(2)
    B, L, S, E, H = 2, 3, 5, 8, 2
    m = nn.MultiheadAttention(E, H, batch_first=True).double()
    q, kv = t64(rng.standard_normal((B, L, E))), t64(rng.standard_normal((B, S, E)))
    per_head = rng.standard_normal((B * H, L, S))
    out = np_(m(q, kv, kv, attn_mask=per_head)[0])
    # row b * H + h of a (B*H, L, S) mask is batch b, head h: check one batch alone
    for b in range(B):
        one = np_(m(q[b:b + 1], kv[b:b + 1], kv[b:b + 1],
                    attn_mask=per_head[b * H:(b + 1) * H])[0])
        np.testing.assert_allclose(out[b:b + 1], one, atol=1e-12)
    # unbatched (L, E) input is batch 1 without the batch dim
    o1, w1 = m(q[0], kv[0], kv[0])
    o2, _ = m(q[:1], kv[:1], kv[:1])
    assert o1.shape == (L, E) and w1.shape == (L, S)
    np.testing.assert_allclose(np_(o1), np_(o2)[0], atol=1e-12)


def test_fully_masked_query_gives_zeros_not_nan():
    # PyTorch gives NaN for a query that can attend no key; tensorlite gives 0 (out_proj's
    # bias then) and zero gradients
    m = nn.MultiheadAttention(4, 1, batch_first=True).double()
    q = t64(np.ones((1, 2, 4)), requires_grad=True)
    blocked = np.array([[True, True], [False, False]])  # query 0 may attend nothing
    out, w = m(q, q, q, attn_mask=blocked)
    np.testing.assert_allclose(np_(out)[0, 0], np_(m.out_proj.bias), atol=1e-15)
    np.testing.assert_array_equal(np_(w)[0, 0], 0.0)
    out.sum().backward()
    assert np.isfinite(np_(q.grad)).all()


def test_is_causal_hint_equals_the_causal_mask():
    rng = np.random.default_rng(3)
    m = nn.MultiheadAttention(8, 2, batch_first=True).double()
    x = t64(rng.standard_normal((2, 5, 8)))
    causal = nn.Transformer.generate_square_subsequent_mask(5, dtype=tl.float64)
    a = np_(m(x, x, x, attn_mask=causal)[0])
    b = np_(m(x, x, x, attn_mask=causal, is_causal=True)[0])
    c = np_(m(x, x, x, is_causal=True)[0])  # PyTorch would ask for the mask here
    d = np_(m(x, x, x, attn_mask=np.triu(np.ones((5, 5), bool), 1))[0])
    for y in (b, c, d):
        np.testing.assert_allclose(y, a, atol=1e-13)


def test_attention_dropout_uses_the_returned_weights():
    rng = np.random.default_rng(12)
    E, H = 8, 2
    m = nn.MultiheadAttention(E, H, dropout=0.5, batch_first=True).double().train()
    q, kv = t64(rng.standard_normal((2, 3, E))), t64(rng.standard_normal((2, 4, E)))
    tl.manual_seed(0)
    out, w = m(q, kv, kv, average_attn_weights=False)                  # w (B, H, L, S)
    assert (np_(w) == 0).any()  # some probabilities were dropped
    v = np_(kv) @ np_(m.in_proj_weight)[2 * E:].T + np_(m.in_proj_bias)[2 * E:]
    v = v.reshape(2, 4, H, E // H).transpose(0, 2, 1, 3)
    y = (np_(w) @ v).transpose(0, 2, 1, 3).reshape(2, 3, E)
    expect = y @ np_(m.out_proj.weight).T + np_(m.out_proj.bias)
    np.testing.assert_allclose(np_(out), expect, atol=1e-12)
    m.eval()
    assert np.isfinite(np_(m(q, kv, kv)[1])).all()


def test_activation_callable_equals_name():
    rng = np.random.default_rng(13)
    a = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, activation="gelu").double()
    b = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, activation=nn.GELU()).double()
    assert list(a.state_dict()) == list(b.state_dict())
    b.load_state_dict(a.state_dict())
    x = t64(rng.standard_normal((5, 2, 8)))
    np.testing.assert_allclose(np_(a(x)), np_(b(x)), atol=1e-14)


def test_mask_shape_errors_name_the_argument():
    m = nn.MultiheadAttention(8, 2, batch_first=True)
    x = tl.randn(2, 3, 8)
    with pytest.raises(ValueError, match="key_padding_mask must have shape"):
        m(x, x, x, key_padding_mask=np.zeros((2, 4), bool))
    with pytest.raises(ValueError, match="attn_mask must have shape"):
        m(x, x, x, attn_mask=np.zeros((2, 3, 3), bool))
    with pytest.raises(ValueError, match="multiple of num_heads"):
        nn.MultiheadAttention(10, 3)
    with pytest.raises(ValueError, match="activation must be"):
        nn.TransformerEncoderLayer(8, 2, activation="swish")


@pytest.mark.parametrize("mask_kind", ["bool", "float"])
def test_cross_attention_gradcheck(mask_kind):
    rng = np.random.default_rng(4)
    B, L, S, E, H = 2, 3, 4, 4, 2
    m = nn.MultiheadAttention(E, H, batch_first=True).double()
    q = t64(rng.standard_normal((B, L, E)), requires_grad=True)
    kv = t64(rng.standard_normal((B, S, E)), requires_grad=True)
    kpm = np.array([[False, False, True, True], [False, False, False, False]])
    mask = rng.random((L, S)) < 0.3 if mask_kind == "bool" else rng.standard_normal((L, S))
    if mask_kind == "bool":
        mask[:, 0] = False

    def f(q, kv, w_in, b_in, w_out):
        return m(q, kv, kv, key_padding_mask=kpm, attn_mask=mask, need_weights=False)[0]
    assert gradcheck(f, (q, kv, m.in_proj_weight, m.in_proj_bias, m.out_proj.weight))

    def weights(q, kv):
        return m(q, kv, kv, key_padding_mask=kpm, attn_mask=mask)[1]
    assert gradcheck(weights, (q, kv))


def test_decoder_layer_gradcheck_post_and_pre_norm():
    rng = np.random.default_rng(5)
    for norm_first in (False, True):
        layer = nn.TransformerDecoderLayer(4, 2, 8, dropout=0.0, batch_first=True,
                                           norm_first=norm_first).double()
        tgt = t64(rng.standard_normal((2, 3, 4)), requires_grad=True)
        mem = t64(rng.standard_normal((2, 4, 4)), requires_grad=True)
        mkpm = np.array([[False, False, False, True], [False] * 4])

        def f(tgt, mem, layer=layer, mkpm=mkpm):
            return layer(tgt, mem, memory_key_padding_mask=mkpm, tgt_is_causal=True)
        assert gradcheck(f, (tgt, mem))


# ---- incremental decoding ---------------------------------------------------------------------
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("batch_first", [True, False])
def test_decoder_cache_equals_full_recomputation(norm_first, batch_first):
    rng = np.random.default_rng(6)
    B, S, T, E = 2, 5, 6, 8
    model = nn.Transformer(E, 2, 1, 2, 16, dropout=0.0, batch_first=batch_first,
                           norm_first=norm_first).double().eval()
    src, tgt = rng.standard_normal((B, S, E)), rng.standard_normal((B, T, E))
    if not batch_first:
        src, tgt = src.transpose(1, 0, 2), tgt.transpose(1, 0, 2)
    mkpm = np.array([[False] * S, [False, False, False, True, True]])
    tdim = 1 if batch_first else 0
    with tl.no_grad():
        memory = model.encoder(t64(src), src_key_padding_mask=mkpm)
        full = np_(model.decoder(t64(tgt), memory, tgt_is_causal=True,
                                 memory_key_padding_mask=mkpm))
        cache = model.decoder.init_cache()
        steps = []
        # a two-token chunk first (the offset causal mask), then one token at a time
        for lo, hi in [(0, 2)] + [(t, t + 1) for t in range(2, T)]:
            piece = tgt[:, lo:hi] if batch_first else tgt[lo:hi]
            steps.append(np_(model.decoder(t64(piece), memory, memory_key_padding_mask=mkpm,
                                           cache=cache)))
        assert cache.pos == T
    np.testing.assert_allclose(np.concatenate(steps, axis=tdim), full, atol=1e-12)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_decoder_cache_and_reorder_on_every_provider(provider):
    # the cache hands the kernels strided views of its growing buffers
    _require(provider)
    rng = np.random.default_rng(11)
    B, S, T, E = 3, 4, 5, 4
    model = nn.Transformer(E, 2, 1, 1, 8, dropout=0.0, batch_first=True).double().eval()
    src, tgt = t64(rng.standard_normal((B, S, E))), rng.standard_normal((B, T, E))
    order = np.array([2, 0, 0])  # beam search's reshuffle, repeats included
    with kernels(provider), tl.no_grad():
        memory = model.encoder(src)
        cache = model.decoder.init_cache()
        for t in range(T - 1):
            model.decoder(t64(tgt[:, t:t + 1]), memory, cache=cache)
        cache.reorder(order)
        last = np_(model.decoder(t64(tgt[order, T - 1:]), memory.index_select(
            0, tl.tensor(order)), cache=cache))
        full = np_(model.decoder(t64(tgt[order]), memory.index_select(0, tl.tensor(order)),
                                 tgt_is_causal=True))
    np.testing.assert_allclose(last[:, 0], full[:, -1], atol=1e-12)


# ---- the torch oracle ---------------------------------------------------------------------------
def _require(provider):
    if provider == "triton":
        # import the provider module by its full name first: a plain `from tensorlite.kernels
        # import provider` (the registry's) recurses through kernels/__init__.__getattr__
        # when nothing has imported the provider yet
        pytest.importorskip("triton", reason="triton is not installed")
        try:
            importlib.import_module("tensorlite.kernels.provider")
        except Exception as e:  # no GPU and no interpreter, or a provider being written
            pytest.skip(f"the triton provider is not importable: {type(e).__name__}: {e}")
    require_provider(provider)


def _torch_pair(torch, dtype, **kw):
    torch.manual_seed(0)
    ref = torch.nn.Transformer(**kw).to(dtype)
    ours = nn.Transformer(**kw).to(tl.float64 if dtype == torch.float64 else tl.float32)
    ours.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    return ref, ours


def _compare_with_torch(provider, batch_first, norm_first, dtype_name, tol, grad_tol,
                        activation="relu", dims=(8, 2, 2, 2, 16), shape=(3, 5, 4)):
    torch = pytest.importorskip("torch", reason="torch is an optional test oracle")
    _require(provider)
    dtype = getattr(torch, dtype_name)
    E, H, ne, nd, ff = dims
    ref, ours = _torch_pair(torch, dtype, d_model=E, nhead=H, num_encoder_layers=ne,
                            num_decoder_layers=nd, dim_feedforward=ff, dropout=0.0,
                            batch_first=batch_first, norm_first=norm_first,
                            activation=activation)
    B, S, T = shape
    rng = np.random.default_rng(7)
    src = rng.standard_normal((B, S, E)).astype(dtype_name)
    tgt = rng.standard_normal((B, T, E)).astype(dtype_name)
    if not batch_first:
        src, tgt = src.transpose(1, 0, 2).copy(), tgt.transpose(1, 0, 2).copy()
    skpm = np.zeros((B, S), bool)
    skpm[0, S - 2:] = True
    tkpm = np.zeros((B, T), bool)
    tkpm[B - 1, T - 1:] = True
    masks = dict(src_key_padding_mask=skpm, tgt_key_padding_mask=tkpm,
                 memory_key_padding_mask=skpm)
    causal = ref.generate_square_subsequent_mask(T, dtype=dtype)
    ts, tt = (torch.tensor(a, requires_grad=True) for a in (src, tgt))
    ref_out = ref(ts, tt, tgt_mask=causal, **{k: torch.tensor(v) for k, v in masks.items()})
    g = rng.standard_normal(ref_out.shape).astype(dtype_name)
    (ref_out * torch.tensor(g)).sum().backward()
    with kernels(provider):
        xs, xt = tl.tensor(src, requires_grad=True), tl.tensor(tgt, requires_grad=True)
        out = ours(xs, xt, tgt_mask=nn.Transformer.generate_square_subsequent_mask(
            T, dtype=xs.dtype), **masks)
        (out * tl.tensor(g)).sum().backward()
    np.testing.assert_allclose(np_(out), ref_out.detach().numpy(), atol=tol, rtol=0)
    ref_params = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(np_(p.grad), ref_params[name].grad.numpy(), atol=grad_tol,
                                   rtol=grad_tol, err_msg=name)
    for a, b in ((xs, ts), (xt, tt)):
        np.testing.assert_allclose(np_(a.grad), b.grad.numpy(), atol=grad_tol, rtol=grad_tol)


@pytest.mark.parametrize("provider", ["numpy", "cpp"])
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("batch_first", [True, False])
def test_transformer_matches_torch_float64(provider, batch_first, norm_first):
    _compare_with_torch(provider, batch_first, norm_first, "float64", 1e-10, 1e-9)


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_matches_torch_triton_tiny(norm_first):
    # Triton runs in its interpreter on the CPU here: one encoder and one decoder layer
    _compare_with_torch("triton", True, norm_first, "float64", 1e-10, 1e-9,
                        dims=(4, 2, 1, 1, 8), shape=(2, 3, 3))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_transformer_matches_torch_float32(provider):
    tiny = dict(dims=(4, 2, 1, 1, 8), shape=(2, 3, 3)) if provider == "triton" else {}
    _compare_with_torch(provider, False, False, "float32", 2e-5, 2e-4, activation="gelu",
                        **tiny)


def test_multihead_attention_matches_torch_kdim_vdim_and_weights():
    torch = pytest.importorskip("torch", reason="torch is an optional test oracle")
    torch.manual_seed(0)
    E, H, B, L, S = 8, 2, 3, 4, 5
    ref = torch.nn.MultiheadAttention(E, H, kdim=6, vdim=3, batch_first=True).double()
    ours = nn.MultiheadAttention(E, H, kdim=6, vdim=3, batch_first=True).double()
    ours.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    rng = np.random.default_rng(8)
    q, k, v = rng.standard_normal((B, L, E)), rng.standard_normal((B, S, 6)), \
        rng.standard_normal((B, S, 3))
    kpm = np.zeros((B, S), bool)
    kpm[1, 3:] = True
    am = rng.standard_normal((L, S))
    for avg in (True, False):
        ro, rw = ref(*(torch.tensor(a) for a in (q, k, v)), key_padding_mask=torch.tensor(kpm),
                     attn_mask=torch.tensor(am), average_attn_weights=avg)
        o, w = ours(t64(q), t64(k), t64(v), key_padding_mask=kpm, attn_mask=am,
                    average_attn_weights=avg)
        np.testing.assert_allclose(np_(o), ro.detach().numpy(), atol=1e-12)
        np.testing.assert_allclose(np_(w), rw.detach().numpy(), atol=1e-12)


def test_encoder_and_decoder_alone_match_torch():
    torch = pytest.importorskip("torch", reason="torch is an optional test oracle")
    torch.manual_seed(0)
    rl = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True, bias=False)
    ref = torch.nn.TransformerEncoder(rl, 2, enable_nested_tensor=False).double()
    ours = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0,
                                                            batch_first=True, bias=False), 2)
    ours.double()
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    x = np.random.default_rng(9).standard_normal((2, 5, 8))
    causal = np.triu(np.full((5, 5), -np.inf), 1)
    r = ref(torch.tensor(x), mask=torch.tensor(causal))
    np.testing.assert_allclose(np_(ours(t64(x), mask=causal)), r.detach().numpy(), atol=1e-12)
