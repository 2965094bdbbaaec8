"""Fine-tuning: `tensorlite train --init-from DIR --data NEW.txt`."""
import json
import os

import pytest

from tensorlite.cli import main
from tensorlite.train import UsageError

from _study_helpers import run, synthetic_text, tiny_config


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    d = tmp_path_factory.mktemp("finetune")
    (d / "old.txt").write_text(synthetic_text(0))
    (d / "new.txt").write_text(synthetic_text(1, 100))  # the same language, other sentences
    run(tiny_config(data=str(d / "old.txt"), out=str(d / "pre"), iters=50, eval_every=50))
    return d


def val_losses(out):
    return [r["val_loss"] for r in map(json.loads, open(os.path.join(out, "log.jsonl")))
            if "val_loss" in r]


def test_val_loss_on_new_text_falls_faster_from_a_checkpoint(pretrained):
    d = pretrained
    kw = dict(data=str(d / "new.txt"), iters=20, eval_every=5)
    run(tiny_config(out=str(d / "ft"), init_from=str(d / "pre"), **kw))
    run(tiny_config(out=str(d / "scratch"), **kw))
    ft, scratch = val_losses(d / "ft"), val_losses(d / "scratch")
    assert len(ft) == len(scratch) == 4
    assert all(a < b for a, b in zip(ft, scratch)), (ft, scratch)
    # five fine-tuning steps beat twenty from scratch
    assert ft[0] < scratch[-1] - 0.3, (ft, scratch)
    pre = json.load(open(d / "pre" / "config.json"))["model"]
    tuned = json.load(open(d / "ft" / "config.json"))["model"]
    assert tuned == pre
    assert open(d / "ft" / "tensorlite_tokenizer.json").read() == open(d / "pre" / "tensorlite_tokenizer.json").read()


def test_new_characters_are_refused_before_anything_is_written(pretrained, capsys):
    d = pretrained
    (d / "odd.txt").write_text("the cat sat on a Zebra!\n" * 20)
    out = d / "odd_run"
    rc = main(["train", "--init-from", str(d / "pre"), "--data", str(d / "odd.txt"),
               "--out", str(out), "--iters", "1", "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "2 character(s) outside the tokenizer" in err and err.endswith(": '!' 'Z'")
    assert not out.exists()


def test_init_from_checks_its_inputs(pretrained):
    d = pretrained
    with pytest.raises(UsageError, match="--n-layer 3 differs from the checkpoint's 1"):
        run(tiny_config(data=str(d / "new.txt"), out=str(d / "x"), init_from=str(d / "pre"),
                        n_layer=3))
    with pytest.raises(UsageError, match="needs --data"):
        run(tiny_config(out=str(d / "x"), init_from=str(d / "pre")))
    with pytest.raises(UsageError, match="holds no trained run"):
        run(tiny_config(data=str(d / "new.txt"), out=str(d / "x"), init_from=str(d / "nothing")))
    with pytest.raises(UsageError, match="larger than the checkpoint's 16"):
        run(tiny_config(data=str(d / "new.txt"), out=str(d / "x"), init_from=str(d / "pre"),
                        block_size=32))
    assert not (d / "x").exists()


def test_a_shorter_context_crops_the_position_embeddings(pretrained):
    d = pretrained
    res = run(tiny_config(data=str(d / "new.txt"), out=str(d / "short"), init_from=str(d / "pre"),
                          block_size=8, iters=1, eval_every=1, eval_iters=1))
    assert res["step"] == 1
    assert json.load(open(d / "short" / "config.json"))["model"]["block_size"] == 8


def test_resume_a_fine_tuned_run(pretrained):
    d = pretrained
    kw = dict(data=str(d / "new.txt"), out=str(d / "resumed"), iters=2, eval_every=1, eval_iters=1)
    assert run(tiny_config(init_from=str(d / "pre"), stop_after=1, **kw))["step"] == 1
    with pytest.raises(UsageError, match="init_from: '.*pre' -> None"):
        run(tiny_config(resume=True, **kw))
    assert run(tiny_config(init_from=str(d / "pre"), resume=True, **kw))["step"] == 2
