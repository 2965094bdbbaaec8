"""benchmarks/kernels.py runs end to end (tiny shapes, one repetition)."""
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
