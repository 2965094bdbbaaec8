"""Built-in sequence-to-sequence tasks for an encoder-decoder: no file needed.

Each example is a pair of strings (source, target), for example for `reverse`

    source "hello"  ->  target "olleh"

The source goes to the encoder; the decoder reads BOS + target and predicts target + EOS.
Strings have random lengths, so batches are padded with PAD on the right. Every task
shares one fixed character vocabulary:

    0 <pad>   1 <bos>   2 <eos>   3.. "0123456789"   13.. "abcdefghijklmnopqrstuvwxyz"

A fixed held-out set (n_heldout distinct sources, drawn from the seed) is never sampled
for training: `sample_train` redraws any held-out source it hits, so `evaluate` measures
generalisation. `evaluate` scores exact match: the prediction up to its first EOS must be
the target, and the EOS must be there.

Like data/tasks.py, nothing here uses tensorlite's Tensor: batches are int64 NumPy arrays.
"""
from typing import NamedTuple

import numpy as np

SPECIALS = ("<pad>", "<bos>", "<eos>")
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
DIGITS = "0123456789"
LOWERCASE = "abcdefghijklmnopqrstuvwxyz"
CHARS = DIGITS + LOWERCASE
ITOS = SPECIALS + tuple(CHARS)
STOI = {ch: i + len(SPECIALS) for i, ch in enumerate(CHARS)}
VOCAB_SIZE = len(ITOS)


class Seq2SeqBatch(NamedTuple):
    """src (B, S): PAD-padded sources. tgt_in (B, T): BOS + target, PAD-padded (the
    decoder's input). tgt_out (B, T): target + EOS, PAD-padded (what it must predict; PAD
    positions carry no loss). All int64."""
    src: np.ndarray
    tgt_in: np.ndarray
    tgt_out: np.ndarray


def encode(s):
    """String -> int64 ids (no BOS/EOS). Raises ValueError outside the vocabulary."""
    try:
        return np.array([STOI[ch] for ch in s], dtype=np.int64)
    except KeyError as e:
        raise ValueError(f"{e.args[0]!r} is not in the seq2seq vocabulary {CHARS!r}") from None


def decode(ids, stop_at_eos=True):
    """ids -> string: special tokens are dropped, and reading stops at the first EOS."""
    out = []
    for i in ids:
        i = int(i)
        if i == EOS_ID and stop_at_eos:
            break
        if i >= len(SPECIALS):
            out.append(ITOS[i])
    return "".join(out)


def _pad(rows, width):
    out = np.full((len(rows), width), PAD_ID, dtype=np.int64)
    for r, ids in enumerate(rows):
        out[r, :len(ids)] = ids
    return out


def make_batch(pairs):
    """[(source, target) strings] -> Seq2SeqBatch, padded to the longest of the batch."""
    srcs = [encode(s) for s, _ in pairs]
    tgts = [encode(t) for _, t in pairs]
    S = max(len(s) for s in srcs)
    T = max(len(t) for t in tgts) + 1
    tgt_in = _pad([np.concatenate([[BOS_ID], t]) for t in tgts], T)
    tgt_out = _pad([np.concatenate([t, [EOS_ID]]) for t in tgts], T)
    return Seq2SeqBatch(_pad(srcs, S), tgt_in, tgt_out)


