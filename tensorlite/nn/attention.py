"""Multi-head attention on the fused scaled_dot_product_attention kernel.

The same module serves the decoder (causal=True) and the encoder (causal=False, with a
padding mask); for incremental decoding it appends to a per-layer KV cache.
"""
import math

from .. import factories
from ..ops import fused
from . import functional as F
from .layers import Dropout, Linear, residual_linear
from .module import Module


class KVCache:
    """Keys and values of the tokens seen so far, one (k, v) pair per layer.
    `pos` is how many tokens the cache holds: the next token's position."""

    def __init__(self, n_layer):
        self.k = [None] * n_layer
        self.v = [None] * n_layer
        self.pos = 0

    def layer(self, i):
        return _LayerCache(self, i)


class _LayerCache:
    __slots__ = ("cache", "i")

    def __init__(self, cache, i):
        self.cache, self.i = cache, i

    def extend(self, k, v):
        c, i = self.cache, self.i
        if c.k[i] is not None:
            k = factories.cat([c.k[i], k], dim=2)
            v = factories.cat([c.v[i], v], dim=2)
        c.k[i], c.v[i] = k.detach(), v.detach()
        return k, v


class MultiHeadAttention(Module):
    """Self-attention with n_head heads over x (B, T, C): one packed q|k|v projection
    (c_attn, as GPT-2 stores it), attention per head, the heads merged back and projected
    (c_proj). Shapes in the comments: B batch, T new tokens, Tk keys (cached + new),
    C = n_embd, H = n_head, D = C // H.

    Two paths compute the same thing. `_attend_heads` is the one to read: split into
    heads, attend, merge. Every call without a cache, recorded probabilities or attention
    dropout (a padding mask included) takes `_attend_packed` instead (set `packed = False`
    to always read the plain path): one
    fused op on strided views of c_attn's output that saves the split/reshape/transpose
    nodes and their gradient copies (ops/fused.FusedPackedSelfAttention)."""

    def __init__(self, n_embd, n_head, bias=True, dropout=0.0, causal=True):
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"MultiHeadAttention: n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        self.n_embd, self.n_head, self.causal, self.dropout = n_embd, n_head, causal, dropout
        self.c_attn = Linear(n_embd, 3 * n_embd, bias=bias)  # q, k, v in one matmul
        self.c_proj = Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = Dropout(dropout)
        self.packed = True              # allow the fast path where it applies
        self.record_attention = False   # when True, keep the probabilities (for inspection)
        self.last_attention = None

    def forward(self, x, attention_mask=None, cache=None, residual=None):
        """x: (B, T, C). attention_mask: (B, Tk) with 1/True for real tokens, 0/False for
        padding. cache: a KVCache layer slot to read from and append to. residual: (B, T, C)
        added to the output (the block's skip connection, added inside the projection's GEMM:
        nn/layers.residual_linear)."""
        qkv = self.c_attn(x)                                             # (B, T, 3C)
        if self.packed and cache is None and not self.record_attention and \
                not (self.dropout and self.training):
            y = self._attend_packed(qkv, attention_mask)
        else:
            y = self._attend_heads(qkv, attention_mask, cache)
        return residual_linear(self.c_proj, y, residual, self.resid_dropout)  # (B, T, C)

    def _attend_heads(self, qkv, attention_mask, cache):
        B, T, C3 = qkv.shape
        C, H = C3 // 3, self.n_head
        q, k, v = qkv.split(C, dim=2)                                    # 3 x (B, T, C)
        q = q.reshape(B, T, H, C // H).transpose(1, 2)                   # (B, H, T, D)
        k = k.reshape(B, T, H, C // H).transpose(1, 2)                   # (B, H, T, D)
        v = v.reshape(B, T, H, C // H).transpose(1, 2)                   # (B, H, T, D)
        past = 0
        if cache is not None:
            past = cache.cache.pos
            k, v = cache.extend(k, v)                                    # (B, H, Tk, D)
        mask, is_causal = self._mask(attention_mask, B, T, k.shape[2], past, qkv.device)
        if self.record_attention:
            self.last_attention = F.attention_probs(q, k, mask, is_causal).detach()
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        return y.transpose(1, 2).reshape(B, T, C)                        # (B, T, C)

    # The last padding mask made for the packed path: (attention_mask tensor, key, additive
    # mask). Every layer of an encoder gets the same attention_mask object, so the layers
    # after the first reuse the first one's kernel mask instead of remaking it.
    _packed_mask_cache = (None, None, None)

    def _packed_mask(self, attention_mask, qkv, B, T):
        if attention_mask is None:
            return None
        version = getattr(getattr(attention_mask, "_version", None), "value", None)
        key = (version, B, T, self.n_head, qkv.dtype, qkv.device)
        held, held_key, m = MultiHeadAttention._packed_mask_cache
        if version is not None and held is attention_mask and held_key == key:
            return m
        mask, _ = self._mask(attention_mask, B, T, T, 0, qkv.device)  # (B, 1, 1, T) bool
        # padding keys: the kernels' additive mask, as scaled_dot_product_attention makes it
        m = F._attention_mask(mask, qkv, B, self.n_head, T, T)
        MultiHeadAttention._packed_mask_cache = (attention_mask, key, m)
        return m

    def _attend_packed(self, qkv, attention_mask=None):
        B, T, C3 = qkv.shape
        mask = self._packed_mask(attention_mask, qkv, B, T)
        return fused.FusedPackedSelfAttention.apply(qkv, mask, n_head=self.n_head,
                                                    is_causal=self.causal,
                                                    scale=1.0 / math.sqrt(C3 // 3 // self.n_head))

    def _mask(self, attention_mask, B, T, Tk, past, device):
        """(boolean mask broadcastable to (B, H, T, Tk) or None, is_causal) for the kernel."""
        mask = None
        if attention_mask is not None:
            m = attention_mask if attention_mask.dtype.name == "bool" else attention_mask != 0
            if m.shape != (B, Tk):
                raise ValueError(f"{type(self).__name__}: attention_mask must have shape (B, Tk) = "
                                 f"{(B, Tk)}, got {m.shape}")
            mask = m.reshape(B, 1, 1, Tk)
        if not (self.causal and past):
            return mask, self.causal
        if T == 1:
            return mask, False  # a single new query may see every cached key
        # new queries sit at positions past..past+T-1: query i sees keys j <= past + i
        allowed = factories.ones(T, Tk, dtype="bool", device=device).tril(past).reshape(1, 1, T, Tk)
        return (allowed if mask is None else mask & allowed), False

    def extra_repr(self):
        return f"n_embd={self.n_embd}, n_head={self.n_head}, causal={self.causal}"


class CausalSelfAttention(MultiHeadAttention):
    def __init__(self, n_embd, n_head, bias=True, dropout=0.0):
        super().__init__(n_embd, n_head, bias=bias, dropout=dropout, causal=True)
