"""nn.MultiheadAttention with PyTorch's arguments, shapes, mask conventions and state-dict
keys, computed by the fused scaled_dot_product_attention kernel.

Mask conventions (PyTorch's, which are the opposite of sdpa's boolean masks):

    key_padding_mask  (B, S)               bool: True = this key is padding, IGNORE it
                                           float: added to the scores of that key
    attn_mask         (L, S) or (B*H, L, S) bool: True = NOT allowed to attend
                                           float: added to the scores
    is_causal         a hint that attn_mask is the causal mask: the kernel's own causal
                      masking is used instead of attn_mask. Unlike PyTorch (which raises),
                      is_causal=True without an attn_mask simply makes attention causal.

Both masks become one additive float mask broadcastable to (B, H, L, S) for the kernel.
Masks are constants: no gradient flows into a float mask.

A query that may attend no key at all (every key masked) gets a zero output here (and
zero attention weights, and zero gradients); PyTorch gives NaN for such a row.

Incremental decoding: forward(..., cache=MultiheadAttentionCache()) keeps the projected
keys/values. A self-attention cache (static=False) appends the new tokens' keys/values on
every call; a cross-attention cache (static=True) projects key/value on the first call
and reuses them afterwards, so the encoder memory is projected once per layer.
"""
import math

import numpy as np

from .. import factories
from ..backend.device import xp_of
from ..tensor import Tensor
from . import functional as F
from . import init
from .layers import Linear
from .module import Module
from .parameter import Parameter


class MultiheadAttentionCache:
    """The projected keys and values (B, H, S, D) one attention module has seen, as `k`
    and `v`. static=False: self-attention, extended by every call (into buffers that grow
    by doubling, so a step copies only its new keys). static=True: cross-attention, filled
    once from the memory and then only read. For inference: nothing cached has a gradient."""

    def __init__(self, static=False):
        self.static = static
        self.k = self.v = None
        self._buf = None  # (k, v) arrays (B, H, capacity, D) behind the views k, v

    def __len__(self):
        return 0 if self.k is None else self.k.shape[2]

    def append(self, k, v):
        """Add keys/values (B, H, T, D) of new tokens; returns all of them so far."""
        t0, t1 = len(self), len(self) + k.shape[2]
        ka, va = k._data, v._data
        if self._buf is None or t1 > self._buf[0].shape[2]:
            xp = xp_of(ka)
            shape = ka.shape[:2] + (max(2 * t1, 16), ka.shape[3])
            grown = (xp.empty(shape, dtype=ka.dtype), xp.empty(shape, dtype=va.dtype))
            if t0:
                grown[0][:, :, :t0], grown[1][:, :, :t0] = self._buf[0][:, :, :t0], \
                    self._buf[1][:, :, :t0]
            self._buf = grown
        self._buf[0][:, :, t0:t1] = ka
        self._buf[1][:, :, t0:t1] = va
        self._views(t1, k.device)
        return self.k, self.v

    def _views(self, n, device):
        self.k = Tensor._make(self._buf[0][:, :, :n], device)
        self.v = Tensor._make(self._buf[1][:, :, :n], device)

    def reorder(self, index):
        """Keep batch rows `index` (an int64 array or tensor): beam search's reshuffle."""
        if self.k is None:
            return
        idx = index._data if isinstance(index, Tensor) else xp_of(self.k._data).asarray(index)
        if self._buf is not None:
            self._buf = (self._buf[0][idx], self._buf[1][idx])
            self._views(len(self), self.k.device)
        else:
            self.k = Tensor._make(self.k._data[idx], self.k.device)
            self.v = Tensor._make(self.v._data[idx], self.v.device)


def _array(m, xp):
    return xp.asarray(m._data if isinstance(m, Tensor) else m)


def merge_masks(attn_mask, key_padding_mask, B, H, L, S, dtype, xp):
    """PyTorch-convention masks -> one additive float array broadcastable to (B, H, L, S)
    (shape (1|B, 1|H, 1|L, S)), or None when there is no mask."""
    out = None
    if attn_mask is not None:
        m = _array(attn_mask, xp)
        if m.ndim == 2 and m.shape == (L, S):
            m = m.reshape(1, 1, L, S)
        elif m.ndim == 3 and m.shape == (B * H, L, S):
            m = m.reshape(B, H, L, S)  # PyTorch's row b * H + h belongs to batch b, head h
        else:
            raise ValueError(f"MultiheadAttention: attn_mask must have shape (L, S) = {(L, S)} "
                             f"or (B*num_heads, L, S) = {(B * H, L, S)}, got {tuple(m.shape)}")
        out = xp.where(m, -np.inf, 0.0).astype(dtype) if m.dtype == np.bool_ else m.astype(dtype)
    if key_padding_mask is not None:
        m = _array(key_padding_mask, xp)
        if m.shape != (B, S):
            raise ValueError(f"MultiheadAttention: key_padding_mask must have shape (B, S) = "
                             f"{(B, S)}, got {tuple(m.shape)}")
        m = m.reshape(B, 1, 1, S)
        m = xp.where(m, -np.inf, 0.0).astype(dtype) if m.dtype == np.bool_ else m.astype(dtype)
        out = m if out is None else out + m
    return out


