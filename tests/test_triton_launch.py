"""The launch layer of the Triton provider (kernels/_launch.py, registry.load("triton")):
interpreter detection, how NumPy arrays become pointer arguments, and the errors that say
what to do when the arrays and the kernels' mode do not fit. The kernels themselves are
tested per op, in tests/test_fused_<op>.py."""
import os
import subprocess
import sys

import numpy as np
import pytest

triton = pytest.importorskip("triton", reason="triton is not installed: the provider needs it")
import triton.language as tl  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def L():
    from tensorlite.kernels import _launch
    return _launch


def _double(X, N, BLOCK: tl.constexpr):  # decorated inside the tests, interpreter on or off
    offs = tl.arange(0, BLOCK)
    tl.store(X + offs, tl.load(X + offs, mask=offs < N) * 2, mask=offs < N)


def test_import_tensorlite_kernels_does_not_import_triton():
    code = ("import sys, tensorlite.kernels; "
            "assert 'triton' not in sys.modules, 'tensorlite.kernels imported triton'")
    env = dict(os.environ, PYTHONPATH=ROOT)
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT, timeout=60)


def test_registry_turns_the_interpreter_on_without_a_gpu():
    """A fresh process without TRITON_INTERPRET and without a GPU: registry.load("triton")
    switches the interpreter on before the kernels are decorated, and says so once."""
    from tensorlite.backend.device import cuda_unavailable_reason
    if cuda_unavailable_reason() is None:
        pytest.skip("a GPU is usable here: the provider compiles its kernels")
    code = "\n".join([
        "import os, warnings",
        "from tensorlite.backend import registry",
        "with warnings.catch_warnings(record=True) as w:",
        "    warnings.simplefilter('always')",
        "    mod = registry.load('triton')",
        "assert mod.__name__ == 'tensorlite.kernels.provider', mod",
        "assert os.environ.get('TRITON_INTERPRET') == '1'",
        "msgs = [str(x.message) for x in w]",
        "assert any(\"Triton's interpreter\" in m for m in msgs), msgs",
        "from tensorlite.kernels import _launch",
        "assert _launch.interpreting()",
    ])
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = ROOT
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]


def test_the_tests_run_the_kernels_in_the_interpreter(L):
    # conftest.py sets TRITON_INTERPRET=1 before triton is imported
    from tensorlite.kernels import softmax
    assert L.interpreting()
    assert L._is_interpreted(softmax._fwd_tile)


def test_an_interpreted_launch_updates_numpy_arrays_in_place(L):
    k = triton.jit(_double)
    assert L._is_interpreted(k)
    x = np.arange(6, dtype=np.float32)
    L.launch(k, (1,), x, 4, BLOCK=8)
    np.testing.assert_array_equal(x, [0, 2, 4, 6, 4, 5])


def test_numpy_array_to_compiled_kernel_says_how_to_fix(L, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    compiled = triton.jit(_double)
    assert not L._is_interpreted(compiled)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        L.launch(compiled, (1,), np.ones(4, np.float32), 4, BLOCK=4)


def test_gpu_array_to_interpreted_kernel_says_how_to_fix(L):
    class FakeCupyArray:  # what _launch recognises a CuPy array by
        __module__ = "cupy._core.core"
        data = None
        dtype = np.dtype(np.float32)

    with pytest.raises(RuntimeError, match="runs in Triton's interpreter.*CuPy.*NumPy arrays"):
        L._convert(FakeCupyArray(), True, "k")


def test_provider_without_gpu_or_interpreter_raises_clearly(L, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    try:
        L.check_usable()
    except RuntimeError as e:
        assert "TRITON_INTERPRET=1" in str(e) and "no GPU" in str(e)
    else:
        pytest.skip("a GPU is available here: the provider is usable without the interpreter")


def test_host_pointer_answers_the_interpreters_storage_calls_with_itself(L):
    a = np.zeros(3, np.float32)
    p = L._convert(a, True, "k")
    assert isinstance(p, L._HostPtr)
    assert p.data_ptr() == a.ctypes.data and p.dtype == tl.float32
    for same in (p.untyped_storage(), p.cpu(), p.new_empty(3), p.set_(p), p.copy_(p)):
        assert same is p
    assert p.storage_offset() == 0
    # numpy scalars become Python numbers (Triton specialises those); the rest passes through
    assert type(L._convert(np.float32(1.5), True, "k")) is float
    assert type(L._convert(np.int64(3), True, "k")) is int
    assert L._convert("x", True, "k") == "x"


def test_dtypes_and_accumulators(L):
    assert L.tl_dtype(np.float16) == tl.float16 and L.tl_dtype(np.int64) == tl.int64
    with pytest.raises(TypeError, match="no Triton element type for array dtype complex64"):
        L.tl_dtype(np.complex64)
    assert L.acc_dtype(np.float64) == (np.dtype(np.float64), tl.float64)
    for dt in (np.float16, np.float32):
        assert L.acc_dtype(dt) == (np.dtype(np.float32), tl.float32)
    assert L.dot_precision(np.float32) == "ieee" and L.dot_precision(np.float16) == "tf32"


def test_rows_and_strides(L):
    x = np.arange(24.0).reshape(2, 3, 4)
    assert L.as_rows(x).shape == (6, 4)
    assert L.as_rows(np.zeros((3, 0))).shape == (3, 0)   # not (-1, 0): ambiguous
    assert L.as_rows(np.zeros((0, 5))).shape == (0, 5)
    r = L.as_rows(x.transpose(1, 0, 2))
    assert r.flags.c_contiguous and r.shape == (6, 4)
    np.testing.assert_array_equal(r, x.transpose(1, 0, 2).reshape(6, 4))
    assert L.elem_strides(x[:, ::2]) == (12, 8, 1)
    odd = np.lib.stride_tricks.as_strided(np.zeros(8, np.float32), shape=(3,), strides=(6,))
    with pytest.raises(ValueError, match="not a multiple of its item size 4"):
        L.elem_strides(odd)
