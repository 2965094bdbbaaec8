"""The built-in seq2seq tasks as `tensorlite train` runs (`--task reverse`,
`--task seq2seq-sort`): an encoder-decoder trained by the same loop as a GPT.

train.py's loop calls model(x, y) on (B, L) int arrays. A seq2seq example is three arrays
(src, tgt_in, tgt_out), so it travels packed: x holds the source and the decoder input
side by side, PAD-padded to the task's longest source (S columns) and longest target + 1
(T columns), and y is tgt_out padded to T. PackedSeq2Seq.forward splits x at S and drops
the all-PAD columns again, so the model computes exactly what it would on the batch as
the task made it (padded to the longest of the batch).

config.json's "model" is {"kind": "seq2seq", "config": Seq2SeqConfig.to_dict(),
"src_len": S, ...}; load_run sees the marker and builds a Seq2SeqTransformer. The run's
tensorlite_tokenizer.json is a CharTokenizer whose ids are the task vocabulary's (three control
characters stand for PAD, BOS and EOS, which nobody types), so `tensorlite generate
--prompt abc` encodes a source string as training did.
"""
import os

import numpy as np

from . import checkpoint as ckpt
from .backend.device import to_numpy
from .data.seq2seq_tasks import CHARS, SPECIALS, get_seq2seq_task, make_batch
from .errors import UsageError
from .factories import tensor
from .models.seq2seq import Seq2SeqConfig, Seq2SeqTransformer
from .tensor import Tensor
from .tokenizers import CharTokenizer
from .train_data import LoaderData
from .utils.data import Dataset

# the command's task name -> data.seq2seq_tasks' (`sort` already names the GPT's SortTask)
TASKS = {"reverse": "reverse", "seq2seq-sort": "sort"}
KIND = "seq2seq"


def is_seq2seq_task(name):
    return name in TASKS


def is_seq2seq_config(config):
    """Whether a run's config.json holds a seq2seq model."""
    return isinstance(config.get("model"), dict) and config["model"].get("kind") == KIND


def run_is_seq2seq(out):
    """Whether the run folder out holds a seq2seq run (False when it holds no config)."""
    path = os.path.join(out, ckpt.CONFIG)
    if not os.path.isfile(path):
        return False
    config = ckpt.read_json(path, "config")
    return isinstance(config, dict) and is_seq2seq_config(config)


def task_tokenizer():
    return CharTokenizer([chr(i) for i in range(len(SPECIALS))] + list(CHARS))


def check_config(cfg):
    """UsageError for what a seq2seq run cannot do (called on a resolved TrainConfig)."""
    if cfg.mfu:
        raise UsageError(f"--mfu is not available for --task {cfg.task} (it counts a GPT's FLOPs)")


class PackedSeq2Seq(Seq2SeqTransformer):
    """A Seq2SeqTransformer whose forward takes the loop's (x, y): x (B, src_len + T) is the
    source and the decoder input side by side, y (B, T) the decoder's targets. Everything
    else (encode, decode, generate, the state dict) is Seq2SeqTransformer's."""

    def __init__(self, config, src_len):
        super().__init__(config)
        self.src_len = src_len

    def forward(self, x, y=None):
        S, pad = self.src_len, self.config.pad_id
        a = to_numpy(x._data) if isinstance(x, Tensor) else np.asarray(x)
        ws, wt = _used_width(a[:, :S], pad), _used_width(a[:, S:], pad)
        src, tgt_in = x[:, :ws], x[:, S:S + wt]
        return super().forward(src, tgt_in, targets=None if y is None else y[:, :wt])


def _used_width(a, pad):
    # right-padded rows: the columns up to the last one that holds a token in any row
    used = np.flatnonzero((a != pad).any(axis=0))
    return int(used[-1]) + 1 if len(used) else 1


class PackedPairs(Dataset):
    """A seq2seq task's examples as a Dataset keyed by source string: item `source` is its
    packed (x, y) rows, x (src_len + tgt_len,) and y (tgt_len,), as pack() makes them."""

    def __init__(self, data):
        self.data = data

    def __getitem__(self, source):
        return self.__getitems__([source])[0]

    def __getitems__(self, sources):
        x, y = self.data.pack(make_batch([(s, self.data.task.target(s)) for s in sources]))
        return list(zip(x, y))


