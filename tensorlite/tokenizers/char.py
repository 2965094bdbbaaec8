"""A character-level tokenizer: one token per Unicode character seen in training text."""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from ._io import TokenizerFileError, expect, read_typed, write_json_atomic

# How many offending characters an "unknown character" error spells out.
_SHOW_UNKNOWN = 5


class CharTokenizer:
    """Maps each character to an id: the sorted characters of a text are ids 0, 1, ...

    With `unk` set, characters outside the vocabulary encode to the id of that
    token instead of raising. If `unk` is itself a character of the vocabulary,
    that character's id is used; otherwise it becomes one extra token, the last
    id, so the ids of the characters are the same with or without it.
    """

    def __init__(self, chars: Sequence[str], unk: str | None = None):
        chars = list(chars)
        for c in chars:
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"CharTokenizer vocabulary entries must be single characters, got {c!r}")
        if len(set(chars)) != len(chars):
            raise ValueError("CharTokenizer vocabulary has duplicate characters")
        if unk is not None and (not isinstance(unk, str) or not unk):
            raise ValueError(f"unk must be a non-empty string or None, got {unk!r}")

        self.chars = chars
        self.unk = unk
        self._stoi = {c: i for i, c in enumerate(chars)}
        # _tokens[id] is what decode() writes for that id.
        self._tokens = list(chars)
        if unk is None:
            self.unk_id = None
        elif unk in self._stoi:
            self.unk_id = self._stoi[unk]
        else:
            self.unk_id = len(self._tokens)
            self._tokens.append(unk)
        self._table = None  # code point -> id lookup for encode_array, built on first use

    @classmethod
    def from_text(cls, text: str, unk: str | None = None) -> "CharTokenizer":
        """A tokenizer whose vocabulary is every distinct character of `text`."""
        return cls(sorted(set(text)), unk=unk)

    @property
    def vocab_size(self) -> int:
        return len(self._tokens)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size}, unk={self.unk!r})"

    # ------------------------------------------------------------------ encode

    def encode(self, text: str) -> list[int]:
        stoi = self._stoi
        try:
            return [stoi[c] for c in text]
        except KeyError:
            pass  # fall through to the slower path that handles unknown characters
        if self.unk_id is None:
            raise self._unknown_error(c for c in text if c not in stoi)
        unk_id = self.unk_id
        return [stoi.get(c, unk_id) for c in text]

    def encode_array(self, text: str, dtype=np.int64) -> np.ndarray:
        """encode() as a NumPy array, vectorised: ~100x faster on large texts.

        The text becomes an array of code points (its UTF-32 bytes, viewed as
        uint32), and one fancy-indexing step through a code-point -> id table
        turns them into ids.
        """
        # surrogatepass: a Python str may hold lone surrogates; encode() accepts
        # them, so this must too.
        code_points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        table = self._lookup_table()
        # Every code point above the largest known one lands on the table's last
        # slot, which holds -1 ("unknown"), so no bounds check is needed.
        ids = table[np.minimum(code_points, len(table) - 1)]
        unknown = ids < 0
        if unknown.any():
            if self.unk_id is None:
                missing = code_points[unknown]
                _, first = np.unique(missing, return_index=True)
                # in order of first appearance, as encode() reports them
                raise self._unknown_error(chr(cp) for cp in missing[np.sort(first)])
            ids[unknown] = self.unk_id
        return ids.astype(dtype, copy=False)

    def _lookup_table(self) -> np.ndarray:
        if self._table is None:
            largest = max((ord(c) for c in self.chars), default=-1)
            table = np.full(largest + 2, -1, dtype=np.int32)
            for c, i in self._stoi.items():
                table[ord(c)] = i
            self._table = table
        return self._table

    def _unknown_error(self, unknown: Iterable[str]) -> ValueError:
        seen: dict[str, None] = {}  # a dict keeps first-appearance order, unlike a set
        for c in unknown:
            seen[c] = None
        shown = ", ".join(repr(c) for c in list(seen)[:_SHOW_UNKNOWN])
        more = len(seen) - _SHOW_UNKNOWN
        if more > 0:
            shown += f" and {more} more"
        return ValueError(
            f"{len(seen)} character(s) not in the vocabulary: {shown}. "
            "Build the tokenizer from text that contains them, or pass "
            "unk='<unk>' to CharTokenizer.from_text to map unknown characters to one token."
        )

    # ------------------------------------------------------------------ decode

    def decode(self, ids) -> str:
        ids = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
        # Check the range first: Python would quietly accept a negative index.
        if ids and (min(ids) < 0 or max(ids) >= len(self._tokens)):
            bad = sorted({i for i in ids if not 0 <= i < len(self._tokens)})
            raise ValueError(f"token ids out of range [0, {len(self._tokens)}): {bad[:_SHOW_UNKNOWN]}")
        tokens = self._tokens
        return "".join([tokens[i] for i in ids])

    # ------------------------------------------------------------------ files

    def to_dict(self) -> dict:
        return {"type": "char", "version": 1, "unk": self.unk, "chars": self.chars}

    def save(self, path) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path) -> "CharTokenizer":
        return cls.from_dict(read_typed(path, "char"), path)

    @classmethod
    def from_dict(cls, data: dict, path="<dict>") -> "CharTokenizer":
        expect(data.get("version") == 1, path, f"unsupported char tokenizer version {data.get('version')!r}")
        expect(isinstance(data.get("chars"), list), path, "'chars' must be a list of characters")
        try:
            return cls(data["chars"], unk=data.get("unk"))
        except ValueError as e:
            raise TokenizerFileError(f"tokenizer file {str(path)!r}: {e}") from None