class Seq2SeqTask:
    """Shared machinery; a subclass sets `name`, `alphabet` and `target(source)`.

    Sources are strings over `alphabet` of a uniformly random length in
    [min_len, max_len]. Attributes for a training loop: vocab_size, pad_id, bos_id, eos_id,
    max_src_len, max_tgt_len (target + EOS: the decoder steps a prediction needs), itos.
    """

    name = ""
    alphabet = ""
    vocab_size, pad_id, bos_id, eos_id, itos = VOCAB_SIZE, PAD_ID, BOS_ID, EOS_ID, ITOS

    def __init__(self, seed=0, n_heldout=1000, min_len=8, max_len=16):
        if not 1 <= min_len <= max_len:
            raise ValueError(f"{type(self).__name__}: need 1 <= min_len <= max_len, got "
                             f"min_len={min_len}, max_len={max_len}")
        n_sources = sum(len(self.alphabet) ** n for n in range(min_len, max_len + 1))
        if not 1 <= n_heldout <= n_sources // 2:
            raise ValueError(f"{type(self).__name__}: n_heldout must be in [1, {n_sources // 2}] "
                             f"for lengths {min_len}..{max_len}, got {n_heldout}")
        self.seed, self.min_len, self.max_len = seed, min_len, max_len
        self.max_src_len = max_len
        self.max_tgt_len = self.target_len(max_len) + 1
        rng = np.random.default_rng(seed)
        held = []
        seen = set()
        while len(held) < n_heldout:
            for s in self._draw(n_heldout - len(held), rng):
                if s not in seen:
                    seen.add(s)
                    held.append(s)
        self.heldout_sources = held
        self._heldout = seen

    # -- the problem --------------------------------------------------------------------
    def target(self, source):
        raise NotImplementedError

    def target_len(self, source_len):
        return source_len

    def _draw(self, n, rng):
        lengths = rng.integers(self.min_len, self.max_len + 1, size=n)
        symbols = rng.integers(0, len(self.alphabet), size=(n, self.max_len))
        a = self.alphabet
        return ["".join(a[j] for j in row[:k]) for row, k in zip(symbols, lengths)]

    # -- training data ------------------------------------------------------------------
    def sample_train(self, n, rng):
        """n random source strings, none of them held out (a held-out hit is redrawn)."""
        out = self._draw(n, rng)
        for i, s in enumerate(out):
            while s in self._heldout:
                s = self._draw(1, rng)[0]
            out[i] = s
        return out

    def get_batch(self, batch_size, rng):
        """A training Seq2SeqBatch; the same Generator state gives the same batch."""
        return make_batch([(s, self.target(s)) for s in self.sample_train(batch_size, rng)])

    # -- evaluation ---------------------------------------------------------------------
    def heldout_pairs(self, n=None):
        srcs = self.heldout_sources if n is None else self.heldout_sources[:n]
        return [(s, self.target(s)) for s in srcs]

    def evaluate(self, predict_fn, n=None, batch_size=250):
        """Exact-match accuracy in [0, 1] on the first n held-out examples (all: None).

        predict_fn(src (N, S) int64 PAD-padded, max_new_tokens) returns (N, T') token ids
        (without BOS), e.g. a model's greedy decoding. A prediction is right when its
        tokens up to the first EOS spell the target and the EOS is there."""
        pairs = self.heldout_pairs(n)
        correct = 0
        for i in range(0, len(pairs), batch_size):
            chunk = pairs[i:i + batch_size]
            batch = make_batch(chunk)
            out = np.asarray(predict_fn(batch.src, self.max_tgt_len))
            if out.ndim != 2 or out.shape[0] != len(chunk):
                raise ValueError(f"predict_fn returned shape {out.shape}, expected "
                                 f"({len(chunk)}, T)")
            for row, (_, tgt) in zip(out, chunk):
                correct += _exact(row, encode(tgt))
        return correct / len(pairs)


def _exact(row, target_ids):
    """row up to its first EOS is exactly target_ids (no stray PAD/BOS), and has the EOS."""
    n = len(target_ids)
    return len(row) > n and row[n] == EOS_ID and bool(np.array_equal(row[:n], target_ids))


class ReverseTask(Seq2SeqTask):
    """Reverse a random lowercase string: "hello" -> "olleh"."""
    name = "reverse"
    alphabet = LOWERCASE

    def target(self, source):
        return source[::-1]


class SortDigitsTask(Seq2SeqTask):
    """Sort a random string of digits: "31415926" -> "11234569"."""
    name = "sort"
    alphabet = DIGITS

    def target(self, source):
        return "".join(sorted(source))


SEQ2SEQ_TASKS = {t.name: t for t in (ReverseTask, SortDigitsTask)}


def get_seq2seq_task(name, seed=0, **kw):
    """A task by name ("reverse", "sort"); kw go to its constructor (n_heldout, lengths)."""
    if name not in SEQ2SEQ_TASKS:
        raise ValueError(f"unknown seq2seq task {name!r}; choose one of {sorted(SEQ2SEQ_TASKS)}")
    return SEQ2SEQ_TASKS[name](seed=seed, **kw)
