"""benchmarks/gpu_check.py runs end to end at tiny sizes through Triton's interpreter
(NumPy arrays; no GPU, CuPy or PyTorch needed), so the GPU check script itself is
exercised on every machine."""
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton", reason="triton is not installed: gpu_check.py runs Triton kernels")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_check_tiny_runs_end_to_end():
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, os.path.join("benchmarks", "gpu_check.py"), "--tiny"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert "all checks passed" in out, out[-4000:]
    for op in ("softmax", "log_softmax", "layer_norm", "gelu none", "gelu tanh",
               "cross_entropy", "adamw", "attention fp32", "attention float16"):
        assert f"check {op}" in out, f"no check of {op} in:\n{out[-4000:]}"
    for op in ("softmax fwd", "layer_norm bwd", "attention", "cross_entropy bwd"):
        assert f"time {op}" in out, f"no timing of {op} in:\n{out[-4000:]}"
