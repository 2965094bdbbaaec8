"""BERT's text pipeline before WordPiece: normalise the text, then cut it into words.

Normalising (Hugging Face's BertNormalizer), in this order:
  clean_text             drop control and format characters, U+0000 and U+FFFD; turn
                         every kind of whitespace into a plain space;
  handle_chinese_chars   put spaces around each CJK ideograph, so each is a word;
  strip_accents          decompose (NFD) and drop the non-spacing marks: "é" -> "e";
  lowercase              per character, with no context: a final "Σ" becomes "σ", not
                         the "ς" that str.lower() would give in context.

Every step maps one character to a string without looking at its neighbours, so the
whole normaliser is one str.translate() table, filled in the first time a character is
seen. HF decomposes the string as a whole, which also reorders runs of combining marks
by class; the marks are dropped right after, so per character gives the same text except
for two or more *kept* marks in a row out of canonical order (only a few Mc musical
symbols and the like).

Cutting into words (HF's BertPreTokenizer): split on whitespace, then make each
punctuation character a word of its own. "Punctuation" is BERT's: Unicode P* plus the
ASCII symbols $+<=>^`|~ (so "$5.00" -> "$", "5", ".", "00").

Which characters are controls, marks, punctuation, CJK, which decompose and what their
lower case is comes from _bert_tables.py, HF's own answers, not from unicodedata or
str.lower(): the docstring there says why.
"""

from __future__ import annotations

import bisect
import functools
import re
import unicodedata

from . import _bert_tables


class _Ranges:
    """Membership in a set of code points given as "LO-HI CP ..." hex ranges."""

    def __init__(self, spec: str):
        starts, ends = [], []
        for item in spec.split():
            lo, _, hi = item.partition("-")
            starts.append(int(lo, 16))
            ends.append(int(hi or lo, 16))
        self._starts, self._ends = starts, ends

    def __contains__(self, cp: int) -> bool:
        k = bisect.bisect_right(self._starts, cp) - 1
        return k >= 0 and cp <= self._ends[k]

    def regex_class(self) -> str:
        """The inside of a [...] class for these code points (\\U escapes: nothing is syntax)."""
        return "".join(
            f"\\U{lo:08x}" if lo == hi else f"\\U{lo:08x}-\\U{hi:08x}"
            for lo, hi in zip(self._starts, self._ends)
        )


@functools.lru_cache(maxsize=None)
def _tables() -> dict[str, _Ranges]:
    names = ("CONTROL", "CLEAN_SPACE", "SPLIT_SPACE", "CHINESE", "MARKS", "DECOMPOSE", "PUNCTUATION")
    return {name: _Ranges(getattr(_bert_tables, name)) for name in names}


@functools.lru_cache(maxsize=None)
def _lowercase() -> dict[int, str]:
    table = {}
    for item in _bert_tables.LOWERCASE.split():
        cp, _, lower = item.partition(":")
        table[int(cp, 16)] = "".join(chr(int(x, 16)) for x in lower.split("+"))
    return table


class _CharMap(dict):
    """A str.translate() table that works out each code point the first time it is asked.

    str.translate looks code points up with the dict's own C lookup, so a character seen
    before costs no Python call; __missing__ runs once per distinct character.
    """

    def __init__(self, rule):
        super().__init__()
        self._rule = rule

    def __missing__(self, cp: int):
        out = self._rule(cp)
        self[cp] = out
        return out


class BertNormalizer:
    """Hugging Face's BertNormalizer: normalizer(text) -> normalised text."""

    def __init__(self, clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True):
        self.clean_text = bool(clean_text)
        self.handle_chinese_chars = bool(handle_chinese_chars)
        self.lowercase = bool(lowercase)
        # BERT's rule: unless said otherwise, an uncased model also strips accents.
        self.strip_accents = self.lowercase if strip_accents is None else bool(strip_accents)
        self._t = _tables()
        self._map = _CharMap(self._char)

    def __call__(self, text: str) -> str:
        return text.translate(self._map)

    def _char(self, cp: int) -> str:
        t = self._t
        if self.clean_text:
            # A lone surrogate (a str can hold one; HF's Rust strings cannot) is dropped as
            # a control, as BERT's original Python code does.
            if cp in t["CONTROL"] or 0xD800 <= cp < 0xE000:
                return ""
            if cp in t["CLEAN_SPACE"]:
                return " "
        s = chr(cp)
        if self.handle_chinese_chars and cp in t["CHINESE"]:
            s = f" {s} "
        if self.strip_accents:
            s = "".join(
                x
                for c in s
                for x in (unicodedata.normalize("NFD", c) if ord(c) in t["DECOMPOSE"] else c)
                if ord(x) not in t["MARKS"]
            )
        if self.lowercase:
            lower = _lowercase()
            s = "".join(lower.get(ord(c), c) for c in s)
        return s


@functools.lru_cache(maxsize=1)
def _patterns() -> tuple[re.Pattern, re.Pattern]:
    t = _tables()
    spaces = re.compile(f"[{t['SPLIT_SPACE'].regex_class()}]+")
    # A capturing group: re.split keeps the punctuation characters it cuts at.
    punctuation = re.compile(f"([{t['PUNCTUATION'].regex_class()}])")
    return spaces, punctuation


def split_whitespace(text: str, cleaned: bool) -> list[str]:
    """The words of `text` between runs of whitespace.

    str.split() is much faster than a regex, but it also splits at U+001C..U+001F, which
    are not whitespace to HF. clean_text removes those (they are controls), so after it
    the two agree.
    """
    if cleaned:
        return text.split()
    return [w for w in _patterns()[0].split(text) if w]


def split_punctuation(word: str) -> list[str]:
    """`word` cut before and after each punctuation character: "e.g." -> "e", ".", "g", "."."""
    pieces = _patterns()[1].split(word)
    if len(pieces) == 1:
        return pieces
    return [p for p in pieces if p]
