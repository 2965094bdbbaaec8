"""WordPieceTokenizer on small hand-made vocabularies: each rule of BERT's pipeline.

Needs nothing beyond NumPy. The expected values follow Hugging Face's BertTokenizer
(transformers 5, tokenizers 0.23), checked by hand against it; the comparisons with HF
itself, on the real MiniLM vocabulary, are in test_tokenizers_pretrained.py.
"""

import json
import time

import numpy as np
import pytest

from tensorlite.tokenizers import TokenizerFileError, WordPieceTokenizer, from_pretrained

# fmt: off
VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "un", "##aff", "##able", "a", "b", "##b", ",", ".", "!", "?", "e", "g", "hello", "world", "hel", "##lo",
    "日", "本", "cafe", "café", "x", "##x", "$", "5", "00", "'", "s", "t", "don", "ß", "σ", "##σ", "ς", "-",
    "Hello", "A", "[", "]", "cls", "##s", "c", "##l", "i", "##̇", "##e", "##́", "ab", "##c", "xyz",
]
# fmt: on
IDS = {t: i for i, t in enumerate(VOCAB)}


def ids_of(*tokens):
    return [IDS[t] for t in tokens]


@pytest.fixture(scope="module")
def tok():
    return WordPieceTokenizer(VOCAB, model_max_length=16)


# ---------------------------------------------------------------------------- WordPiece


def test_greedy_longest_match_first(tok):
    assert tok.tokenize("unaffable") == ["un", "##aff", "##able"]
    # "hello" is a token, so it wins over "hel" + "##lo".
    assert tok.tokenize("hello hel") == ["hello", "hel"]
    assert tok.tokenize("hello") == ["hello"]
    assert tok.tokenize("abb") == ["ab", "##b"]
    assert tok.tokenize("xxx") == ["x", "##x", "##x"]


def test_a_word_that_cannot_be_spelt_is_one_unk(tok):
    # "a" + "##b" would start it, but nothing continues with "q": the whole word is [UNK].
    assert tok.tokenize("abq") == ["[UNK]"]
    assert tok.tokenize("qa b") == ["[UNK]", "b"]


def test_words_over_100_characters_are_unk(tok):
    assert tok.tokenize("x" * 100) == ["x"] + ["##x"] * 99
    assert tok.tokenize("x" * 101) == ["[UNK]"]
    # The limit counts characters of a word after punctuation splitting, not of the text.
    assert tok.tokenize("x" * 100 + "." + "x") == ["x"] + ["##x"] * 99 + [".", "x"]
    short = WordPieceTokenizer(VOCAB, max_input_chars_per_word=3)
    assert short.tokenize("xxx xxxx") == ["x", "##x", "##x", "[UNK]"]


# ---------------------------------------------------------------------------- normalising


def test_lower_case_and_accents(tok):
    assert tok.tokenize("HELLO Café") == ["hello", "cafe"]
    assert tok.tokenize("CAFE\u0301") == ["cafe"]  # a combining accent is dropped too
    cased = WordPieceTokenizer(VOCAB, do_lower_case=False)
    assert cased.tokenize("Hello café") == ["Hello", "café"]
    # strip_accents=None follows do_lower_case; it can be set either way on its own.
    assert WordPieceTokenizer(VOCAB, do_lower_case=False, strip_accents=True).tokenize("café") == ["cafe"]
    assert WordPieceTokenizer(VOCAB, strip_accents=False).tokenize("CAFÉ") == ["café"]


def test_lower_case_is_per_character(tok):
    # str.lower() would make a final sigma "ς"; HF lower-cases each character alone.
    assert "ΣΣ".lower() == "σς"
    assert tok.tokenize("ΣΣ") == ["σ", "##σ"]
    # "İ" lower-cases to "i" + U+0307; with accents stripped first (HF's order) it is "i".
    assert tok.tokenize("İ") == ["i"]
    assert WordPieceTokenizer(VOCAB, strip_accents=False).tokenize("İ") == ["i", "##̇"]
    assert tok.tokenize("ß") == ["ß"]  # no case folding to "ss"


