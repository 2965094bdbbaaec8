"""GPT: a decoder-only transformer (GPT-2 / nanoGPT architecture), built only from
tensorlite modules. State-dict keys follow GPT-2/nanoGPT naming.

GPT.from_pretrained(folder) / model.save_pretrained(folder) read and write Hugging Face
GPT-2 folders (tensorlite/pretrained/gpt2.py; docs/PRETRAINED.md)."""
import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from .. import factories
from ..autograd.grad_mode import no_grad
from ..backend.device import to_numpy
from ..nn import functional as F
from ..nn import init
from ..nn.attention import KVCache
from ..nn.containers import ModuleDict, ModuleList
from ..nn.layers import Dropout, Embedding, LayerNorm, Linear
from ..nn.module import Module
from ..nn.transformer import Block
from ._config import DictConfig


@dataclass
class GPTConfig(DictConfig):
    """The model's shape and its choices. The defaults are GPT-2 small's, except:

    vocab_size 50304: GPT-2's 50257 padded up to a multiple of 64 (nanoGPT's choice; the
        extra rows are never produced by the tokenizer and only cost a little memory).
        from_pretrained takes the folder's vocab_size (50257 for GPT-2).
    activation "gelu_tanh": GELU's tanh approximation, the one GPT-2 was trained with (HF's
        "gelu_new"); "gelu" is the exact erf GELU, "relu" a ReLU.
    layer_norm_eps 1e-5: GPT-2's (and PyTorch's default).
    tie_word_embeddings True: lm_head shares wte's weight, as in GPT-2.
    n_inner None: the MLP is 4 * n_embd wide; an int sets its width.

    Configs saved before these fields existed load with these defaults, which are exactly
    the behaviour they were trained with."""
    vocab_size: int = 50304
    block_size: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True
    activation: str = "gelu_tanh"
    layer_norm_eps: float = 1e-5
    tie_word_embeddings: bool = True
    n_inner: int | None = None

    def __post_init__(self):
        def positive_int(name, v):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"GPTConfig: {name} must be an int >= 1, got {v!r}")
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            positive_int(name, getattr(self, name))
        if self.n_inner is not None:
            positive_int("n_inner", self.n_inner)
        if not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1):
            raise ValueError(f"GPTConfig: dropout must be in [0, 1), got {self.dropout!r}")
        if not (isinstance(self.layer_norm_eps, (int, float)) and math.isfinite(self.layer_norm_eps)
                and self.layer_norm_eps > 0):
            raise ValueError(f"GPTConfig: layer_norm_eps must be a finite number > 0, got "
                             f"{self.layer_norm_eps!r}")
        if self.activation not in ("gelu_tanh", "gelu", "relu"):
            raise ValueError(f"GPTConfig: activation must be 'gelu_tanh', 'gelu' or 'relu', got "
                             f"{self.activation!r}")



