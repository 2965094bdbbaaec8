"""`tensorlite train --dtype bf16|fp16`: the training step under autocast (fp16 with a
GradScaler whose state is checkpointed), float32 weights, losses close to the fp32 run."""
import json
import os

import numpy as np
import pytest

from tensorlite.cli import main
from tensorlite.serialization import load_file
from tensorlite.train import latest_checkpoint

ARGS = ["train", "--iters", "40", "--eval-every", "20", "--progress", "none", "--seed", "1"]


def run(out, *extra):
    assert main(ARGS + ["--out", str(out), *extra]) == 0
    with open(os.path.join(out, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_low_precision_steps_train_like_fp32(tmp_path, dtype):
    if dtype == "bf16":
        pytest.importorskip("ml_dtypes", reason="bfloat16 needs ml_dtypes")
    full = run(tmp_path / "fp32")
    low = run(tmp_path / dtype, "--dtype", dtype)
    a = np.array([r["loss"] for r in full])
    b = np.array([r["loss"] for r in low])
    assert b[-5:].mean() < b[:5].mean() - 0.3          # it learns
    assert abs(b[-5:].mean() - a[-5:].mean()) < 0.1    # about as well as in float32
    weights, _ = load_file(os.path.join(latest_checkpoint(tmp_path / dtype), "model.safetensors"))
    assert all(w.dtype == np.float32 for w in weights.values())  # float32 master weights
    if dtype == "fp16":
        with open(os.path.join(latest_checkpoint(tmp_path / dtype), "trainer_state.json")) as f:
            assert "scale" in json.dumps(json.load(f)["scaler"])


def test_fp16_resume_is_bit_exact(tmp_path):
    whole = run(tmp_path / "whole", "--dtype", "fp16")
    run(tmp_path / "cut", "--dtype", "fp16", "--stop-after", "25", "--save-every", "5")
    resumed = run(tmp_path / "cut", "--resume")
    assert [r["loss"] for r in resumed] == [r["loss"] for r in whole]


def test_bad_dtype_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(ARGS + ["--out", str(tmp_path / "x"), "--dtype", "int8"])
    assert not (tmp_path / "x").exists()
