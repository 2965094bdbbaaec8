"""tensorlite/_malloc.py: glibc keeps freed blocks for reuse (set at import), and
TENSORLITE_MALLOC=system opts out. Each case in a fresh interpreter: the setting is per
process."""
import ctypes.util
import subprocess
import sys

import pytest

GLIBC = ctypes.util.find_library("c") is not None and hasattr(ctypes.CDLL(None), "mallopt")
CHECK = ("import tensorlite._malloc as m, tensorlite; print(m._done[0])")


@pytest.mark.skipif(not GLIBC, reason="no glibc mallopt on this system")
@pytest.mark.parametrize("env,want", [({}, "True"), ({"TENSORLITE_MALLOC": "system"}, "False")])
def test_set_at_import_unless_opted_out(env, want, monkeypatch):
    monkeypatch.delenv("TENSORLITE_MALLOC", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == want


@pytest.mark.skipif(not GLIBC, reason="no glibc mallopt on this system")
def test_freed_arrays_are_reused_without_page_faults():
    """A 2 MB array made and freed 200 times: with the thresholds set, the pages come from the
    heap after the first time (minor faults stay ~flat); the system default maps them fresh."""
    code = ("import resource, numpy as np, tensorlite\n"
            "a = np.ones(1 << 19, np.float32); del a\n"
            "f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
            "for _ in range(200):\n"
            "    a = np.ones(1 << 19, np.float32); del a\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)\n")
    faults = {}
    for mode in ("", "system"):
        env = {"TENSORLITE_MALLOC": mode, "PATH": "/usr/bin:/bin"}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=120, env=env)
        assert out.returncode == 0, out.stderr
        faults[mode] = int(out.stdout.strip())
    assert faults[""] < 100 < faults["system"], faults
