"""The command line as a new user meets it: every flag explained with its default, a
--version, and `tensorlite train --config FILE|RECIPE` with flags over the file."""
import argparse
import json
import os
from importlib import metadata

import pytest

from tensorlite import cli
from tensorlite.cli import build_parser, load_config, main, recipe_names
from tensorlite.train import PRESETS, TrainConfig

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
        "All:\nSpeak, speak.\n\n") * 30
SMALL = {"n_layer": 1, "n_head": 2, "n_embd": 16, "batch_size": 4, "block_size": 8,
         "eval_every": 2, "eval_iters": 1, "iters": 4, "lr": 0.01, "seed": 7}


@pytest.fixture
def text_file(tmp_path):
    p = tmp_path / "input.txt"
    p.write_text(TEXT, encoding="utf-8")
    return str(p)


def run_cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(args, capsys, *needles):
    code, _, err = run_cli(args, capsys)
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def train_config(out):
    with open(os.path.join(out, "config.json")) as f:
        return json.load(f)


def all_parsers(parser, name="tensorlite"):
    yield name, parser
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for sub_name, sub in a.choices.items():
                yield from all_parsers(sub, f"{name} {sub_name}")


# ---- help and version --------------------------------------------------------------------

def test_every_option_has_help_and_shows_its_default():
    for name, parser in all_parsers(build_parser()):
        fmt = parser._get_formatter()
        for a in parser._actions:
            if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert a.help and a.help.strip(), f"{name} {a.option_strings}: no help"
            takes_value = a.nargs != 0 and not isinstance(a, argparse._VersionAction)
            if takes_value and not a.required:
                shown = fmt._get_help_string(a) % {"default": a.default}
                assert "default" in shown, f"{name} {a.option_strings}: no default in {shown!r}"


