"""Array-module helpers shared by the reference ops.

The reference ops are written against an array module `xp` taken from their
input, so the same code runs on NumPy arrays (CPU) and CuPy arrays (GPU).
CuPy is never imported here: an array that is already a CuPy array proves it
is installed, and its module is looked up only then.
"""
import sys

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def get_xp(a):
    """The array module (numpy or cupy) that owns array `a`."""
    if type(a).__module__.startswith("cupy"):
        return sys.modules["cupy"]
    return np


def check_float(op, **arrays):
    """Raise TypeError unless every named array is float32/float64 and all share one dtype.

    Mixing dtypes would silently promote in NumPy while the C++ and Triton
    providers work in one dtype, so the reference refuses it too.
    """
    dtypes = {name: a.dtype for name, a in arrays.items() if a is not None}
    for name, dt in dtypes.items():
        if dt not in FLOAT_DTYPES:
            raise TypeError(f"{op}: {name} has dtype {dt}; expected float32 or float64")
    if len(set(dtypes.values())) > 1:
        listed = ", ".join(f"{n}={d}" for n, d in dtypes.items())
        raise TypeError(f"{op}: all float inputs must share one dtype, got {listed}")


def check_last_dim(op, x):
    """Raise ValueError if x has no last dim to work over."""
    if x.ndim < 1:
        raise ValueError(f"{op}: expected an array with at least 1 dim, got shape {x.shape}")


def check_same_shape(op, a_name, a, b_name, b):
    if a.shape != b.shape:
        raise ValueError(f"{op}: {a_name} has shape {a.shape} but {b_name} has shape {b.shape}")
