"""A GPT in plain NumPy, float64, with every backward pass written by hand.

This file is the yardstick for tensorlite's GPT: the test suite builds the same
parameters in both, and tensorlite's loss and every parameter gradient must
match what this file computes. So this file must stay independent of
tensorlite's Tensor, autograd and nn (it imports only NumPy and its neighbour
layer_norm.py, the reference layer norm) and be simple enough to check by eye.
It is also the best place to read how a GPT trains without any framework:
tests/test_reference_gpt.py checks it by finite differences and against torch.

The architecture is GPT-2 as nanoGPT writes it:

    x = wte[idx] + wpe[:T]
    for each block:
        x = x + attn(ln_1(x))          # causal self-attention
        x = x + mlp(ln_2(x))           # Linear C->4C, GELU (tanh), Linear 4C->C
    logits = ln_f(x) @ wte.T           # lm_head shares its weight with wte
    loss = mean cross-entropy over the positions whose target is not -100

The layout follows llm.c: each layer is a `*_forward` function that returns its
output and whatever the backward pass needs, and right beside it a
`*_backward` function that takes the gradient of the output and returns the
gradients of the inputs and parameters. `forward` and `backward` at the bottom
just chain them.

Shapes: B batch, T time (sequence), C channels (n_embd), V vocab, nh heads,
hs = C // nh head size. Linear weights are stored (out, in), as torch does, so
a Linear is `y = x @ W.T + b`.

Parameter names are exactly nanoGPT's state-dict keys (see `param_shapes`), so
a nanoGPT checkpoint could be loaded into this model unchanged, minus
`lm_head.weight`, which is the same array as `transformer.wte.weight`.
"""

import math

import numpy as np

from .layer_norm import layer_norm_backward, layer_norm_forward

LN_EPS = 1e-5
IGNORE_INDEX = -100


# ---------------------------------------------------------------------------
# Embedding: token embedding plus learned position embedding.
# ---------------------------------------------------------------------------

def encoder_forward(wte, wpe, idx):
    """x[b, t] = wte[idx[b, t]] + wpe[t]."""
    T = idx.shape[1]
    return wte[idx] + wpe[:T]


def encoder_backward(dx, idx, wte_shape, wpe_shape):
    """Gradients for the two embedding tables.

    A token id can appear many times in a batch, and each occurrence adds its
    gradient to the same row: np.add.at does that accumulation, where a plain
    `dwte[idx] += dx` would keep only the last write for repeated ids.
    """
    B, T, C = dx.shape
    dwte = np.zeros(wte_shape)
    np.add.at(dwte, idx.reshape(-1), dx.reshape(-1, C))
    dwpe = np.zeros(wpe_shape)
    dwpe[:T] = dx.sum(axis=0)  # every sequence in the batch uses positions 0..T-1
    return dwte, dwpe


# ---------------------------------------------------------------------------
# LayerNorm over the last axis (C), with a learned scale and optional shift:
# the one NumPy layer norm, tensorlite/reference/layer_norm.py, in llm.c's calling style.
# ---------------------------------------------------------------------------

def layer_norm_cached_forward(x, w, b, eps=LN_EPS):
    """The reference layer norm (layer_norm.py): out, and (x, mean, rstd) for the backward."""
    out, mean, rstd = layer_norm_forward(x, w, b, eps)
    return out, (x, mean, rstd)


def layer_norm_cached_backward(dout, cache, w):
    """Returns dx, dw, db; the formula and why it has two subtracted means: layer_norm.py."""
    x, mean, rstd = cache
    return layer_norm_backward(dout, x, w, mean, rstd)


# ---------------------------------------------------------------------------
# Linear: y = x @ W.T + b, W stored (out, in).
# ---------------------------------------------------------------------------

def linear_forward(x, W, b):
    out = x @ W.T
    if b is not None:
        out = out + b
    return out


def linear_backward(dout, x, W):
    """Returns dx, dW, db. x may have any number of leading axes (B, T, ...)."""
    dx = dout @ W
    x2 = x.reshape(-1, x.shape[-1])
    d2 = dout.reshape(-1, dout.shape[-1])
    dW = d2.T @ x2               # (out, in), like W
    db = d2.sum(axis=0)
    return dx, dW, db


# ---------------------------------------------------------------------------
# GELU, tanh approximation (what GPT-2 was trained with).
# ---------------------------------------------------------------------------

GELU_SCALE = math.sqrt(2.0 / math.pi)


def gelu_forward(x):
    """0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))."""
    return 0.5 * x * (1.0 + np.tanh(GELU_SCALE * (x + 0.044715 * x ** 3)))


