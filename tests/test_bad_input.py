"""A catalogue of bad input, each case refused before anything is written: the command
line's flags (every numeric flag with negative, zero, NaN, infinite, mistyped and
out-of-range values; every choice), resumes that would change the run, symlinks planted in
--out, damaged checkpoints, and the API's optimizers, clip_grad_norm_ and TrainConfig.

A command-line case must exit with code 2 and one line on stderr that names the argument,
shows the value and says what is allowed, and leave --out byte-for-byte as it was (or not
there at all). The command runs in-process (tensorlite.cli.main); a few run as `python -m
tensorlite` too."""
import hashlib
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import tensorlite as tl
from tensorlite import nn, optim
from tensorlite.checkpoint import latest_checkpoint
from tensorlite.cli import main
from tensorlite.errors import UsageError
from tensorlite.serialization import save_file
from tensorlite.train import TrainConfig, train

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
        "All:\nSpeak, speak.\n") * 30
TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "8",
        "--batch-size", "4", "--eval-iters", "1", "--eval-every", "3", "--threads", "1",
        "--no-progress"]
# what a line says is allowed, or what is wrong with the state it found
ALLOWED = (">", "<", "one of", "choose from", "an integer", "a number", "finite", "true or false",
           "a string", "non-empty", "divisible", "pass ", "remove", "does not exist", "needs",
           "holds no", "no such file", "changed", "differ", "is empty", "not allowed", "is a file",
           "symbolic link")


def tree_hash(path):
    """One digest of every name and byte under path (None when it does not exist)."""
    if not os.path.lexists(path):
        return None
    h = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for n in sorted(files + dirs):
            p = os.path.join(root, n)
            h.update(os.path.relpath(p, path).encode() + b"\0")
            if os.path.islink(p):
                h.update(b"link:" + os.readlink(p).encode())
            elif os.path.isfile(p):
                with open(p, "rb") as f:
                    h.update(f.read())
    return h.hexdigest()


def refused(argv, capsys, out, *needles):
    """Run the command; assert exit 2, one stderr line holding each needle and a hint of
    what is allowed, and out unchanged. Returns the line."""
    before = tree_hash(out)
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own refusals
        code = e.code
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], lines[0]
    assert any(a in lines[0] for a in ALLOWED), lines[0]
    assert tree_hash(out) == before, f"{out} changed"
    return lines[0]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("bad_input_data") / "input.txt"
    p.write_text(TEXT, encoding="utf-8")
    return str(p)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, text_file):
    """A finished tiny run (6 steps) that the resume and generate cases try to damage."""
    out = str(tmp_path_factory.mktemp("bad_input_run") / "run")
    assert main(["train", "--data", text_file, "--out", out, "--iters", "6"] + TINY) == 0
    return out


# ---- train's numeric flags -----------------------------------------------------------------

INT_FLAGS = {  # flag: its smallest allowed value
    "--n-layer": 1, "--n-head": 1, "--n-embd": 1, "--block-size": 1, "--iters": 0,
    "--batch-size": 1, "--warmup": 0, "--eval-every": 1, "--eval-iters": 1, "--save-every": 1,
    "--keep-last": 1, "--seed": 0, "--threads": 1, "--task-digits": 1, "--stop-after": 1,
    "--stats-every": 1, "--vocab-size": 257,
}
FLOAT_FLAGS = {  # flag: values out of its range besides the negative and non-finite ones
    "--dropout": ["1", "1.5"], "--lr": ["0", "1e-400"], "--min-lr-ratio": ["1.5"],
    "--weight-decay": [], "--grad-clip": [], "--stop-at-accuracy": ["1.01", "2"],
}


def _int_cases():
    for flag, low in INT_FLAGS.items():
        yield flag, "abc"
        yield flag, "2.5"
        yield flag, "1e3"
        yield flag, str(low - 1)
        if low - 1 != -1:
            yield flag, "-1"


def _float_cases():
    for flag, extra in FLOAT_FLAGS.items():
        for v in ["abc", "nan", "inf", "-inf", "-1", "-0.001"] + extra:
            yield flag, v


@pytest.mark.parametrize("flag, value", list(_int_cases()) + list(_float_cases()))
def test_train_numeric_flag_refused(tmp_path, capsys, text_file, flag, value):
    out = str(tmp_path / "o")
    field = flag[2:].replace("-", "_")
    # FLAG=VALUE: argparse reads a separate "-inf" as an option of its own
    line = refused(["train", "--data", text_file, "--out", out, f"{flag}={value}"] + TINY[-1:],
                   capsys, out, value.lstrip("-") if value not in ("1e-400",) else "0")
    assert flag in line or field in line, line


