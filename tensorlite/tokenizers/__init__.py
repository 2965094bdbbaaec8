"""Tokenizers: text <-> lists of integer token ids.

CharTokenizer       one token per character; the simplest thing that trains a GPT.
BPETokenizer        byte-level BPE as in GPT-2: train your own, or load GPT-2's with
                    load_gpt2_tokenizer(directory with encoder.json and vocab.bpe).
WordPieceTokenizer  BERT's WordPiece, the same ids as Hugging Face's BertTokenizer:
                    encode(), decode(), tokenize(), and tok(texts) for padded NumPy
                    batches (input_ids, token_type_ids, attention_mask).
from_pretrained     the tokenizer of a local Hugging Face model folder: WordPiece from
                    vocab.txt or tokenizer.json, GPT-2 BPE from vocab.json + merges.txt
                    (or tokenizer.json). Never downloads. Both classes have
                    save_pretrained(folder), which transformers loads back.
load_tokenizer      reads a file written by CharTokenizer's or BPETokenizer's save()
                    and returns the right kind of tokenizer, by the file's "type" field.
"""
from __future__ import annotations

from ._io import TokenizerFileError, expect, read_json
from .bpe import BPETokenizer
from .char import CharTokenizer
from .gpt2 import bytes_to_unicode, load_byte_level_bpe, load_gpt2_tokenizer
from .pretokenize import pretokenize
from .pretrained import from_pretrained
from .wordpiece import WordPieceTokenizer

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
    "WordPieceTokenizer",
    "bytes_to_unicode",
    "from_pretrained",
    "load_byte_level_bpe",
    "load_gpt2_tokenizer",
    "load_tokenizer",
    "pretokenize",
]