def test_text_clean_up(tok):
    assert tok.tokenize("a\x00b\ufffd\x07") == ["ab"]  # controls vanish, gluing "a" and "b"
    assert tok.tokenize("a\u200bb") == ["ab"]  # so do format characters such as zero-width space
    assert tok.tokenize("a\tb\nc\r\na\xa0b\u3000a\u2028b") == ["a", "b", "c", "a", "b", "a", "b"]
    assert tok.tokenize("") == [] and tok.tokenize(" \t\n ") == []
    raw = WordPieceTokenizer(VOCAB, clean_text=False, do_lower_case=False)
    assert raw.tokenize("a\x00b") == ["[UNK]"]
    assert raw.tokenize("a\x0bb\x85a") == ["a", "b", "a"]  # still whitespace to the word splitter
    assert raw.tokenize("a\x1cb") == ["[UNK]"]  # U+001C is not (str.split would say it is)


def test_cjk_ideographs_are_words(tok):
    assert tok.tokenize("日本") == ["日", "本"]
    assert tok.tokenize("a日b") == ["a", "日", "b"]
    assert WordPieceTokenizer(VOCAB, tokenize_chinese_chars=False).tokenize("日本") == ["[UNK]"]
    # Kana is not in BERT's CJK blocks: it stays inside its word.
    assert tok.tokenize("日かな") == ["日", "[UNK]"]


def test_punctuation_splits(tok):
    assert tok.tokenize("e.g.") == ["e", ".", "g", "."]
    assert tok.tokenize("$5.00") == ["$", "5", ".", "00"]
    assert tok.tokenize("don't") == ["don", "'", "t"]
    assert tok.tokenize("a--b") == ["a", "-", "-", "b"]
    assert tok.tokenize("!!?") == ["!", "!", "?"]
    assert tok.tokenize("a¿b") == ["a", "[UNK]", "b"]  # Unicode punctuation, not only ASCII


# ---------------------------------------------------------------------------- special tokens


def test_special_tokens_in_text_are_not_split(tok):
    assert tok.encode("a [MASK] b", add_special_tokens=False) == ids_of("a", "[MASK]", "b")
    assert tok.encode("a[SEP]b", add_special_tokens=False) == ids_of("a", "[SEP]", "b")
    assert tok.encode("[CLS][PAD][UNK]", add_special_tokens=False) == ids_of("[CLS]", "[PAD]", "[UNK]")
    # They are matched in the raw text: in lower case, or broken by a control, they are text.
    assert tok.tokenize("[cls]") == ["[", "cls", "]"]
    assert tok.tokenize("[CL\x00S]") == ["[", "cls", "]"]


def test_added_tokens():
    added = WordPieceTokenizer(VOCAB, added_tokens=["<new>", {"content": "xyz", "special": False}])
    assert added.vocab_size == len(VOCAB) + 1
    new = added.convert_tokens_to_ids("<new>")
    assert new == len(VOCAB)
    assert added.encode("a<new>xyzb", add_special_tokens=False) == [IDS["a"], new, IDS["xyz"], IDS["b"]]
    assert added.decode([new, IDS["xyz"], IDS["a"]], skip_special_tokens=True) == "xyz a"
    normed = WordPieceTokenizer(VOCAB, added_tokens=[{"content": "XYZ", "normalized": True}])
    assert normed.encode("xyz XyZ", add_special_tokens=False) == [normed.convert_tokens_to_ids("XYZ")] * 2


# ---------------------------------------------------------------------------- encode / truncation


def test_encode_wraps_in_cls_and_sep(tok):
    assert tok.encode("hello") == ids_of("[CLS]", "hello", "[SEP]")
    assert tok.encode("") == ids_of("[CLS]", "[SEP]")
    assert tok.encode("a", "b") == ids_of("[CLS]", "a", "[SEP]", "b", "[SEP]")
    assert tok.encode("a", "") == ids_of("[CLS]", "a", "[SEP]", "[SEP]")