CHOICE_FLAGS = ["--tokenizer", "--preset", "--device", "--kernels", "--task", "--progress"]


@pytest.mark.parametrize("flag", CHOICE_FLAGS)
@pytest.mark.parametrize("value", ["nope", ""])
def test_train_choice_flag_refused(tmp_path, capsys, flag, value):
    out = str(tmp_path / "o")
    refused(["train", "--out", out, flag, value], capsys, out, flag, "choose from")


@pytest.mark.parametrize("argv, needle", [
    (["--n-embd", "30", "--n-head", "4"], "divisible"),
    (["--tokenizer", "gpt2"], "--gpt2-dir"),
    (["--init-from", "/nonexistent/run"], "--init-from"),
    (["--out", ""], "out"),
    (["--config", "/nonexistent.toml"], "--config"),
    (["--task", "addition", "--data", "x.txt"], "--data"),
])
def test_train_other_bad_combinations(tmp_path, capsys, text_file, argv, needle):
    args = ["train"] + (["--data", text_file] if "--data" not in argv and "--task" not in argv else [])
    out = argv[argv.index("--out") + 1] if "--out" in argv else str(tmp_path / "o")
    refused(args + argv + (["--out", out] if "--out" not in argv else []) + ["--no-progress"],
            capsys, out or str(tmp_path / "o"), needle)


def test_missing_empty_and_non_utf8_data(tmp_path, capsys):
    out = str(tmp_path / "o")
    refused(["train", "--data", str(tmp_path / "nope.txt"), "--out", out], capsys, out,
            "nope.txt", "does not exist")
    (tmp_path / "empty.txt").write_text("")
    line = refused(["train", "--data", str(tmp_path / "empty.txt"), "--out", out] + TINY, capsys,
                   out, "empty.txt")
    assert "empty" in line
    short = tmp_path / "short.txt"
    short.write_text("abcdefghij")
    refused(["train", "--data", str(short), "--out", out, "--block-size", "64", "--n-layer", "1",
             "--n-head", "2", "--n-embd", "16"], capsys, out, "block_size")


def test_out_that_is_a_file(tmp_path, capsys, text_file):
    f = tmp_path / "afile"
    f.write_text("x")
    refused(["train", "--data", text_file, "--out", str(f)] + TINY, capsys, str(f), "afile")


def test_some_refusals_through_a_real_process(tmp_path, text_file):
    out = str(tmp_path / "o")
    for argv, needle in ((["--lr", "nan"], "lr"), (["--grad-clip", "-1"], "grad_clip"),
                         (["--batch-size", "0"], "batch_size"), (["--iters", "x"], "--iters")):
        r = subprocess.run([sys.executable, "-m", "tensorlite", "train", "--data", text_file,
                            "--out", out] + argv, capture_output=True, text=True)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], r.stderr
        assert not os.path.exists(out)


# ---- the other commands' flags -----------------------------------------------------------

@pytest.mark.parametrize("flag, value", [
    ("--max-new-tokens", "-1"), ("--max-new-tokens", "abc"), ("--max-new-tokens", "1.5"),
    ("--temperature", "-0.5"), ("--temperature", "nan"), ("--temperature", "inf"),
    ("--temperature", "abc"), ("--top-k", "0"), ("--top-k", "-3"), ("--top-k", "abc"),
    ("--top-p", "0"), ("--top-p", "1.5"), ("--top-p", "nan"), ("--top-p", "-0.1"),
    ("--top-p", "abc"), ("--num-samples", "0"), ("--num-samples", "-2"), ("--num-samples", "x"),
    ("--seed", "-1"), ("--seed", "abc"),
])
def test_generate_flag_refused(trained, capsys, flag, value):
    refused(["generate", "--out", trained, "--prompt", "First", flag, value], capsys, trained,
            flag, value)


@pytest.mark.parametrize("flag, value", [
    ("--block-size", "0"), ("--block-size", "-1"), ("--block-size", "abc"),
    ("--batch-size", "0"), ("--batch-size", "-4"), ("--batch-size", "2.5"),
])
def test_eval_flag_refused(trained, capsys, flag, value):
    refused(["eval", "--out", trained, flag, value], capsys, trained, flag, value)


@pytest.mark.parametrize("value", ["1", "1.5", "-0.1", "nan", "abc"])
def test_plot_smooth_refused(trained, capsys, value):
    refused(["plot", "--out", trained, "--smooth", value], capsys, trained, "--smooth", value)


# ---- resuming: what may not change -----------------------------------------------------------

