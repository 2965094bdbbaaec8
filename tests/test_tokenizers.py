"""Tests for tensorlite.tokenizers: CharTokenizer, BPETokenizer, GPT-2 compatibility.

Expected GPT-2 ids and splits below were produced by tiktoken 0.14.0 and the
`regex` module (GPT-2's own pattern) on the original encoder.json / vocab.bpe;
neither package is needed to run these tests.
"""
import json
import os
import warnings
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tensorlite.tokenizers import (
    BPETokenizer,
    CharTokenizer,
    TokenizerFileError,
    bytes_to_unicode,
    load_gpt2_tokenizer,
    load_tokenizer,
    pretokenize,
)


def fixture_settings(max_examples):
    """Settings for hypothesis tests that take a fixture.

    The fixtures hold read-only tokenizers, which are safe to share between
    examples; no deadline because the first example builds the pattern (~0.5 s).
    """
    return settings(
        max_examples=max_examples, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )


SAMPLE = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?\n\n"
    "All:\nResolved. resolved.\n\nFirst Citizen:\nFirst, you know Caius Marcius is chief enemy to the people.\n"
    "We know't, we know't. Let us kill him, and we'll have corn at our own price. Is't a verdict?\n"
    "Café au lait, naïve façade, 日本語のテキスト, Ελληνικά, emoji 😀👍, 3.14159 and 1,000,000!\n"
)


@pytest.fixture(scope="module")
def small_bpe():
    return BPETokenizer.train(SAMPLE * 3, vocab_size=350)


_GPT2 = {}


@pytest.fixture
def gpt2(shared_data):
    # Loading takes ~0.5 s; every test that needs it shares one instance.
    directory = shared_data / "gpt2"
    if directory not in _GPT2:
        _GPT2[directory] = load_gpt2_tokenizer(directory)
    return _GPT2[directory]


# ---------------------------------------------------------------------- char


def test_char_roundtrip_and_ids():
    text = "hello wörld\n日本 \ud800"  # a lone surrogate is a legal str character
    tok = CharTokenizer.from_text(text)
    assert tok.vocab_size == len(set(text))
    assert tok.chars == sorted(set(text))  # ids follow code point order
    ids = tok.encode(text)
    assert ids[:2] == [tok.chars.index("h"), tok.chars.index("e")]
    assert tok.decode(ids) == text
    assert tok.decode(np.array(ids)) == text
    np.testing.assert_array_equal(tok.encode_array(text), ids)
    assert tok.encode_array(text).dtype == np.int64
    assert tok.encode_array(text, dtype=np.uint16).dtype == np.uint16
    assert tok.encode("") == [] and tok.encode_array("").shape == (0,)


def test_char_unknown_characters_are_named():
    tok = CharTokenizer.from_text("hello ")
    for encode in (tok.encode, tok.encode_array):
        with pytest.raises(ValueError) as info:
            encode("héllo 日本")
        message = str(info.value)
        assert "3 character(s)" in message
        # in order of appearance, as repr
        assert message.index("'é'") < message.index("'日'") < message.index("'本'")
        assert "unk" in message  # tells how to avoid the error

    with pytest.raises(ValueError, match=r"'\\x00', 'a', 'b', 'c', 'd' and 2 more"):
        tok.encode("\x00abcdefg")
    with pytest.raises(ValueError, match=r"'\\x00', 'a', 'b', 'c', 'd' and 2 more"):
        tok.encode_array("\x00abcdefg")


def test_char_unk_token():
    tok = CharTokenizer.from_text("hello ", unk="<unk>")
    assert tok.vocab_size == 6  # 5 characters + <unk>
    assert tok.unk_id == 5
    ids = tok.encode("héllo 😀")
    assert ids == [tok.encode("h")[0], 5, *tok.encode("llo "), 5]
    np.testing.assert_array_equal(tok.encode_array("héllo 😀"), ids)
    assert tok.decode(ids) == "h<unk>llo <unk>"
    # characters keep their ids whether or not there is an unk token
    assert CharTokenizer.from_text("hello ").encode("hello") == tok.encode("hello")

    # an unk that is a character of the vocabulary reuses that character's id
    tok = CharTokenizer.from_text("ab?", unk="?")
    assert tok.vocab_size == 3 and tok.encode("a!b") == [1, 0, 2]


@given(st.text(max_size=60), st.text(max_size=60))
def test_char_encode_array_matches_encode(vocab_text, text):
    tok = CharTokenizer.from_text(vocab_text, unk="<unk>")
    np.testing.assert_array_equal(tok.encode_array(text), np.array(tok.encode(text), dtype=np.int64))


