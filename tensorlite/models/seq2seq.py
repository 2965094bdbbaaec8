"""Seq2SeqTransformer: the encoder-decoder of "Attention Is All You Need" around
nn.Transformer (batch_first), with token embeddings scaled by sqrt(d_model), sinusoidal
(or learned) positions, an output projection tied to the target embedding, and greedy and
beam-search decoding with the encoder run once and a decoder KV cache (docs/SEQ2SEQ.md).

train_seq2seq(task, steps) trains one on a task of tensorlite.data.seq2seq_tasks.
"""
import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .. import factories
from ..autograd.grad_mode import no_grad
from ..backend.device import to_numpy
from ..nn import functional as F
from ..nn import init
from ..nn.encoder_decoder import Transformer
from ..nn.layers import Dropout, Embedding, Linear
from ..nn.module import Module
from ..nn.utils import clip_grad_norm_
from ..optim import AdamW
from ..optim.lr_scheduler import warmup_cosine
from ..random import manual_seed
from ..tensor import Tensor
from ._config import DictConfig

IGNORE_INDEX = -100


@dataclass
class Seq2SeqConfig(DictConfig):
    """The model's shape. pad_id: the padding token of both vocabularies; padding masks
    are derived from it when none are passed, and targets equal to it (or -100) carry no
    loss (None: no padding). positional: "sinusoidal" (the paper's, no parameters) or
    "learned" (one table per side). max_len bounds source and target lengths.
    tie_embeddings: the output projection shares the target embedding's weight.
    bos_id/eos_id: generate()'s defaults. dropout 0 keeps attention on the fused kernel."""
    src_vocab_size: int = 39
    tgt_vocab_size: int = 39
    d_model: int = 128
    nhead: int = 4
    num_encoder_layers: int = 2
    num_decoder_layers: int = 2
    dim_feedforward: int = 512
    dropout: float = 0.0
    activation: str = "relu"
    layer_norm_eps: float = 1e-5
    norm_first: bool = False
    bias: bool = True
    max_len: int = 256
    positional: str = "sinusoidal"
    tie_embeddings: bool = True
    pad_id: Optional[int] = 0
    bos_id: Optional[int] = 1
    eos_id: Optional[int] = 2



