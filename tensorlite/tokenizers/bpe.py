"""Byte-level BPE, GPT-2 style: a trainer, an encoder and a decoder.

The model is small: 256 base tokens, one per byte, and an ordered list of merges
"token a followed by token b becomes token c". Encoding a word starts from its
UTF-8 bytes and keeps applying the earliest-learned merge that fits anywhere in
the word, until none does. Because every string has UTF-8 bytes, any text can be
encoded; there is no unknown token.

Text is first cut into words with GPT-2's pattern (see pretokenize.py) and merges
never cross a word boundary. That is what lets training count pairs on a table of
distinct words instead of the whole text, and lets the encoder cache each word.

The same class holds the original GPT-2 tokenizer (load_gpt2_tokenizer in gpt2.py):
there the byte tokens and merge results simply have other ids.
"""
from __future__ import annotations

import heapq
import re
import time
import warnings
from collections import Counter, defaultdict
from typing import Iterable, Mapping, Sequence

import numpy as np

from ._io import TokenizerFileError, expect, read_typed, write_json_atomic
from .bpe_folder import save_bpe_pretrained
from .pretokenize import gpt2_pattern

# The word cache is cleared when it reaches this many entries, so that encoding
# an endless stream of distinct words cannot use unbounded memory.
_CACHE_LIMIT = 200_000