def test_char_decode_rejects_bad_ids():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match=r"out of range \[0, 3\): \[-1, 3\]"):
        tok.decode([0, 3, -1])


def test_char_save_load(tmp_path):
    text = "To be, or not to be: that is the question. Ünïcödé \x00\ud800"
    for unk in (None, "<unk>"):
        tok = CharTokenizer.from_text(text, unk=unk)
        path = tmp_path / "char.json"
        tok.save(path)
        for loaded in (CharTokenizer.load(path), load_tokenizer(path)):
            assert isinstance(loaded, CharTokenizer)
            assert loaded.chars == tok.chars and loaded.unk == unk
            assert loaded.encode(text) == tok.encode(text)
    # the temporary file was renamed over the target, nothing else is left
    assert os.listdir(tmp_path) == ["char.json"]


# ---------------------------------------------------------------------- BPE training


def naive_train(text, n_merges):
    """The textbook BPE trainer: recount every pair after every merge.

    Same tie rule as BPETokenizer.train (most frequent, then smallest ids).
    """
    words = Counter(tuple(w.encode("utf-8", "surrogatepass")) for w in pretokenize(text))
    merges = []
    for k in range(n_merges):
        counts = Counter()
        for word, freq in words.items():
            for pair in zip(word, word[1:]):
                counts[pair] += freq
        if not counts:
            break
        a, b = min(counts, key=lambda p: (-counts[p], p))
        new = 256 + k
        merges.append((a, b, new))
        merged = Counter()
        for word, freq in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == (a, b):
                    out.append(new)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += freq
        words = merged
    return merges


def test_bpe_train_reaches_vocab_size(small_bpe):
    assert small_bpe.vocab_size == 350
    assert len(small_bpe.merges) == 350 - 256 - 1
    assert small_bpe.special_tokens == {"<|endoftext|>": 349}
    # frequent words of the sample became single tokens
    assert len(small_bpe.encode(" Citizen")) == 1
    assert small_bpe.decode(small_bpe.encode(SAMPLE)) == SAMPLE


def test_bpe_train_is_deterministic_and_matches_textbook_trainer():
    tok = BPETokenizer.train(SAMPLE, vocab_size=320, special_tokens=())
    assert tok.merges == BPETokenizer.train(SAMPLE, vocab_size=320, special_tokens=()).merges
    assert tok.merges == naive_train(SAMPLE, 64)


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet="aab  c'\nédé日1", max_size=120), st.integers(0, 30))
def test_bpe_incremental_counts_match_textbook_trainer(text, n_merges):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small texts may run out of pairs
        tok = BPETokenizer.train(text, vocab_size=256 + n_merges, special_tokens=())
    assert tok.merges == naive_train(text, n_merges)


def test_bpe_train_stops_early_with_warning():
    with pytest.warns(UserWarning, match="ran out of pairs to merge after 2 of 97 merges"):
        tok = BPETokenizer.train("abc", vocab_size=354)
    assert tok.vocab_size == 256 + 2 + 1
    assert tok.encode("abc") == [257]
    with pytest.raises(ValueError, match="too small"):
        BPETokenizer.train("abc", vocab_size=256)  # no room for <|endoftext|>


def test_bpe_special_tokens_in_training_text():
    text = "".join(f"{line}<|endoftext|>" for line in SAMPLE.splitlines()) * 5 + "<|pad|>"
    tok = BPETokenizer.train(text, vocab_size=300, special_tokens=["<|endoftext|>", "<|pad|>"])
    assert tok.special_tokens == {"<|endoftext|>": 298, "<|pad|>": 299}
    # no merge was learned from inside (or across) a special token, though
    # "<|endoftext|>" is the most frequent word of the text
    learned = [tok.token_bytes(c) for _, _, c in tok.merges]
    assert not any(b"<" in t or b"|" in t or b"endof" in t for t in learned)
    assert tok.encode("hello<|endoftext|><|pad|>") == [*tok.encode("hello"), 298, 299]
    # allow_special=False: the marker is just text
    assert 298 not in tok.encode("<|endoftext|>", allow_special=False)
    assert tok.decode(tok.encode("<|endoftext|>", allow_special=False)) == "<|endoftext|>"


def test_bpe_on_shakespeare(shared_data):
    text = (shared_data / "tinyshakespeare.txt").read_text(encoding="utf-8")[:200_000]
    tok = BPETokenizer.train(text, vocab_size=1000)
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert len(text) / len(ids) > 2.5  # it does compress
    assert max(ids) < 999  # no <|endoftext|> in the text


# ---------------------------------------------------------------------- BPE encode/decode


@settings(max_examples=150, deadline=None)
@given(st.text())
def test_bpe_roundtrip_arbitrary_unicode(small_bpe, text):
    assert small_bpe.decode(small_bpe.encode(text)) == text


