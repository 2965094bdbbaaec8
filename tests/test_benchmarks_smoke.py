"""The benchmarks run end to end (tiny shapes, one repetition): kernels.py, gemm.py, train_speed.py."""
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_kernels_benchmark_quick(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "kernels.py"), "--quick",
                        "--threads", "1", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OPENBLAS_CORETYPE" in r.stdout
    data = json.loads((tmp_path / "kernels_quick.json").read_text())
    rows = data["results"]
    ops = {row["op"] for row in rows}
    assert {"softmax", "layer_norm", "cross_entropy", "gelu", "adamw"} <= ops
    for row in rows:
        assert row["pass"] in (("step",) if row["op"] == "adamw" else ("fwd", "fwd+bwd"))
        assert row["ms"]["numpy"] > 0
    assert data["environment"]["threads"] == 1


def _run(script, *args, timeout=300):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args],
                       capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_gemm_benchmark_quick(tmp_path):
    out = _run("gemm.py", "--quick", "--threads", "1", "--out", str(tmp_path))
    assert "FMA peak" in out and "OPENBLAS_CORETYPE" in out
    data = json.loads((tmp_path / "gemm_quick.json").read_text())
    assert data["fma_peak_gflops"] > 0
    assert all(row["numpy_gflops"] > 0 for row in data["rows"])


def test_train_speed_benchmark_quick(tmp_path):
    """Fresh processes per setting (tensorlite alone / after `import torch` / PyTorch, or
    tensorlite alone without torch), one baby step each."""
    out = _run("train_speed.py", "--quick", "--configs", "baby", "--threads", "1",
               "--out", str(tmp_path))
    data = json.loads((tmp_path / "train_speed_quick.json").read_text())
    settings = {row["setting"] for row in data["rows"]}
    assert "tensorlite" in settings and "% peak" in out
    for row in data["rows"]:
        assert row["step_ms"] > 0 and row["fma_peak_gflops"] > 0