@pytest.mark.parametrize("argv, field", [
    (["--n-layer", "2"], "n_layer"), (["--n-head", "4"], "n_head"),
    (["--n-embd", "32"], "n_embd"), (["--block-size", "16"], "block_size"),
    (["--tokenizer", "bpe"], "tokenizer"), (["--seed", "1"], "seed"),
    (["--preset", "tiny"], "preset"), (["--task", "addition"], "data"),
    (["--iters", "3"], "--iters 3"), (["--init-from", "."], "--init-from"),
    (["--lr", "-1"], "lr"), (["--dropout", "1"], "dropout"),
])
def test_resume_that_would_change_the_run(trained, capsys, argv, field):
    refused(["train", "--out", trained, "--resume"] + argv, capsys, trained, field)


def test_resume_with_another_data_file(trained, capsys, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text(TEXT.upper())
    refused(["train", "--out", trained, "--resume", "--data", str(other)], capsys, trained,
            "other.txt", "not the one")


def test_resume_after_the_data_file_changed_or_went(trained, capsys, text_file, tmp_path):
    saved = open(text_file, "rb").read()
    try:
        with open(text_file, "ab") as f:
            f.write(b"one more line\n")
        refused(["train", "--out", trained, "--resume"], capsys, trained, text_file, "changed")
        os.replace(text_file, text_file + ".moved")
        refused(["train", "--out", trained, "--resume"], capsys, trained, text_file,
                "does not exist")
    finally:
        with open(text_file, "wb") as f:
            f.write(saved)
        if os.path.exists(text_file + ".moved"):
            os.unlink(text_file + ".moved")


def test_resume_of_nothing_and_a_second_fresh_run(trained, capsys, tmp_path, text_file):
    empty = str(tmp_path / "empty")
    os.makedirs(empty)
    refused(["train", "--out", empty, "--resume"], capsys, empty, "holds no run")
    refused(["train", "--data", text_file, "--out", trained] + TINY, capsys, trained,
            "already holds a run", "--resume")


def test_resume_with_a_hand_broken_config(trained, capsys, tmp_path):
    run = str(tmp_path / "run")
    shutil.copytree(trained, run)
    import json
    p = os.path.join(run, "config.json")
    cfg = json.load(open(p))
    cfg["train"]["lr"] = -1
    json.dump(cfg, open(p, "w"))
    refused(["train", "--out", run, "--resume"], capsys, run, "config.json", "lr")


# ---- symlinks planted in --out ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["log.jsonl", "config.json", "tokenizer.json", "loss.png",
                                  "checkpoints"])
def test_a_symlink_in_a_fresh_out_is_refused_and_its_target_untouched(tmp_path, capsys, text_file,
                                                                      name):
    out = tmp_path / "o"
    out.mkdir()
    target = tmp_path / "precious"
    target.write_text("do not overwrite")
    (out / name).symlink_to(target)
    refused(["train", "--data", text_file, "--out", str(out)] + TINY, capsys, str(out), name,
            "symbolic link")
    assert target.read_text() == "do not overwrite"


# ---- damaged checkpoints ------------------------------------------------------------------------

