"""`tensorlite train --task classify`: BertForSequenceClassification fine-tuned by the
training loop (tensorlite/classify_run.py), through the command line, on a tiny random
BERT folder and a synthetic TSV: learning, bit-exact resume, eval/generate on the run, and
the refusals. Seconds each."""
import json
import os

import numpy as np
import pytest

import tensorlite as tl
from tensorlite.cli import main
from tensorlite.generate import load_run
from tensorlite.models import BertConfig, BertForSequenceClassification, BertModel
from tensorlite.serialization import load_file
from tensorlite.tokenizers import WordPieceTokenizer
from tensorlite.train import latest_checkpoint

WORDS = ["apple", "pear", "plum", "fig", "kiwi", "lime", "date", "sloe", "yuzu", "quince",
         "red", "green", "big", "small", "ripe", "the", "a", "is", "very", "and"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
FAST = ["--iters", "60", "--lr", "3e-3", "--batch-size", "16", "--max-length", "16",
        "--eval-every", "30", "--progress", "none"]


def make_folder(path, dropout=0.0):
    tl.manual_seed(2)
    cfg = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=4, intermediate_size=48, max_position_embeddings=32,
                     type_vocab_size=2, hidden_dropout_prob=dropout,
                     attention_probs_dropout_prob=dropout)
    BertModel(cfg).save_pretrained(path)
    WordPieceTokenizer(VOCAB).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("bert") / "bert")


