"""Freed array memory stays in the process for the next array of that size.

NumPy allocates every array with malloc, and glibc serves blocks over its mmap threshold
(128 KiB at first, adapting upwards) with fresh mmap()ed pages and returns them to the
kernel on free. A training step makes and drops the same activations every step, so it
page-faulted in (and zeroed) ~1,100 fresh pages per step instead of reusing its own:
~4-7% of a baby GPT step and of a MiniLM forward on the 2-core Xeon VM
(benchmarks/README.md). Raising the mmap and trim thresholds makes glibc keep freed blocks
on its heap for reuse: a caching allocator without a line of allocator code. Peak memory
is what the program needs anyway (plus fragmentation: ~10% measured); arrays above 256 MiB
still get their own mapping.

Once per process, at `import tensorlite`; TENSORLITE_MALLOC=system leaves malloc as it was.
Nothing happens where the C library has no mallopt (non-glibc systems).
"""
import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_THRESHOLD = 256 << 20
TRIM_THRESHOLD = 512 << 20
_done = []


def keep_freed_memory():
    """Returns True when the thresholds were set (False: opted out or no glibc mallopt)."""
    if _done:
        return _done[0]
    ok = False
    if os.environ.get("TENSORLITE_MALLOC", "").strip().lower() != "system":
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        except OSError:
            libc = None
        mallopt = getattr(libc, "mallopt", None)
        if mallopt is not None:
            mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
                bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    _done.append(ok)
    return ok