def test_truncation_keeps_sep(tok):
    text = "a b " * 20
    assert tok.encode(text, max_length=5) == ids_of("[CLS]", "a", "b", "a", "[SEP]")
    assert tok.encode(text, max_length=2) == ids_of("[CLS]", "[SEP]")
    assert len(tok.encode(text)) == 42  # no max_length: no truncation ...
    assert len(tok.encode(text, truncation=True)) == 16  # ... unless asked: model_max_length
    assert len(tok.encode(text, max_length=5, truncation=False)) == 42
    assert tok.encode(text, max_length=3, add_special_tokens=False) == ids_of("a", "b", "a")
    with pytest.raises(ValueError, match="too short"):
        tok.encode(text, max_length=1)


@pytest.mark.parametrize(
    "len_a, len_b, budget, keep",
    [
        (2, 9, 7, (2, 5)),
        (9, 2, 7, (5, 2)),
        (5, 5, 7, (3, 4)),
        (6, 5, 7, (4, 3)),
        (4, 4, 8, (4, 4)),
        (9, 9, 0, (0, 0)),
    ],
)
def test_pair_truncation_is_longest_first(tok, len_a, len_b, budget, keep):
    ids = tok.encode("a " * len_a, "b " * len_b, max_length=budget + 3)
    assert (ids.count(IDS["a"]), ids.count(IDS["b"])) == keep
    assert ids[-1] == IDS["[SEP]"]


# ---------------------------------------------------------------------------- batches


def test_batch_pads_to_the_longest(tok):
    out = tok(["hello world", "a", ""])
    assert list(out) == ["input_ids", "token_type_ids", "attention_mask"]
    assert all(v.dtype == np.int64 and v.shape == (3, 4) for v in out.values())
    assert out["input_ids"].tolist() == [
        ids_of("[CLS]", "hello", "world", "[SEP]"),
        ids_of("[CLS]", "a", "[SEP]", "[PAD]"),
        ids_of("[CLS]", "[SEP]", "[PAD]", "[PAD]"),
    ]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]]
    assert not out["token_type_ids"].any()


def test_batch_options(tok):
    fixed = tok(["a b", "a"], padding="max_length", max_length=6)
    assert fixed["input_ids"].shape == (2, 6) and fixed["attention_mask"].sum() == 7
    assert tok(["a"], padding="max_length")["input_ids"].shape == (1, 16)  # model_max_length
    cut = tok(["a " * 30, "b"], max_length=5)
    assert cut["input_ids"][0].tolist() == ids_of("[CLS]", "a", "a", "a", "[SEP]")
    assert tok(["a " * 30])["input_ids"].shape == (1, 16)  # truncation is on by default
    assert tok("a")["input_ids"].shape == (1, 3)  # one string: a batch of one
    pairs = tok(["a", "a b"], ["b b", "a"])
    assert pairs["token_type_ids"].tolist() == [[0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 1, 1]]
    assert pairs["attention_mask"].tolist() == [[1] * 6, [1] * 6]
    assert tok([])["input_ids"].shape == (0, 0)
    with pytest.raises(ValueError, match="padding=True"):
        tok(["a", "a b"], padding=False)
    assert tok(["a", "b"], padding=False)["input_ids"].shape == (2, 3)
    with pytest.raises(ValueError, match="truncation=True"):
        tok(["a b c d"], padding="max_length", max_length=4, truncation=False)
    with pytest.raises(ValueError, match="one pair per text"):
        tok(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="NumPy"):
        tok(["a"], return_tensors="pt")


# ---------------------------------------------------------------------------- decode


def test_decode_glues_pieces_and_cleans_punctuation(tok):
    assert tok.decode(tok.encode("unaffable, hello world!")) == "[CLS] unaffable, hello world! [SEP]"
    assert tok.decode(tok.encode("unaffable, hello!"), skip_special_tokens=True) == "unaffable, hello!"
    # HF cleans each token, not the whole text: "don ' t" stays.
    assert tok.decode(tok.encode("don't e.g.", add_special_tokens=False)) == "don ' t e. g."
    assert tok.decode(ids_of("##b", "a")) == "##b a"  # a leading piece keeps its ##
    assert tok.decode([]) == ""
    assert tok.decode(np.array(ids_of("a", "##b"))) == "ab"
    assert tok.batch_decode([ids_of("a"), ids_of("b", "!")]) == ["a", "b!"]
    spaces = WordPieceTokenizer(VOCAB, clean_up_tokenization_spaces=True)
    assert spaces.decode(spaces.encode("don't", add_special_tokens=False)) == "don't"
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([len(VOCAB)])
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([-1])


