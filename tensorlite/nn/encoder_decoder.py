"""nn.Transformer and its parts (the encoder-decoder of "Attention Is All You Need") with
PyTorch's constructor arguments, forward signatures and state-dict keys, so a
torch.nn.Transformer checkpoint loads as it is.

    Transformer
      encoder: TransformerEncoder  -> layers.N: TransformerEncoderLayer, norm: LayerNorm
      decoder: TransformerDecoder  -> layers.N: TransformerDecoderLayer, norm: LayerNorm

Masks follow PyTorch (docs/SEQ2SEQ.md): key padding masks (B, S) with True = padding,
attention masks (L, S) with bool True = not allowed or float added to the scores. The
*_is_causal arguments are hints that the matching mask is the causal one (the kernel then
masks by itself); tgt_is_causal=None detects a causal tgt_mask, as PyTorch does.

Beyond PyTorch: TransformerDecoder(..., cache=decoder.init_cache()) decodes incrementally
(feed only the new target tokens each call; see TransformerDecoderCache).
"""
import copy

import numpy as np

from .. import _dtype as dt
from .. import factories
from ..backend.device import xp_of
from ..tensor import Tensor
from . import functional as F
from . import init
from .containers import ModuleList
from .layers import Dropout, LayerNorm, Linear
from .module import Module
from .multihead_attention import MultiheadAttention, MultiheadAttentionCache

_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


def _activation(activation):
    if isinstance(activation, str):
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be 'relu', 'gelu' or a callable, got {activation!r}")
        return _ACTIVATIONS[activation]
    if not callable(activation):
        raise ValueError(f"activation must be 'relu', 'gelu' or a callable, got {activation!r}")
    return activation  # a Module becomes a submodule (parameterless ones add no state keys)


def _is_causal_mask(mask, is_causal, size):
    """PyTorch's rule: an explicit hint wins; None means compare mask with the causal mask."""
    if is_causal is not None:
        return bool(is_causal)
    if mask is None:
        return False
    m = mask._data if isinstance(mask, Tensor) else np.asarray(mask)
    if tuple(m.shape) != (size, size):
        return False
    xp = xp_of(m)
    above = xp.triu(xp.ones((size, size), dtype=bool), 1)
    if m.dtype == np.bool_:
        return bool((m == above).all())
    return bool((m == xp.where(above, -np.inf, 0.0)).all())


def _seq_len(x, batch_first):
    return x.shape[0] if x.ndim == 2 or not batch_first else x.shape[1]


class _LayerParts:
    """What both layer kinds are made of, built in PyTorch's attribute (= state-dict) order:
    attention modules, then linear1 / dropout / linear2, then norm1..n and dropout1..n."""

    def _build(self, attn_names, n_norms, d_model, nhead, dim_feedforward, dropout,
               activation, layer_norm_eps, batch_first, norm_first, bias, device, dtype):
        kw = dict(device=device, dtype=dtype)
        for name in attn_names:
            setattr(self, name, MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                                   batch_first=batch_first, **kw))
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, **kw)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, **kw)
        self.norm_first = norm_first
        for i in range(1, n_norms + 1):
            setattr(self, f"norm{i}", LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw))
        for i in range(1, n_norms + 1):
            setattr(self, f"dropout{i}", Dropout(dropout))
        self.activation = _activation(activation)

    def _ff_block(self, x, dropout_out):
        return dropout_out(self.linear2(self.dropout(self.activation(self.linear1(x)))))