def test_train_help_lists_every_flag_with_ranges_and_recipes(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    train_parser = dict(all_parsers(build_parser()))["tensorlite train"]
    for a in train_parser._actions:
        for flag in a.option_strings:
            assert flag in text, flag
    assert "(default: 250; >= 1)" in text          # --eval-every: its default and its range
    assert "0 <= x < 1" in text                    # --dropout
    for r in recipe_names():
        assert r in text
    assert "--config FILE < the flags given" in text


def test_top_level_help_lists_each_command_with_one_line(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for cmd in ("train", "generate", "eval", "inspect", "plot"):
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(cmd + " "))
        assert len(line.split(None, 1)[1]) > 10, line


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"tensorlite {metadata.version('tensorlite')}"


# ---- --config ----------------------------------------------------------------------------

def write_toml(path, values):
    lines = [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path.write_text("# a test config\n" + "\n".join(lines) + "\n")
    return str(path)


def test_flags_given_override_the_file_and_only_those(tmp_path, text_file, capsys):
    out = str(tmp_path / "from_file")
    cfg = write_toml(tmp_path / "run.toml", {**SMALL, "out": out, "dropout": 0.1})
    code, stdout, _ = run_cli(["train", "--config", cfg, "--data", text_file, "--iters", "3",
                               "--no-progress"], capsys)
    assert code == 0
    t = train_config(out)["train"]           # `out` came from the file: no --out was given
    assert t["iters"] == 3                   # the flag beats the file
    assert (t["n_embd"], t["lr"], t["seed"], t["dropout"]) == (16, 0.01, 7, 0.1)  # the file
    assert t["warmup"] == TrainConfig.warmup  # neither: TrainConfig's default
    assert t["tokenizer"] == "char" and t["device"] == "cpu"
    assert "run.toml + flags --data, --iters, --progress" in train_config(out)["source"]
    assert "config:" in stdout and "n_embd=16" in stdout and "iters=3" in stdout


def test_json_config_and_hyphenated_keys(tmp_path, text_file):
    out = str(tmp_path / "j")
    p = tmp_path / "run.json"
    p.write_text(json.dumps({**{k.replace("_", "-"): v for k, v in SMALL.items()},
                             "data": text_file}))
    assert main(["train", "--config", str(p), "--out", out, "--no-progress"]) == 0
    t = train_config(out)["train"]
    assert (t["n_layer"], t["block_size"], t["iters"], t["data"]) == (1, 8, 4, text_file)


def test_the_addition_recipe_is_the_default_run(tmp_path, capsys):
    quick = ["--iters", "2", "--eval-iters", "1", "--no-progress"]
    a, b = str(tmp_path / "plain"), str(tmp_path / "recipe")
    assert main(["train", "--out", a] + quick) == 0
    assert main(["train", "--config", "addition", "--out", b] + quick) == 0
    ca, cb = train_config(a), train_config(b)
    assert ca["model"] == cb["model"]
    assert {k: v for k, v in ca["train"].items() if k != "out"} == \
        {k: v for k, v in cb["train"].items() if k != "out"}
    assert cb["source"].startswith("recipe addition")


def test_every_recipe_is_a_valid_config(tmp_path):
    names = recipe_names()
    assert {"addition", "baby", "shakespeare-char", "shakespeare-char-tiny"} <= set(names)
    for name in names:
        values = load_config(name)
        if values.get("task") is None and values.get("data") is None:
            values["data"] = "input.txt"
        c = TrainConfig(**values).resolved()
        p = PRESETS[c.preset]
        assert (c.n_layer, c.n_head, c.n_embd) == (p["n_layer"], p["n_head"], p["n_embd"]), name
    big = load_config("shakespeare-char")
    assert (big["block_size"], big["batch_size"], big["dropout"], big["iters"]) == (256, 64, 0.2, 5000)


def test_a_recipe_trains(tmp_path, text_file):
    out = str(tmp_path / "tiny")
    assert main(["train", "--config", "shakespeare-char-tiny", "--data", text_file, "--out", out,
                 "--iters", "2", "--block-size", "8", "--eval-iters", "1", "--no-progress"]) == 0
    assert train_config(out)["train"]["n_embd"] == 64


@pytest.mark.parametrize("content, needles", [
    ("iters = 3\nn_layers = 2\n", ["unknown key 'n_layers'", "allowed:", "n_layer,"]),
    ("iters = \n", ["not valid TOML", "line 1"]),
    ("[train]\niters = 3\n", ["unknown key 'train'"]),
    ('iters = "3"\n', ["iters must be an integer"]),
    ("resume = 1\n", ["resume must be true or false"]),
    ('tokenizer = "words"\n', ["tokenizer must be one of char, bpe, gpt2"]),
    ("dropout = 1.5\n", ["dropout must be 0 <= x < 1"]),
])
def test_bad_config_files_are_refused_on_one_line(tmp_path, text_file, capsys, content, needles):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(content)
    out = tmp_path / "o"
    one_line_error(["train", "--config", str(cfg), "--data", text_file, "--out", str(out)],
                   capsys, *needles)
    assert not out.exists()


def test_bad_json_and_unknown_names_are_refused(tmp_path, capsys):
    p = tmp_path / "bad.json"
    p.write_text('{"iters": 3,}')
    one_line_error(["train", "--config", str(p), "--out", str(tmp_path / "o")], capsys,
                   "not valid JSON")
    one_line_error(["train", "--config", "no-such-recipe", "--out", str(tmp_path / "o")], capsys,
                   "no recipe of that name", "baby")
    p = tmp_path / "cfg.yaml"
    p.write_text("iters: 3\n")
    one_line_error(["train", "--config", str(p), "--out", str(tmp_path / "o")], capsys, ".toml or .json")
    assert not (tmp_path / "o").exists()


def test_an_existing_run_is_untouched_by_a_bad_config(tmp_path, text_file, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", write_toml(tmp_path / "ok.toml", SMALL), "--data", text_file,
                 "--out", str(out), "--no-progress"]) == 0
    before = {n: (out / n).read_bytes() for n in os.listdir(out) if (out / n).is_file()}
    bad = tmp_path / "bad.toml"
    bad.write_text("iters = = 3\n")
    one_line_error(["train", "--config", str(bad), "--out", str(out), "--resume"], capsys, "TOML")
    assert {n: (out / n).read_bytes() for n in os.listdir(out) if (out / n).is_file()} == before


def test_a_flag_out_of_range_is_refused_before_anything_is_written(tmp_path, capsys):
    one_line_error(["train", "--eval-every", "0", "--out", str(tmp_path / "o")], capsys,
                   "eval_every must be >= 1")
    one_line_error(["train", "--lr", "0", "--out", str(tmp_path / "o")], capsys, "lr must be > 0")
    assert not (tmp_path / "o").exists()


def test_toml_without_tomllib_says_what_to_install(tmp_path, monkeypatch, capsys):
    import sys
    monkeypatch.setitem(sys.modules, "tomllib", None)
    monkeypatch.setitem(sys.modules, "tomli", None)
    cfg = write_toml(tmp_path / "c.toml", SMALL)
    one_line_error(["train", "--config", cfg, "--out", str(tmp_path / "o")], capsys,
                   "pip install tomli", "JSON")
    assert cli.RECIPES_DIR.endswith("recipes")
