"""Labelled text for sequence classification (BertForSequenceClassification).

The file format is a TSV with one example a line,

    label<TAB>text

(the first tab separates them, so the text may hold further tabs; blank lines are
skipped). Labels are sorted, so label ids do not depend on the order of the file, and
the same file always gives the same ids.

The held-out split follows data/tasks.py: a seeded `rng.choice(..., replace=False)` picks
it once, and training never sees it. What is drawn is distinct *texts*, not lines: a text
that occurs twice lies wholly on one side, so held-out accuracy never rewards memory.

Training batches are a pure function of (seed, step): step k takes the next batch_size
examples of a per-epoch permutation. A resumed run therefore needs only the step count to
draw the same batches, and a loop never has to save a data RNG.

`make_speaker_tsv` builds one real task from tiny Shakespeare: which of the top_k most
frequent speakers says a line. Also a command:

    python -m tensorlite.data.classify make-speakers tinyshakespeare.txt speakers.tsv

Like the rest of tensorlite.data, batches are int64 NumPy arrays.
"""
import argparse
import collections
import os
import sys

import numpy as np

from ..serialization import atomic_write_bytes
from .text import DataError, _read_utf8

SPEAKER_TOP_K = 8
SPEAKER_MIN_WORDS = 4
# tiny Shakespeare with the defaults above has 5,305 lines; a fifth held out is > 1,000
SPEAKER_HELDOUT = 0.2


