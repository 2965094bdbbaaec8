r"""GPT-2's pre-tokeniser, rebuilt on the standard library's `re` module.

Before BPE runs, GPT-2 cuts text into "words" with this pattern, compiled by the
third-party `regex` module:

    's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+

so "Hello world!!" becomes ["Hello", " world", "!!"]. BPE merges never cross these
cuts, which keeps tokens word-like and lets the encoder cache whole words.

`re` has no \p{...} classes, so we build the three character classes the pattern
needs from Python's own Unicode database and splice them in as explicit ranges:

  \p{L}  letters, categories Lu Ll Lt Lm Lo: exactly what str.isalpha() tests.
  \p{N}  numbers, categories Nd Nl No. str.isnumeric() is NOT this on its own: it
         is also true for CJK numerals such as '一', which are letters (Lo). Every
         N character is isnumeric(), so that is a cheap pre-filter before asking
         unicodedata for the category.
  \s     whitespace as `regex` (and tiktoken) define it, the Unicode White_Space
         property. Python's str.isspace(), and so re's own \s, also accept
         U+001C..U+001F (the ASCII file/group/record/unit separators); `regex` does
         not, so we use our own class instead of re's \s.

The rest of the pattern (alternatives tried in order, greedy `+`, the lookahead
that leaves the last space of a run to start the next word) means the same thing
in both engines. The one remaining difference is the Unicode version: `regex`
ships its own, usually newer, tables, so a character that Python's unicodedata
does not know yet is treated as "other" here and may be a letter there.
"""
from __future__ import annotations

import functools
import re
import unicodedata

# GPT-2's contractions are case-sensitive: "DON'T" splits as "DON", "'", "T".
_CONTRACTIONS = "'s|'t|'re|'ve|'m|'ll|'d"

# Code points from here up lie outside the Basic Multilingual Plane.
_ASTRAL = 0x10000


@functools.lru_cache(maxsize=1)
def _unicode_classes() -> tuple[list[int], list[int], list[int]]:
    """All code points that are letters, numbers and whitespace (in that order).

    One pass over the 1.1M code points; it takes a few tenths of a second, so it
    runs once per process, the first time a pattern is needed.
    """
    letters, numbers, spaces = [], [], []
    for cp in range(0x110000):
        c = chr(cp)
        if c.isalpha():
            letters.append(cp)
        elif c.isnumeric():
            if unicodedata.category(c)[0] == "N":
                numbers.append(cp)
        elif c.isspace() and not 0x1C <= cp <= 0x1F:
            spaces.append(cp)
    return letters, numbers, spaces


def _class_body(code_points: list[int], limit: int) -> str:
    """The inside of a [...] class matching `code_points` below `limit`, as ranges.

    Every character is written as a \\U escape, so nothing in the class can be
    mistaken for class syntax (']', '-', '^', '\\').
    """
    parts = []
    start = prev = None
    for cp in code_points:
        if cp >= limit:
            break
        if prev is not None and cp == prev + 1:
            prev = cp
            continue
        if start is not None:
            parts.append(_range(start, prev))
        start = prev = cp
    if start is not None:
        parts.append(_range(start, prev))
    return "".join(parts)


def _range(lo: int, hi: int) -> str:
    return f"\\U{lo:08x}" if lo == hi else f"\\U{lo:08x}-\\U{hi:08x}"


@functools.lru_cache(maxsize=2)
def _compiled(limit: int) -> re.Pattern:
    """The GPT-2 pattern with its classes cut off at code point `limit`.

    Why two versions: `re` turns the part of a class below U+10000 into a lookup
    table, but checks each range above it one by one. The letter class has
    hundreds of such ranges, which makes the full pattern ~3x slower. Text with no
    character past U+FFFF can never meet those ranges, so for it the BMP-only
    pattern gives exactly the same splits, faster.
    """
    letters, numbers, spaces = (_class_body(cps, limit) for cps in _unicode_classes())
    return re.compile(
        f"{_CONTRACTIONS}"
        f"| ?[{letters}]+"
        f"| ?[{numbers}]+"
        f"| ?[^{spaces}{letters}{numbers}]+"
        # A run of spaces followed by a word gives up its last space, so that
        # " world" stays one word; at the end of the text it takes them all.
        f"|[{spaces}]+(?![^{spaces}])"
        f"|[{spaces}]+"
    )


_HAS_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


def gpt2_pattern(text: str = "") -> re.Pattern:
    """The compiled pre-tokenisation pattern, the fastest exact one for `text`.

    With no argument (or empty text) it returns the pattern valid for any text.
    """
    if text and not _HAS_ASTRAL.search(text):
        return _compiled(_ASTRAL)
    return _compiled(0x110000)


def pretokenize(text: str) -> list[str]:
    """Split `text` into GPT-2 "words"; joined back together they give `text`."""
    return gpt2_pattern(text).findall(text)
