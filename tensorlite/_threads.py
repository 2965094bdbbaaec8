"""Thread count for the C++ kernels (OpenMP). NumPy's own BLAS threads are not touched."""
import os

_n = [None]


def set_num_threads(n):
    n = int(n)
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    _n[0] = n
    from .backend.providers import cpp_available
    if cpp_available():
        from . import _C
        _C.set_num_threads(n)


def get_num_threads():
    from .backend.providers import cpp_available
    if cpp_available():
        from . import _C
        return _C.get_num_threads()
    return _n[0] or int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))