class BPETokenizer:
    """Byte-level BPE tokenizer.

    Build one with BPETokenizer.train(text, vocab_size), BPETokenizer.load(path)
    or load_gpt2_tokenizer(directory).

    merges:  (left_id, right_id, new_id) in the order they were learned (rank 0
             first). Each left/right must be a byte token or an earlier merge's
             result: the encoder relies on that (see _merge).
    byte_ids: byte_ids[b] is the id of the token for the single byte b
             (default: the byte value itself).
    special_tokens: strings such as "<|endoftext|>" that encode() turns into one
             id wherever they occur in the text, never split into bytes.
    Ids must be exactly 0 .. vocab_size-1, each used once.
    """

    def __init__(
        self,
        merges: Sequence[Sequence[int]],
        byte_ids: Sequence[int] | None = None,
        special_tokens: Mapping[str, int] | None = None,
    ):
        byte_ids = list(range(256)) if byte_ids is None else [int(i) for i in byte_ids]
        if len(byte_ids) != 256:
            raise ValueError(f"byte_ids must have 256 entries, got {len(byte_ids)}")

        # id -> the bytes it stands for; also tells which ids are taken.
        vocab: dict[int, bytes] = {}
        for b, i in enumerate(byte_ids):
            if i in vocab:
                raise ValueError(f"byte_ids: id {i} is used for two bytes")
            vocab[i] = bytes([b])

        ranks: dict[tuple[int, int], int] = {}
        merge_into: list[int] = []
        for rank, merge in enumerate(merges):
            if len(merge) != 3:
                raise ValueError(f"merge {rank}: expected (left, right, new), got {merge!r}")
            a, b, c = (int(x) for x in merge)
            if a not in vocab or b not in vocab:
                raise ValueError(
                    f"merge {rank} ({a}, {b}) -> {c}: uses a token that no byte or earlier merge defines"
                )
            if c in vocab:
                raise ValueError(f"merge {rank} ({a}, {b}) -> {c}: id {c} is already taken")
            if (a, b) in ranks:
                raise ValueError(f"merge {rank}: pair ({a}, {b}) is merged twice")
            ranks[(a, b)] = rank
            merge_into.append(c)
            vocab[c] = vocab[a] + vocab[b]

        special: dict[str, int] = {}
        for token, i in (special_tokens or {}).items():
            if not isinstance(token, str) or not token:
                raise ValueError(f"special tokens must be non-empty strings, got {token!r}")
            i = int(i)
            if i in vocab:
                raise ValueError(f"special token {token!r}: id {i} is already taken")
            # Decoding a special token gives back its text.
            vocab[i] = token.encode("utf-8", "surrogatepass")
            special[token] = i

        if sorted(vocab) != list(range(len(vocab))):
            raise ValueError(f"token ids must be exactly 0..{len(vocab) - 1}, each used once")

        self._byte_ids = tuple(byte_ids)
        self._merges = [(a, b, c) for (a, b), c in zip(ranks, merge_into)]
        self._ranks = ranks
        self._merge_into = merge_into
        self._special = special
        self._vocab = [vocab[i] for i in range(len(vocab))]
        self._cache: dict[str, tuple[int, ...]] = {}
        if special:
            # Longest first, so that a special token that contains a shorter one wins.
            alternatives = sorted(special, key=len, reverse=True)
            self._special_pattern = re.compile("(" + "|".join(map(re.escape, alternatives)) + ")")
        else:
            self._special_pattern = None

    # ------------------------------------------------------------------ info

    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._special)

    @property
    def merges(self) -> list[tuple[int, int, int]]:
        return list(self._merges)

    @property
    def eos_token_id(self) -> int | None:
        """The id of "<|endoftext|>" (GPT-2: 50256), or None if there is no such token.

        As in Hugging Face's GPT2Tokenizer, encode() never adds it: append it yourself.
        """
        return self._special.get("<|endoftext|>")

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes a token stands for (a special token: its UTF-8 text)."""
        return self._vocab[token_id]

    def __repr__(self) -> str:
        return (
            f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self._merges)}, "
            f"special_tokens={list(self._special)})"
        )

    # ------------------------------------------------------------------ training

    @classmethod
    def train(
        cls,
        text: str,
        vocab_size: int,
        special_tokens: Iterable[str] = ("<|endoftext|>",),
        verbose: bool = False,
    ) -> "BPETokenizer":
        """Learn vocab_size - 256 - len(special_tokens) merges from `text`.

        Each step merges the most frequent adjacent pair of tokens (ties go to
        the pair with the smaller ids, so training is deterministic). If the
        text runs out of pairs first, training stops early with a warning and
        the vocabulary is smaller than asked.

        Special tokens get the last ids. Where they occur in `text` they only
        separate words, so no merge is learned across or inside them.
        """
        start_time = time.perf_counter()
        if isinstance(special_tokens, str):  # one token passed bare, not as a tuple
            special_tokens = [special_tokens]
        special_tokens = list(dict.fromkeys(special_tokens))  # drop repeats, keep order
        for token in special_tokens:
            if not isinstance(token, str) or not token:
                raise ValueError(f"special tokens must be non-empty strings, got {token!r}")
        n_merges = vocab_size - 256 - len(special_tokens)
        if n_merges < 0:
            raise ValueError(
                f"vocab_size {vocab_size} is too small: the 256 byte tokens and "
                f"{len(special_tokens)} special token(s) need {256 + len(special_tokens)}"
            )

        # 1. The text as a table of distinct words and how often each occurs.
        #    Shakespeare's 300k words are only ~15k distinct ones, and each step
        #    below costs in proportion to distinct words, not to the text.
        pattern = gpt2_pattern(text)
        word_counts: Counter[str] = Counter()
        for piece in cls._split_on(special_tokens, text)[::2]:
            word_counts.update(pattern.findall(piece))
        words = [list(w.encode("utf-8", "surrogatepass")) for w in word_counts]
        freqs = list(word_counts.values())

        # 2. How often each adjacent pair occurs (weighted by word frequency),
        #    and which words contain it, so a merge only revisits those words.
        pair_counts: dict[tuple[int, int], int] = defaultdict(int)
        where: dict[tuple[int, int], set[int]] = defaultdict(set)
        for wi, (word, freq) in enumerate(zip(words, freqs)):
            for pair in zip(word, word[1:]):
                pair_counts[pair] += freq
                where[pair].add(wi)

        # 3. A max-heap of (count, pair) finds the most frequent pair quickly. We
        #    never update entries in place: when a count changes we push a new
        #    entry and, when popping, skip those whose count is out of date.
        heap = [(-count, pair) for pair, count in pair_counts.items()]
        heapq.heapify(heap)

        merges: list[tuple[int, int, int]] = []
        vocab = [bytes([b]) for b in range(256)]  # only for verbose output
        report_every = max(1, n_merges // 20)
        while len(merges) < n_merges:
            best = None
            while heap:
                neg_count, pair = heapq.heappop(heap)
                if pair_counts.get(pair) == -neg_count:
                    best = pair
                    break
            if best is None:
                warnings.warn(
                    f"BPE training ran out of pairs to merge after {len(merges)} of "
                    f"{n_merges} merges: the text is too small for vocab_size {vocab_size}",
                    stacklevel=2,
                )
                break
            count = pair_counts[best]
            a, b = best
            new_id = 256 + len(merges)
            merges.append((a, b, new_id))
            vocab.append(vocab[a] + vocab[b])

            # Re-count the pairs of every word that contains the merged pair:
            # take off its old pairs, merge, add its new pairs.
            changed = set()
            for wi in where.pop(best):
                word = words[wi]
                merged = _merge_pair(word, a, b, new_id)
                if len(merged) == len(word):
                    continue  # `where` is never pruned; this word lost the pair earlier
                freq = freqs[wi]
                for pair in zip(word, word[1:]):
                    pair_counts[pair] -= freq
                    changed.add(pair)
                for pair in zip(merged, merged[1:]):
                    pair_counts[pair] += freq
                    changed.add(pair)
                    where[pair].add(wi)
                words[wi] = merged
            for pair in changed:
                new_count = pair_counts[pair]
                if new_count > 0:
                    heapq.heappush(heap, (-new_count, pair))
                else:
                    del pair_counts[pair]

            if verbose and (len(merges) % report_every == 0 or len(merges) == n_merges):
                print(
                    f"merge {len(merges)}/{n_merges}: {a} + {b} -> {new_id} "
                    f"{vocab[new_id]!r} ({count} times)"
                )

        first_special = 256 + len(merges)
        tokenizer = cls(merges, special_tokens={t: first_special + k for k, t in enumerate(special_tokens)})
        if verbose:
            print(
                f"trained {tokenizer.vocab_size} tokens on {len(text):,} characters "
                f"({len(words):,} distinct words) in {time.perf_counter() - start_time:.2f}s"
            )
        return tokenizer

    # ------------------------------------------------------------------ encoding

    def encode(self, text: str, allow_special: bool = True) -> list[int]:
        """Token ids for `text`.

        Special tokens that appear in the text become their single id. With
        allow_special=False they are encoded as ordinary text instead (use that
        for text you do not trust, so it cannot forge an end-of-text marker).
        """
        pattern = gpt2_pattern(text)
        out: list[int] = []
        if allow_special and self._special_pattern is not None:
            pieces = self._special_pattern.split(text)
            # split() with a capturing group alternates: text, special, text, ...
            for k, piece in enumerate(pieces):
                if k % 2:
                    out.append(self._special[piece])
                elif piece:
                    self._encode_ordinary(piece, pattern, out)
        else:
            self._encode_ordinary(text, pattern, out)
        return out

    def encode_array(self, text: str, dtype=np.int64, allow_special: bool = True) -> np.ndarray:
        """encode() as a NumPy array (e.g. to save a tokenized data set)."""
        return np.array(self.encode(text, allow_special=allow_special), dtype=dtype)

    def _encode_ordinary(self, text: str, pattern: re.Pattern, out: list[int]) -> None:
        cache = self._cache
        for word in pattern.findall(text):
            ids = cache.get(word)
            if ids is None:
                ids = self._encode_word(word)
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                cache[word] = ids
            out.extend(ids)

    def _encode_word(self, word: str) -> tuple[int, ...]:
        byte_ids = self._byte_ids
        # surrogatepass lets a lone surrogate (legal in a Python str, not in
        # UTF-8) through as 3 bytes, so that decode(encode(s)) == s for every str.
        return tuple(self._merge([byte_ids[b] for b in word.encode("utf-8", "surrogatepass")]))

    def _merge(self, ids: list[int]) -> list[int]:
        """Apply the merges to one word's tokens, as GPT-2 does.

        GPT-2's rule: find the adjacent pair with the lowest-rank merge, merge
        every occurrence of it left to right, repeat until no pair has a merge.
        Done literally, each round rescans the word, which is quadratic in its
        length: harmless for "hello", hopeless for 100 kB of letters with no
        space (a base64 blob is one "word").

        So the word is a linked list of tokens, and a heap holds (rank, position)
        for every adjacent pair that has a merge. We pop the lowest rank
        (leftmost first among equal ranks), merge that pair in place and push
        the two pairs the new token forms with its neighbours. Entries made stale
        by earlier merges are skipped when popped. O(n log n) in all.

        This gives exactly GPT-2's result because a merge's new token only
        appears in merges of higher rank (the constructor checks that every merge
        uses earlier tokens): pairs created while merging rank r wait until all
        rank-r pairs are merged, left to right, as in the literal rule. The tests
        compare the two on random words.
        """
        ranks, merge_into = self._ranks, self._merge_into
        n = len(ids)
        tokens = list(ids)
        nxt = list(range(1, n + 1))  # nxt[i] == n: i is the last token
        prv = list(range(-1, n - 1))  # prv[i] == -1: i is the first token
        alive = [True] * n
        heap = []
        for i in range(n - 1):
            rank = ranks.get((tokens[i], tokens[i + 1]))
            if rank is not None:
                heap.append((rank, i))
        heapq.heapify(heap)
        while heap:
            rank, i = heapq.heappop(heap)
            j = nxt[i]
            if not alive[i] or j == n or ranks.get((tokens[i], tokens[j])) != rank:
                continue  # a neighbour changed since this entry was pushed
            # token i absorbs token j
            tokens[i] = merge_into[rank]
            alive[j] = False
            nxt[i] = nxt[j]
            if nxt[i] < n:
                prv[nxt[i]] = i
                new_rank = ranks.get((tokens[i], tokens[nxt[i]]))
                if new_rank is not None:
                    heapq.heappush(heap, (new_rank, i))
            if prv[i] >= 0:
                new_rank = ranks.get((tokens[prv[i]], tokens[i]))
                if new_rank is not None:
                    heapq.heappush(heap, (new_rank, prv[i]))
        out = []
        i = 0  # the first token is never absorbed: merges absorb the right one
        while i < n:
            out.append(tokens[i])
            i = nxt[i]
        return out

    # ------------------------------------------------------------------ decoding

    def decode_bytes(self, ids) -> bytes:
        ids = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
        vocab = self._vocab
        # Check the range first: Python would quietly accept a negative index.
        if ids and (min(ids) < 0 or max(ids) >= len(vocab)):
            bad = sorted({i for i in ids if not 0 <= i < len(vocab)})
            raise ValueError(f"token ids out of range [0, {len(vocab)}): {bad[:5]}")
        return b"".join([vocab[i] for i in ids])

    def decode(self, ids) -> str:
        """The text for `ids`; decode(encode(s)) == s for every str s.

        Ids that cut a UTF-8 sequence (say, the first half of an emoji, as a
        model may sample) decode with U+FFFD replacement characters.
        """
        data = self.decode_bytes(ids)
        try:
            # surrogatepass undoes encode's surrogatepass; on valid UTF-8 it is
            # the same as strict decoding.
            return data.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return data.decode("utf-8", "replace")

    # ------------------------------------------------------------------ files

    def to_dict(self) -> dict:
        return {
            "type": "bpe",
            "version": 1,
            "pattern": "gpt2",
            "special_tokens": self._special,
            "byte_ids": list(self._byte_ids),
            "merges": [list(m) for m in self._merges],
        }

    def save(self, path) -> None:
        write_json_atomic(path, self.to_dict())

    def save_pretrained(self, directory) -> list:
        """Write vocab.json + merges.txt + tokenizer_config.json, a folder that Hugging
        Face's GPT2Tokenizer and tensorlite.tokenizers.from_pretrained both load."""
        return save_bpe_pretrained(self, directory)

    @classmethod
    def load(cls, path) -> "BPETokenizer":
        return cls.from_dict(read_typed(path, "bpe"), path)

    @classmethod
    def from_dict(cls, data: dict, path="<dict>") -> "BPETokenizer":
        expect(data.get("version") == 1, path, f"unsupported bpe tokenizer version {data.get('version')!r}")
        expect(data.get("pattern") == "gpt2", path, f"unknown pre-tokenisation pattern {data.get('pattern')!r}")
        merges, byte_ids, special = data.get("merges"), data.get("byte_ids"), data.get("special_tokens", {})
        expect(
            isinstance(merges, list) and all(_is_int_list(m, 3) for m in merges),
            path,
            "'merges' must be a list of [left, right, new] integer triples",
        )
        expect(_is_int_list(byte_ids, 256), path, "'byte_ids' must be a list of 256 integers")
        expect(
            isinstance(special, dict) and all(type(v) is int for v in special.values()),
            path,
            "'special_tokens' must map strings to integer ids",
        )
        try:
            return cls(merges, byte_ids=byte_ids, special_tokens=special)
        except ValueError as e:
            raise TokenizerFileError(f"tokenizer file {str(path)!r}: {e}") from None

    @staticmethod
    def _split_on(special_tokens: Sequence[str], text: str) -> list[str]:
        """re.split on the special tokens: [text, special, text, special, ..., text]."""
        if not special_tokens:
            return [text]
        alternatives = sorted(special_tokens, key=len, reverse=True)
        return re.split("(" + "|".join(map(re.escape, alternatives)) + ")", text)


def _merge_pair(ids: list[int], a: int, b: int, new_id: int) -> list[int]:
    """Replace each (a, b) in `ids` by new_id, scanning left to right.

    Occurrences overlap in runs like a a a with a == b; taking them left to
    right gives (aa) a, as GPT-2 does.
    """
    out = []
    i, n = 0, len(ids)
    while i < n:
        if i + 1 < n and ids[i] == a and ids[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _is_int_list(value, length: int) -> bool:
    # type() rather than isinstance(): JSON true/false load as bool, a subclass of int.
    return isinstance(value, list) and len(value) == length and all(type(x) is int for x in value)
