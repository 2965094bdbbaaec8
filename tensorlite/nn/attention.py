"""Multi-head attention on the fused scaled_dot_product_attention kernel.

The same module serves the decoder (causal=True) and the encoder (causal=False, with a
padding mask); for incremental decoding it appends to a per-layer KV cache.
"""
import math

from .. import factories
from ..ops import fused as FO
from . import functional as F
from .layers import Dropout, Linear
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
    def __init__(self, n_embd, n_head, bias=True, dropout=0.0, causal=True):
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"MultiHeadAttention: n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        self.n_embd, self.n_head, self.causal, self.dropout = n_embd, n_head, causal, dropout
        self.c_attn = Linear(n_embd, 3 * n_embd, bias=bias)  # q, k, v in one matmul
        self.c_proj = Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = Dropout(dropout)
        self.record_attention = False  # when True, keep the probabilities (for inspection)
        self.last_attention = None

    def forward(self, x, attention_mask=None, cache=None):
        """x: (B, T, C). attention_mask: (B, Tk) with 1/True for real tokens, 0/False for
        padding. cache: a KVCache layer slot to read from and append to."""
        B, T, C = x.shape
        H = self.n_head
        if cache is None and attention_mask is None and not self.record_attention and \
                not (self.dropout and self.training):
            # the training path: one fused op from the packed q/k/v projection to the
            # merged heads (no split / reshape / transpose nodes, no zero-padded gradients)
            y = FO.PackedSelfAttention.apply(self.c_attn(x), n_head=H, is_causal=self.causal,
                                             scale=1.0 / math.sqrt(C // H))
            return self.resid_dropout(self.c_proj(y))
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.reshape(B, T, H, C // H).transpose(1, 2)
        k = k.reshape(B, T, H, C // H).transpose(1, 2)
        v = v.reshape(B, T, H, C // H).transpose(1, 2)
        past = 0
        if cache is not None:
            past = cache.cache.pos
            k, v = cache.extend(k, v)
        Tk = k.shape[2]
        mask = None
        if attention_mask is not None:
            m = attention_mask if attention_mask.dtype.name == "bool" else attention_mask != 0
            if m.shape != (B, Tk):
                raise ValueError(f"{type(self).__name__}: attention_mask must have shape (B, Tk) = "
                                 f"{(B, Tk)}, got {m.shape}")
            mask = m.reshape(B, 1, 1, Tk)
        is_causal = self.causal
        if self.causal and past and T > 1:
            # new queries sit at positions past..past+T-1: query i sees keys j <= past + i
            allowed = factories.ones(T, Tk, dtype="bool", device=x.device).tril(past)
            mask = allowed.reshape(1, 1, T, Tk) if mask is None else (mask & allowed.reshape(1, 1, T, Tk))
            is_causal = False
        elif self.causal and past and T == 1:
            is_causal = False  # a single new query may see every cached key
        if self.record_attention:
            self.last_attention = F.attention_probs(q, k, mask, is_causal).detach()
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_dropout(self.c_proj(y))

    def extra_repr(self):
        return f"n_embd={self.n_embd}, n_head={self.n_head}, causal={self.causal}"


class CausalSelfAttention(MultiHeadAttention):
    def __init__(self, n_embd, n_head, bias=True, dropout=0.0):
        super().__init__(n_embd, n_head, bias=bias, dropout=dropout, causal=True)