class Seq2SeqTaskData(LoaderData):
    """A seq2seq task presented as train.py's data: packed batches (the next batch of a
    DataLoader over PackedPairs, whose sampler draws sources with the task's sample_train,
    as its get_batch does), a tokenizer, the model and its held-out exact match."""

    def __init__(self, cfg):
        self.task = get_seq2seq_task(TASKS[cfg.task], seed=cfg.seed)
        self.tokenizer = task_tokenizer()
        self.src_len, self.tgt_len = self.task.max_src_len, self.task.max_tgt_len
        self.block_size = self.src_len + self.tgt_len  # positions per packed row
        self.pairs = PackedPairs(self)

    def dataset(self, split, block_size):
        return self.pairs

    def draw(self, n, rng):
        return self.task.sample_train(n, rng)

    def pack(self, b):
        """A Seq2SeqBatch -> the loop's (x, y), padded to the task's longest rows."""
        n, pad = len(b.src), self.task.pad_id
        x = np.full((n, self.block_size), pad, dtype=np.int64)
        x[:, :b.src.shape[1]] = b.src
        x[:, self.src_len:self.src_len + b.tgt_in.shape[1]] = b.tgt_in
        y = np.full((n, self.tgt_len), pad, dtype=np.int64)
        y[:, :b.tgt_out.shape[1]] = b.tgt_out
        return x, y

    def build_model(self, cfg):
        """(model, config.json's "model" object) from the run's n_layer (encoder and decoder
        layers each), n_head, n_embd (d_model; feed-forward 4x), dropout and bias."""
        t = self.task
        mc = Seq2SeqConfig(src_vocab_size=t.vocab_size, tgt_vocab_size=t.vocab_size,
                           d_model=cfg.n_embd, nhead=cfg.n_head, num_encoder_layers=cfg.n_layer,
                           num_decoder_layers=cfg.n_layer, dim_feedforward=4 * cfg.n_embd,
                           dropout=cfg.dropout, bias=cfg.bias,
                           max_len=max(256, self.src_len, self.tgt_len),
                           pad_id=t.pad_id, bos_id=t.bos_id, eos_id=t.eos_id)
        # n_layer .. block_size repeat the shape in a GPT's words, for plot titles
        saved = {"kind": KIND, "config": mc.to_dict(), "src_len": self.src_len,
                 "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_embd": cfg.n_embd,
                 "block_size": self.block_size}
        return PackedSeq2Seq(mc, self.src_len), saved

    def accuracy(self, model, device, n=None, beam_size=1):
        return heldout_accuracy(model, self.task, device, n=n, beam_size=beam_size)


def heldout_accuracy(model, task, device="cpu", n=None, beam_size=1):
    """Held-out exact match (greedy, or beam search with beam_size > 1), in [0, 1]."""
    def predict(src, max_new):
        return model.generate(tensor(src, device=device), max_new, task.bos_id, task.eos_id,
                              beam_size=beam_size).numpy()
    return float(task.evaluate(predict, n=n))


def model_from_saved(saved):
    """The Seq2SeqTransformer of a run's config.json "model" object (no weights yet)."""
    return PackedSeq2Seq(Seq2SeqConfig.from_dict(saved["config"]), saved["src_len"])


def translate(model, tokenizer, text, max_new_tokens=None, beam_size=1, device="cpu"):
    """The model's output string for the source string `text` (greedy or beam search)."""
    if not text:
        raise ValueError("a seq2seq run needs a source string: pass --prompt")
    ids = np.array([tokenizer.encode(text)], dtype=np.int64)
    limit = model.config.max_len
    n = limit if max_new_tokens is None else min(max_new_tokens, limit)
    if ids.shape[1] > limit:
        raise ValueError(f"the source has {ids.shape[1]} tokens; this model takes at most {limit}")
    if n < 1:
        return ""
    out = model.generate(tensor(ids, device=device), n, beam_size=beam_size).numpy()[0]
    kept = []
    for t in out:
        if int(t) == model.config.eos_id:
            break
        if int(t) >= len(SPECIALS):
            kept.append(int(t))
    return tokenizer.decode(kept)


def evaluate_run(model, config, beam_size=1, device="cpu", n=None):
    """`tensorlite eval` of a seq2seq run: held-out exact match, greedy and with a beam."""
    train = config.get("train", {})
    name = train.get("task")
    if name not in TASKS:
        raise ValueError(f"config.json names no seq2seq task (task {name!r})")
    task = get_seq2seq_task(TASKS[name], seed=train.get("seed", 0))
    res = {"task": name, "heldout": len(task.heldout_pairs(n)),
           "accuracy": heldout_accuracy(model, task, device, n=n)}
    if beam_size > 1:
        res["beam_size"] = beam_size
        res["beam_accuracy"] = heldout_accuracy(model, task, device, n=n, beam_size=beam_size)
    return res
