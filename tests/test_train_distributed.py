"""`mpiexec -n 2 tensorlite train`: each rank trains on its share of one global batch, rank 0
alone writes the run, and 2 ranks x batch B reach the weights of 1 process with batch B and
--grad-accum 2. Skips with a reason without mpi4py or mpiexec."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tensorlite.serialization import load_file
from tensorlite.train import latest_checkpoint

from test_distributed import MPIEXEC, ROOT, needs_mpi

QUICK = ["--task", "addition", "--n-layer", "1", "--n-head", "2", "--n-embd", "16",
         "--iters", "10", "--eval-every", "5", "--eval-iters", "1", "--warmup", "2",
         "--threads", "1", "--no-progress"]


def tl_train(n, *args, timeout=180):
    """`tensorlite train ARGS` on n ranks under mpiexec (n=0: one plain process)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "tensorlite", "train", *map(str, args)]
    if n:
        cmd = [MPIEXEC, "-n", str(n)] + cmd
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    return r.returncode, r.stdout + r.stderr


def weights(out):
    return load_file(os.path.join(latest_checkpoint(out), "model.safetensors"))[0]


def losses(out):
    with open(os.path.join(out, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


@needs_mpi
def test_two_ranks_match_one_process_with_grad_accum_2(tmp_path):
    two, one = str(tmp_path / "two"), str(tmp_path / "one")
    rc, out = tl_train(2, *QUICK, "--batch-size", 4, "--out", two)
    assert rc == 0, out
    rc1, out1 = tl_train(0, *QUICK, "--batch-size", 4, "--grad-accum", 2, "--out", one)
    assert rc1 == 0, out1
    a, b = weights(one), weights(two)
    assert a.keys() == b.keys()
    for k in a:
        rel = np.abs(a[k] - b[k]).max() / max(np.abs(a[k]).max(), 1e-30)
        assert rel <= 1e-5, (k, rel)
    np.testing.assert_allclose([r["loss"] for r in losses(two)],
                               [r["loss"] for r in losses(one)], rtol=1e-5)
    # one writer: one log line per step, one config line and one result on stdout
    assert [r["step"] for r in losses(two)] == list(range(1, 11))
    assert out.count("config: ") == 1 and out.count('"out": ') == 1, out
    assert json.load(open(os.path.join(two, "config.json")))["world_size"] == 2
    assert "world_size" not in json.load(open(os.path.join(one, "config.json")))
    assert not [n for n in os.listdir(two) if n.startswith(".tl-tmp")]


@needs_mpi
def test_a_distributed_run_resumes_bit_exactly_on_as_many_ranks(tmp_path):
    ref, cut = str(tmp_path / "ref"), str(tmp_path / "cut")
    assert tl_train(2, *QUICK, "--batch-size", 2, "--grad-accum", 2, "--out", ref)[0] == 0
    assert tl_train(2, *QUICK, "--batch-size", 2, "--grad-accum", 2, "--out", cut,
                    "--stop-after", 3)[0] == 0
    rc, out = tl_train(0, "--out", cut, "--resume", "--no-progress")
    assert rc == 2 and "2 process(es), this is 1" in out, out
    assert tl_train(2, "--out", cut, "--resume", "--no-progress")[0] == 0
    assert [r["loss"] for r in losses(cut)] == [r["loss"] for r in losses(ref)]
    a, b = weights(ref), weights(cut)
    assert all(np.array_equal(a[k], b[k]) for k in a)
