"""Training data from a text file: encode it once, cache the ids, cut random batches.

Encoding a large text file with a BPE tokenizer is slow, and every training run
on the same file with the same tokenizer would get the same ids. So the ids are
saved once as a .npy file and opened memory-mapped afterwards: a run starts at
once and reads from disk only the tokens its batches touch.

The cache file's name contains a hash of the text file's bytes and a hash of
the tokenizer's identity (the caller passes a string that changes whenever the
tokenizer does, e.g. its saved JSON). Editing the text or retraining the
tokenizer therefore gives a new name, and the stale ids are never read.

Typical use:

    data = TokenFile("input.txt", tok, cache_dir=run_dir, tokenizer_key=tok_json)
    x, y = data.get_batch("train", batch_size=32, block_size=128, rng=rng)

The trainer draws the same windows through a DataLoader (tensorlite/train_data.py:
a Dataset whose item i is the window at offset i, windows() below).

This module works in NumPy only and returns NumPy arrays; turning them into
tensors is the training loop's job.
"""

import hashlib
import io
import pathlib

import numpy as np

from ..serialization import atomic_write_bytes

# Bytes read at a time while hashing, so a large file is never held twice.
_HASH_CHUNK = 1 << 20


class DataError(ValueError):
    """The text file cannot be used for training (empty, too short, not UTF-8)."""


def _encode_text(tokenizer, text):
    """Run the tokenizer; prefer encode_array, which can skip a Python list."""
    if hasattr(tokenizer, "encode_array"):
        ids = tokenizer.encode_array(text)
    elif hasattr(tokenizer, "encode"):
        ids = tokenizer.encode(text)
    else:
        raise TypeError("the tokenizer needs an encode_array(text) or encode(text) method")
    return np.asarray(ids, dtype=np.int64).reshape(-1)


def _file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _read_utf8(path):
    data = pathlib.Path(path).read_bytes()
    if not data:
        raise DataError(f"{path} is empty: there is nothing to train on")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path} is not valid UTF-8: byte {e.start} (0x{data[e.start]:02x}) "
            f"cannot be decoded ({e.reason}); re-save the file as UTF-8"
        ) from None


def cache_path_for(path, tokenizer_key, cache_dir):
    """Where the ids of `path` encoded by the tokenizer `tokenizer_key` are cached."""
    path = pathlib.Path(path)
    if isinstance(tokenizer_key, str):
        tokenizer_key = tokenizer_key.encode("utf-8")
    key = hashlib.sha256()
    key.update(_file_sha256(path).encode("ascii"))
    key.update(hashlib.sha256(tokenizer_key).hexdigest().encode("ascii"))
    # 16 hex digits (64 bits) is plenty to tell apart the few versions a run
    # folder will ever see, and keeps the name readable.
    return pathlib.Path(cache_dir) / f"{path.name}.{key.hexdigest()[:16]}.tokens.npy"


def encode_file(path, tokenizer, *, tokenizer_key, cache_dir):
    """Token ids of a UTF-8 text file, from the cache when it is there.

    Returns (ids, cache_path, from_cache): ids is a read-only 1-D memory-mapped
    array (uint16 when every id fits, else uint32), from_cache tells whether
    the file was encoded just now or read back.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training text file not found: {path}")
    cache_dir = pathlib.Path(cache_dir)
    cache = cache_path_for(path, tokenizer_key, cache_dir)
    if cache.is_file():
        try:
            # allow_pickle=False: a .npy from somewhere else can then only be
            # data, never code that runs on load.
            return np.load(cache, mmap_mode="r", allow_pickle=False), cache, True
        except (ValueError, OSError):
            pass  # unreadable (e.g. a disk filled up on another machine): encode afresh

    text = _read_utf8(path)
    ids = _encode_text(tokenizer, text)
    if ids.size == 0:
        raise DataError(f"{path} encodes to 0 tokens: there is nothing to train on")
    if ids.min() < 0:
        raise DataError(f"the tokenizer returned a negative id ({ids.min()}) for {path}")
    # The dtype follows the vocabulary, not just this file's largest id, so
    # every file encoded by one tokenizer is cached the same way. uint16 halves
    # the file (and the page cache it takes) for any vocabulary up to 65536,
    # which covers GPT-2's 50257.
    vocab_size = getattr(tokenizer, "vocab_size", 0)
    if not isinstance(vocab_size, (int, np.integer)):
        vocab_size = 0  # e.g. a method, or absent: fall back on the ids seen
    dtype = np.uint16 if max(int(vocab_size), int(ids.max()) + 1) <= 65536 else np.uint32

    cache_dir.mkdir(parents=True, exist_ok=True)
    # Write beside the final name, then rename: os.replace is atomic, so a run
    # killed mid-write, or two runs racing, never leave a half-written cache
    # under the name that later runs trust.
    buf = io.BytesIO()
    np.save(buf, ids.astype(dtype), allow_pickle=False)
    atomic_write_bytes(str(cache), [buf.getvalue()])
    return np.load(cache, mmap_mode="r", allow_pickle=False), cache, False


def split_train_val(ids, val_fraction=0.1):
    """The first (1 - val_fraction) of the tokens for training, the rest for validation.

    Splitting at one point, not at random positions, keeps validation text
    from overlapping the training blocks around it.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = int(round(len(ids) * val_fraction))
    cut = len(ids) - n_val
    return ids[:cut], ids[cut:]


