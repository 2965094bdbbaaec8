"""docs/seq2seq_example.py runs as written (nn.Embedding -> nn.Transformer -> nn.Linear,
CrossEntropyLoss, Adam, argmax decoding), in a tiny setting, and its loss goes down."""
import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_the_example_trains_and_decodes():
    # one thread: on a small shared machine extra BLAS threads only wait for each other
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    r = subprocess.run([sys.executable, str(ROOT / "docs" / "seq2seq_example.py"), "--steps", "60",
                        "--batch-size", "32"], capture_output=True, text=True, timeout=300,
                       cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr
    first, last = map(float, re.search(r"loss first ([\d.]+) last ([\d.]+)", r.stdout).groups())
    assert last < 0.85 * first, r.stdout
    assert re.search(r"exact match on 200 new strings: [\d.]+", r.stdout)
    assert len(re.findall(r"^\d+ -> \d*$", r.stdout, re.M)) == 3, r.stdout
