"""Sequence classification: the labelled-TSV data (tensorlite/data/classify.py),
BertForSequenceClassification against transformers' (live, tiny random configs), and a
tiny BERT fine-tuned end to end (tensorlite/finetune_classifier.py). All on tiny models:
seconds."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tensorlite as tl
from tensorlite.data import DataError
from tensorlite.data.classify import (
    SPEAKER_HELDOUT,
    SPEAKER_MIN_WORDS,
    SPEAKER_TOP_K,
    TextClassificationData,
    main,
    make_speaker_tsv,
    parse_play,
    read_tsv,
    speaker_examples,
    split_heldout,
)
from tensorlite.finetune_classifier import (
    classifier_step,
    evaluate_classifier,
    finetune_classifier,
    lr_factor,
    make_optimizer,
)
from tensorlite.models import (
    BertClassificationConfig,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
)
from tensorlite.pretrained import PretrainedError
from tensorlite.serialization import load_file
from tensorlite.tokenizers import WordPieceTokenizer
from tensorlite.tokenizers import from_pretrained as tokenizer_from_pretrained

WORDS = ["apple", "pear", "plum", "fig", "kiwi", "lime", "date", "sloe", "yuzu", "quince",
         "red", "green", "big", "small", "ripe", "the", "a", "is", "very", "and"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


# ---- reading a TSV ---------------------------------------------------------------------------
def test_read_tsv_and_label_ids(tmp_path):
    p = write(tmp_path / "a.tsv", "neg\tbad film\n\npos\tgood\tfilm, tabs kept\r\nneg\tawful\n")
    labels, texts = read_tsv(p)
    assert labels == ["neg", "pos", "neg"] and texts[1] == "good\tfilm, tabs kept"
    d = TextClassificationData(p, heldout=1)
    assert d.label_names == ["neg", "pos"] and d.id2label == {0: "neg", 1: "pos"}
    np.testing.assert_array_equal(d.labels, [0, 1, 0])
    # ids are the sorted label set, whatever order the file lists them in
    q = write(tmp_path / "b.tsv", "pos\tgood\nneg\tbad film\nneg\tawful\n")
    assert TextClassificationData(q, heldout=1).label2id == d.label2id


@pytest.mark.parametrize("text, needles", [
    ("pos\tok\nno tab here\n", [":2:", "no tab", "'no tab here'"]),
    ("pos\tok\n\tno label\n", [":2:", "empty label"]),
    ("pos\tok\nneg\t   \n", [":2:", "empty text", "'neg'"]),
    ("", ["is empty"]),
    ("\n\n  \n", ["no examples"]),
    ("pos\tok\npos\tfine\n", ["'pos'", "at least 2 labels"]),
])
def test_read_tsv_refusals(tmp_path, text, needles):
    p = write(tmp_path / "bad.tsv", text)
    with pytest.raises(DataError) as e:
        read_tsv(p)
    msg = str(e.value)
    assert "\n" not in msg and p in msg and all(n in msg for n in needles), msg


def test_read_tsv_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.tsv"):
        read_tsv(str(tmp_path / "nope.tsv"))


# ---- the held-out split ------------------------------------------------------------------------
def test_split_is_disjoint_seeded_and_keeps_duplicates_together():
    texts = [f"text {i % 150}" for i in range(200)]  # 50 texts appear twice
    train, held = split_heldout(texts, 0.2, seed=3)
    assert len(set(train) & set(held)) == 0 and len(train) + len(held) == 200
    assert not {texts[i] for i in train} & {texts[i] for i in held}  # no text on both sides
    assert len({texts[i] for i in held}) == 30  # a fifth of the 150 distinct texts
    again = split_heldout(texts, 0.2, seed=3)
    np.testing.assert_array_equal(held, again[1])
    assert not np.array_equal(held, split_heldout(texts, 0.2, seed=4)[1])
    assert len(split_heldout(texts, 7, seed=0)[1]) >= 7  # a count of distinct texts
    for bad in (0, 1.0, 150, -0.1):
        with pytest.raises(ValueError, match="heldout"):
            split_heldout(texts, bad)


def test_train_batches_are_a_function_of_the_step(tmp_path):
    p = write(tmp_path / "d.tsv", "".join(f"{'ab'[i % 3 == 0]}\tline {i}\n" for i in range(50)))
    d = TextClassificationData(p, heldout=10, seed=1)
    held = set(d.heldout_ids.tolist())
    epoch = np.concatenate([d.train_batch_ids(s, 8, seed=5) for s in range(5)])  # 40 = 1 epoch
    assert sorted(epoch.tolist()) == d.train_ids.tolist() and not held & set(epoch.tolist())
    fresh = TextClassificationData(p, heldout=10, seed=1)  # a resumed run: nothing but the step
    np.testing.assert_array_equal(fresh.train_batch_ids(3, 8, seed=5), d.train_batch_ids(3, 8, seed=5))
    assert not np.array_equal(d.train_batch_ids(5, 8, seed=5), d.train_batch_ids(0, 8, seed=5))
    assert not np.array_equal(d.train_batch_ids(0, 8, seed=6), d.train_batch_ids(0, 8, seed=5))
    # majority baseline: the most frequent training label, scored on the held-out examples
    top = d.majority_label()
    assert d.counts("train")[d.id2label[top]] == max(d.counts("train").values())
    assert d.majority_baseline() == pytest.approx(np.mean(d.labels[d.heldout_ids] == top))


def test_batches_are_tokenised_padded_and_truncated(tmp_path):
    tok = WordPieceTokenizer(VOCAB)
    p = write(tmp_path / "t.tsv", "x\tapple\ny\tthe big red apple is very ripe\nx\tfig\ny\tpear\n")
    d = TextClassificationData(p, heldout=1)
    b = d.encode([0, 1], tok, max_length=6)
    assert set(b) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert all(v.dtype == np.int64 for v in b.values())
    cls_, sep, apple = tok.convert_tokens_to_ids(["[CLS]", "[SEP]", "apple"])
    np.testing.assert_array_equal(b["input_ids"][0], [cls_, apple, sep, 0, 0, 0])
    assert b["input_ids"][1, -1] == sep and b["attention_mask"][1].all()  # truncated, [SEP] kept
    np.testing.assert_array_equal(b["labels"], [0, 1])
    seen = np.concatenate([h["labels"] for h in d.heldout_batches(tok, 2, 8)])
    assert len(seen) == len(d.heldout_ids)


# ---- the Shakespeare speaker task -----------------------------------------------------------------
PLAY = """ROMEO:
But soft, what light through yonder window breaks?
It is the east.