def test_info(tok):
    assert tok.vocab_size == len(tok) == len(VOCAB)
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id) == (
        0,
        1,
        2,
        3,
        4,
    )
    assert tok.all_special_ids == [0, 1, 2, 3, 4]
    assert tok.convert_ids_to_tokens(ids_of("a", "##b")) == ["a", "##b"]
    assert tok.convert_tokens_to_ids(["a", "nope"]) == [IDS["a"], IDS["[UNK]"]]
    assert tok.get_vocab()["##aff"] == IDS["##aff"]
    assert "WordPieceTokenizer(vocab_size=" in repr(tok)


def test_bad_vocabularies():
    with pytest.raises(ValueError, match="twice"):
        WordPieceTokenizer(["a", "b", "a"])
    with pytest.raises(ValueError, match="empty"):
        WordPieceTokenizer([])
    with pytest.raises(ValueError, match="exactly 0..1"):
        WordPieceTokenizer({"a": 0, "b": 2})
    # A special token missing from the vocabulary gets the next id, as HF adds it.
    tok = WordPieceTokenizer(["[UNK]", "a"], cls_token=None, sep_token=None, pad_token=None, mask_token="[M]")
    assert tok.mask_token_id == 2 and tok.cls_token_id is None
    with pytest.raises(ValueError, match="no cls_token"):
        tok.encode("a")
    assert tok.encode("a", add_special_tokens=False) == [1]


# ---------------------------------------------------------------------------- files


def test_save_pretrained_round_trip(tmp_path, tok):
    paths = tok.save_pretrained(tmp_path / "tok")
    assert sorted(p.name for p in paths) == ["special_tokens_map.json", "tokenizer_config.json", "vocab.txt"]
    assert (tmp_path / "tok" / "vocab.txt").read_text(encoding="utf-8").split("\n")[:3] == VOCAB[:3]
    config = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["tokenizer_class"] == "BertTokenizer" and config["do_lower_case"] is True
    back = from_pretrained(tmp_path / "tok")
    assert (
        from_pretrained(tmp_path / "tok").get_vocab() == back.get_vocab() == tok.get_vocab()
    )
    assert back.model_max_length == 16
    for text in ["unaffable HELLO, world!", "Café 日本 [MASK] x" * 3, "a\x00b don't"]:
        assert back.encode(text) == tok.encode(text)
        assert back.tokenize(text) == tok.tokenize(text)
    cased = WordPieceTokenizer(VOCAB, do_lower_case=False, strip_accents=True, tokenize_chinese_chars=False)
    cased.save_pretrained(tmp_path / "cased")
    back = from_pretrained(tmp_path / "cased")
    assert (back.do_lower_case, back.strip_accents, back.tokenize_chinese_chars) == (False, True, False)


def test_save_pretrained_refuses_what_bert_tokenizer_cannot_say(tmp_path):
    with pytest.raises(ValueError, match="clean_text=False"):
        WordPieceTokenizer(VOCAB, clean_text=False).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="max_input_chars_per_word=5"):
        WordPieceTokenizer(VOCAB, max_input_chars_per_word=5).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="line breaks"):
        WordPieceTokenizer(VOCAB + ["a\nb"]).save_pretrained(tmp_path)


def test_from_pretrained_finds_the_wrong_kind(tmp_path):
    (tmp_path / "vocab.json").write_text(json.dumps({"a": 0}))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(TokenizerFileError, match="byte table"):
        from_pretrained(tmp_path)


# ---------------------------------------------------------------------------- speed


def test_encoding_a_thousand_lines_is_fast():
    words = [t for t in VOCAB if t.isalpha()] + ["unaffable", "HELLO", "Café", "e.g.", "don't", "日本"]
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(words, size=12)) + "." for _ in range(1000)]
    tok = WordPieceTokenizer(VOCAB)  # a cold cache
    start = time.perf_counter()
    for line in lines:
        tok.encode(line)
    assert time.perf_counter() - start < 1.0
    assert tok.encode(lines[0]) == WordPieceTokenizer(VOCAB).encode(lines[0])  # the cache changes nothing
