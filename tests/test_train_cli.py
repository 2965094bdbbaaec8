"""The `tensorlite` command end to end: training writes a complete run, --resume continues
it bit-exactly, generate/eval read it back, and every kind of bad input gets a one-line
error with exit code 2 and leaves existing files untouched."""
import json
import shutil
import os
import subprocess
import sys

import numpy as np
import pytest

from tensorlite.cli import main
from tensorlite.train import latest_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
        "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?\n") * 30
QUICK = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--batch-size", "4",
         "--eval-every", "5", "--eval-iters", "2", "--no-progress"]


def run_cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def log_records(d):
    with open(os.path.join(d, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture
def text_file(tmp_path):
    p = tmp_path / "input.txt"
    p.write_text(TEXT, encoding="utf-8")
    return str(p)


@pytest.fixture
def trained(tmp_path_factory):
    """A small char-level run on a text file, shared by the read-only tests below."""
    d = tmp_path_factory.mktemp("run")
    p = d / "input.txt"
    p.write_text(TEXT, encoding="utf-8")
    out = str(d / "out")
    assert main(["train", "--data", str(p), "--out", out, "--iters", "10", "--block-size", "16"]
                + QUICK) == 0
    return out, str(p)


def snapshot(d):
    """{relative path: bytes} of every file under d (checkpoint folders included)."""
    out = {}
    for root, _, files in os.walk(d):
        for n in files:
            p = os.path.join(root, n)
            out[os.path.relpath(p, d)] = open(p, "rb").read()
    return out


def weights(d):
    return open(os.path.join(latest_checkpoint(d), "model.safetensors"), "rb").read()


# ---- a run and what it leaves behind ---------------------------------------------------

def test_train_on_text_writes_a_complete_run(trained):
    out, _ = trained
    names = set(os.listdir(out))
    for n in ("config.json", "tensorlite_tokenizer.json", "log.jsonl", "loss.png", "checkpoints"):
        assert n in names, n
    ck = latest_checkpoint(out)
    assert ck == os.path.join(out, "checkpoints", "step-000010")
    assert sorted(os.listdir(ck)) == ["model.safetensors", "optimizer.safetensors",
                                      "trainer_state.json"]
    assert open(os.path.join(out, "checkpoints", "latest")).read() == "step-000010\n"
    recs = log_records(out)
    assert [r["step"] for r in recs] == list(range(1, 11))
    assert all(np.isfinite(r["loss"]) for r in recs)
    assert "val_loss" in recs[4] and "train_loss" in recs[9]
    assert not [n for n in names if n.endswith(".tmp")]


def test_builtin_task_trains_and_reports_accuracy(tmp_path, capsys):
    out = str(tmp_path / "add")
    code, stdout, _ = run_cli(["train", "--out", out, "--iters", "6"] + QUICK, capsys)
    assert code == 0
    assert "held-out exact-match accuracy" in stdout
    assert "accuracy" in log_records(out)[-1]


def test_resume_reproduces_the_uninterrupted_run_bit_exactly(tmp_path, text_file):
    common = ["--data", text_file, "--iters", "12", "--block-size", "16", "--save-every", "100",
              "--dropout", "0.1"] + QUICK
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert main(["train", "--out", a] + common) == 0
    assert main(["train", "--out", b, "--stop-after", "7"] + common) == 0
    assert [r["step"] for r in log_records(b)] == list(range(1, 8))
    assert main(["train", "--out", b, "--resume"] + common) == 0
    ra, rb = log_records(a), log_records(b)
    assert [r["step"] for r in rb] == list(range(1, 13))
    assert [r["loss"] for r in ra] == [r["loss"] for r in rb]  # to the last bit
    assert weights(a) == weights(b)


def test_the_readme_resume_line_works_as_written_and_from_elsewhere(tmp_path, monkeypatch):
    # README: tensorlite train --config my.toml --data input.txt --out runs/mytext --iters 500
    #         tensorlite train --out runs/mytext --resume --iters 4000
    work = tmp_path / "work"
    work.mkdir()
    (work / "input.txt").write_text(TEXT, encoding="utf-8")
    (work / "my.toml").write_text("n_layer = 1\nn_head = 2\nn_embd = 16\nblock_size = 8\n"
                                  "batch_size = 4\neval_every = 3\neval_iters = 1\n")
    monkeypatch.chdir(work)
    assert main(["train", "--config", "my.toml", "--data", "input.txt", "--out", "runs/mytext",
                 "--iters", "4", "--no-progress"]) == 0
    assert main(["train", "--out", "runs/mytext", "--resume", "--iters", "6", "--no-progress"]) == 0
    monkeypatch.chdir(tmp_path)  # another directory: the data is found by its absolute path
    run = str(work / "runs" / "mytext")
    assert main(["train", "--out", run, "--resume", "--iters", "8", "--no-progress"]) == 0
    assert [r["step"] for r in log_records(run)] == list(range(1, 9))
    saved = json.load(open(os.path.join(run, "config.json")))
    assert saved["train"]["iters"] == 8 and saved["train"]["data"] == str(work / "input.txt")
    assert saved["train"]["n_embd"] == 16  # the file's value, not a default


def test_generate_streams_text_and_is_seeded(trained, capsys):
    out, _ = trained
    args = ["generate", "--out", out, "--prompt", "First", "--max-new-tokens", "20", "--seed", "3"]
    code, s1, _ = run_cli(args, capsys)
    assert code == 0 and s1.startswith("First") and len(s1) > len("First")
    _, s2, _ = run_cli(args, capsys)
    assert s1 == s2
    code, s3, _ = run_cli(args + ["--no-cache"], capsys)
    assert code == 0 and s3 == s1  # the KV cache changes speed, not the samples


def test_a_run_written_with_the_old_tokenizer_name_still_loads(trained, tmp_path, capsys):
    # runs used to write OUT/tokenizer.json, the name Hugging Face keeps for its own format
    out, _ = trained
    old = tmp_path / "old"
    shutil.copytree(out, old)
    os.rename(old / "tensorlite_tokenizer.json", old / "tokenizer.json")
    args = ["generate", "--prompt", "First", "--max-new-tokens", "8", "--seed", "3"]
    code, new_text, _ = run_cli(args + ["--out", out], capsys)
    code_old, old_text, _ = run_cli(args + ["--out", str(old)], capsys)
    assert code == code_old == 0 and old_text == new_text


def test_eval_reports_loss_and_perplexity(trained, capsys):
    out, data = trained
    code, s, _ = run_cli(["eval", "--out", out, "--data", data], capsys)
    assert code == 0
    res = json.loads(s)
    assert res["perplexity"] == pytest.approx(np.exp(res["loss"]))
    assert res["tokens"] > 0


def test_python_m_tensorlite_runs():
    r = subprocess.run([sys.executable, "-m", "tensorlite", "--help"], capture_output=True, text=True,
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    assert r.returncode == 0 and "train" in r.stdout


def test_bpe_tokenizer_run(tmp_path, text_file):
    out = str(tmp_path / "bpe")
    assert main(["train", "--data", text_file, "--out", out, "--tokenizer", "bpe", "--vocab-size", "300",
                 "--iters", "3", "--block-size", "8"] + QUICK) == 0
    assert json.load(open(os.path.join(out, "tensorlite_tokenizer.json")))["type"] == "bpe"


# ---- bad input: one line, exit code 2, nothing overwritten -----------------------------

def expect_usage_error(args, capsys, *needles):
    code, _, err = run_cli(args, capsys)
    assert code == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def test_missing_data_file(tmp_path, capsys):
    expect_usage_error(["train", "--data", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "o")]
                       + QUICK, capsys, "nope.txt", "does not exist")
    assert not os.path.exists(tmp_path / "o")


def test_empty_data_file(tmp_path, capsys):
    p = tmp_path / "empty.txt"
    p.write_text("")
    expect_usage_error(["train", "--data", str(p), "--out", str(tmp_path / "o")] + QUICK, capsys,
                       "empty")


def test_file_shorter_than_one_block(tmp_path, capsys):
    p = tmp_path / "short.txt"
    p.write_text("abcdefghij")
    expect_usage_error(["train", "--data", str(p), "--out", str(tmp_path / "o"), "--block-size", "64"]
                       + QUICK, capsys, "token")


def test_non_utf8_bytes_with_char_tokenizer(tmp_path, capsys):
    p = tmp_path / "latin1.txt"
    p.write_bytes(b"hello \xff\xfe world" * 20)
    expect_usage_error(["train", "--data", str(p), "--out", str(tmp_path / "o")] + QUICK, capsys,
                       "latin1.txt")


def test_prompt_with_characters_outside_the_vocab(trained, capsys):
    out, _ = trained
    before = snapshot(out)
    expect_usage_error(["generate", "--out", out, "--prompt", "Zebra \u2603"], capsys, "\u2603")
    assert snapshot(out) == before


def test_block_size_larger_than_the_models(trained, capsys):
    out, data = trained
    expect_usage_error(["eval", "--out", out, "--data", data, "--block-size", "4096"], capsys,
                       "block_size")


def test_resume_with_a_different_config(trained, capsys):
    out, data = trained
    before = snapshot(out)
    expect_usage_error(["train", "--data", data, "--out", out, "--resume", "--iters", "10",
                        "--block-size", "16", "--n-layer", "2", "--n-head", "2", "--n-embd", "16",
                        "--batch-size", "4", "--eval-every", "5", "--eval-iters", "2", "--no-progress"],
                       capsys, "n_layer")
    assert snapshot(out) == before


def test_existing_run_is_not_overwritten(trained, capsys):
    out, data = trained
    before = snapshot(out)
    expect_usage_error(["train", "--data", data, "--out", out] + QUICK, capsys, "already holds a run")
    assert snapshot(out) == before


@pytest.mark.parametrize("damage", ["truncate", "corrupt"])
def test_truncated_or_corrupted_checkpoint(trained, tmp_path, capsys, damage):
    import shutil
    out, _ = trained
    bad = str(tmp_path / "bad")
    shutil.copytree(out, bad)
    path = os.path.join(latest_checkpoint(bad), "model.safetensors")
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2] if damage == "truncate" else b"\x00\x01garbage" + data[9:])
    expect_usage_error(["generate", "--out", bad, "--prompt", "First"], capsys, "model.safetensors")