# ---- reading ---------------------------------------------------------------------------------
def read_tsv(path):
    """(labels, texts): two lists of str, one entry per non-blank line of the TSV `path`.
    Raises DataError (one line, naming the file and line) for a malformed line, an empty
    file or fewer than 2 labels; FileNotFoundError when there is no file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"labelled data file not found: {path}")
    text = _read_utf8(path).removeprefix("\ufeff")
    labels, texts = [], []
    # split("\n"), not splitlines(): text may hold form feeds or U+2028, which are no
    # line ends in a TSV
    for n, raw in enumerate(text.split("\n"), 1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        label, tab, body = line.partition("\t")
        label, body = label.strip(), body.strip()
        where = f"{path}:{n}"
        if not tab:
            raise DataError(f"{where}: no tab in {_short(line)}; each line must be label<TAB>text")
        if not label:
            raise DataError(f"{where}: empty label before the tab; each line must be label<TAB>text")
        if not body:
            raise DataError(f"{where}: empty text after the label {label!r}; each line must be "
                            "label<TAB>text")
        labels.append(label)
        texts.append(body)
    if not labels:
        raise DataError(f"{path} has no examples (only blank lines); each line must be label<TAB>text")
    names = sorted(set(labels))
    if len(names) < 2:
        raise DataError(f"{path}: all {len(labels)} examples have the label {names[0]!r}; a "
                        "classifier needs at least 2 labels")
    return labels, texts


def _short(line, n=40):
    return repr(line if len(line) <= n else line[:n] + "...")


def split_heldout(texts, heldout=0.1, seed=0):
    """(train, heldout): sorted int64 index arrays into texts, disjoint, covering them all.
    heldout: a fraction of the distinct texts (a float, 0 < heldout < 1) or their number
    (an int >= 1).
    Identical texts are one draw: all their copies go to the same side."""
    first = {}
    group = np.array([first.setdefault(t, len(first)) for t in texts], dtype=np.int64)
    n_groups = len(first)
    fraction = isinstance(heldout, float)
    n = round(heldout * n_groups) if fraction else int(heldout)
    if (fraction and not 0 < heldout < 1) or not 1 <= n <= n_groups - 1:
        raise ValueError(f"heldout={heldout} holds out {n} of {n_groups} distinct texts; it must "
                         f"leave at least 1 for each side (a float fraction in (0, 1) or an int "
                         f"count in [1, {n_groups - 1}])")
    rng = np.random.default_rng(seed)
    chosen = np.zeros(n_groups, dtype=bool)
    chosen[rng.choice(n_groups, size=n, replace=False)] = True
    held = chosen[group]
    return np.nonzero(~held)[0], np.nonzero(held)[0]


# ---- the task ----------------------------------------------------------------------------------
class TextClassificationData:
    """A labelled TSV, split once into training and held-out examples.

    label_names  the sorted labels; label id i is label_names[i]
    id2label, label2id, num_labels   for BertForSequenceClassification's config
    labels       int64 (N,) label ids; texts: the N texts
    train_ids, heldout_ids   disjoint sorted index arrays (split_heldout)
    """

    def __init__(self, path, heldout=0.1, seed=0):
        self.path, self.seed = os.fspath(path), seed
        names, self.texts = read_tsv(path)
        self.label_names = sorted(set(names))
        self.label2id = {name: i for i, name in enumerate(self.label_names)}
        self.id2label = dict(enumerate(self.label_names))
        self.labels = np.array([self.label2id[n] for n in names], dtype=np.int64)
        self.train_ids, self.heldout_ids = split_heldout(self.texts, heldout, seed)
        self._orders = {}

    @property
    def num_labels(self):
        return len(self.label_names)

    def __len__(self):
        return len(self.texts)

    def counts(self, split="train"):
        """{label: number of examples} in the split ("train", "heldout" or "all")."""
        ids = {"train": self.train_ids, "heldout": self.heldout_ids,
               "all": np.arange(len(self.texts))}[split]
        c = np.bincount(self.labels[ids], minlength=self.num_labels)
        return {name: int(c[i]) for i, name in enumerate(self.label_names)}

    def majority_label(self):
        """The most frequent training label's id (ties: the smallest id)."""
        return int(np.argmax(np.bincount(self.labels[self.train_ids], minlength=self.num_labels)))

    def majority_baseline(self):
        """Held-out accuracy of always answering the most frequent training label."""
        return float(np.mean(self.labels[self.heldout_ids] == self.majority_label()))

    # -- batches ------------------------------------------------------------------------------
    def encode(self, ids, tokenizer, max_length):
        """{"input_ids", "attention_mask", "token_type_ids", "labels"}: int64 arrays for the
        examples ids, padded to the batch's longest row, truncated at max_length tokens
        (the final [SEP] kept, as HF truncates)."""
        from ..models.bert import tokenize
        ids = np.asarray(ids, dtype=np.int64)
        pad = getattr(tokenizer, "pad_token_id", None)
        x, mask, tt = tokenize(tokenizer, [self.texts[i] for i in ids], max_length,
                               pad if isinstance(pad, (int, np.integer)) else 0)
        return {"input_ids": x, "attention_mask": mask, "token_type_ids": tt,
                "labels": self.labels[ids].copy()}

    def _order(self, epoch, seed):
        key = (epoch, seed)
        if key not in self._orders:
            if len(self._orders) > 4:  # a batch spans at most two epochs
                self._orders.clear()
            self._orders[key] = np.random.default_rng([seed, epoch]).permutation(self.train_ids)
        return self._orders[key]

    def train_batch_ids(self, step, batch_size, seed=0):
        """The example ids of training batch `step` (0-based): consecutive slices of a fresh
        permutation of the training examples each epoch, from (seed, epoch) alone."""
        n = len(self.train_ids)
        pos = np.arange(step * batch_size, (step + 1) * batch_size)
        epochs, offsets = np.divmod(pos, n)
        return np.array([self._order(int(e), seed)[o] for e, o in zip(epochs, offsets)],
                        dtype=np.int64)

    def train_batch(self, step, tokenizer, batch_size, max_length, seed=0):
        """encode() of training batch `step`; the same (step, seed) gives the same batch."""
        return self.encode(self.train_batch_ids(step, batch_size, seed), tokenizer, max_length)

    def heldout_batches(self, tokenizer, batch_size, max_length, n=None):
        """encode() batches covering the first n (all) held-out examples once, shortest text
        first (less padding per batch; accuracy does not depend on the order)."""
        ids = self.heldout_ids if n is None else self.heldout_ids[:n]
        ids = ids[np.argsort([len(self.texts[i]) for i in ids], kind="stable")]
        for s in range(0, len(ids), batch_size):
            yield self.encode(ids[s:s + batch_size], tokenizer, max_length)