def _damage(run, kind):
    import json
    import struct
    path = os.path.join(latest_checkpoint(run), "model.safetensors")
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    name = "lm_head.weight" if "lm_head.weight" in header else sorted(
        k for k in header if k != "__metadata__")[0]
    e = header[name]
    if kind == "negative-shape":
        e["shape"] = [-1] + e["shape"][1:]
    elif kind == "relabel-i32":
        e["dtype"] = "I32"
    elif kind == "unknown-dtype":
        e["dtype"] = "F8_E9M9"
    elif kind == "overlap":
        e["data_offsets"] = [e["data_offsets"][0] + 4, e["data_offsets"][1] + 4]
    elif kind == "truncated":
        open(path, "wb").write(raw[:len(raw) // 2])
        return name
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + raw[8 + n:])
    return name


@pytest.mark.parametrize("kind", ["negative-shape", "relabel-i32", "unknown-dtype", "overlap",
                                  "truncated"])
def test_a_damaged_checkpoint_is_refused_naming_file_and_tensor(trained, tmp_path, capsys, kind):
    run = str(tmp_path / "run")
    shutil.copytree(trained, run)
    name = _damage(run, kind)
    needles = ["model.safetensors"] + ([] if kind in ("truncated", "overlap") else [name])
    for argv in (["generate", "--out", run, "--prompt", "First"],
                 ["train", "--out", run, "--resume", "--iters", "8"]):
        before = tree_hash(run)
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
        line = capsys.readouterr().err.strip()
        assert code == 2 and len(line.splitlines()) == 1, line
        assert all(n in line for n in needles), line
        assert tree_hash(run) == before


# ---- the API: optimizers, clip_grad_norm_, TrainConfig ----------------------------------

def _param():
    p = nn.Parameter(tl.zeros(3))
    p.grad = tl.ones(3)
    return p


ADAM_BAD = [
    ("lr", -1.0), ("lr", float("nan")), ("lr", float("inf")), ("lr", "0.1"), ("lr", None),
    ("eps", -1e-8), ("eps", float("nan")), ("eps", float("inf")),
    ("weight_decay", -0.1), ("weight_decay", float("nan")), ("weight_decay", float("inf")),
    ("betas", (1.0, 0.9)), ("betas", (0.9, 1.0)), ("betas", (-0.1, 0.9)), ("betas", (0.9,)),
    ("betas", 0.9), ("betas", "ab"), ("betas", (float("nan"), 0.9)), ("betas", (0.9, 1.5)),
]


@pytest.mark.parametrize("cls", [optim.Adam, optim.AdamW])
@pytest.mark.parametrize("arg, value", ADAM_BAD)
def test_adam_arguments(cls, arg, value):
    with pytest.raises((ValueError, TypeError), match=f"{cls.__name__}: {arg}"):
        cls([_param()], **{arg: value})


@pytest.mark.parametrize("cls", [optim.Adam, optim.AdamW, optim.SGD])
def test_a_bad_value_in_a_param_group(cls):
    with pytest.raises(ValueError, match="lr must be >= 0"):
        cls([{"params": [_param()]}, {"params": [_param()], "lr": -1.0}], lr=0.1)


SGD_BAD = [("lr", -0.1), ("lr", float("nan")), ("lr", float("inf")), ("momentum", -0.9),
           ("momentum", float("nan")), ("dampening", -0.5), ("dampening", 1.5),
           ("weight_decay", -1.0), ("nesterov", "yes"), ("lr", True)]


@pytest.mark.parametrize("arg, value", SGD_BAD)
def test_sgd_arguments(arg, value):
    with pytest.raises((ValueError, TypeError), match=f"SGD: {arg}"):
        optim.SGD([_param()], **{"lr": 0.1, arg: value})


@pytest.mark.parametrize("arg, value", [
    ("max_norm", -1.0), ("max_norm", float("nan")), ("max_norm", "1"), ("max_norm", True),
    ("max_norm", None), ("norm_type", 0.0), ("norm_type", -2.0), ("norm_type", float("nan")),
])
def test_clip_grad_norm_arguments(arg, value):
    p = _param()
    kw = {"max_norm": 1.0, "norm_type": 2.0, arg: value}
    with pytest.raises((ValueError, TypeError), match=f"clip_grad_norm_: {arg}"):
        nn.utils.clip_grad_norm_([p], **kw)
    assert p.grad.numpy().tolist() == [1.0, 1.0, 1.0]  # untouched


def test_clip_grad_norm_edges_still_work():
    p = _param()
    assert nn.utils.clip_grad_norm_([p], float("inf")) == pytest.approx(math.sqrt(3))
    assert p.grad.numpy().tolist() == [1.0, 1.0, 1.0]
    nn.utils.clip_grad_norm_([p], 0.0)
    assert p.grad.numpy().tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("kw, field", [
    (dict(iters="3"), "iters"), (dict(batch_size=2.5), "batch_size"), (dict(lr="1e-3"), "lr"),
    (dict(lr=float("inf")), "lr"), (dict(dropout=True), "dropout"), (dict(bias=1), "bias"),
    (dict(device="tpu"), "device"), (dict(kernels="fast"), "kernels"), (dict(out=""), "out"),
    (dict(resume="yes"), "resume"), (dict(n_layer=np.float64(2.0)), "n_layer"),
    (dict(beta1=1.0), "beta1"), (dict(beta2=-0.5), "beta2"), (dict(keep_last=0), "keep_last"),
    (dict(weight_decay=float("nan")), "weight_decay"), (dict(progress="loud"), "progress"),
    (dict(extra=[]), "extra"), (dict(grad_clip=-1.0), "grad_clip"),
])
def test_train_config_fields(tmp_path, kw, field):
    out = str(tmp_path / "o")
    kw = {"out": out, **kw}
    with pytest.raises(UsageError, match=field):
        train(TrainConfig(**kw), log=lambda *a: None)
    assert not os.path.exists(out) or kw["out"] == ""


def test_a_bad_file_given_to_save_file(tmp_path):
    with pytest.raises(TypeError, match="unsupported dtype"):
        save_file({"s": np.array(["x"])}, str(tmp_path / "s.safetensors"))
    with pytest.raises(TypeError, match="names must be strings"):
        save_file({"__metadata__": np.zeros(1)}, str(tmp_path / "s.safetensors"))
    assert not os.listdir(tmp_path)