class TransformerEncoderLayer(_LayerParts, Module):
    """Self-attention and a feed-forward block, each with a residual connection and a
    LayerNorm: after it (norm_first=False, the paper's) or before it (norm_first=True)."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu",
                 layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True,
                 device=None, dtype=None):
        super().__init__()
        self._build(("self_attn",), 2, d_model, nhead, dim_feedforward, dropout, activation,
                    layer_norm_eps, batch_first, norm_first, bias, device, dtype)

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            return x + self._ff_block(self.norm2(x), self.dropout2)
        x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
        return self.norm2(x + self._ff_block(x, self.dropout2))

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal):
        y = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                           need_weights=False, is_causal=is_causal)[0]
        return self.dropout1(y)


class TransformerDecoderLayer(_LayerParts, Module):
    """Causal self-attention over the target, cross-attention from the target to the
    encoder's memory, and a feed-forward block; residuals and LayerNorms as in the encoder
    layer. cache: a _DecoderLayerCache (from TransformerDecoder.init_cache) for decoding."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu",
                 layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True,
                 device=None, dtype=None):
        super().__init__()
        self._build(("self_attn", "multihead_attn"), 3, d_model, nhead, dim_feedforward,
                    dropout, activation, layer_norm_eps, batch_first, norm_first, bias,
                    device, dtype)

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False,
                cache=None):
        sa_cache = ca_cache = None
        if cache is not None:
            sa_cache, ca_cache = cache.self_attn, cache.cross_attn
        x = tgt
        sa = (tgt_mask, tgt_key_padding_mask, tgt_is_causal, sa_cache)
        ca = (memory_mask, memory_key_padding_mask, memory_is_causal, ca_cache)
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), *sa)
            x = x + self._mha_block(self.norm2(x), memory, *ca)
            return x + self._ff_block(self.norm3(x), self.dropout3)
        x = self.norm1(x + self._sa_block(x, *sa))
        x = self.norm2(x + self._mha_block(x, memory, *ca))
        return self.norm3(x + self._ff_block(x, self.dropout3))

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal, cache):
        y = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                           need_weights=False, is_causal=is_causal, cache=cache)[0]
        return self.dropout1(y)

    def _mha_block(self, x, mem, attn_mask, key_padding_mask, is_causal, cache):
        y = self.multihead_attn(x, mem, mem, attn_mask=attn_mask,
                                key_padding_mask=key_padding_mask, need_weights=False,
                                is_causal=is_causal, cache=cache)[0]
        return self.dropout2(y)


def _clones(layer, n):
    # deep copies, as PyTorch's: every layer starts from the same weights
    return ModuleList([copy.deepcopy(layer) for _ in range(n)])


class TransformerEncoder(Module):
    """num_layers copies of encoder_layer, then the optional final norm. (PyTorch's
    enable_nested_tensor / mask_check only select its fast path; accepted and ignored.)"""

    def __init__(self, encoder_layer, num_layers, norm=None, enable_nested_tensor=True,
                 mask_check=True):
        super().__init__()
        self.layers = _clones(encoder_layer, num_layers)
        self.num_layers = num_layers
        self.norm = norm

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=None):
        first = self.layers[0] if len(self.layers) else None
        batch_first = first.self_attn.batch_first if first is not None else True
        is_causal = _is_causal_mask(mask, is_causal, _seq_len(src, batch_first))
        x = src
        for layer in self.layers:
            x = layer(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask,
                      is_causal=is_causal)
        return self.norm(x) if self.norm is not None else x


class _DecoderLayerCache:
    __slots__ = ("self_attn", "cross_attn")

    def __init__(self):
        self.self_attn = MultiheadAttentionCache(static=False)
        self.cross_attn = MultiheadAttentionCache(static=True)


class TransformerDecoderCache:
    """Incremental-decoding state of a TransformerDecoder: per layer, the self-attention
    keys/values of the target tokens decoded so far and the cross-attention keys/values of
    the memory (projected on the first call, reused after). `pos` counts the target tokens
    seen. The cached path is causal by construction: pass only the new tokens, no tgt_mask.
    For inference only: cached tensors are detached."""

    def __init__(self, num_layers):
        self.layers = [_DecoderLayerCache() for _ in range(num_layers)]
        self.pos = 0

    def reorder(self, index):
        """Keep batch rows `index` of every cached tensor (beam search's reshuffle)."""
        for c in self.layers:
            c.self_attn.reorder(index)
            c.cross_attn.reorder(index)


