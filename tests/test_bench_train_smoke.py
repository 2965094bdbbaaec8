"""benchmarks/train_shakespeare.py runs end to end (--quick: 20 iters on a 20 KB slice)."""
import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"


@pytest.mark.skipif(not DATA.is_file(), reason=f"{DATA} is absent (../shared is not checked out)")
def test_train_shakespeare_quick(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_shakespeare.py"), "--quick",
                        "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OPENBLAS_CORETYPE" in r.stdout
    data = json.loads((tmp_path / "train_shakespeare_quick.json").read_text())
    assert data["config"]["iters"] == 20 and data["config"]["quick"]
    assert data["environment"]["threads"] == 2
    runs = data["results"]
    tl = runs["tensorlite"]
    assert len(tl["train_loss"]) == 20
    assert [s for s, _ in tl["val_loss"]] == [0, 10, 20]
    assert tl["final_val_loss"] < tl["val_loss"][0][1]  # 20 steps already lower the loss
    assert tl["tokens_per_s"] > 0
    if "pytorch" in runs:  # torch is optional: the baseline runs when it is importable
        pt = runs["pytorch"]
        # same batches, same initial weights: the first losses agree to float32 rounding
        assert abs(tl["train_loss"][0] - pt["train_loss"][0]) < 1e-4
        assert abs(tl["final_val_loss"] - pt["final_val_loss"]) < 0.01
        assert data["summary"]["tokens_per_s_ratio"] > 0
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert (tmp_path / "train_shakespeare_quick.png").is_file()


def test_missing_data_is_skipped_with_a_message(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_shakespeare.py"), "--quick",
                        "--data", str(tmp_path / "nope.txt"), "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "skipping" in r.stdout and "nope.txt" in r.stdout
    assert not list(tmp_path.glob("*.json"))
