"""Tokenizers: text <-> lists of integer token ids.

CharTokenizer   one token per character; the simplest thing that trains a GPT.
BPETokenizer    byte-level BPE as in GPT-2: train your own, or load GPT-2's with
                load_gpt2_tokenizer(directory with encoder.json and vocab.bpe).
load_tokenizer  reads a file written by either class's save() and returns the
                right kind of tokenizer, by the file's "type" field.
"""
from __future__ import annotations

from ._io import TokenizerFileError, expect, read_json
from .bpe import BPETokenizer
from .char import CharTokenizer
from .gpt2 import bytes_to_unicode, load_gpt2_tokenizer
from .pretokenize import pretokenize

_TYPES = {"char": CharTokenizer, "bpe": BPETokenizer}


def load_tokenizer(path):
    """Load a tokenizer saved with .save(), whichever kind it is."""
    data = read_json(path)
    expect(isinstance(data, dict), path, "expected a JSON object at the top level")
    kind = data.get("type")
    expect(kind in _TYPES, path, f"unknown tokenizer type {kind!r}; known types: {sorted(_TYPES)}")
    return _TYPES[kind].from_dict(data, path)


__all__ = [
    "BPETokenizer",
    "CharTokenizer",
    "TokenizerFileError",
    "bytes_to_unicode",
    "load_gpt2_tokenizer",
    "load_tokenizer",
    "pretokenize",
]
