"""train.py's data: a text file's token windows or a built-in task's examples as
tensorlite.utils.data Datasets, and every batch the loop trains on (and evaluates on) the
next batch of a DataLoader over one of them:

    DataLoader(dataset, batch_sampler=RandomBatches(dataset, n, rng), collate_fn=stack_pairs)

- a text file (TextData): TokenWindows over the split's tokens, item i the window at
  offset i, (tokens[i:i+T], tokens[i+1:i+T+1]); the sampler draws offsets uniformly with
  replacement (nanoGPT's random windows);
- a built-in GPT task, addition or sort (TaskData): TaskExamples, item k problem k's
  (x, y); the sampler draws with the task's sample_train_ids, which never picks a
  held-out problem;
- a seq2seq task: seq2seq_run.Seq2SeqTaskData, items are source strings' packed rows.

RandomBatches draws a batch's indices from the numpy Generator when the loader is asked
for that batch, never ahead, so between two steps the generator holds exactly the state
before the next draw: the state a checkpoint saves as "data_rng" (train._Run.mark), from
which a resume draws the same next batch. Its draws are data.text.get_batch's
(rng.integers(0, len(dataset), size=n)) and the tasks' get_batch's, so the batches are
those of the runs from before the DataLoader, bit for bit. train._train_batch asks for one
global batch of batch_size * grad_accum * world rows a step (the same on every rank) and
keeps the rank's rows (train_loop.my_rows); evaluation passes its own generator.
"""
import json

import numpy as np

from .data.tasks import AdditionTask, SortTask
from .data.text import DataError, TokenFile, _read_utf8, windows
from .errors import UsageError
from .factories import tensor
from .tokenizers import BPETokenizer, CharTokenizer, load_gpt2_tokenizer
from .utils.data import DataLoader, Dataset, Sampler

__all__ = ["RandomBatches", "TokenWindows", "TaskExamples", "stack_pairs", "LoaderData",
           "TaskData", "TextData", "build_tokenizer", "task_accuracy"]


# ---- the sampler, the datasets, the collate ----------------------------------------------

class RandomBatches(Sampler):
    """An endless batch sampler: each batch is batch_size indices drawn from `generator`
    (a numpy.random.Generator) at the moment the batch is asked for, never ahead.

    draw(batch_size, generator) gives one batch's indices; by default batch_size uniform
    draws with replacement from range(len(data_source)), generator.integers(0, len,
    size=batch_size). RandomSampler(replacement=True) cannot stand in: it has an end, and
    it draws all of its num_samples at once when iterated, which would move the generator
    past batches not yet trained on."""

    def __init__(self, data_source, batch_size, generator, draw=None):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size should be a positive integer value, but got "
                             f"batch_size={batch_size}")
        if not isinstance(generator, np.random.Generator):
            raise TypeError(f"generator must be a numpy.random.Generator, got "
                            f"{type(generator).__name__}")
        self.data_source, self.batch_size, self.generator = data_source, batch_size, generator
        self.draw = draw if draw is not None else self._uniform

    def _uniform(self, batch_size, rng):
        return rng.integers(0, len(self.data_source), size=batch_size)

    def __iter__(self):
        while True:
            yield self.draw(self.batch_size, self.generator)


def _indices(indices, n):
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if len(idx) and (idx.min() < 0 or idx.max() >= n):
        raise IndexError(f"index out of range for a dataset of {n} items")
    return idx


class TokenWindows(Dataset):
    """Item i of a 1-D token array: the window at offset i, (tokens[i:i+T],
    tokens[i+1:i+T+1]) as int64 arrays of block_size T; len(tokens) - T items, each
    start that leaves room for the last target."""

    def __init__(self, tokens, block_size):
        if len(tokens) < block_size + 1:
            raise DataError(f"only {len(tokens)} tokens, but a block of block_size={block_size} "
                            f"needs {block_size + 1}")
        self.tokens, self.block_size = tokens, block_size

    def __len__(self):
        return len(self.tokens) - self.block_size

    def __getitem__(self, i):
        return self.__getitems__([i])[0]

    def __getitems__(self, indices):
        # one fancy-indexed read of the (memory-mapped) tokens for the whole batch
        x, y = windows(self.tokens, _indices(indices, len(self)), self.block_size)
        return list(zip(x, y))