JULIET:
O Romeo, Romeo, wherefore art thou Romeo?

NURSE:
Anon!

ROMEO:
Shall I hear more, or shall I speak at this?

a stray block without a header line
that is skipped

JULIET:
Tis but thy name that is my enemy;
Thou art thyself, though not a Montague.
"""


def test_parse_play_and_speaker_examples():
    lines = parse_play(PLAY)
    assert lines[0] == ("ROMEO", "But soft, what light through yonder window breaks?")
    assert ("NURSE", "Anon!") in lines and not any("stray" in ln for _, ln in lines)
    ex = speaker_examples(PLAY, top_k=2, min_words=4)
    # ROMEO and JULIET have 3 lines of >= 4 words each, NURSE none; file order kept
    assert [s for s, _ in ex] == ["ROMEO", "ROMEO", "JULIET", "ROMEO", "JULIET", "JULIET"]
    assert ("ROMEO", "It is the east.") in ex
    with pytest.raises(DataError, match="only 2 speakers"):
        speaker_examples(PLAY, top_k=3, min_words=4)


def test_make_speaker_tsv_and_command(tmp_path, capsys):
    src = write(tmp_path / "play.txt", PLAY)
    info = make_speaker_tsv(src, str(tmp_path / "s.tsv"), top_k=2, min_words=4)
    assert info == {"examples": 6, "counts": {"JULIET": 3, "ROMEO": 3}}
    labels, texts = read_tsv(str(tmp_path / "s.tsv"))
    assert labels[0] == "ROMEO" and texts[0].startswith("But soft")
    assert main(["make-speakers", src, str(tmp_path / "c.tsv"), "--top-k", "2"]) == 0
    assert "wrote 6 examples" in capsys.readouterr().out
    assert main(["make-speakers", str(tmp_path / "none.txt"), str(tmp_path / "x.tsv")]) == 1


def test_real_speaker_task(shared_data, tmp_path):
    src = shared_data / "tinyshakespeare.txt"
    if not src.is_file():
        pytest.skip(f"{src} is absent")
    info = make_speaker_tsv(str(src), str(tmp_path / "sp.tsv"), SPEAKER_TOP_K, SPEAKER_MIN_WORDS)
    assert len(info["counts"]) == SPEAKER_TOP_K
    d = TextClassificationData(str(tmp_path / "sp.tsv"), heldout=SPEAKER_HELDOUT, seed=0)
    assert len(d.heldout_ids) >= 1000 and len(d.train_ids) >= 4000
    assert not {d.texts[i] for i in d.train_ids} & {d.texts[i] for i in d.heldout_ids}
    assert d.majority_baseline() < 0.25  # not a task one label nearly solves


# ---- BertForSequenceClassification ----------------------------------------------------------------
TINY = dict(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=48, max_position_embeddings=16, type_vocab_size=2,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def tiny_classifier(**kw):
    tl.manual_seed(0)
    model = BertForSequenceClassification(BertClassificationConfig(**dict(TINY, **kw))).eval()
    rng = np.random.default_rng(0)
    with tl.no_grad():
        for p in model.parameters():  # off the zero-bias init, so every tensor matters
            p._data += rng.standard_normal(p.shape).astype(np.float32) * 0.05
    return model


def inputs(B=3, T=10):
    rng = np.random.default_rng(1)
    mask = np.ones((B, T), np.int64)
    mask[1, 6:] = 0
    return rng.integers(0, len(VOCAB), (B, T)), mask, rng.integers(0, 2, (B, T))


def logits_of(model, ids, mask, tt, labels=None):
    with tl.no_grad():
        return model(ids, mask, tt, labels=labels)


def test_config_labels():
    c = BertClassificationConfig(id2label={"0": "neg", "1": "mid", "2": "pos"})
    assert c.num_labels == 3 and c.id2label[2] == "pos" and c.label2id == {"neg": 0, "mid": 1, "pos": 2}
    assert BertClassificationConfig(num_labels=4).id2label[3] == "LABEL_3"
    assert BertClassificationConfig().num_labels == 2  # HF's default
    with pytest.raises(ValueError, match="num_labels=2 but id2label has 3"):
        BertClassificationConfig(num_labels=2, id2label={0: "a", 1: "b", 2: "c"})
    with pytest.raises(ValueError, match="problem_type"):
        BertClassificationConfig(problem_type="multi_label_classification")


def test_output_loss_and_round_trip(tmp_path):
    model = tiny_classifier(num_labels=3)
    ids, mask, tt = inputs()
    out = logits_of(model, ids, mask, tt, labels=[0, 2, 1])
    logits, loss = out  # (logits, loss), like GPT's forward
    assert logits.shape == (3, 3) and out[0] is out.logits and out["loss"] is loss
    lp = logits.numpy() - np.log(np.exp(logits.numpy()).sum(1, keepdims=True))
    assert loss.item() == pytest.approx(-lp[[0, 1, 2], [0, 2, 1]].mean(), rel=1e-5)
    assert logits_of(model, ids, mask, tt).loss is None
    with pytest.raises(TypeError, match="class ids"):
        logits_of(model, ids, mask, tt, labels=np.array([0.0, 1.0, 0.5]))
    model.save_pretrained(tmp_path / "out")
    stored, _ = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert "bert.encoder.layer.1.attention.self.key.weight" in stored
    assert stored["classifier.weight"].shape == (3, 32) and "classifier.bias" in stored
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["architectures"] == ["BertForSequenceClassification"] and cfg["num_labels"] == 3
    assert cfg["id2label"] == {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"}
    again = BertForSequenceClassification.from_pretrained(tmp_path / "out")
    assert again.head_loaded and again.config.num_labels == 3
    np.testing.assert_array_equal(logits_of(again, ids, mask, tt).logits.numpy(), logits.numpy())


def test_regression_head():
    model = tiny_classifier(num_labels=1)
    ids, mask, tt = inputs()
    out = logits_of(model, ids, mask, tt, labels=np.array([0.5, -1.0, 2.0], np.float32))
    want = ((out.logits.numpy()[:, 0] - [0.5, -1.0, 2.0]) ** 2).mean()
    assert out.loss.item() == pytest.approx(want, rel=1e-5)


def test_encoder_from_a_bert_model_folder_gets_a_fresh_head(tmp_path):
    tl.manual_seed(1)
    enc = BertModel(BertConfig(**dict(TINY, hidden_size=64, num_attention_heads=4))).eval()
    enc.save_pretrained(tmp_path / "enc")
    model = BertForSequenceClassification.from_pretrained(tmp_path / "enc", id2label={0: "x", 1: "y", 2: "z"})
    assert not model.head_loaded and model.config.label2id == {"x": 0, "y": 1, "z": 2}
    w = model.classifier.weight.detach().numpy()
    assert w.shape == (3, 64) and 0.01 < w.std() < 0.03 and not model.classifier.bias.detach().numpy().any()
    ids, mask, tt = inputs()
    with tl.no_grad():
        a = enc(ids, mask, tt).pooler_output.numpy()
        b = model.bert(ids, mask, tt).pooler_output.numpy()
    np.testing.assert_array_equal(a, b)
    model.save_pretrained(tmp_path / "clf")  # a stored head of 3 labels ...
    with pytest.raises(PretrainedError) as e:  # ... is not silently dropped for 5
        BertForSequenceClassification.from_pretrained(tmp_path / "clf", num_labels=5)
    assert "classifier.weight" in str(e.value) and "\n" not in str(e.value)
    fresh = BertForSequenceClassification.from_pretrained(tmp_path / "clf", num_labels=5,
                                                          ignore_mismatched_sizes=True)
    assert not fresh.head_loaded and fresh.classifier.weight.shape == (5, 64)
    same = BertForSequenceClassification.from_pretrained(tmp_path / "clf", num_labels=3)
    assert same.head_loaded and same.config.id2label == {0: "x", 1: "y", 2: "z"}


@pytest.fixture
def transformers():
    pytest.importorskip("torch", reason="the live oracle needs torch")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return pytest.importorskip("transformers", reason="the live oracle needs transformers")


def test_matches_transformers_both_ways(transformers, tmp_path):
    import torch
    torch.manual_seed(0)
    cfg = transformers.BertConfig(**TINY, id2label={0: "a", 1: "b", 2: "c"},
                                  label2id={"a": 0, "b": 1, "c": 2})
    hf = transformers.BertForSequenceClassification(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    hf.save_pretrained(tmp_path / "hf")
    ids, mask, tt = inputs()
    labels = np.array([2, 0, 1])

    def hf_run(m):
        with torch.no_grad():
            return m(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                     token_type_ids=torch.tensor(tt), labels=torch.tensor(labels))

    want = hf_run(hf)
    ours = BertForSequenceClassification.from_pretrained(tmp_path / "hf")
    assert ours.head_loaded and ours.config.id2label == {0: "a", 1: "b", 2: "c"}
    got = logits_of(ours, ids, mask, tt, labels)
    assert np.abs(got.logits.numpy() - want.logits.numpy()).max() < 1e-5
    assert got.loss.item() == pytest.approx(want.loss.item(), abs=1e-5)
    ours.save_pretrained(tmp_path / "ours")
    back = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "ours").eval()
    assert back.config.id2label == {0: "a", 1: "b", 2: "c"} and back.config.num_labels == 3
    assert np.abs(hf_run(back).logits.numpy() - want.logits.numpy()).max() < 1e-5


# ---- fine-tuning ---------------------------------------------------------------------------------
def test_lr_factor():
    f = [lr_factor(s, 4, 20) for s in range(21)]
    assert f[0] == pytest.approx(0.2) and f[3] == pytest.approx(0.8) and f[4] == 1.0
    assert f[12] == pytest.approx(0.5) and f[20] == 0.0
    assert lr_factor(4, 4, 20, "cosine") == 1.0 and lr_factor(20, 4, 20, "cosine") == 0.0
    with pytest.raises(ValueError, match="schedule"):
        lr_factor(0, 1, 2, "step")


@pytest.fixture
def tiny_folder(tmp_path):
    """A tiny random BERT folder with a WordPiece tokenizer, as a user would have."""
    tl.manual_seed(2)
    BertModel(BertConfig(**dict(TINY, max_position_embeddings=32))).save_pretrained(tmp_path / "bert")
    WordPieceTokenizer(VOCAB).save_pretrained(tmp_path / "bert")
    return tmp_path / "bert"


def easy_task(path, n=300, seed=0):
    """label = whether the text mentions an apple: one word decides it."""
    rng = np.random.default_rng(seed)
    others = [w for w in WORDS if w != "apple"]
    rows = []
    for i in range(n):
        words = list(rng.choice(others, size=int(rng.integers(3, 8))))
        has = i % 2 == 0
        if has:
            words[int(rng.integers(len(words)))] = "apple"
        rows.append(f"{'apple' if has else 'none'}\t{' '.join(words)}\n")
    return write(path, "".join(rows))


def test_classifier_step_contract(tiny_folder, tmp_path):
    d = TextClassificationData(easy_task(tmp_path / "e.tsv", n=40), heldout=8)
    tok = tokenizer_from_pretrained(tiny_folder)
    model = BertForSequenceClassification.from_pretrained(tiny_folder, id2label=d.id2label).train()
    opt = make_optimizer(model, 1e-3)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]
    assert all(p.ndim >= 2 for p in opt.param_groups[0]["params"])
    before = model.classifier.weight.detach().numpy().copy()
    loss, norm = classifier_step(model, opt, d.train_batch(0, tok, 8, 16), grad_clip=1.0)
    assert isinstance(loss, float) and norm > 0
    assert not np.array_equal(before, model.classifier.weight.detach().numpy())
    ev = evaluate_classifier(model, d, tok, 16, batch_size=3)
    assert ev["n"] == len(d.heldout_ids) and 0 <= ev["accuracy"] <= 1 and model.training


def test_finetune_a_tiny_bert_learns_an_easy_task(tiny_folder, tmp_path):
    tsv = easy_task(tmp_path / "easy.tsv")
    logs = []
    r = finetune_classifier(str(tiny_folder), tsv, out_dir=str(tmp_path / "out"), steps=60,
                            batch_size=16, lr=3e-3, max_length=16, warmup=6, eval_every=30,
                            heldout=60, log=logs.append)
    assert r["accuracy"] >= 0.9, r["evals"]
    assert r["majority_baseline"] == pytest.approx(0.5, abs=0.15)
    assert len(r["losses"]) == 60 and np.mean(r["losses"][-10:]) < np.mean(r["losses"][:10])
    assert [e["step"] for e in r["evals"]] == [30, 60] and r["n_heldout"] == 60
    assert r["lrs"][6] == pytest.approx(3e-3) and r["lrs"][0] < r["lrs"][6] > r["lrs"][-1]
    assert any("held-out accuracy" in m for m in logs)
    # the saved folder is a model + tokenizer that loads back with the same predictions
    again = BertForSequenceClassification.from_pretrained(tmp_path / "out")
    tok = tokenizer_from_pretrained(tmp_path / "out")
    assert again.config.id2label == {0: "apple", 1: "none"}
    d = TextClassificationData(tsv, heldout=60)
    assert evaluate_classifier(again, d, tok, 16)["accuracy"] == pytest.approx(r["accuracy"])


def test_from_scratch_uses_the_config_only(tiny_folder, tmp_path):
    tsv = easy_task(tmp_path / "easy.tsv", n=60)
    a = finetune_classifier(str(tiny_folder), tsv, steps=2, batch_size=4, max_length=16,
                            heldout=10, from_scratch=True, log=lambda m: None)
    b = finetune_classifier(str(tiny_folder), tsv, steps=2, batch_size=4, max_length=16,
                            heldout=10, log=lambda m: None)
    assert a["from_scratch"] and a["losses"] != b["losses"] and a["n_train"] == b["n_train"]


def test_benchmark_script_quick(tiny_folder, tmp_path):
    """benchmarks/classify_shakespeare.py end to end on a made-up play and the tiny BERT."""
    rng = np.random.default_rng(0)
    blocks = [f"SPEAKER{i % 9}:\n" + "\n".join(" ".join(rng.choice(WORDS, 5)) for _ in range(4))
              for i in range(90)]
    play = write(tmp_path / "play.txt", "\n\n".join(blocks) + "\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, os.path.join(root, "benchmarks", "classify_shakespeare.py"),
                        "--quick", "--data", play, "--model", str(tiny_folder), "--threads", "1",
                        "--out", str(tmp_path / "res")], check=False, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads((tmp_path / "res" / "classify_shakespeare_quick.json").read_text())
    assert set(res["accuracy"]) == {"finetuned", "scratch", "majority"}
    assert res["task"]["top_k"] == SPEAKER_TOP_K and res["settings"]["steps"] == 3
    assert len(res["runs"]["scratch"]["losses"]) == 3 and res["environment"]["cpu"]
