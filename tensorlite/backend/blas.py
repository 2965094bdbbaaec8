"""Who multiplies matrices on the CPU: NumPy (its bundled OpenBLAS, on OpenBLAS's threads) or
csrc/gemm.cpp (a sequential MKL GEMM per block, on the fused kernels' own thread pool).

The second is ~1.2x faster at a Transformer's shapes on the AVX-512 machines measured
(benchmarks/README.md) and leaves the cores one owner. It needs the C++ extension and the
`mkl` wheel (`pip install "tensorlite[mkl]"`); without them, and for everything gemm does not
take (other dtypes, arrays without a unit stride, batched products), NumPy multiplies, as it
always did. TENSORLITE_BLAS=numpy turns the C++ path off, =mkl insists on it (an error if it
cannot load); unset: MKL when it is installed and the CPU is Intel's (MKL's speed on AMD
CPUs is unmeasured here: set TENSORLITE_BLAS=mkl there and compare with benchmarks/gemm.py).

mm(a, b, bias=None, out=None, accumulate=False) is the one entry point: a @ b (+ bias over
rows) (+= out), 2-D, float32/float64.
"""
import glob
import os
import sys

import numpy as np

_state = {"gemm": None, "why": None}  # gemm: _C.gemm once loaded; why: the reason it is not


def _mkl_library():
    """libmkl_rt's path from the installed `mkl` wheel (it puts it in <prefix>/lib), or None."""
    from importlib import metadata
    try:
        dist = metadata.distribution("mkl")
    except metadata.PackageNotFoundError:
        dist = None
    for f in (dist.files or ()) if dist is not None else ():
        if os.path.basename(str(f)).startswith("libmkl_rt.so"):
            return os.path.realpath(str(dist.locate_file(f)))
    # no wheel metadata (e.g. MKL from the system or conda in this prefix): look in lib/
    found = sorted(glob.glob(os.path.join(sys.prefix, "lib", "libmkl_rt.so*")))
    return found[-1] if found else None


def _intel_cpu():
    try:
        with open("/proc/cpuinfo") as f:
            return "GenuineIntel" in f.read(4096)
    except OSError:
        return False


def _load():
    choice = os.environ.get("TENSORLITE_BLAS", "").strip().lower() or "auto"
    if choice not in ("auto", "mkl", "numpy"):
        raise ValueError(f"TENSORLITE_BLAS={choice!r}: expected 'mkl', 'numpy' or unset")
    if choice == "numpy":
        return None, "TENSORLITE_BLAS=numpy"
    if choice == "auto" and not _intel_cpu():
        return None, "not an Intel CPU (TENSORLITE_BLAS=mkl to use MKL anyway)"
    try:
        from .. import _C
    except ImportError as e:
        why = f"tensorlite._C is not built ({e})"
    else:
        path = _mkl_library()
        if path is not None:
            _C.blas_load(path)
            return _C.gemm, None
        why = "the mkl wheel is not installed (pip install mkl)"
    if choice == "mkl":
        raise RuntimeError(f"TENSORLITE_BLAS=mkl, but {why}")
    return None, why


def backend():
    """'mkl' when gemm runs the products, else 'numpy' (why: available())."""
    return "mkl" if gemm() is not None else "numpy"


def gemm():
    if _state["why"] is None and _state["gemm"] is None:  # the first call: load once
        _state["gemm"], _state["why"] = _load()
    return _state["gemm"]


def available():
    """(True, None) or (False, why the products run in NumPy)."""
    g = gemm()
    return g is not None, _state["why"]


def _blas_layout(a):
    """Whether a 2-D array is a BLAS matrix as it is: row-major or transposed with a leading
    dimension, no copy (csrc/gemm.cpp's operand() checks the same)."""
    if a.ndim != 2:
        return False
    (r, c), (s0, s1), it = a.shape, a.strides, a.itemsize
    if r == 0 or c == 0:
        return True
    if (c == 1 or s1 == it) and s0 % it == 0 and s0 >= c * it:
        return True
    if (r == 1 or s0 == it) and s1 % it == 0 and s1 >= r * it:
        return True
    return r == 1 and s1 == it


def mm(a, b, bias=None, out=None, accumulate=False, residual=None):
    """a @ b (+ bias over rows) (+ residual, an array of the result's shape) (+ out when
    accumulate; not with residual), on the kernels' pool when a BLAS is loaded."""
    g = gemm()
    if (g is not None and isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
            and a.dtype == b.dtype and a.dtype.char in "fd" and _blas_layout(a) and _blas_layout(b)
            and (bias is None or (bias.dtype == a.dtype and bias.ndim == 1))
            and (residual is None or (isinstance(residual, np.ndarray) and residual.dtype == a.dtype))
            and (out is None or (out.dtype == a.dtype and out.flags.c_contiguous))):
        if out is None:
            out = np.empty((a.shape[0], b.shape[1]), a.dtype)
        g(a, b, out, accumulate, bias, residual)
        return out
    y = a @ b
    if bias is not None:
        y += bias
    if residual is not None:
        y += residual
    if out is None:
        return y
    if accumulate:
        out += y
    else:
        out[...] = y
    return out