def test_output_folder_that_cannot_be_written(tmp_path, capsys, text_file):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    expect_usage_error(["train", "--data", text_file, "--out", str(blocker / "run")] + QUICK, capsys,
                       "run")


def test_device_cuda_without_a_gpu(tmp_path, capsys, text_file, monkeypatch):
    monkeypatch.delenv("TENSORLITE_EMULATE_CUDA", raising=False)
    import tensorlite
    if tensorlite.cuda.is_available():
        pytest.skip("this machine has a GPU")
    expect_usage_error(["train", "--data", text_file, "--out", str(tmp_path / "o"), "--device", "cuda"]
                       + QUICK, capsys, "cuda")
    assert not os.path.exists(tmp_path / "o")


# ---- progress where no terminal is ------------------------------------------------------

NO_BAR = [a for a in QUICK if a != "--no-progress"]


def test_without_a_terminal_progress_is_a_few_plain_lines(tmp_path, text_file, capsys):
    out = str(tmp_path / "log")
    code, stdout, stderr = run_cli(["train", "--data", text_file, "--out", out, "--iters", "200",
                                    "--block-size", "8"] + NO_BAR + ["--eval-every", "100"], capsys)
    assert code == 0
    assert "\r" not in stdout and "\r" not in stderr
    steps = [ln for ln in stdout.splitlines() if ln.startswith("step ") and "/200" in ln]
    assert 10 <= len(steps) <= 40, stdout
    assert len(stdout.splitlines()) + len(stderr.splitlines()) < 200 // 3
    first, last = steps[0].split(), steps[-1].split()
    assert first[:2] == ["step", "1/200"] and "loss" in first and "eta" in first
    assert last[:2] == ["step", "200/200"] and "took" in last
    assert "tok/s" in steps[-1] and "lr" in steps[-1]


