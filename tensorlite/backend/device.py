"""Where arrays live. "cpu" arrays are numpy.ndarray; "cuda" arrays are cupy.ndarray.

TENSORLITE_EMULATE_CUDA=1 makes "cuda" a NumPy-backed device whose fused ops run
through the Triton interpreter: CI exercises the whole cuda code path that way,
everything but the device allocation itself.
"""
import os

import numpy as np


class device:
    __slots__ = ("type", "index")

    def __init__(self, spec="cpu", index=None):
        if isinstance(spec, device):
            spec, index = spec.type, spec.index
        spec = str(spec)
        if ":" in spec:
            spec, idx = spec.split(":", 1)
            index = int(idx)
        if spec not in ("cpu", "cuda"):
            raise ValueError(f"unknown device {spec!r}: expected 'cpu' or 'cuda'")
        self.type = spec
        self.index = index

    def __eq__(self, other):
        try:
            other = as_device(other)
        except (ValueError, TypeError):
            return NotImplemented
        return self.type == other.type

    def __hash__(self):
        return hash(self.type)

    def __repr__(self):
        return f"device(type='{self.type}')" if self.index is None else \
            f"device(type='{self.type}', index={self.index})"

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"


CPU = device("cpu")


def as_device(d):
    if d is None:
        return CPU
    return d if isinstance(d, device) else device(d)


def emulating_cuda():
    return os.environ.get("TENSORLITE_EMULATE_CUDA") == "1"


def cuda_unavailable_reason():
    """None when cuda can be used; otherwise why not, in words a user can act on."""
    if emulating_cuda():
        return None
    try:
        import cupy
    except ImportError:
        return "CuPy is not installed (pip install 'tensorlite[cuda]')"
    try:
        if not cupy.is_available():
            return "CuPy is installed but no CUDA GPU is visible (cupy.is_available() is False)"
    except Exception as e:  # cupy raises driver-specific errors when probing
        return f"CuPy could not query the GPU: {e}"
    return None


def xp_for(d):
    """The array module (numpy or cupy) that holds arrays of device d."""
    if as_device(d).type == "cpu":
        return np
    reason = cuda_unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"device 'cuda' was requested but cannot be used: {reason}")
    if emulating_cuda():
        return np
    import cupy
    return cupy


def xp_of(a):
    """The array module of an array (never imports cupy for a numpy array)."""
    return np if isinstance(a, np.ndarray) or np.isscalar(a) else _cupy_of(a)


def _cupy_of(a):
    mod = type(a).__module__
    if mod.startswith("cupy"):
        import cupy
        return cupy
    return np


def to_numpy(a):
    return a if isinstance(a, np.ndarray) else a.get()