class TaskExamples(Dataset):
    """Item k of a built-in task (data/tasks.py): problem k's (x, y), int64 (block_size,)
    each, as the task's get_batch makes them. Held-out problems are items too; the
    trainer's sampler (the task's sample_train_ids) never draws them."""

    def __init__(self, task):
        self.task = task

    def __len__(self):
        return self.task.n_problems

    def __getitem__(self, k):
        return self.__getitems__([k])[0]

    def __getitems__(self, numbers):
        x, y = self.task.examples(_indices(numbers, len(self)))
        return list(zip(x, y))


def stack_pairs(samples):
    """collate_fn: [(x, y)] -> (x, y), the rows stacked into int64 arrays (B, T)."""
    xs, ys = zip(*samples)
    return np.stack(xs).astype(np.int64, copy=False), np.stack(ys).astype(np.int64, copy=False)


# ---- what train.py holds as run.data -----------------------------------------------------

class LoaderData:
    """batch(split, n, block_size, rng): the next batch of n rows of loader(split, n,
    block_size, rng). The loader's iterator is kept while the same generator asks for
    batches of that split and size; it holds nothing but the generator (RandomBatches
    draws lazily), so starting it afresh changes no batch. A subclass gives
    dataset(split, block_size) and may give draw(n, rng), RandomBatches' draw."""

    draw = None
    collate = staticmethod(stack_pairs)

    def loader(self, split, batch_size, block_size, rng):
        ds = self.dataset(split, block_size)
        return DataLoader(ds, batch_sampler=RandomBatches(ds, batch_size, rng, self.draw),
                          collate_fn=self.collate)

    def batch(self, split, batch_size, block_size, rng):
        iters = self.__dict__.setdefault("_iters", {})
        key = (split, batch_size, block_size)
        held = iters.get(key)
        if held is None or held[0] is not rng:
            held = iters[key] = (rng, iter(self.loader(split, batch_size, block_size, rng)))
        return next(held[1])


class TaskData(LoaderData):
    """A built-in task, presented like a text dataset: batches and a tokenizer. Both
    splits are fresh training problems (the evaluation's generator draws its own); the
    held-out problems are scored by accuracy()."""

    def __init__(self, cfg):
        self.task = AdditionTask(n_digits=cfg.task_digits, seed=cfg.seed) if cfg.task == "addition" \
            else SortTask(seed=cfg.seed)
        self.tokenizer = CharTokenizer(list(self.task.chars))
        self.block_size = self.task.block_size
        self.examples = TaskExamples(self.task)

    def dataset(self, split, block_size):
        return self.examples

    def draw(self, n, rng):
        return self.task.sample_train_ids(n, rng)

    def accuracy(self, model, device):
        return task_accuracy(model, self.task, device)


class TextData(LoaderData):
    """A text file's tokens (cached in the run folder), 90% train and 10% val windows."""

    def __init__(self, cfg, tokenizer, out_dir):
        self.tokenizer = tokenizer
        key = json.dumps(tokenizer.to_dict(), sort_keys=True)
        self.file = TokenFile(cfg.data, tokenizer, tokenizer_key=key, cache_dir=out_dir,
                              block_size=cfg.block_size)
        self.block_size = cfg.block_size

    def dataset(self, split, block_size):
        return TokenWindows(self.file.tokens(split, block_size), block_size)


def build_tokenizer(cfg):
    if cfg.tokenizer == "gpt2":
        if not cfg.gpt2_dir:
            raise UsageError("--tokenizer gpt2 needs --gpt2-dir, a folder with GPT-2's "
                             "encoder.json and vocab.bpe")
        return load_gpt2_tokenizer(cfg.gpt2_dir)
    text = _read_utf8(cfg.data)
    if not text:
        raise UsageError(f"data file {cfg.data} is empty")
    if cfg.tokenizer == "char":
        return CharTokenizer.from_text(text)
    return BPETokenizer.train(text, cfg.vocab_size)


def task_accuracy(model, task, device, n=None):
    """Held-out exact match with greedy decoding (KV cache)."""
    def predict(prompts, n_new):
        idx = tensor(prompts, device=device)
        return model.generate(idx, n_new, temperature=0).numpy()[:, prompts.shape[1]:]
    return float(task.evaluate(predict, n=n))
