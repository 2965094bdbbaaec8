"""Thread counts: the C++ kernels' own thread pool (csrc/thread_pool.h; no OpenMP runtime,
so PyTorch's libgomp in the same process has no say), and NumPy's BLAS (OpenBLAS) for
matmuls. The kernels' count defaults to OMP_NUM_THREADS, else the CPUs the process may use,
and set_num_threads sets it for the whole process (every Python thread).

Like torch.set_num_threads, tensorlite.set_num_threads(n) sets both. Small models are
the reason: on 2 cores a 576x64 @ 64x192 matmul or a 50 us kernel costs less than waking
a second thread, and when the cores are shared with other work, waiting threads cost
whole scheduler time slices (a tiny GPT step measured 260 ms with 2 BLAS threads on a
busy 2-core VM, 20 ms with one).
"""
import ctypes
import os

_n = [None]
_blas = []


def _blas_setters():
    """set_num_threads functions of the OpenBLAS builds loaded in this process (NumPy wheels
    ship one with a prefixed, 64-bit-int symbol name). Found through /proc/self/maps."""
    if _blas:
        return _blas[0]
    found = []
    paths = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                p = line.split()[-1]
                name = os.path.basename(p).lower()
                if "openblas" in name and ".so" in name:
                    paths.add(p)
    except OSError:
        pass
    for p in sorted(paths):
        try:
            lib = ctypes.CDLL(p)
        except OSError:
            continue
        for name in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                     "openblas_set_num_threads64_", "openblas_set_num_threads"):
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.argtypes = [ctypes.c_int]
                fn.restype = None
                found.append(fn)
                break
    _blas.append(found)
    return found


def set_num_threads(n):
    """Threads for the fused C++ kernels and for NumPy's BLAS (when it is OpenBLAS)."""
    n = int(n)
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    _n[0] = n
    ext = _extension()
    if ext is not None:
        ext.set_num_threads(n)
    for fn in _blas_setters():
        fn(n)


def get_num_threads():
    ext = _extension()
    if ext is not None:
        return ext.get_num_threads()
    try:  # what the extension would pick: the first number of OMP_NUM_THREADS ("4,2" is valid)
        return _n[0] or max(1, int(os.environ["OMP_NUM_THREADS"].split(",")[0]))
    except (KeyError, ValueError):
        return len(os.sched_getaffinity(0))


def _extension():
    """tensorlite._C, or None where it is not built. Only an availability probe, like the
    provider registry's cpp_available (a layer above this one, which cannot be imported here)."""
    try:
        from . import _C
    except ImportError:
        return None
    return _C