def test_progress_none_prints_evaluations_only(tmp_path, text_file, capsys):
    code, stdout, stderr = run_cli(["train", "--data", text_file, "--out", str(tmp_path / "n"),
                                    "--iters", "10", "--block-size", "8", "--progress", "none"]
                                   + NO_BAR, capsys)
    assert code == 0 and "/10 " not in stdout and "\r" not in stderr
    assert "step 5: train_loss" in stdout and "step 10: train_loss" in stdout


def test_log_progress_paces_its_lines():
    from tensorlite.progress import LogProgress, format_duration, make_progress, resolve_mode
    lines, now = [], [0.0]
    p = LogProgress(1000, 0, lines.append, "step", None, 10.0, lambda: now[0])
    for s in range(1, 1001):
        now[0] += 0.001
        p.update(s, loss=2.0, tok_s=5000.0)
    assert len(lines) == 21 and lines[0].startswith("step 1/1000 loss 2.0000 tok/s 5,000 eta")
    lines.clear()
    p = LogProgress(10, 0, lines.append, "step", 1000, 10.0, lambda: now[0])
    for s in range(1, 11):
        now[0] += 6.0  # slow steps: a line at least every 10 seconds
        p.update(s, loss=1.0)
    assert [ln.split()[1] for ln in lines] == ["1/10", "3/10", "5/10", "7/10", "9/10", "10/10"]
    assert format_duration(62) == "1m02s" and format_duration(7500) == "2h05m"

    class Tty:
        def isatty(self):
            return True
    assert resolve_mode("auto", Tty()) == "bar" and resolve_mode("auto", open(os.devnull)) == "log"
    assert resolve_mode(False) == "none" and resolve_mode(True, Tty()) == "bar"
    with pytest.raises(ValueError):
        resolve_mode("loud")
    assert make_progress("none", 5).kind == "none"