class GPT(Module):
    config_class = GPTConfig  # what tensorlite.pretrained builds from a folder's config.json

    def __init__(self, config, init_weights=True):
        """init_weights=False leaves the layers' default init and skips GPT-2's (about half
        the construction time of a large model): for weights about to be overwritten."""
        super().__init__()
        if config.n_embd % config.n_head:
            raise ValueError(f"GPTConfig: n_embd ({config.n_embd}) must be divisible by n_head "
                             f"({config.n_head})")
        self.config = config
        c = config
        self.transformer = ModuleDict(dict(
            wte=Embedding(c.vocab_size, c.n_embd),
            wpe=Embedding(c.block_size, c.n_embd),
            drop=Dropout(c.dropout),
            h=ModuleList([Block(c.n_embd, c.n_head, bias=c.bias, dropout=c.dropout, causal=True,
                                prenorm=True, activation=c.activation,
                                layer_norm_eps=c.layer_norm_eps, hidden=c.n_inner)
                          for _ in range(c.n_layer)]),
            ln_f=LayerNorm(c.n_embd, eps=c.layer_norm_eps, bias=c.bias),
        ))
        self.lm_head = Linear(c.n_embd, c.vocab_size, bias=False)
        if c.tie_word_embeddings:
            self.lm_head.weight = self.transformer.wte.weight  # weight tying, as in GPT-2
        if init_weights:
            init.gpt2_init_(self, c.n_layer)

    # ---- Hugging Face folders -------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path):
        """A GPT from a local Hugging Face GPT-2 folder (config.json + model.safetensors or
        a sharded index), in eval mode. tensorlite never downloads: see docs/PRETRAINED.md."""
        from ..pretrained import gpt2
        return gpt2.load(cls, path)

    def save_pretrained(self, path):
        """Write config.json + model.safetensors in the layout GPT2LMHeadModel loads."""
        from ..pretrained import gpt2
        gpt2.save(self, path)

    def forward(self, idx, targets=None, kv_cache=None):
        """idx: (B, T) token ids. Returns (logits (B, T, V), loss or None).
        kv_cache: a KVCache; the tokens in idx then continue the cached ones."""
        B, T = idx.shape
        start = kv_cache.pos if kv_cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"GPT: sequence of length {start + T} is longer than the model's "
                             f"block_size {self.config.block_size}")
        pos = factories.arange(start, start + T, device=idx.device)            # (T,)
        tr = self.transformer
        x = tr.drop(tr.wte(idx) + tr.wpe(pos))                                 # (B, T, C)
        for i, block in enumerate(tr.h):
            x = block(x, cache=kv_cache.layer(i) if kv_cache is not None else None)  # (B, T, C)
        if kv_cache is not None:
            kv_cache.pos += T
        x = tr.ln_f(x)                                                         # (B, T, C)
        logits = self.lm_head(x)                                               # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(B * T))  # ()
        return logits, loss

    # ---- facts about the model ------------------------------------------------------
    def num_parameters(self, non_embedding=False, trainable_only=False):
        n = super().num_parameters(trainable_only)
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def flops_per_token(self, T=None):
        """Training FLOPs per token (forward + backward): 6N for the matmuls with the
        parameters, plus 12 * n_layer * n_embd * T for attention's two T x T matmuls."""
        c = self.config
        T = c.block_size if T is None else T
        return 6 * self.num_parameters(non_embedding=True) + 12 * c.n_layer * c.n_embd * T

    def crop_block_size(self, block_size):
        """Shrink the context length (e.g. to fine-tune a model with a shorter context)."""
        if block_size > self.config.block_size:
            raise ValueError(f"crop_block_size: {block_size} is larger than the current "
                             f"block_size {self.config.block_size}")
        # a new config object: models built from the same GPTConfig keep their block_size
        self.config = dataclasses.replace(self.config, block_size=block_size)
        w = self.transformer.wpe.weight
        w._data = w._data[:block_size].copy()
        self.transformer.wpe.num_embeddings = block_size

    # ---- sampling -------------------------------------------------------------------------
    @no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
                 use_cache=True, generator=None, stream=None, eos_token_id=None):
        """Continue idx (B, T) by max_new_tokens sampled tokens. temperature=0 is greedy.
        With use_cache, each step feeds only the new token through the network and reuses
        the keys/values of earlier tokens (a KV cache). stream(tokens (B,)) is called with
        every new token as it is produced. eos_token_id: a row that produced it keeps
        producing it, and generation stops once every row has (GPT-2's <|endoftext|>)."""
        check_sampling(max_new_tokens, temperature, top_k, top_p)
        from ..random import default_generator
        rng = (generator or default_generator).np
        was_training = self.training
        self.eval()
        bs = self.config.block_size
        cache = None
        out = idx
        done = np.zeros(idx.shape[0], dtype=bool)
        try:
            for _ in range(max_new_tokens):
                if use_cache and cache is not None and cache.pos < bs:
                    logits, _ = self(out[:, -1:], kv_cache=cache)
                else:
                    # first step, or the context is full: (re)compute on the last block_size
                    # tokens, which is exactly what the uncached path does every step
                    cache = KVCache(self.config.n_layer) if use_cache else None
                    logits, _ = self(out[:, -bs:], kv_cache=cache)
                nxt = sample_next(to_numpy(logits._data[:, -1, :]), temperature, top_k, top_p, rng)
                if eos_token_id is not None:
                    nxt = np.where(done, eos_token_id, nxt)
                    done |= nxt == eos_token_id
                nxt_t = factories.tensor(nxt[:, None], dtype="int64", device=idx.device)
                out = factories.cat([out, nxt_t], dim=1)
                if stream is not None:
                    stream(nxt)
                if done.all():
                    break
        finally:
            self.train(was_training)
        return out


def check_sampling(max_new_tokens=0, temperature=1.0, top_k=None, top_p=None):
    """One line naming the argument when a sampling setting is out of its range."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) \
            or max_new_tokens < 0:
        raise ValueError(f"generate: max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"generate: temperature must be a finite number >= 0 (0 = greedy), "
                         f"got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer))
                              or top_k < 1):
        raise ValueError(f"generate: top_k must be an int >= 1 or None, got {top_k!r}")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise ValueError(f"generate: top_p must be in (0, 1] or None, got {top_p!r}")


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, rng=None):
    """One token id per row of logits (N, V) (NumPy; sampling is not part of the graph)."""
    logits = logits.astype(np.float64)
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None:
        k = min(int(top_k), logits.shape[-1])
        kth = np.sort(logits, axis=-1)[:, -k][:, None]
        logits = np.where(logits < kth, -np.inf, logits)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    if top_p is not None and top_p < 1.0:
        # keep the smallest set of most likely tokens whose probability reaches top_p
        order = np.argsort(-p, axis=-1)
        sorted_p = np.take_along_axis(p, order, -1)
        keep_sorted = np.cumsum(sorted_p, -1) - sorted_p < top_p
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, -1)
        p = np.where(keep, p, 0)
        p /= p.sum(-1, keepdims=True)
    rng = rng or np.random.default_rng()
    u = rng.random((p.shape[0], 1))
    return np.minimum((np.cumsum(p, -1) < u).sum(-1), p.shape[-1] - 1)