class MultiheadAttention(Module):
    """Attention(Q W_q^T, K W_k^T, V W_v^T) over num_heads heads, then out_proj.

    query (L, B, E) / key, value (S, B, kdim|vdim), or batch-first (B, L, E) with
    batch_first=True, or unbatched (L, E). Returns (attn_output like query, attn_weights):
    the weights are (B, L, S) averaged over heads (average_attn_weights=True) or
    (B, H, L, S), None with need_weights=False. The output always comes from the fused
    kernel; need_weights materialises the probabilities separately (attention_probs).
    With dropout in training mode, dropout applies to the materialised probabilities
    (the unfused path), and the weights returned are those after dropout, as in PyTorch.

    add_bias_kv and add_zero_attn are not supported."""

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False,
                 add_zero_attn=False, kdim=None, vdim=None, batch_first=False, device=None,
                 dtype=None):
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0 or embed_dim % num_heads:
            raise ValueError(f"MultiheadAttention: embed_dim ({embed_dim}) must be a positive "
                             f"multiple of num_heads ({num_heads})")
        if add_bias_kv or add_zero_attn:
            raise NotImplementedError("MultiheadAttention: add_bias_kv and add_zero_attn are "
                                      "not supported")
        if not 0 <= dropout <= 1:
            raise ValueError(f"MultiheadAttention: dropout must be in [0, 1], got {dropout}")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.kdim = embed_dim if kdim is None else kdim
        self.vdim = embed_dim if vdim is None else vdim
        self.head_dim = embed_dim // num_heads
        self.dropout, self.batch_first = dropout, batch_first
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        E = embed_dim

        def param(*shape):
            return Parameter(factories.empty(*shape, dtype=dtype, device=device))
        # registration order = PyTorch's state-dict order
        if self._qkv_same_embed_dim:
            self.in_proj_weight = param(3 * E, E)
            for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                self.register_parameter(name, None)
        else:
            self.register_parameter("in_proj_weight", None)
            self.q_proj_weight = param(E, E)
            self.k_proj_weight = param(E, self.kdim)
            self.v_proj_weight = param(E, self.vdim)
        if bias:
            self.in_proj_bias = param(3 * E)
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(E, E, bias=bias, dtype=dtype, device=device)
        self._reset_parameters()

    def _reset_parameters(self):
        # PyTorch's: xavier for the input projections, zero biases; out_proj keeps
        # Linear's default weight init
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            for w in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
                init.xavier_uniform_(w)
        if self.in_proj_bias is not None:
            init.zeros_(self.in_proj_bias)
            init.zeros_(self.out_proj.bias)

    # ---- projections ----------------------------------------------------------------
    def _weight(self, i):
        """(weight, bias) of projection i (0 = q, 1 = k, 2 = v)."""
        E = self.embed_dim
        w = self.in_proj_weight[i * E:(i + 1) * E] if self._qkv_same_embed_dim else \
            (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)[i]
        b = None if self.in_proj_bias is None else self.in_proj_bias[i * E:(i + 1) * E]
        return w, b

    def _heads(self, x):
        B, T, _ = x.shape
        return x.reshape(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)

    def project(self, x, i):
        """Projection i (0 = q, 1 = k, 2 = v) of batch-first x, split into heads."""
        return self._heads(F.linear(x, *self._weight(i)))                    # (B, H, T, D)

    def _project_kv(self, key, value):
        if self._qkv_same_embed_dim and key is value:
            # one (2E, E) matmul for the keys and values of the same sequence
            E = self.embed_dim
            b = None if self.in_proj_bias is None else self.in_proj_bias[E:]
            k, v = F.linear(key, self.in_proj_weight[E:], b).split(E, dim=2)
            return self._heads(k), self._heads(v)
        return self.project(key, 1), self.project(value, 2)

    def _project_all(self, query, key, value):
        if self._qkv_same_embed_dim and query is key and key is value:
            # self-attention: one (3E, E) matmul instead of three
            E = self.embed_dim
            q, k, v = F.linear(query, self.in_proj_weight, self.in_proj_bias).split(E, dim=2)
            return self._heads(q), self._heads(k), self._heads(v)
        return (self.project(query, 0),) + self._project_kv(key, value)

    # ---- forward --------------------------------------------------------------------
    def forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False, cache=None):
        unbatched = query.ndim == 2
        if query.ndim not in (2, 3) or key.ndim != query.ndim or value.ndim != query.ndim:
            raise ValueError(f"MultiheadAttention: query, key, value must all be 2-D (unbatched) "
                             f"or 3-D, got shapes {query.shape}, {key.shape}, {value.shape}")
        if query.shape[-1] != self.embed_dim or key.shape[-1] != self.kdim \
                or value.shape[-1] != self.vdim:
            raise ValueError(f"MultiheadAttention: expected feature sizes (E={self.embed_dim}, "
                             f"kdim={self.kdim}, vdim={self.vdim}), got query {query.shape}, "
                             f"key {key.shape}, value {value.shape}")
        q_in, k_in, v_in = query, key, value
        if unbatched:
            q_in, k_in, v_in = (t.unsqueeze(0) for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = _array(key_padding_mask, xp_of(query._data)).reshape(1, -1)
        elif not self.batch_first:
            # keep `is` identity (it selects the packed projection) through the transposes
            q_in = query.transpose(0, 1)
            k_in = q_in if key is query else key.transpose(0, 1)
            v_in = k_in if value is key else q_in if value is query else value.transpose(0, 1)
        if k_in.shape[:2] != v_in.shape[:2] or q_in.shape[0] != k_in.shape[0]:
            raise ValueError(f"MultiheadAttention: query, key and value must share the batch size "
                             f"and key/value the sequence length; got {query.shape}, "
                             f"{key.shape}, {value.shape}")
        out, w = self._attend(q_in, k_in, v_in, key_padding_mask, need_weights, attn_mask,
                              average_attn_weights, is_causal, cache)          # (B, L, E)
        if unbatched:
            return out.squeeze(0), (None if w is None else w.squeeze(0))
        if not self.batch_first:
            out = out.transpose(0, 1)                                          # (L, B, E)
        return out, w

    def _attend(self, query, key, value, key_padding_mask, need_weights, attn_mask,
                average, is_causal, cache):
        """Batch-first attention: query (B, L, E), key/value (B, S, kdim|vdim)."""
        B, L, _ = query.shape
        past = 0
        if cache is None:
            q, k, v = self._project_all(query, key, value)                     # (B, H, L|S, D)
        elif cache.static:
            q = self.project(query, 0)                                         # (B, H, L, D)
            if cache.k is None:
                k, v = self._project_kv(key, value)
                cache.k, cache.v = k.detach(), v.detach()
            k, v = cache.k, cache.v                                            # (B, H, S, D)
        else:
            q, k, v = self._project_all(query, key, value)
            past = len(cache)
            k, v = cache.append(k, v)                                          # (B, H, S, D)
        S = k.shape[2]
        xp = xp_of(q._data)
        mask = merge_masks(None if is_causal else attn_mask, key_padding_mask, B,
                           self.num_heads, L, S, q._data.dtype, xp)
        if is_causal and past:
            # new queries sit at positions past .. past+L-1: query i sees keys j <= past + i
            causal = xp.where(xp.tril(xp.ones((L, S), dtype=bool), past), 0.0, -np.inf)
            causal = causal.astype(q._data.dtype).reshape(1, 1, L, S)
            mask = causal if mask is None else mask + causal
            is_causal = False
        scale = 1.0 / math.sqrt(self.head_dim)
        weights = None
        if self.dropout > 0 and self.training:
            p = F.dropout(F.attention_probs(q, k, mask, is_causal, scale), self.dropout)
            y = p @ v                                                          # (B, H, L, D)
            weights = p if need_weights else None
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                               scale=scale)                    # (B, H, L, D)
            if need_weights:
                weights = F.attention_probs(q, k, mask, is_causal, scale)      # (B, H, L, S)
        if weights is not None and average:
            weights = weights.mean(1)                                          # (B, L, S)
        y = y.transpose(1, 2).reshape(B, L, self.embed_dim)                    # (B, L, E)
        return self.out_proj(y), weights

    def extra_repr(self):
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}, "
                f"batch_first={self.batch_first}")
