"""--grad-accum N: one global batch of batch_size * N rows per step, split into N
micro-batches whose gradients add up before one update. Batch B x accum 2 trains on the
examples of batch 2B x accum 1, reaching the same weights up to float32 rounding, and a
resumed accumulating run is bit-exact."""
import functools
import json
import os

import numpy as np
import pytest

import tensorlite.train as T
from tensorlite.cli import main
from tensorlite.serialization import load_file
from tensorlite.train_loop import Dist
from tensorlite.train import TrainConfig, latest_checkpoint, resume_config, train

SMALL = dict(task="addition", n_layer=1, n_head=2, n_embd=16, iters=10, eval_every=10,
             eval_iters=1, warmup=2, dropout=0.0, progress="none")


def weights(out):
    return load_file(os.path.join(latest_checkpoint(out), "model.safetensors"))[0]


def losses(out):
    with open(os.path.join(out, "log.jsonl")) as f:
        return [json.loads(line)["loss"] for line in f]


def quiet(cfg):
    return train(cfg, log=lambda *a: None)


def test_batch_b_times_accum_2_matches_batch_2b(tmp_path, monkeypatch):
    # a larger AdamW eps, as tests/test_distributed.py explains: it bounds how far Adam
    # scales up the float32 rounding noise of gradient elements that are ~0
    monkeypatch.setattr(T, "AdamW", functools.partial(T.AdamW, eps=1e-6))
    whole, split = str(tmp_path / "whole"), str(tmp_path / "split")
    quiet(TrainConfig(out=whole, batch_size=16, **SMALL))
    quiet(TrainConfig(out=split, batch_size=8, grad_accum=2, **SMALL))
    a, b = weights(whole), weights(split)
    assert a.keys() == b.keys()
    for k in a:
        rel = np.abs(a[k] - b[k]).max() / max(np.abs(a[k]).max(), 1e-30)
        assert rel <= 1e-5, (k, rel)
    np.testing.assert_allclose(losses(split), losses(whole), rtol=1e-5)
    cfg = json.load(open(os.path.join(split, "config.json")))["train"]
    assert cfg["grad_accum"] == 2 and cfg["batch_size"] == 8


def test_an_accumulating_run_resumes_bit_exactly(tmp_path):
    ref, cut = str(tmp_path / "ref"), str(tmp_path / "cut")
    quiet(TrainConfig(out=ref, batch_size=4, grad_accum=2, **SMALL))
    quiet(TrainConfig(out=cut, batch_size=4, grad_accum=2, stop_after=6, **SMALL))
    quiet(resume_config(cut, {"progress": "none"}))  # as the command's --resume
    assert losses(cut) == losses(ref)
    a, b = weights(ref), weights(cut)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_accum_1_draws_as_before():
    # accum 1 keeps the old draw of batch_size rows; accum N one draw of batch_size * N
    calls = []

    class Data:
        def batch(self, split, n, block, rng):
            calls.append(n)
            return np.zeros((n, 1)), np.zeros((n, 1))

    class Run:
        data, rng, dist = Data(), None, Dist()
    for accum in (1, 3):
        Run.cfg = TrainConfig(batch_size=5, grad_accum=accum, block_size=1)
        T._train_batch(Run)
    assert calls == [5, 15]


@pytest.mark.parametrize("bad", ["0", "-1", "1.5"])
def test_grad_accum_is_checked(tmp_path, capsys, bad):
    out = str(tmp_path / "run")
    try:
        code = main(["train", "--grad-accum", bad, "--out", out, "--no-progress"])
    except SystemExit as e:  # argparse's own refusal of a non-integer
        code = e.code
    assert code == 2
    assert "grad-accum" in capsys.readouterr().err.replace("_", "-")
    assert not os.path.exists(out)