def gelu_backward(dout, x):
    # Product rule on 0.5 * x * (1 + tanh(u)), with du/dx = s * (1 + 3 * 0.044715 x^2)
    # and d tanh(u) = (1 - tanh(u)^2) du.
    u = GELU_SCALE * (x + 0.044715 * x ** 3)
    t = np.tanh(u)
    du_dx = GELU_SCALE * (1.0 + 3.0 * 0.044715 * x ** 2)
    local = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t ** 2) * du_dx
    return dout * local


# ---------------------------------------------------------------------------
# Causal multi-head self-attention on an already projected qkv.
# ---------------------------------------------------------------------------

def _split_heads(a, n_head):
    B, T, C = a.shape
    return a.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)  # (B, nh, T, hs)


def _merge_heads(a):
    B, nh, T, hs = a.shape
    return a.transpose(0, 2, 1, 3).reshape(B, T, nh * hs)


def attention_forward(qkv, n_head):
    """qkv (B, T, 3C), laid out q | k | v along the last axis -> y (B, T, C).

    Each position t attends to positions 0..t only: the upper triangle of the
    score matrix is set to -inf before the softmax, so those weights are exactly 0.
    """
    B, T, C3 = qkv.shape
    C = C3 // 3
    q, k, v = (_split_heads(a, n_head) for a in np.split(qkv, 3, axis=-1))
    scale = 1.0 / math.sqrt(C // n_head)
    scores = (q @ k.transpose(0, 1, 3, 2)) * scale           # (B, nh, T, T)
    future = np.triu(np.ones((T, T), dtype=bool), k=1)
    scores = np.where(future, -np.inf, scores)
    # Subtracting the row max keeps exp() from overflowing; the diagonal is
    # never masked, so every row has a finite max.
    scores = scores - scores.max(axis=-1, keepdims=True)
    att = np.exp(scores)
    att = att / att.sum(axis=-1, keepdims=True)
    y = _merge_heads(att @ v)
    return y, (q, k, v, att, scale)


def attention_backward(dy, cache):
    """dy (B, T, C) -> dqkv (B, T, 3C)."""
    q, k, v, att, scale = cache
    n_head = q.shape[1]
    dy = _split_heads(dy, n_head)                 # (B, nh, T, hs)
    dv = att.transpose(0, 1, 3, 2) @ dy
    datt = dy @ v.transpose(0, 1, 3, 2)           # (B, nh, T, T)
    # Softmax backward, row by row: d score_j = a_j * (d a_j - sum_i a_i d a_i).
    # Masked entries have a_j = 0, so they get zero gradient with no extra mask.
    dscores = att * (datt - (att * datt).sum(axis=-1, keepdims=True))
    dq = (dscores @ k) * scale
    dk = (dscores.transpose(0, 1, 3, 2) @ q) * scale
    return np.concatenate([_merge_heads(dq), _merge_heads(dk), _merge_heads(dv)], axis=-1)


# ---------------------------------------------------------------------------
# Cross-entropy with softmax, averaged over the positions that have a target.
# ---------------------------------------------------------------------------

def crossentropy_forward(logits, targets, ignore_index=IGNORE_INDEX):
    """Mean of -log softmax(logits)[target] over positions with target != ignore_index.

    Returns (loss, cache). The loss is divided by the number of counted
    positions, not by B*T, which is what torch's cross_entropy does with
    ignore_index and reduction='mean'.
    """
    V = logits.shape[-1]
    logits2 = logits.reshape(-1, V)
    targets1 = targets.reshape(-1)
    keep = targets1 != ignore_index
    n = int(keep.sum())
    if n == 0:
        # torch returns nan here (0 / 0); an explicit error is easier to debug.
        raise ValueError("every target is ignore_index: the mean loss is undefined")
    if np.any((targets1[keep] < 0) | (targets1[keep] >= V)):
        raise ValueError(f"targets must be in [0, {V}) or equal {ignore_index}")
    shifted = logits2 - logits2.max(axis=-1, keepdims=True)
    logsumexp = np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    logprobs = shifted - logsumexp
    rows = np.nonzero(keep)[0]
    loss = -logprobs[rows, targets1[rows]].sum() / n
    probs = np.exp(logprobs)
    return loss, (probs, targets1, keep, n, logits.shape)


def crossentropy_backward(cache, dloss=1.0):
    """d loss / d logits = (softmax - onehot(target)) / n at counted positions, 0 elsewhere."""
    probs, targets1, keep, n, shape = cache
    dlogits = probs.copy()
    rows = np.nonzero(keep)[0]
    dlogits[rows, targets1[rows]] -= 1.0
    dlogits[~keep] = 0.0
    dlogits *= dloss / n
    return dlogits.reshape(shape)


# ---------------------------------------------------------------------------
# The model: parameters, forward, backward.
# ---------------------------------------------------------------------------

def _cfg(config):
    """Read the config with nanoGPT's field names; bias defaults to True as there."""
    V = config["vocab_size"]
    T_max = config["block_size"]
    L = config["n_layer"]
    nh = config["n_head"]
    C = config["n_embd"]
    bias = config.get("bias", True)
    if C % nh != 0:
        raise ValueError(f"n_embd={C} is not divisible by n_head={nh}")
    if config.get("dropout", 0.0) not in (0, 0.0):
        raise ValueError("the reference GPT has no dropout: compare with dropout=0")
    return V, T_max, L, nh, C, bias


def param_shapes(config):
    """Ordered {name: shape} with nanoGPT's state-dict keys (lm_head is tied, so absent)."""
    V, T_max, L, nh, C, bias = _cfg(config)
    shapes = {
        "transformer.wte.weight": (V, C),
        "transformer.wpe.weight": (T_max, C),
    }
    for i in range(L):
        p = f"transformer.h.{i}."
        block = [
            ("ln_1.weight", (C,)), ("ln_1.bias", (C,)),
            ("attn.c_attn.weight", (3 * C, C)), ("attn.c_attn.bias", (3 * C,)),
            ("attn.c_proj.weight", (C, C)), ("attn.c_proj.bias", (C,)),
            ("ln_2.weight", (C,)), ("ln_2.bias", (C,)),
            ("mlp.c_fc.weight", (4 * C, C)), ("mlp.c_fc.bias", (4 * C,)),
            ("mlp.c_proj.weight", (C, 4 * C)), ("mlp.c_proj.bias", (C,)),
        ]
        for name, shape in block:
            if bias or not name.endswith(".bias"):
                shapes[p + name] = shape
    shapes["transformer.ln_f.weight"] = (C,)
    if bias:
        shapes["transformer.ln_f.bias"] = (C,)
    return shapes


def init_params(config, seed=0):
    """GPT-2 initialisation, as nanoGPT does it.

    Weights and embeddings ~ N(0, 0.02); biases 0; LayerNorm weight 1, bias 0.
    The two projections that write into the residual stream (attn.c_proj and
    mlp.c_proj) get std 0.02 / sqrt(2 * n_layer): each block adds two such
    terms to the residual, and scaling them down keeps the residual's variance
    from growing with depth.
    """
    _, _, L, _, _, _ = _cfg(config)
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in param_shapes(config).items():
        if ".ln_" in name:
            params[name] = np.ones(shape) if name.endswith(".weight") else np.zeros(shape)
        elif name.endswith(".bias"):
            params[name] = np.zeros(shape)
        elif name.endswith("c_proj.weight"):
            params[name] = rng.normal(0.0, 0.02 / math.sqrt(2 * L), size=shape)
        else:
            params[name] = rng.normal(0.0, 0.02, size=shape)
    return params


def _as_float64(params):
    # The comparison is only meaningful if the reference has no rounding
    # error of its own to speak of, so it always computes in float64.
    return {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}


def forward(params, idx, targets, config):
    """Run the GPT. Returns (logits (B, T, V), loss or None, cache for backward).

    idx and targets are integer arrays (B, T); targets may be None (then the
    loss is None and backward cannot be called) and may hold -100 to leave a
    position out of the loss.
    """
    V, T_max, L, nh, C, bias = _cfg(config)
    idx = np.asarray(idx)
    B, T = idx.shape
    if T > T_max:
        raise ValueError(f"sequence length {T} is longer than block_size {T_max}")
    P = _as_float64(params)

    def get(name):  # a missing bias (bias=False) reads as None
        return P.get(name)

    x = encoder_forward(P["transformer.wte.weight"], P["transformer.wpe.weight"], idx)
    blocks = []
    for i in range(L):
        p = f"transformer.h.{i}."
        c = {"x_in": x}
        c["ln1_out"], c["ln1"] = layer_norm_cached_forward(x, P[p + "ln_1.weight"], get(p + "ln_1.bias"))
        qkv = linear_forward(c["ln1_out"], P[p + "attn.c_attn.weight"], get(p + "attn.c_attn.bias"))
        c["att_y"], c["att"] = attention_forward(qkv, nh)
        x = x + linear_forward(c["att_y"], P[p + "attn.c_proj.weight"], get(p + "attn.c_proj.bias"))
        c["x_mid"] = x
        c["ln2_out"], c["ln2"] = layer_norm_cached_forward(x, P[p + "ln_2.weight"], get(p + "ln_2.bias"))
        c["fc_out"] = linear_forward(c["ln2_out"], P[p + "mlp.c_fc.weight"], get(p + "mlp.c_fc.bias"))
        c["gelu_out"] = gelu_forward(c["fc_out"])
        x = x + linear_forward(c["gelu_out"], P[p + "mlp.c_proj.weight"], get(p + "mlp.c_proj.bias"))
        blocks.append(c)
    lnf_out, lnf_cache = layer_norm_cached_forward(x, P["transformer.ln_f.weight"], get("transformer.ln_f.bias"))
    logits = lnf_out @ P["transformer.wte.weight"].T

    loss, ce_cache = None, None
    if targets is not None:
        loss, ce_cache = crossentropy_forward(logits, np.asarray(targets))
    cache = {"idx": idx, "blocks": blocks, "lnf_out": lnf_out, "lnf": lnf_cache, "ce": ce_cache}
    return logits, loss, cache


def backward(params, cache, config):
    """Gradient of the loss from `forward` with respect to every parameter.

    Walks the forward pass in reverse. The residual stream's gradient `dx` is
    carried down through the blocks: each `x = x + f(x)` passes dx straight
    through and adds f's input gradient on top.
    """
    V, T_max, L, nh, C, bias = _cfg(config)
    if cache["ce"] is None:
        raise ValueError("backward needs a forward pass that was given targets")
    P = _as_float64(params)
    grads = {}

    def put(name, g):  # bias=False models have no bias entries to fill
        if name in P:
            grads[name] = g

    wte = P["transformer.wte.weight"]
    dlogits = crossentropy_backward(cache["ce"])
    # lm_head: logits = lnf_out @ wte.T. Its weight gradient is wte's first
    # contribution; the embedding lookup adds the second one below.
    dlnf_out = dlogits @ wte
    dwte_head = dlogits.reshape(-1, V).T @ cache["lnf_out"].reshape(-1, C)
    dx, dw, db = layer_norm_cached_backward(dlnf_out, cache["lnf"], P["transformer.ln_f.weight"])
    put("transformer.ln_f.weight", dw)
    put("transformer.ln_f.bias", db)

    for i in reversed(range(L)):
        p = f"transformer.h.{i}."
        c = cache["blocks"][i]
        # x_out = x_mid + mlp_c_proj(gelu(c_fc(ln_2(x_mid))))
        dgelu, dW, db = linear_backward(dx, c["gelu_out"], P[p + "mlp.c_proj.weight"])
        put(p + "mlp.c_proj.weight", dW)
        put(p + "mlp.c_proj.bias", db)
        dfc = gelu_backward(dgelu, c["fc_out"])
        dln2, dW, db = linear_backward(dfc, c["ln2_out"], P[p + "mlp.c_fc.weight"])
        put(p + "mlp.c_fc.weight", dW)
        put(p + "mlp.c_fc.bias", db)
        dx_branch, dw, db = layer_norm_cached_backward(dln2, c["ln2"], P[p + "ln_2.weight"])
        put(p + "ln_2.weight", dw)
        put(p + "ln_2.bias", db)
        dx = dx + dx_branch
        # x_mid = x_in + attn_c_proj(attention(c_attn(ln_1(x_in))))
        datt_y, dW, db = linear_backward(dx, c["att_y"], P[p + "attn.c_proj.weight"])
        put(p + "attn.c_proj.weight", dW)
        put(p + "attn.c_proj.bias", db)
        dqkv = attention_backward(datt_y, c["att"])
        dln1, dW, db = linear_backward(dqkv, c["ln1_out"], P[p + "attn.c_attn.weight"])
        put(p + "attn.c_attn.weight", dW)
        put(p + "attn.c_attn.bias", db)
        dx_branch, dw, db = layer_norm_cached_backward(dln1, c["ln1"], P[p + "ln_1.weight"])
        put(p + "ln_1.weight", dw)
        put(p + "ln_1.bias", db)
        dx = dx + dx_branch

    dwte_emb, dwpe = encoder_backward(dx, cache["idx"], wte.shape, P["transformer.wpe.weight"].shape)
    grads["transformer.wte.weight"] = dwte_head + dwte_emb
    grads["transformer.wpe.weight"] = dwpe
    # Same keys, same order as params, so callers can zip them.
    return {name: grads[name] for name in P}