# ---- a real task: who speaks this line of Shakespeare? ---------------------------------------------
def parse_play(text):
    """[(speaker, line)] from a play laid out as tiny Shakespeare is: blocks separated by
    blank lines, each a "SPEAKER:" header line followed by the lines spoken. A block whose
    first line is no header (no trailing colon) has no speaker and is skipped."""
    out, speaker, at_block_start = [], None, True
    for raw in text.split("\n"):
        line = raw.strip()
        if not line:
            speaker, at_block_start = None, True
            continue
        if at_block_start:
            at_block_start = False
            speaker = line[:-1].strip() if line.endswith(":") and len(line) > 1 else None
            continue
        if speaker is not None:
            out.append((speaker, " ".join(line.split())))
    return out


def speaker_examples(text, top_k=SPEAKER_TOP_K, min_words=SPEAKER_MIN_WORDS):
    """[(speaker, line)] for the lines of >= min_words words spoken by the top_k speakers
    with the most such lines (ties by name), in the order of the text."""
    if top_k < 2:
        raise ValueError(f"top_k must be >= 2 (a classifier needs 2 labels), got {top_k}")
    lines = [(s, ln) for s, ln in parse_play(text) if len(ln.split()) >= min_words]
    counts = collections.Counter(s for s, _ in lines)
    ranked = sorted(counts, key=lambda s: (-counts[s], s))
    if len(ranked) < top_k:
        raise DataError(f"only {len(ranked)} speakers have lines of >= {min_words} words; "
                        f"top_k={top_k} needs {top_k}")
    top = set(ranked[:top_k])
    return [(s, ln) for s, ln in lines if s in top]


def make_speaker_tsv(src, dst, top_k=SPEAKER_TOP_K, min_words=SPEAKER_MIN_WORDS):
    """Write the speaker task of the play text src to the TSV dst (speaker<TAB>line, one
    line of >= min_words words each, from the top_k speakers); the file is written whole or
    not at all. Returns {"examples": N, "counts": {speaker: lines}}."""
    if not os.path.isfile(src):
        raise FileNotFoundError(f"play text not found: {src}")
    rows = speaker_examples(_read_utf8(src), top_k, min_words)
    body = "".join(f"{s}\t{ln}\n" for s, ln in rows).encode("utf-8")
    parent = os.path.dirname(os.path.abspath(dst))
    os.makedirs(parent, exist_ok=True)
    atomic_write_bytes(os.fspath(dst), [body])
    counts = collections.Counter(s for s, _ in rows)
    return {"examples": len(rows), "counts": dict(sorted(counts.items(), key=lambda kv: -kv[1]))}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tensorlite.data.classify",
                                description="Build labelled TSV files for text classification.")
    sub = p.add_subparsers(dest="cmd", required=True)
    ms = sub.add_parser("make-speakers", help="which of the top-k speakers says a line (tiny "
                        "Shakespeare layout: 'SPEAKER:' headers, blank lines between speeches)")
    ms.add_argument("src", help="the play text, e.g. tinyshakespeare.txt")
    ms.add_argument("dst", help="the TSV to write (speaker<TAB>line)")
    ms.add_argument("--top-k", type=int, default=SPEAKER_TOP_K)
    ms.add_argument("--min-words", type=int, default=SPEAKER_MIN_WORDS)
    args = p.parse_args(argv)
    try:
        info = make_speaker_tsv(args.src, args.dst, args.top_k, args.min_words)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {info['examples']} examples to {args.dst}: " +
          ", ".join(f"{s} {n}" for s, n in info["counts"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
