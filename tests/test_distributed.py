"""tensorlite.distributed under a real launcher: each test runs a script of
tests/_mpi_scripts/ with `mpiexec -n N` (the venv's, from the mpich wheel, when there is one)
and checks what it printed or saved. Skips with a reason without mpi4py or mpiexec."""
import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "tests" / "_mpi_scripts"


def _mpiexec():
    here = pathlib.Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
needs_mpi = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or MPIEXEC is None,
    reason="needs mpi4py and mpiexec: pip install 'tensorlite[distributed]' (mpi4py, mpich)")


def run_mpi(n, script, *args, timeout=120):
    """Run script on n ranks (n=0: one plain process, no launcher); returns (rc, output)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    cmd = [sys.executable, str(SCRIPTS / script), *map(str, args)]
    if n:
        cmd = [MPIEXEC, "-n", str(n)] + cmd
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    return r.returncode, r.stdout + r.stderr


def test_import_needs_neither_mpi4py_nor_a_gpu():
    # checked in a fresh interpreter: importing must not load mpi4py or cupy
    code = ("import sys, tensorlite.distributed as d, tensorlite.distributed.nccl_backend, "
            "tensorlite.utils.data\n"
            "assert 'mpi4py' not in sys.modules and 'cupy' not in sys.modules, sorted(sys.modules)\n"
            "assert not d.is_initialized()\n"
            "try:\n    d.get_rank()\nexcept RuntimeError as e:\n    assert 'init_process_group' in str(e)\n"
            "else:\n    raise AssertionError('get_rank before init must fail')\n"
            "try:\n    d.init_process_group('gloo')\nexcept ValueError as e:\n    assert 'gloo' in str(e)\n"
            "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr


def test_launcher_info_reads_the_launchers_variables(monkeypatch):
    from tensorlite.distributed import launcher_info
    from tensorlite.distributed.process_group import (_LOCAL_SIZE_VARS, _LOCAL_VARS, _RANK_VARS,
                                                      _SIZE_VARS)
    for v in _RANK_VARS + _SIZE_VARS + _LOCAL_VARS + _LOCAL_SIZE_VARS:
        monkeypatch.delenv(v, raising=False)
    assert launcher_info() is None
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "3")
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1")
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "2")
    assert launcher_info() == {"rank": 3, "world_size": 4, "local_rank": 1, "local_world_size": 2}


@needs_mpi
def test_a_foreign_launcher_is_named_not_ignored():
    # Open MPI's variables with MPICH's mpi4py: each process would be a world of one and
    # train alone; init_process_group must refuse instead
    env = dict(os.environ, OMPI_COMM_WORLD_SIZE="2", OMPI_COMM_WORLD_RANK="0")
    code = ("import tensorlite.distributed as d\n"
            "try:\n    d.init_process_group('mpi')\nexcept RuntimeError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env=env)
    assert "MPI sees only this one" in r.stdout, r.stdout + r.stderr


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed")
def test_nccl_backend_without_cupy_says_why():
    code = ("import tensorlite.distributed as d\n"
            "try:\n    d.init_process_group('nccl')\nexcept RuntimeError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "needs CuPy" in r.stdout, r.stdout + r.stderr


@needs_mpi
def test_collectives_on_two_ranks():
    rc, out = run_mpi(2, "collectives.py")
    assert rc == 0, out
    assert "collectives ok rank 0" in out and "collectives ok rank 1" in out, out


@needs_mpi
def test_ddp_behaviours_on_two_ranks():
    rc, out = run_mpi(2, "ddp_features.py")
    assert rc == 0, out
    assert "ddp features ok rank 0" in out and "ddp features ok rank 1" in out, out


@needs_mpi
def test_ddp_grads_are_averaged_when_backward_returns():
    # no finish_gradient_sync(): post-accumulate-grad hooks and an end-of-backward callback
    rc, out = run_mpi(2, "ddp_backward_sync.py")
    assert rc == 0, out
    assert "ddp backward sync ok rank 0" in out and "ddp backward sync ok rank 1" in out, out


def _weights(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _max_rel_diff(a, b):
    """The worst, over tensors, of max |a - b| / max |b|."""
    return max(float(np.abs(a[k] - b[k]).max() / np.abs(b[k]).max()) for k in a if k != "losses")


@needs_mpi
def test_ddp_gpt_matches_one_process(tmp_path):
    """50 AdamW steps of a small GPT, float32: 2 ranks x batch 4 must reach the weights of
    one process with batch 8, and of one process accumulating 2 x 4 under no_sync. The same
    global batches feed every run (ddp_gpt.py's docstring). The GPT starts from a different
    random init on each rank, so this also checks that DDP broadcasts rank 0's weights.

    AdamW's eps is 1e-6 here, not 1e-8: a gradient element that is ~0 (a key bias, a unit
    GELU switched off) is pure float32 rounding noise, and in the first steps Adam scales it
    to up to lr; batch 8 at once and 2 x 4 round differently, and with eps=1e-8 that
    noise alone moves such elements by ~1e-3 of the tensor's scale. A larger eps bounds that
    amplification (lr/eps per step) without changing what is compared."""
    common = ["--steps", 50, "--lr", 1e-3, "--eps", 1e-6]
    rc, out = run_mpi(2, "ddp_gpt.py", "--batch", 4, "--bucket-cap-mb", 0.01,
                      "--out", tmp_path / "ddp", *common)
    assert rc == 0, out
    rc, out = run_mpi(0, "ddp_gpt.py", "--batch", 8, "--no-ddp", "--out", tmp_path / "one", *common)
    assert rc == 0, out
    rc, out = run_mpi(1, "ddp_gpt.py", "--batch", 4, "--accum", 2, "--out", tmp_path / "acc", *common)
    assert rc == 0, out
    rc, out = run_mpi(2, "ddp_gpt.py", "--batch", 2, "--accum", 2, "--out", tmp_path / "ddpacc",
                      *common)
    assert rc == 0, out
    r0, r1 = _weights(tmp_path / "ddp.rank0.npz"), _weights(tmp_path / "ddp.rank1.npz")
    one, acc = _weights(tmp_path / "one.rank0.npz"), _weights(tmp_path / "acc.rank0.npz")
    ddpacc = _weights(tmp_path / "ddpacc.rank0.npz")
    for k in r0:
        if k != "losses":
            np.testing.assert_array_equal(r0[k], r1[k], err_msg=f"ranks disagree on {k}")
    assert one["losses"][-1] < one["losses"][0] - 0.5  # it learns
    assert _max_rel_diff(r0, one) <= 1e-5
    assert _max_rel_diff(r0, acc) <= 1e-5
    assert _max_rel_diff(ddpacc, one) <= 1e-5


@needs_mpi
@pytest.mark.parametrize("mode", ["exit", "hang"])
def test_a_missing_rank_makes_the_others_fail_not_hang(mode):
    t0 = time.monotonic()
    rc, out = run_mpi(2, "timeout.py", mode, 5, timeout=90)
    took = time.monotonic() - t0
    assert rc != 0, out
    assert "all_reduce: rank 0 timed out after 5 s waiting for the other ranks" in out, out
    assert "DistBackendError" in out and "MPI_Abort" in out, out
    assert took < 60, f"took {took:.0f} s"
