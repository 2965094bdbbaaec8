"""WordPiece, BERT's tokenizer, giving the same ids as Hugging Face's BertTokenizer.

Text goes through four stages:
  1. added tokens: "[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]" written in the text are
     found first, in the raw text, and become their own id, as HF does by default (it
     matches them before normalising, so "[cls]" in lower case is ordinary text);
  2. normalising: clean-up, spaces around CJK ideographs, accents, lower case;
  3. words: split at whitespace, each punctuation character a word of its own
     (stages 2 and 3 live in _bert_text.py);
  4. WordPiece: each word becomes the longest vocabulary entry that starts it, then the
     longest "##"-prefixed entry that continues it, and so on. If some point of the word
     has no entry at all, or the word has over 100 characters, the whole word is [UNK].
     "unaffable" -> "un", "##aff", "##able".

Stage 4 is cached per word: real text repeats its words, so most words cost one dict
lookup. encode() then wraps the ids as [CLS] ... [SEP] (a pair: [CLS] A [SEP] B [SEP]).

Build one with tensorlite.tokenizers.from_pretrained(folder) from a Hugging Face model
folder, or WordPieceTokenizer(list_of_tokens, ...).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from ._bert_text import BertNormalizer, split_punctuation, split_whitespace

# Hugging Face's model_max_length when a folder sets none: in effect, no limit.
NO_LIMIT = int(1e30)

# Cleared when full, so that an endless stream of distinct words cannot fill memory.
_CACHE_LIMIT = 200_000

ROLES = ("unk", "cls", "sep", "pad", "mask")

# HF's WordPiece decoder joins tokens with spaces and then fixes up each token (with the
# space before it) with these replacements, in this order. Per token, not over the whole
# text: "don ' t" stays as it is, since no single token is " ' ".
_WORDPIECE_CLEANUP = (
    (" .", "."),
    (" ?", "?"),
    (" !", "!"),
    (" ,", ","),
    (" ' ", "'"),
    (" n't", "n't"),
    (" 'm", "'m"),
    (" do not", " don't"),
    (" 's", "'s"),
    (" 've", "'ve"),
    (" 're", "'re"),
)
# transformers' clean_up_tokenization_spaces, on the whole decoded text (off unless the
# folder's tokenizer_config.json turns it on): the same replacements but " do not".
_SPACES_CLEANUP = tuple(p for p in _WORDPIECE_CLEANUP if p[0] != " do not")


class WordPieceTokenizer:
    """BERT's tokenizer. vocab: the tokens in id order, or a token -> id mapping.

    The options have the names and defaults of HF's BertTokenizer (do_lower_case,
    strip_accents=None meaning "as do_lower_case", tokenize_chinese_chars, the five
    special tokens, model_max_length) and of HF's tokenizer.json (clean_text,
    continuing_subword_prefix, max_input_chars_per_word).

    added_tokens: further tokens matched in the text before anything else, each a string
    or a dict {"content", "special" (default True), "normalized" (default False)}. A
    normalized one is matched in the normalised text instead of the raw text. The special
    tokens are added tokens by themselves. An added token that is not in vocab gets the
    next free id, as HF does.
    """

    def __init__(
        self,
        vocab: Sequence[str] | Mapping[str, int],
        *,
        do_lower_case: bool = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        clean_text: bool = True,
        unk_token: str = "[UNK]",
        cls_token: str | None = "[CLS]",
        sep_token: str | None = "[SEP]",
        pad_token: str | None = "[PAD]",
        mask_token: str | None = "[MASK]",
        continuing_subword_prefix: str = "##",
        max_input_chars_per_word: int = 100,
        model_max_length: int = NO_LIMIT,
        added_tokens: Iterable[str | Mapping] = (),
        clean_up_tokenization_spaces: bool = False,
        decoder_cleanup: bool = True,
    ):
        tokens = _tokens_in_id_order(vocab)
        if unk_token is None:
            raise ValueError("WordPiece needs an unk_token: a word it cannot spell becomes that token")
        # Read-only (properties below): the word cache holds what these settings gave.
        self._settings = dict(
            do_lower_case=bool(do_lower_case),
            strip_accents=strip_accents,  # None stays None, so that save_pretrained writes it back
            tokenize_chinese_chars=bool(tokenize_chinese_chars),
            clean_text=bool(clean_text),
            continuing_subword_prefix=str(continuing_subword_prefix),
            max_input_chars_per_word=int(max_input_chars_per_word),
        )
        self.model_max_length = int(model_max_length)
        self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)
        self.decoder_cleanup = bool(decoder_cleanup)
        self._normalize = BertNormalizer(clean_text, tokenize_chinese_chars, strip_accents, do_lower_case)

        # The WordPiece model knows only `vocab`; added tokens past its end are reachable
        # through the added-token match alone, as in HF.
        self._wordpiece_vocab = {t: i for i, t in enumerate(tokens)}
        self._tokens = list(tokens)
        self._ids = dict(self._wordpiece_vocab)
        self._longest = max(map(len, tokens), default=0)

        roles = dict(unk=unk_token, cls=cls_token, sep=sep_token, pad=pad_token, mask=mask_token)
        self._role_tokens = {r: (None if t is None else str(t)) for r, t in roles.items()}
        entries = [dict(content=t, special=True, normalized=False) for t in self._role_tokens.values() if t]
        for entry in added_tokens:
            entry = {"content": entry} if isinstance(entry, str) else dict(entry)
            entry.setdefault("special", True)
            entry.setdefault("normalized", False)
            entries.append(entry)
        self._added: dict[str, dict] = {}  # content -> entry, in the order first given
        for entry in entries:
            content = entry["content"]
            if not isinstance(content, str) or not content:
                raise ValueError(f"added tokens must be non-empty strings, got {content!r}")
            if content in self._added:
                continue
            if content not in self._ids:
                self._ids[content] = len(self._tokens)
                self._tokens.append(content)
            self._added[content] = {
                "content": content,
                "special": bool(entry["special"]),
                "normalized": bool(entry["normalized"]),
                "id": self._ids[content],
            }
        self._special_ids = frozenset(e["id"] for e in self._added.values() if e["special"])
        raw = {c: e["id"] for c, e in self._added.items() if not e["normalized"]}
        # A normalized added token is looked for as the normaliser would write it.
        normed = {self._normalize(c): e["id"] for c, e in self._added.items() if e["normalized"]}
        self._raw_added, self._raw_split = raw, _alternation(raw)
        self._normed_added, self._normed_split = normed, _alternation(normed)
        self._cache: dict[str, tuple[int, ...]] = {}

    # ------------------------------------------------------------------ info

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included (HF's len(tokenizer))."""
        return len(self._tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def _role_id(self, role: str) -> int | None:
        token = self._role_tokens[role]
        return None if token is None else self._ids[token]

    do_lower_case = property(lambda self: self._settings["do_lower_case"])
    strip_accents = property(lambda self: self._settings["strip_accents"])
    tokenize_chinese_chars = property(lambda self: self._settings["tokenize_chinese_chars"])
    clean_text = property(lambda self: self._settings["clean_text"])
    continuing_subword_prefix = property(lambda self: self._settings["continuing_subword_prefix"])
    max_input_chars_per_word = property(lambda self: self._settings["max_input_chars_per_word"])
    unk_token = property(lambda self: self._role_tokens["unk"])
    cls_token = property(lambda self: self._role_tokens["cls"])
    sep_token = property(lambda self: self._role_tokens["sep"])
    pad_token = property(lambda self: self._role_tokens["pad"])
    mask_token = property(lambda self: self._role_tokens["mask"])
    unk_token_id = property(lambda self: self._role_id("unk"))
    cls_token_id = property(lambda self: self._role_id("cls"))
    sep_token_id = property(lambda self: self._role_id("sep"))
    pad_token_id = property(lambda self: self._role_id("pad"))
    mask_token_id = property(lambda self: self._role_id("mask"))

    @property
    def all_special_ids(self) -> list[int]:
        return sorted(self._special_ids)

    @property
    def added_tokens(self) -> list[dict]:
        """The added tokens, special ones first: dicts with content, id, special, normalized."""
        return [dict(e) for e in self._added.values()]

    def get_vocab(self) -> dict[str, int]:
        return dict(self._ids)

    def convert_tokens_to_ids(self, tokens):
        if isinstance(tokens, str):
            return self._ids.get(tokens, self.unk_token_id)
        return [self._ids.get(t, self.unk_token_id) for t in tokens]

    def convert_ids_to_tokens(self, ids):
        if isinstance(ids, (int, np.integer)):
            return self._tokens[self._check_ids([int(ids)])[0]]
        return [self._tokens[i] for i in self._check_ids(ids)]

    def __repr__(self) -> str:
        return (
            f"WordPieceTokenizer(vocab_size={self.vocab_size}, do_lower_case={self.do_lower_case}, "
            f"strip_accents={self.strip_accents}, tokenize_chinese_chars={self.tokenize_chinese_chars}, "
            f"model_max_length={self.model_max_length})"
        )

    # ------------------------------------------------------------------ text -> ids

    def _encode_text(self, text: str) -> list[int]:
        """Ids of `text` with no [CLS]/[SEP] and no truncation."""
        if not isinstance(text, str):
            raise TypeError(f"expected a str, got {type(text).__name__}")
        out: list[int] = []
        pieces = self._raw_split.split(text) if self._raw_split else [text]
        # split() with a capturing group alternates: text, added token, text, ...
        for k, piece in enumerate(pieces):
            if k % 2:
                out.append(self._raw_added[piece])
            elif piece:
                self._encode_normalized(self._normalize(piece), out)
        return out

    def _encode_normalized(self, text: str, out: list[int]) -> None:
        pieces = self._normed_split.split(text) if self._normed_split else [text]
        cache = self._cache
        for k, piece in enumerate(pieces):
            if k % 2:
                out.append(self._normed_added[piece])
                continue
            for word in split_whitespace(piece, self.clean_text):
                ids = cache.get(word)
                if ids is None:
                    ids = tuple(i for p in split_punctuation(word) for i in self._wordpiece(p))
                    if len(cache) >= _CACHE_LIMIT:
                        cache.clear()
                    cache[word] = ids
                out.extend(ids)

    def _wordpiece(self, word: str) -> list[int]:
        """Greedy longest-match-first subwords of one word; [UNK] if any part has none."""
        vocab, prefix = self._wordpiece_vocab, self.continuing_subword_prefix
        unk = [self.unk_token_id]
        n = len(word)
        if n > self.max_input_chars_per_word:
            return unk
        out = []
        start = 0
        while start < n:
            # No token is longer than the longest vocabulary entry: start looking there.
            end = min(n, start + self._longest)
            while end > start:
                piece = word[start:end]
                i = vocab.get(prefix + piece if start else piece)
                if i is not None:
                    break
                end -= 1
            else:
                return unk
            out.append(i)
            start = end
        return out

    def tokenize(self, text: str) -> list[str]:
        """The token strings of `text`, without [CLS]/[SEP]: "unaffable" -> ["un", "##aff", "##able"]."""
        return [self._tokens[i] for i in self._encode_text(text)]

    def encode(
        self,
        text: str,
        text_pair: str | None = None,
        add_special_tokens: bool = True,
        max_length: int | None = None,
        truncation: bool | None = None,
    ) -> list[int]:
        """Token ids: [CLS] text [SEP], or [CLS] text [SEP] text_pair [SEP].

        truncation=None (the default) means "truncate if max_length is given", as in HF;
        truncation=True without max_length cuts at model_max_length. Truncation keeps the
        closing [SEP]. For a pair it trims the longer text first, as HF's longest_first.

        Two cases differ from HF on purpose: a max_length too short for the special
        tokens raises ValueError (HF logs an error and does not truncate at all), and
        text_pair="" is an empty second text, [CLS] A [SEP] [SEP], as in HF's batch call
        (HF's single-text call takes "" to mean no pair).
        """
        return self._assemble(text, text_pair, add_special_tokens, max_length, truncation)[0]

    def _assemble(self, text, text_pair, add_special_tokens, max_length, truncation):
        a = self._encode_text(text)
        b = None if text_pair is None else self._encode_text(text_pair)
        if truncation is None:
            truncation = max_length is not None
        if truncation:
            limit = self.model_max_length if max_length is None else int(max_length)
            n_special = (2 if b is None else 3) if add_special_tokens else 0
            budget = limit - n_special
            if budget < 0:
                raise ValueError(
                    f"max_length {limit} is too short for the {n_special} special tokens it must hold"
                )
            a, b = _truncate(a, b, budget)
        if add_special_tokens:
            cls, sep = self._required("cls"), self._required("sep")
            ids = [cls, *a, sep]
            types = [0] * len(ids)
            if b is not None:
                ids += [*b, sep]
                types += [1] * (len(b) + 1)
        else:
            ids, types = a + (b or []), [0] * len(a) + [1] * len(b or [])
        return ids, types

    def _required(self, role: str) -> int:
        i = self._role_id(role)
        if i is None:
            raise ValueError(f"this tokenizer has no {role}_token, which this call needs")
        return i

    def __call__(
        self,
        text: str | Sequence[str],
        text_pair: str | Sequence[str] | None = None,
        padding: bool | str = True,
        truncation: bool | None = True,
        max_length: int | None = None,
        add_special_tokens: bool = True,
        return_tensors: str | None = "np",
    ) -> dict[str, np.ndarray]:
        """A batch, as HF's tokenizer(texts, return_tensors="np") gives it.

        Returns {"input_ids", "token_type_ids", "attention_mask"}, int64 arrays (B, T); a
        single str is a batch of one. padding: True or "longest" pads with [PAD] to the
        longest row, "max_length" to max_length (else model_max_length), False requires
        rows of one length. Truncation (on by default here) keeps the final [SEP].
        """
        if return_tensors not in (None, "np"):
            raise ValueError(
                f"return_tensors={return_tensors!r}: tensorlite tokenizers return NumPy arrays ('np')"
            )
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        if text_pair is None:
            pairs = [None] * len(texts)
        else:
            pairs = [text_pair] if isinstance(text_pair, str) else list(text_pair)
            if single != isinstance(text_pair, str) or len(pairs) != len(texts):
                raise ValueError(f"{len(texts)} texts but {len(pairs)} text pairs: give one pair per text")
        rows = [self._assemble(t, p, add_special_tokens, max_length, truncation) for t, p in zip(texts, pairs)]
        lengths = [len(ids) for ids, _ in rows]
        if padding in (True, "longest"):
            width = max(lengths, default=0)
        elif padding == "max_length":
            width = self.model_max_length if max_length is None else int(max_length)
            if width >= NO_LIMIT:
                raise ValueError(
                    "padding='max_length' needs max_length: this tokenizer has no model_max_length"
                )
        elif padding in (False, None, "do_not_pad"):
            width = max(lengths, default=0)
            if len(set(lengths)) > 1:
                raise ValueError(f"rows have lengths {sorted(set(lengths))}: use padding=True for an array")
        else:
            raise ValueError(f"padding must be True, False, 'longest' or 'max_length', not {padding!r}")
        if max(lengths, default=0) > width:
            raise ValueError(
                f"a row has {max(lengths)} tokens, more than max_length {width}: pass truncation=True"
            )
        pad = self._required("pad") if min(lengths, default=width) < width else 0
        input_ids = np.full((len(rows), width), pad, dtype=np.int64)
        token_type_ids = np.zeros((len(rows), width), dtype=np.int64)
        attention_mask = np.zeros((len(rows), width), dtype=np.int64)
        for r, (ids, types) in enumerate(rows):
            input_ids[r, : len(ids)] = ids
            token_type_ids[r, : len(ids)] = types
            attention_mask[r, : len(ids)] = 1
        return {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask}

    # ------------------------------------------------------------------ ids -> text

    def _check_ids(self, ids) -> list[int]:
        if isinstance(ids, np.ndarray):
            if ids.ndim != 1:
                raise ValueError(
                    f"expected a 1-D sequence of ids, got shape {ids.shape} (batch_decode takes rows)"
                )
            ids = ids.tolist()
        ids = [int(i) for i in ids]
        # Check the range first: Python would quietly accept a negative index.
        bad = sorted({i for i in ids if not 0 <= i < len(self._tokens)})
        if bad:
            raise ValueError(f"token ids out of range [0, {len(self._tokens)}): {bad[:5]}")
        return ids

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        """Text for `ids` as HF decodes it: "##" pieces glued to the token before, other
        tokens joined by a space, no space before . , ! ?: "[CLS] hello, world! [SEP]"."""
        ids = self._check_ids(ids)
        if skip_special_tokens:
            ids = [i for i in ids if i not in self._special_ids]
        prefix = self.continuing_subword_prefix
        parts = []
        for k, i in enumerate(ids):
            token = self._tokens[i]
            if k:
                token = token[len(prefix) :] if token.startswith(prefix) else " " + token
            if self.decoder_cleanup:
                token = _replace_all(token, _WORDPIECE_CLEANUP)
            parts.append(token)
        text = "".join(parts)
        if self.clean_up_tokenization_spaces:
            text = _replace_all(text, _SPACES_CLEANUP)
        return text

    def batch_decode(self, rows, skip_special_tokens: bool = False) -> list[str]:
        return [self.decode(r, skip_special_tokens=skip_special_tokens) for r in rows]

    # ------------------------------------------------------------------ files

    def save_pretrained(self, directory) -> list[Path]:
        """Write vocab.txt, tokenizer_config.json and special_tokens_map.json into `directory`.

        That is a folder transformers' BertTokenizer loads back with the same ids, and so
        does from_pretrained. Settings that BertTokenizer cannot express (no text
        clean-up, another "##" prefix or word limit, normalized added tokens) raise
        ValueError instead of writing a folder that HF would read differently.
        """
        problems = []
        if not self.clean_text:
            problems.append("clean_text=False")
        if self.continuing_subword_prefix != "##":
            problems.append(f"continuing_subword_prefix={self.continuing_subword_prefix!r}")
        if self.max_input_chars_per_word != 100:
            problems.append(f"max_input_chars_per_word={self.max_input_chars_per_word}")
        if not self.decoder_cleanup:
            problems.append("decoder_cleanup=False")
        if any(e["normalized"] for e in self._added.values()):
            problems.append("normalized added tokens")
        if problems:
            raise ValueError(f"save_pretrained: HF's BertTokenizer has no way to say {', '.join(problems)}")
        model_vocab = self._tokens[: len(self._wordpiece_vocab)]
        bad = [t for t in model_vocab if "\n" in t or "\r" in t]
        if bad:
            raise ValueError(f"save_pretrained: vocab.txt cannot hold tokens with line breaks: {bad[:3]!r}")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        specials = {f"{r}_token": t for r, t in self._role_tokens.items() if t is not None}
        config = {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": self.do_lower_case,
            "strip_accents": self.strip_accents,
            "tokenize_chinese_chars": self.tokenize_chinese_chars,
            "model_max_length": self.model_max_length,
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
            **specials,
            "added_tokens_decoder": {
                str(e["id"]): {
                    "content": e["content"],
                    "lstrip": False,
                    "normalized": False,
                    "rstrip": False,
                    "single_word": False,
                    "special": e["special"],
                }
                for e in sorted(self._added.values(), key=lambda e: e["id"])
            },
        }
        paths = [
            directory / "vocab.txt",
            directory / "tokenizer_config.json",
            directory / "special_tokens_map.json",
        ]
        paths[0].write_text("".join(t + "\n" for t in model_vocab), encoding="utf-8")
        paths[1].write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        paths[2].write_text(json.dumps(specials, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return paths


def _tokens_in_id_order(vocab) -> list[str]:
    if isinstance(vocab, Mapping):
        by_id = sorted((int(i), str(t)) for t, i in vocab.items())
        if [i for i, _ in by_id] != list(range(len(by_id))):
            raise ValueError(f"vocabulary ids must be exactly 0..{len(by_id) - 1}, each used once")
        tokens = [t for _, t in by_id]
    else:
        tokens = [str(t) for t in vocab]
    if not tokens:
        raise ValueError("the vocabulary is empty")
    seen: dict[str, int] = {}
    for i, t in enumerate(tokens):
        if t in seen:
            raise ValueError(f"token {t!r} appears twice in the vocabulary (ids {seen[t]} and {i})")
        seen[t] = i
    return tokens


def _alternation(tokens: Mapping[str, int]) -> re.Pattern | None:
    """A pattern that finds any of `tokens`; leftmost match, and there the longest, as HF does."""
    if not tokens:
        return None
    return re.compile("(" + "|".join(map(re.escape, sorted(tokens, key=len, reverse=True))) + ")")


def _truncate(a: list[int], b: list[int] | None, budget: int):
    """Cut a (and b) to `budget` ids in all, as HF's longest_first strategy does.

    A pair shares the budget: the shorter text keeps all of itself if it fits in half,
    the longer gets the rest; otherwise each gets half, and an odd id goes to the second
    text unless the first is longer.
    """
    if b is None:
        return a[:budget], None
    if len(a) + len(b) <= budget:
        return a, b
    if len(a) <= len(b):
        keep_a = min(len(a), budget // 2)
        return a[:keep_a], b[: budget - keep_a]
    keep_b = min(len(b), budget // 2)
    return a[: budget - keep_b], b[:keep_b]


def _replace_all(text: str, replacements) -> str:
    for old, new in replacements:
        text = text.replace(old, new)
    return text
