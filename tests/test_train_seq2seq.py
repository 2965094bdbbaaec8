"""`tensorlite train --task reverse | seq2seq-sort`: an encoder-decoder trained by the same
loop as a GPT. A tiny run writes a complete run folder, resumes bit-exactly, and
`generate`/`eval` read it back; a short run on short strings learns."""
import json
import os

import numpy as np
import pytest

import tensorlite.seq2seq_run as S
from tensorlite.cli import main
from tensorlite.data.seq2seq_tasks import get_seq2seq_task
from tensorlite.serialization import load_file
from tensorlite.train import TrainConfig, latest_checkpoint, train

TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--batch-size", "8",
        "--eval-every", "3", "--eval-iters", "1", "--save-every", "3", "--no-progress"]


@pytest.fixture
def short_heldout(monkeypatch):
    # a 100-problem held-out set: each evaluation decodes it whole
    real = S.get_seq2seq_task
    monkeypatch.setattr(S, "get_seq2seq_task", lambda name, seed: real(name, seed, n_heldout=100))


def log_records(d):
    with open(os.path.join(d, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def weights(out):
    return load_file(os.path.join(latest_checkpoint(out), "model.safetensors"))[0]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("s2s") / "run")
    mp = pytest.MonkeyPatch()
    real = S.get_seq2seq_task
    mp.setattr(S, "get_seq2seq_task", lambda name, seed: real(name, seed, n_heldout=100))
    try:
        assert main(["train", "--task", "reverse", "--out", out, "--iters", "6"] + TINY) == 0
    finally:
        mp.undo()
    return out


def test_a_tiny_run_writes_a_complete_seq2seq_run(tiny_run):
    out = tiny_run
    assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == ["latest", "step-000003",
                                                                     "step-000006"]
    recs = log_records(out)
    assert [r["step"] for r in recs] == list(range(1, 7))
    assert all(np.isfinite(r["loss"]) for r in recs)
    assert {"val_loss", "accuracy"} <= set(recs[2]) and 0 <= recs[5]["accuracy"] <= 1
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["model"]["kind"] == "seq2seq" and config["train"]["task"] == "reverse"
    assert config["model"]["config"]["num_encoder_layers"] == 1
    assert config["model"]["config"]["dim_feedforward"] == 64
    assert "decoder" in " ".join(weights(out))  # the encoder-decoder's weights, not a GPT's
    assert os.path.isfile(os.path.join(out, "loss.png"))


def test_generate_and_eval_read_a_seq2seq_run(tiny_run, capsys, short_heldout):
    out = tiny_run
    for beam in ("1", "3"):
        assert main(["generate", "--out", out, "--prompt", "abcdef", "--beam", beam]) == 0
        text = capsys.readouterr().out.strip()
        assert set(text) <= set("0123456789abcdefghijklmnopqrstuvwxyz"), text
    assert main(["eval", "--out", out, "--beam", "2"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["task"] == "reverse" and res["heldout"] == 100 and res["beam_size"] == 2
    assert 0 <= res["accuracy"] <= 1 and 0 <= res["beam_accuracy"] <= 1
    assert main(["generate", "--out", out, "--prompt", "ABC"]) == 2  # outside the vocabulary
    assert main(["generate", "--out", out, "--prompt", "abc", "--beam", "0"]) == 2


def test_a_resumed_seq2seq_run_is_bit_exact(tmp_path, short_heldout):
    ref, cut = str(tmp_path / "ref"), str(tmp_path / "cut")
    args = ["train", "--task", "seq2seq-sort", "--iters", "6"] + TINY
    assert main(args + ["--out", ref]) == 0
    assert main(args + ["--out", cut, "--stop-after", "4"]) == 0
    assert main(["train", "--out", cut, "--resume", "--no-progress"]) == 0
    assert [r["loss"] for r in log_records(cut)] == [r["loss"] for r in log_records(ref)]
    a, b = weights(ref), weights(cut)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_seq2seq_flags_are_checked(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--task", "reverse", "--mfu", "--out", out] + TINY) == 2
    assert "--mfu" in capsys.readouterr().err and not os.path.exists(out)
    assert main(["train", "--task", "reverse", "--out", out, "--iters", "1"] + TINY) == 0
    assert main(["inspect", "attention", "--out", out, "--prompt", "abc"]) == 2
    assert "seq2seq" in capsys.readouterr().err
    text = tmp_path / "t.txt"
    text.write_text("hello world\n" * 50)
    assert main(["train", "--init-from", out, "--data", str(text), "--out", str(tmp_path / "ft")]
                + TINY) == 2
    assert "seq2seq" in capsys.readouterr().err and not os.path.exists(tmp_path / "ft")


def test_a_short_run_on_short_strings_learns_and_stops_at_accuracy(tmp_path, monkeypatch):
    # strings of 2-3 letters: about 100 steps take the held-out exact match from 0 to 0.9
    real = S.get_seq2seq_task
    monkeypatch.setattr(S, "get_seq2seq_task",
                        lambda name, seed: real(name, seed, n_heldout=200, min_len=2, max_len=3))
    res = train(TrainConfig(task="reverse", out=str(tmp_path / "run"), iters=300, warmup=20,
                            eval_every=25, eval_iters=1, stop_at_accuracy=0.9, progress="none"),
                log=lambda *a: None)
    assert res["accuracy"] >= 0.9 and res["step"] < 300, res


def test_the_packed_forward_is_the_models_forward_on_the_tasks_batch():
    import tensorlite as tl
    from tensorlite.models.seq2seq import Seq2SeqTransformer
    cfg = TrainConfig(task="seq2seq-sort", n_layer=1, n_head=2, n_embd=16).resolved()
    data = S.Seq2SeqTaskData(cfg)
    tl.manual_seed(0)
    model, _ = data.build_model(cfg)
    x, y = data.batch("train", 8, None, np.random.default_rng(3))
    b = get_seq2seq_task("sort", cfg.seed).get_batch(8, np.random.default_rng(3))
    _, packed = model(tl.tensor(x), tl.tensor(y))
    _, plain = Seq2SeqTransformer.forward(model, b.src, b.tgt_in, targets=b.tgt_out)
    assert packed.item() == plain.item()