def get_batch(data, batch_size, block_size, rng):
    """batch_size random contiguous blocks from the 1-D token array `data`.

    Returns (x, y), int64 arrays of shape (batch_size, block_size), where y is
    x shifted left by one: y[b, t] is the token that follows x[b, t], the
    target for a next-token prediction at position t. Each block is
    block_size + 1 consecutive tokens, so every start position from 0 to
    len(data) - block_size - 1 is equally likely. The same Generator state
    gives the same batch.
    """
    if batch_size < 1 or block_size < 1:
        raise ValueError(f"batch_size and block_size must be >= 1, got {batch_size}, {block_size}")
    n = len(data)
    if n < block_size + 1:
        raise DataError(
            f"only {n} tokens, but a block of block_size={block_size} needs "
            f"{block_size + 1} (the inputs plus one more token for the last target)"
        )
    starts = rng.integers(0, n - block_size, size=batch_size)
    return windows(data, starts, block_size)


def windows(data, starts, block_size):
    """(x, y), int64 (len(starts), block_size): the block_size + 1 tokens of `data` from
    each start, x the first block_size of them and y the last (x shifted left by one).
    The starts must lie in [0, len(data) - block_size)."""
    starts = np.asarray(starts, dtype=np.int64)
    # Fancy indexing a memmap reads just these rows from disk.
    chunk = np.asarray(data[starts[:, None] + np.arange(block_size + 1)], dtype=np.int64)
    return np.ascontiguousarray(chunk[:, :-1]), np.ascontiguousarray(chunk[:, 1:])


class TokenFile:
    """A tokenized text file split into train and val, with batch sampling.

    path          the UTF-8 text file
    tokenizer     an object with encode_array(text) or encode(text)
    tokenizer_key a string (or bytes) that identifies the tokenizer, e.g. its
                  saved JSON: a different key means a different cache file
    cache_dir     where the .npy of ids is kept (the run folder, say)
    val_fraction  the share of tokens, taken from the end, kept for validation
    block_size    if given, checked now against both splits, so a too-short
                  file fails at start-up rather than at the first eval

    Attributes: ids (all tokens, memory-mapped), train, val (views of ids),
    cache_path, from_cache.
    """

    def __init__(self, path, tokenizer, *, tokenizer_key, cache_dir,
                 val_fraction=0.1, block_size=None):
        self.path = pathlib.Path(path)
        self.ids, self.cache_path, self.from_cache = encode_file(
            path, tokenizer, tokenizer_key=tokenizer_key, cache_dir=cache_dir)
        self.val_fraction = val_fraction
        self.train, self.val = split_train_val(self.ids, val_fraction)
        if block_size is not None:
            for split in ("train", "val") if val_fraction > 0 else ("train",):
                self._check_length(split, block_size)

    def __len__(self):
        return len(self.ids)

    def _check_length(self, split, block_size):
        n = len(getattr(self, split))
        if n < block_size + 1:
            share = 1.0 - self.val_fraction if split == "train" else self.val_fraction
            raise DataError(
                f"{self.path} has {len(self.ids)} tokens; its {split} split "
                f"({share:.0%}) has {n}, but block_size={block_size} needs at least "
                f"{block_size + 1}: use a longer file or a smaller block_size"
            )

    def tokens(self, split, block_size):
        """The "train" or "val" tokens, checked to hold a block of block_size (DataError)."""
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        self._check_length(split, block_size)
        return getattr(self, split)

    def get_batch(self, split, batch_size, block_size, rng):
        """get_batch on the "train" or "val" split."""
        return get_batch(self.tokens(split, block_size), batch_size, block_size, rng)