def test_bpe_roundtrip_lone_surrogates_and_specials(small_bpe):
    for text in ["\ud800", "a\udfffb \ud83d", "x<|endoftext|>y", "<|endoftext", "\x00\n\r\t"]:
        assert small_bpe.decode(small_bpe.encode(text)) == text


def test_bpe_decode_cut_utf8_and_bad_ids(small_bpe):
    # the first bytes of "😀" (F0 9F 98 80), as a model might sample them
    assert small_bpe.decode([0xF0, 0x9F]) == "\ufffd"
    assert small_bpe.decode([ord("a"), 0xF0, 0x9F, 0x98, ord("b")]) == "a\ufffdb"
    assert small_bpe.decode_bytes(small_bpe.encode("😀")) == "😀".encode()
    with pytest.raises(ValueError, match="out of range"):
        small_bpe.decode([0, 350])
    with pytest.raises(ValueError, match="out of range"):
        small_bpe.decode([-1])


_RANKS = {}


def literal_gpt2_merge(tok, ids):
    """GPT-2's bpe() loop, literally: merge the lowest-rank pair everywhere, repeat."""
    if tok not in _RANKS:
        _RANKS[tok] = {(a, b): (rank, c) for rank, (a, b, c) in enumerate(tok.merges)}
    ranks = _RANKS[tok]
    while len(ids) > 1:
        pair = min(zip(ids, ids[1:]), key=lambda p: ranks.get(p, (len(ranks),))[0])
        if pair not in ranks:
            break
        new = ranks[pair][1]
        out, i = [], 0
        while i < len(ids):
            if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
                out.append(new)
                i += 2
            else:
                out.append(ids[i])
                i += 1
        ids = out
    return ids


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="eeetaaoinnsh  ", max_size=200) | st.binary(max_size=60).map(lambda b: b.decode("latin-1")))
def test_heap_merge_equals_literal_gpt2_loop(small_bpe, word):
    ids = [small_bpe._byte_ids[b] for b in word.encode()]
    assert small_bpe._merge(list(ids)) == literal_gpt2_merge(small_bpe, ids)


def test_encode_long_word_is_not_quadratic(small_bpe):
    word = "ab" * 50_000  # one 100 kB "word": the pre-tokeniser never splits it
    assert small_bpe.decode(small_bpe.encode(word)) == word


def test_bpe_save_load(tmp_path, small_bpe):
    path = tmp_path / "bpe.json"
    small_bpe.save(path)
    for loaded in (BPETokenizer.load(path), load_tokenizer(path)):
        assert isinstance(loaded, BPETokenizer)
        assert loaded.merges == small_bpe.merges
        assert loaded.special_tokens == small_bpe.special_tokens
        assert loaded.encode(SAMPLE + "<|endoftext|>") == small_bpe.encode(SAMPLE + "<|endoftext|>")
    assert os.listdir(tmp_path) == ["bpe.json"]


def test_bpe_constructor_checks_merges():
    with pytest.raises(ValueError, match="uses a token that no byte or earlier merge defines"):
        BPETokenizer([(256, 97, 257), (97, 98, 256)])  # the first merge uses a later token
    with pytest.raises(ValueError, match="already taken"):
        BPETokenizer([(97, 98, 97)])
    with pytest.raises(ValueError, match="exactly 0..256"):
        BPETokenizer([(97, 98, 300)])


# ---------------------------------------------------------------------- files that are wrong