def sinusoidal_positions(n, d_model):
    """(n, d_model) float64: PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(..)."""
    pos = np.arange(n)[:, None]
    freq = np.exp(-math.log(10000.0) * np.arange(0, d_model, 2) / d_model)
    pe = np.zeros((n, d_model))
    pe[:, 0::2] = np.sin(pos * freq)
    pe[:, 1::2] = np.cos(pos * freq[: d_model // 2])
    return pe


def _ids(x, device=None):
    return x if isinstance(x, Tensor) else factories.tensor(np.asarray(x, dtype=np.int64),
                                                            device=device)


class Seq2SeqTransformer(Module):
    def __init__(self, config):
        super().__init__()
        c = self.config = config
        if c.d_model % c.nhead:
            raise ValueError(f"Seq2SeqConfig: d_model ({c.d_model}) must be divisible by nhead "
                             f"({c.nhead})")
        if c.positional not in ("sinusoidal", "learned"):
            raise ValueError(f"Seq2SeqConfig: positional must be 'sinusoidal' or 'learned', "
                             f"got {c.positional!r}")
        self.src_embed = Embedding(c.src_vocab_size, c.d_model)
        self.tgt_embed = Embedding(c.tgt_vocab_size, c.d_model)
        if c.positional == "learned":
            self.src_pos_embed = Embedding(c.max_len, c.d_model)
            self.tgt_pos_embed = Embedding(c.max_len, c.d_model)
        else:
            pe = factories.tensor(sinusoidal_positions(c.max_len, c.d_model), dtype="float32")
            self.register_buffer("pe", pe, persistent=False)  # a function of the config
        self.dropout = Dropout(c.dropout)
        self.transformer = Transformer(
            c.d_model, c.nhead, c.num_encoder_layers, c.num_decoder_layers, c.dim_feedforward,
            c.dropout, c.activation, layer_norm_eps=c.layer_norm_eps, batch_first=True,
            norm_first=c.norm_first, bias=c.bias)
        self.lm_head = Linear(c.d_model, c.tgt_vocab_size, bias=False)
        # N(0, 1/d) so that embedding * sqrt(d) has unit scale and, tied, the logits of a
        # layer-normed state start at unit scale too (the paper's scheme)
        for emb in (self.src_embed, self.tgt_embed):
            init.normal_(emb.weight, std=c.d_model ** -0.5)
        if c.tie_embeddings:
            self.lm_head.weight = self.tgt_embed.weight
        self.scale = math.sqrt(c.d_model)

    # ---- the pieces -----------------------------------------------------------------
    def padding_mask(self, ids):
        """(B, T) bool array, True at PAD (PyTorch's key_padding_mask), or None."""
        if self.config.pad_id is None:
            return None
        a = ids._data if isinstance(ids, Tensor) else np.asarray(ids)
        return a == self.config.pad_id

    def _embed(self, emb, pos_emb, ids, start=0):
        T = ids.shape[1]
        if start + T > self.config.max_len:
            raise ValueError(f"Seq2SeqTransformer: position {start + T - 1} is beyond "
                             f"max_len={self.config.max_len}")
        x = emb(ids) * self.scale                                              # (B, T, E)
        if pos_emb is not None:
            pos = pos_emb(factories.arange(start, start + T, device=ids.device))  # (T, E)
        else:
            pos = self.pe[start:start + T]                                     # (T, E)
        return self.dropout(x + pos)                                           # (B, T, E)

    def encode(self, src, src_key_padding_mask=None):
        """src (B, S) ids -> memory (B, S, E); the padding mask is derived from pad_id when
        not given. Run once per source; decode() then reads it at every step."""
        src = _ids(src)
        if src_key_padding_mask is None:
            src_key_padding_mask = self.padding_mask(src)
        x = self._embed(self.src_embed, getattr(self, "src_pos_embed", None), src)
        return self.transformer.encoder(x, src_key_padding_mask=src_key_padding_mask)

    def decode(self, tgt, memory, memory_key_padding_mask=None, tgt_key_padding_mask=None,
               cache=None):
        """tgt (B, T) ids -> logits (B, T, V), attending causally over tgt and to memory.
        Masks are used as given (nothing derived). cache (a TransformerDecoderCache from
        model.transformer.decoder.init_cache()): tgt holds only the new tokens."""
        tgt = _ids(tgt, memory.device)
        start = 0 if cache is None else cache.pos
        y = self._embed(self.tgt_embed, getattr(self, "tgt_pos_embed", None), tgt, start)
        h = self.transformer.decoder(y, memory, tgt_key_padding_mask=tgt_key_padding_mask,
                                     memory_key_padding_mask=memory_key_padding_mask,
                                     tgt_is_causal=True, cache=cache)          # (B, T, E)
        return self.lm_head(h)                                                 # (B, T, V)

    def forward(self, src, tgt_in, src_key_padding_mask=None, tgt_key_padding_mask=None,
                targets=None):
        """src (B, S), tgt_in (B, T) ids (BOS + target) -> (logits (B, T, V), loss or None).
        targets (B, T): the next tokens; pad_id and -100 positions carry no loss. Padding
        masks not given are derived from pad_id; the source mask also masks memory."""
        src, tgt_in = _ids(src), _ids(tgt_in)
        if src_key_padding_mask is None:
            src_key_padding_mask = self.padding_mask(src)
        if tgt_key_padding_mask is None:
            tgt_key_padding_mask = self.padding_mask(tgt_in)
        memory = self.encode(src, src_key_padding_mask)                        # (B, S, E)
        logits = self.decode(tgt_in, memory, src_key_padding_mask, tgt_key_padding_mask)
        if targets is None:
            return logits, None
        return logits, self._loss(logits, targets)

    def _loss(self, logits, targets):
        B, T, V = logits.shape
        t = np.asarray(to_numpy(targets._data) if isinstance(targets, Tensor) else targets)
        if t.shape != (B, T):
            raise ValueError(f"Seq2SeqTransformer: targets must have shape {(B, T)} like "
                             f"tgt_in, got {t.shape}")
        ignore = IGNORE_INDEX
        if self.config.pad_id is not None:
            ignore = self.config.pad_id
            t = np.where(t == IGNORE_INDEX, ignore, t)
        t = factories.tensor(t.astype(np.int64).reshape(B * T), device=logits.device)
        return F.cross_entropy(logits.reshape(B * T, V), t, ignore_index=ignore)

    # ---- decoding -------------------------------------------------------------------
    @no_grad()
    def generate(self, src, max_new_tokens, bos_id=None, eos_id=None, beam_size=1,
                 length_penalty=1.0, use_cache=True, src_key_padding_mask=None,
                 output_scores=False):
        """Decode targets for src (B, S): tokens (B, T') int64 without BOS, each row ending
        in EOS (unless it ran out of max_new_tokens) and padded with pad_id (EOS if there
        is none) after it; T' <= max_new_tokens. eos_id None: never stop early.

        beam_size 1 is greedy; > 1 is beam search with Hugging Face's scoring (score =
        sum of log-probs / length ** length_penalty, length = generated tokens with the
        EOS) and its default stopping rule (docs/SEQ2SEQ.md). The encoder runs once; with
        use_cache the decoder feeds one new token per step against its KV cache.
        output_scores: also return greedy's step logits (B, T', V), or beam search's
        chosen hypothesis scores (B,)."""
        c = self.config
        bos = c.bos_id if bos_id is None else bos_id
        eos = c.eos_id if eos_id is None else eos_id
        if bos is None:
            raise ValueError("generate: bos_id is needed (neither given nor in the config)")
        if beam_size < 1 or max_new_tokens < 1:
            raise ValueError(f"generate: beam_size and max_new_tokens must be >= 1, got "
                             f"{beam_size} and {max_new_tokens}")
        src = _ids(src)
        mask = self.padding_mask(src) if src_key_padding_mask is None else src_key_padding_mask
        was_training = self.training
        self.eval()
        try:
            memory = self.encode(src, mask)                                    # (B, S, E)
            run = self._greedy if beam_size == 1 else self._beam
            tokens, scores = run(memory, mask, max_new_tokens, bos, eos, beam_size,
                                 length_penalty, use_cache)
        finally:
            self.train(was_training)
        out = factories.tensor(tokens, dtype="int64", device=src.device)
        if output_scores:
            return out, factories.tensor(scores, device=src.device)
        return out

    def _fill(self, eos):
        # what follows a row's EOS: PAD, else EOS again, else 0 (no special tokens at all)
        if self.config.pad_id is not None:
            return self.config.pad_id
        return eos if eos is not None else 0

    def _next_logits(self, seqs, memory, mask, cache):
        """Logits (N, V) float64 of the next token after each row of seqs (N, t)."""
        if cache is not None:
            logits = self.decode(seqs[:, -1:], memory, mask, cache=cache)      # (N, 1, V)
        else:
            logits = self.decode(seqs, memory, mask)                           # (N, t, V)
        return to_numpy(logits._data[:, -1]).astype(np.float64)

    def _greedy(self, memory, mask, max_new, bos, eos, _beam, _alpha, use_cache):
        B = memory.shape[0]
        cache = self.transformer.decoder.init_cache() if use_cache else None
        seqs = np.full((B, 1), bos, dtype=np.int64)
        done = np.zeros(B, dtype=bool)
        steps = []
        for _ in range(max_new):
            logits = self._next_logits(seqs, memory, mask, cache)              # (B, V)
            steps.append(logits)
            nxt = np.where(done, self._fill(eos), logits.argmax(-1))
            seqs = np.concatenate([seqs, nxt[:, None]], axis=1)
            if eos is not None:
                done |= nxt == eos
                if done.all():
                    break
        return seqs[:, 1:], np.stack(steps, axis=1)

    def _beam(self, memory, mask, max_new, bos, eos, K, alpha, use_cache):
        B = memory.shape[0]
        rows = np.repeat(np.arange(B), K)  # beam k of item b is row b * K + k
        memory = memory.index_select(0, factories.tensor(rows, device=memory.device))
        if mask is not None:
            mask = mask[rows]
        cache = self.transformer.decoder.init_cache() if use_cache else None
        seqs = np.full((B * K, 1), bos, dtype=np.int64)
        cum = np.full((B, K), -np.inf)
        cum[:, 0] = 0.0  # the K beams start identical: keep one so they do not repeat
        hyps = [[] for _ in range(B)]  # per item: up to K (score, tokens) finished
        done = np.zeros(B, dtype=bool)
        for t in range(1, max_new + 1):
            logp = _log_softmax(self._next_logits(seqs, memory, mask, cache))  # (B*K, V)
            V = logp.shape[1]
            cand = (cum[:, :, None] + logp.reshape(B, K, V)).reshape(B, K * V)
            top = np.argsort(-cand, axis=1, kind="stable")[:, :2 * K]
            src_rows = np.repeat(np.arange(B) * K, K).reshape(B, K) + np.arange(K)
            new_tok = np.full((B, K), self._fill(eos), dtype=np.int64)
            new_cum = cum.copy()
            for b in np.flatnonzero(~done):
                n = 0
                # 2K candidates hold at most K EOS, so K beams always continue
                for rank, c in enumerate(top[b]):
                    k, v = divmod(int(c), V)
                    if v == eos:
                        if rank < K:  # an EOS outside the top K is not a hypothesis (HF)
                            _add_hyp(hyps[b], K, cand[b, c] / t ** alpha,
                                     np.append(seqs[b * K + k, 1:], eos))
                        continue
                    src_rows[b, n], new_tok[b, n], new_cum[b, n] = b * K + k, v, cand[b, c]
                    n += 1
                    if n == K:
                        break
                # HF's default rule: done once K hypotheses exist and the best live beam,
                # scored at its current length, does not beat the worst of them
                done[b] = len(hyps[b]) >= K and new_cum[b, 0] / t ** alpha <= hyps[b][-1][0]
            idx = src_rows.reshape(-1)
            seqs = np.concatenate([seqs[idx], new_tok.reshape(-1, 1)], axis=1)
            cum = new_cum
            if cache is not None:
                cache.reorder(idx)
            if done.all():
                break
        for b in np.flatnonzero(~done):  # out of steps: live beams compete as they are
            for k in range(K):
                _add_hyp(hyps[b], K, cum[b, k] / t ** alpha, seqs[b * K + k, 1:])
        best = [h[0] for h in hyps]
        T = max(len(tok) for _, tok in best)
        tokens = np.full((B, T), self._fill(eos), dtype=np.int64)
        for b, (_, tok) in enumerate(best):
            tokens[b, :len(tok)] = tok
        return tokens, np.array([s for s, _ in best])


def _log_softmax(x):
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def _add_hyp(hyps, K, score, tokens):
    """Keep the K best finished hypotheses, best first."""
    if len(hyps) < K or score > hyps[-1][0]:
        hyps.append((float(score), tokens))
        hyps.sort(key=lambda h: -h[0])
        del hyps[K:]


# ---- training on a built-in task -------------------------------------------------------------
def seq2seq_accuracy(model, task, n=None, beam_size=1, batch_size=250):
    """Held-out exact match of `model` on `task` (greedy, or beam search), in [0, 1]."""
    def predict(src, max_new):
        return model.generate(src, max_new, task.bos_id, task.eos_id,
                              beam_size=beam_size).numpy()
    return task.evaluate(predict, n=n, batch_size=batch_size)


def train_seq2seq(task, steps=2000, config=None, batch_size=64, lr=2e-3, warmup=100,
                  min_lr_ratio=0.1, weight_decay=0.0, grad_clip=1.0, seed=0, eval_every=0,
                  eval_n=200, stop_at_accuracy=None, log=None):
    """Train a Seq2SeqTransformer on `task` (a data.seq2seq_tasks task: get_batch(B, rng),
    vocab_size, pad/bos/eos ids, max lengths, evaluate). Adam (AdamW with weight_decay 0
    is Adam) with warmup and cosine decay, gradient clipping. Every eval_every steps the
    held-out exact match on eval_n examples is logged; stop_at_accuracy ends early.
    Returns (model, info) with info: losses, evals [(step, acc)], steps, seconds."""
    manual_seed(seed)
    base = config or Seq2SeqConfig()  # the task decides the vocabulary and lengths
    config = dataclasses.replace(
        base, src_vocab_size=task.vocab_size, tgt_vocab_size=task.vocab_size,
        pad_id=task.pad_id, bos_id=task.bos_id, eos_id=task.eos_id,
        max_len=max(base.max_len, task.max_src_len, task.max_tgt_len))
    model = Seq2SeqTransformer(config)
    opt = AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    rng = np.random.default_rng(seed)
    info = dict(losses=[], evals=[], steps=0)
    t0 = time.perf_counter()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * warmup_cosine(step, warmup, steps, min_lr_ratio)
        batch = task.get_batch(batch_size, rng)
        _, loss = model(batch.src, batch.tgt_in, targets=batch.tgt_out)
        opt.zero_grad()
        loss.backward()
        if grad_clip:
            clip_grad_norm_(list(model.parameters()), grad_clip)
        opt.step()
        info["losses"].append(loss.item())
        info["steps"] = step + 1
        last = step + 1 == steps
        if (eval_every and (step + 1) % eval_every == 0) or last:
            acc = seq2seq_accuracy(model, task, n=eval_n)
            info["evals"].append((step + 1, acc))
            if log is not None:
                log(f"step {step + 1}: loss {info['losses'][-1]:.4f}, held-out exact match "
                    f"({eval_n or 'all'}) {acc:.4f}, {time.perf_counter() - t0:.0f}s")
            if stop_at_accuracy is not None and acc >= stop_at_accuracy:
                break
    info["seconds"] = time.perf_counter() - t0
    return model, info