class TransformerDecoder(Module):
    """num_layers copies of decoder_layer, then the optional final norm."""

    def __init__(self, decoder_layer, num_layers, norm=None):
        super().__init__()
        self.layers = _clones(decoder_layer, num_layers)
        self.num_layers = num_layers
        self.norm = norm

    def init_cache(self):
        return TransformerDecoderCache(len(self.layers))

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=None, memory_is_causal=False,
                cache=None):
        """cache: a TransformerDecoderCache; tgt then holds only the new tokens (positions
        cache.pos ..), attention to them and to every cached token is causal, and
        tgt_key_padding_mask (if any) covers all cached + new tokens."""
        first = self.layers[0] if len(self.layers) else None
        batch_first = first.self_attn.batch_first if first is not None else True
        if cache is not None:
            if tgt_mask is not None:
                raise ValueError("TransformerDecoder: the cached path is causal by construction; "
                                 "pass tgt_mask=None with a cache")
            tgt_is_causal = True
        else:
            tgt_is_causal = _is_causal_mask(tgt_mask, tgt_is_causal, _seq_len(tgt, batch_first))
        x = tgt
        for i, layer in enumerate(self.layers):
            x = layer(x, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                      tgt_key_padding_mask=tgt_key_padding_mask,
                      memory_key_padding_mask=memory_key_padding_mask,
                      tgt_is_causal=tgt_is_causal, memory_is_causal=memory_is_causal,
                      cache=None if cache is None else cache.layers[i])
        if cache is not None:
            cache.pos += _seq_len(tgt, batch_first)
        return self.norm(x) if self.norm is not None else x


class Transformer(Module):
    """The encoder-decoder transformer. src (S, B, E) and tgt (T, B, E) (or (B, S, E),
    (B, T, E) with batch_first=True, or unbatched (S, E), (T, E)) -> (T, B, E) like tgt.
    Both stacks end in a LayerNorm (encoder.norm, decoder.norm) whatever norm_first is,
    as PyTorch builds them. Every weight matrix is re-initialised with xavier_uniform_."""

    def __init__(self, d_model=512, nhead=8, num_encoder_layers=6, num_decoder_layers=6,
                 dim_feedforward=2048, dropout=0.1, activation="relu", custom_encoder=None,
                 custom_decoder=None, layer_norm_eps=1e-5, batch_first=False, norm_first=False,
                 bias=True, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        layer_kw = dict(dim_feedforward=dim_feedforward, dropout=dropout, activation=activation,
                        layer_norm_eps=layer_norm_eps, batch_first=batch_first,
                        norm_first=norm_first, bias=bias, **kw)
        if custom_encoder is not None:
            self.encoder = custom_encoder
        else:
            self.encoder = TransformerEncoder(
                TransformerEncoderLayer(d_model, nhead, **layer_kw), num_encoder_layers,
                LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw))
        if custom_decoder is not None:
            self.decoder = custom_decoder
        else:
            self.decoder = TransformerDecoder(
                TransformerDecoderLayer(d_model, nhead, **layer_kw), num_decoder_layers,
                LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw))
        self.d_model, self.nhead, self.batch_first = d_model, nhead, batch_first
        self._reset_parameters()

    def _reset_parameters(self):
        for p in self.parameters():
            if p.ndim > 1:
                init.xavier_uniform_(p)

    def forward(self, src, tgt, src_mask=None, tgt_mask=None, memory_mask=None,
                src_key_padding_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, src_is_causal=None, tgt_is_causal=None,
                memory_is_causal=False):
        if src.ndim != tgt.ndim or src.ndim not in (2, 3):
            raise ValueError(f"Transformer: src and tgt must both be 2-D (unbatched) or 3-D, got "
                             f"shapes {src.shape} and {tgt.shape}")
        bdim = 0 if self.batch_first else 1
        if src.ndim == 3 and src.shape[bdim] != tgt.shape[bdim]:
            raise ValueError(f"Transformer: src and tgt must have the same batch size, got "
                             f"{src.shape[bdim]} and {tgt.shape[bdim]} (batch_first="
                             f"{self.batch_first})")
        if src.shape[-1] != self.d_model or tgt.shape[-1] != self.d_model:
            raise ValueError(f"Transformer: the feature size of src and tgt must be d_model="
                             f"{self.d_model}, got {src.shape[-1]} and {tgt.shape[-1]}")
        memory = self.encoder(src, mask=src_mask, src_key_padding_mask=src_key_padding_mask,
                              is_causal=src_is_causal)
        return self.decoder(tgt, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                            tgt_key_padding_mask=tgt_key_padding_mask,
                            memory_key_padding_mask=memory_key_padding_mask,
                            tgt_is_causal=tgt_is_causal, memory_is_causal=memory_is_causal)

    @staticmethod
    def generate_square_subsequent_mask(sz, device=None, dtype=None):
        """(sz, sz) float mask: 0 on and below the diagonal, -inf above (future positions)."""
        m = np.triu(np.full((sz, sz), -np.inf), 1)
        return factories.tensor(m, dtype=dtype or dt.get_default_dtype(), device=device)