def easy_tsv(path, n=300, seed=0):
    """label = whether the text mentions an apple (distinct texts; 1/3 of them do, so the
    majority baseline is ~0.67)."""
    rng = np.random.default_rng(seed)
    others = [w for w in WORDS if w != "apple"]
    rows, seen = [], set()
    while len(rows) < n:
        words = list(rng.choice(others, size=int(rng.integers(3, 8))))
        has = len(rows) % 3 == 0
        if has:
            words[int(rng.integers(len(words)))] = "apple"
        text = " ".join(words)
        if text not in seen:
            seen.add(text)
            rows.append(f"{'apple' if has else 'none'}\t{text}\n")
    path.write_text("".join(rows), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def tsv(tmp_path_factory):
    return easy_tsv(tmp_path_factory.mktemp("data") / "easy.tsv")


def weights(out):
    return load_file(os.path.join(latest_checkpoint(out), "model.safetensors"))[0]


def config(out):
    with open(os.path.join(out, "config.json")) as f:
        return json.load(f)


def records(out):
    with open(os.path.join(out, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def run(folder, tsv, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("runs") / "run")
    assert main(["train", "--task", "classify", "--model", folder, "--data", tsv, "--out", out]
                + FAST) == 0
    return out


def test_learns_and_reports_accuracy(run, capsys):
    evals = [r for r in records(run) if "accuracy" in r]
    assert [r["step"] for r in evals] == [30, 60]
    assert evals[-1]["accuracy"] >= 0.95, evals
    cfg = config(run)
    assert cfg["model"]["kind"] == "classify" and cfg["train"]["task"] == "classify"
    t = cfg["train"]
    assert (t["warmup"], t["weight_decay"], t["beta2"]) == (6, 0.01, 0.999)  # HF's; 10% warmup
    for f in ("vocab.txt", "tokenizer_config.json", "loss.png"):
        assert os.path.isfile(os.path.join(run, f)), f
    model, tok, _ = load_run(run)
    assert isinstance(model, BertForSequenceClassification) and tok.vocab_size == len(VOCAB)


def test_majority_baseline_printed_once(folder, tsv, tmp_path, capsys):
    out = str(tmp_path / "r")
    assert main(["train", "--task", "classify", "--model", folder, "--data", tsv, "--out", out,
                 "--iters", "2", "--max-length", "16", "--progress", "none"]) == 0
    text = capsys.readouterr().out
    assert text.count("majority-class baseline") == 1
    assert "accuracy" in text.splitlines()[-2]


def test_eval_and_generate_on_the_run(run, capsys):
    capsys.readouterr()
    assert main(["eval", "--out", run]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["task"] == "classify" and res["accuracy"] >= 0.95 and res["heldout"] == 30
    assert 0.5 < res["majority_baseline"] < res["accuracy"]
    assert main(["generate", "--out", run, "--prompt", "the apple is very red"]) == 0
    label, p = capsys.readouterr().out.split()
    assert label == "apple" and 0.5 < float(p) <= 1
    assert main(["generate", "--out", run, "--prompt", "the pear is very red"]) == 0
    assert capsys.readouterr().out.split()[0] == "none"


def test_resume_is_bit_exact(tmp_path, tsv):
    # dropout on: the resumed half must draw the masks the uninterrupted run drew
    folder = make_folder(tmp_path / "bert", dropout=0.1)
    base = ["train", "--task", "classify", "--model", folder, "--data", tsv, "--iters", "12",
            "--batch-size", "8", "--max-length", "16", "--eval-every", "4", "--progress", "none"]
    whole, split = str(tmp_path / "whole"), str(tmp_path / "split")
    assert main(base + ["--out", whole]) == 0
    assert main(base + ["--out", split, "--stop-after", "5", "--save-every", "3"]) == 0
    os.rename(folder, folder + "-moved")  # the run holds all it needs to continue
    assert main(["train", "--out", split, "--resume", "--progress", "none"]) == 0
    a, b = weights(whole), weights(split)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in records(whole)] == [r["loss"] for r in records(split)]


def test_from_scratch_differs(folder, tsv, tmp_path):
    outs = []
    for extra in ([], ["--from-scratch"]):
        out = str(tmp_path / f"r{len(outs)}")
        assert main(["train", "--task", "classify", "--model", folder, "--data", tsv, "--out", out,
                     "--iters", "1", "--max-length", "16", "--progress", "none"] + extra) == 0
        outs.append(weights(out))
        assert config(out)["train"]["from_scratch"] == bool(extra)
    # the encoder differs (pretrained vs random); the head is the same seed's either way
    enc = [k for k in outs[0] if k.startswith("bert.")]
    assert enc and not any(np.array_equal(outs[0][k], outs[1][k]) for k in enc if outs[0][k].ndim == 2)


@pytest.mark.parametrize("args, needle", [
    (["--task", "classify", "--data", "TSV"], "needs --model"),
    (["--task", "classify", "--model", "BERT"], "needs --data"),
    (["--task", "classify", "--model", "NOPE", "--data", "TSV"], "not a folder"),
    (["--task", "classify", "--model", "GPT", "--data", "TSV"], "--model"),
    (["--task", "classify", "--model", "BERT", "--data", "MISSING"], "does not exist"),
    (["--task", "classify", "--model", "BERT", "--data", "BAD"], "no tab"),
    (["--task", "classify", "--model", "BERT", "--data", "TSV", "--grad-accum", "2"], "--grad-accum"),
    (["--task", "classify", "--model", "BERT", "--data", "TSV", "--max-length", "64"], "positions"),
    (["--task", "classify", "--model", "BERT", "--data", "TSV", "--n-layer", "3"], "--n-layer"),
    (["--task", "addition", "--data", "TSV"], "not allowed with --task addition"),
    (["--task", "addition", "--model", "BERT"], "only for --task classify"),
])
def test_refusals(args, needle, folder, tsv, tmp_path, capsys):
    gpt = tmp_path / "gpt"
    gpt.mkdir()
    (gpt / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    bad = tmp_path / "bad.tsv"
    bad.write_text("yes\tok\nno tab here\n")
    subst = {"TSV": tsv, "BERT": folder, "NOPE": str(tmp_path / "nope"), "GPT": str(gpt),
             "MISSING": str(tmp_path / "missing.tsv"), "BAD": str(bad)}
    out = tmp_path / "out"
    assert main(["train"] + [subst.get(a, a) for a in args] + ["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not out.exists()  # nothing written


def test_resume_refuses_a_changed_max_length(run, capsys):
    assert main(["train", "--out", run, "--resume", "--max-length", "8"]) == 2
    assert "max_length" in capsys.readouterr().err


def test_a_run_from_before_the_classify_fields_still_resumes(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("hello world, a tiny text to train on. " * 40, encoding="utf-8")
    out = str(tmp_path / "gpt")
    tiny = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "8",
            "--batch-size", "2", "--eval-iters", "1", "--progress", "none"]
    assert main(["train", "--data", str(text), "--out", out, "--iters", "2"] + tiny) == 0
    path = os.path.join(out, "config.json")
    saved = config(out)
    for k in ("model", "from_scratch", "max_length"):
        del saved["train"][k]
    with open(path, "w") as f:
        json.dump(saved, f)
    assert main(["train", "--out", out, "--resume", "--iters", "3", "--progress", "none"]) == 0