def test_load_missing_and_corrupt_files_name_the_file(tmp_path):
    missing = tmp_path / "nope.json"
    for load in (load_tokenizer, CharTokenizer.load, BPETokenizer.load):
        with pytest.raises(FileNotFoundError, match="nope.json"):
            load(missing)

    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"type": "bpe", "merges": [[1, 2')
    with pytest.raises(TokenizerFileError, match="corrupt.json.*not valid JSON"):
        load_tokenizer(corrupt)
    assert issubclass(TokenizerFileError, ValueError)

    cases = {
        "list.json": ([1, 2, 3], "JSON object"),
        "kind.json": ({"type": "wordpiece"}, "unknown tokenizer type 'wordpiece'"),
        "chars.json": ({"type": "char", "version": 1, "chars": ["a", "bb"]}, "single characters"),
        "merges.json": (
            {"type": "bpe", "version": 1, "pattern": "gpt2", "byte_ids": list(range(256)), "merges": [[1, 2]]},
            "integer triples",
        ),
        "order.json": (
            {"type": "bpe", "version": 1, "pattern": "gpt2", "byte_ids": list(range(256)), "merges": [[1, 257, 256]]},
            "no byte or earlier merge",
        ),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / name
        path.write_text(json.dumps(data))
        with pytest.raises(TokenizerFileError, match=f"{name}.*{message}"):
            load_tokenizer(path)

    # a file of the other kind, loaded with the wrong class
    CharTokenizer.from_text("abc").save(tmp_path / "char.json")
    with pytest.raises(TokenizerFileError, match="char.json.*type 'char', expected 'bpe'"):
        BPETokenizer.load(tmp_path / "char.json")


def test_load_gpt2_from_wrong_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="encoder.json"):
        load_gpt2_tokenizer(tmp_path)
    (tmp_path / "encoder.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="vocab.bpe"):
        load_gpt2_tokenizer(tmp_path)
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\nĠ t\n")
    with pytest.raises(TokenizerFileError, match="not in .*encoder.json"):
        load_gpt2_tokenizer(tmp_path)


# ---------------------------------------------------------------------- GPT-2 compatibility


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Hello world!!", ["Hello", " world", "!!"]),
        ("don't", ["don", "'t"]),
        ("DON'T", ["DON", "'", "T"]),  # contractions are lower-case only
        ("I've 123abc", ["I", "'ve", " 123", "abc"]),
        ("a   b", ["a", "  ", " b"]),  # a run of spaces leaves one for the word
        ("a  \n\nb", ["a", "  \n", "\n", "b"]),
        ("trailing   ", ["trailing", "   "]),
        ("x\x1c\x1dy", ["x", "\x1c\x1d", "y"]),  # str.isspace() says yes; GPT-2 says no
        ("x\x85 \xa0y", ["x", "\x85 ", "\xa0", "y"]),
        ("½² 一二", ["½²", " 一二"]),  # numbers No; CJK numerals are letters
        ("٣٤ abc", ["٣٤", " abc"]),
        ("😀😀 hi", ["😀😀", " hi"]),
        ("'s's", ["'s", "'s"]),
        ("$10.00?!", ["$", "10", ".", "00", "?!"]),
    ],
)
def test_pretokenize_matches_gpt2(text, expected):
    assert pretokenize(text) == expected


@given(st.text())
def test_pretokenize_covers_the_text(text):
    assert "".join(pretokenize(text)) == text


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Hello world", [15496, 995]),
        ("<|endoftext|>", [50256]),
        ("don't", [9099, 470]),
        ("I'm sure we'll see they've gone", [40, 1101, 1654, 356, 1183, 766, 484, 1053, 3750]),
        ("DON'T", [41173, 6, 51]),
        ("12345 67.89", [10163, 2231, 8275, 13, 4531]),
        ("a   b", [64, 220, 220, 275]),
        ("line one\nline two\n\n", [1370, 530, 198, 1370, 734, 628]),
        ("  leading and trailing  ", [220, 3756, 290, 25462, 220, 220]),
        ("héllo wörld 日本", [71, 2634, 18798, 266, 30570, 335, 10545, 245, 98, 17312, 105]),
        ("emoji 😀!", [368, 31370, 30325, 222, 0]),
        ("Hello<|endoftext|>world", [15496, 50256, 6894]),
    ],
)
def test_gpt2_exact_ids(gpt2, text, expected):
    assert gpt2.encode(text) == expected
    assert gpt2.decode(expected) == text


def test_gpt2_tokenizer_shape(gpt2):
    assert gpt2.vocab_size == 50257
    assert len(gpt2.merges) == 50000
    assert gpt2.special_tokens == {"<|endoftext|>": 50256}
    assert gpt2.encode("<|endoftext|>", allow_special=False) == [27, 91, 437, 1659, 5239, 91, 29]
    table = bytes_to_unicode()
    assert len(set(table.values())) == 256 and table[32] == "Ġ" and table[ord("A")] == "A"


@fixture_settings(max_examples=150)
@given(st.text())
def test_gpt2_roundtrip_arbitrary_unicode(gpt2, text):
    assert gpt2.decode(gpt2.encode(text)) == text


@fixture_settings(max_examples=60)
@given(st.text(alphabet="etaoinshrdlu ", max_size=300))
def test_gpt2_heap_merge_equals_literal_loop(gpt2, word):
    ids = [gpt2._byte_ids[b] for b in word.encode()]
    assert gpt2._merge(list(ids)) == literal_gpt2_merge(gpt2, ids)


def test_gpt2_save_load(tmp_path, gpt2):
    gpt2.save(tmp_path / "gpt2.json")
    loaded = load_tokenizer(tmp_path / "gpt2.json")
    text = "Hello world<|endoftext|> héllo 日本 don't"
    assert loaded.encode(text) == gpt2.encode(text)