# ---- eval --split, generate's headers ---------------------------------------------------

def test_eval_scores_the_runs_own_split(trained, capsys):
    out, data = trained
    res = {}
    for split in ("train", "val", "all"):
        code, s, err = run_cli(["eval", "--out", out, "--data", data, "--split", split], capsys)
        assert code == 0, err
        res[split] = json.loads(s)
        assert res[split]["split"] == split
    code, s, _ = run_cli(["eval", "--out", out], capsys)   # default: the run's file, its val split
    assert code == 0 and json.loads(s) == res["val"]
    from tensorlite.data.text import split_train_val
    from tensorlite.generate import load_run
    _, tok, _ = load_run(out)
    ids = tok.encode(open(data, encoding="utf-8").read())
    tr, va = split_train_val(np.arange(len(ids)))
    T = 16
    assert res["val"]["tokens"] == (len(va) - 1) // T * T
    assert res["train"]["tokens"] == (len(tr) - 1) // T * T
    assert res["all"]["tokens"] == (len(ids) - 1) // T * T


def test_eval_shows_progress_on_stderr_only(trained, capsys):
    out, data = trained
    code, s, err = run_cli(["eval", "--out", out, "--data", data, "--split", "all",
                            "--batch-size", "2"], capsys)
    assert code == 0
    json.loads(s)  # stdout holds the result alone
    assert "batch 1/" in err and "\r" not in err


def test_eval_of_a_split_too_short_for_a_block(trained, tmp_path, capsys):
    out, _ = trained
    p = tmp_path / "short.txt"
    p.write_text(TEXT[:150])
    expect_usage_error(["eval", "--out", out, "--data", str(p), "--split", "val"], capsys,
                       "val split", "tokens")


def test_generate_prints_each_header_before_its_sample(trained, capsys):
    out, _ = trained
    code, s, _ = run_cli(["generate", "--out", out, "--prompt", "First", "--max-new-tokens", "12",
                          "--num-samples", "3", "--seed", "1"], capsys)
    assert code == 0
    assert s.startswith("---- sample 1 ----\nFirst")
    parts = s.split("---- sample ")
    assert [p.split(" ----\n")[0] for p in parts[1:]] == ["1", "2", "3"]
    for p in parts[1:]:
        assert p.split(" ----\n", 1)[1].startswith("First")
    assert not s.rstrip().endswith("----")


# ---- --tensorboard -----------------------------------------------------------------------

def read_events(folder):
    """{tag: [(step, value)]} from tensorboard event files, read record by record."""
    import struct
    from tensorboardX.proto import event_pb2
    tags = {}
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as f:
            data = f.read()
        i = 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            ev = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            for v in ev.summary.value:
                tags.setdefault(v.tag, []).append((ev.step, v.simple_value))
    return tags


def test_tensorboard_events_are_written(tmp_path, text_file):
    pytest.importorskip("tensorboardX")
    out = str(tmp_path / "tb")
    assert main(["train", "--data", text_file, "--out", out, "--iters", "6", "--block-size", "8",
                 "--tensorboard", "--log-stats", "--stats-every", "3"] + QUICK) == 0
    tags = read_events(os.path.join(out, "tensorboard"))
    assert [s for s, _ in tags["train/loss"]] == list(range(1, 7))
    losses = [r["loss"] for r in log_records(out)]
    assert [v for _, v in tags["train/loss"]] == pytest.approx(losses, rel=1e-6)
    for tag in ("train/lr", "train/grad_norm", "train/tokens_per_s", "eval/val_loss",
                "stats/grad_norm/transformer.h.0"):
        assert tag in tags, sorted(tags)


def test_tensorboard_without_the_package_says_how_to_install_it(tmp_path, text_file, capsys,
                                                                 monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    expect_usage_error(["train", "--data", text_file, "--out", str(tmp_path / "o"),
                        "--tensorboard"] + QUICK, capsys, "pip install tensorboardX")
    assert not os.path.exists(tmp_path / "o")
