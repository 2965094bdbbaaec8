"""Shared helpers for the tests/test_core_*.py files (the core: Tensor, ops, autograd).

Fused ops (softmax, log_softmax, gelu) go through a provider; these tests pin the
NumPy reference with the autouse fixture `numpy_kernels` (import it into a test
module to activate it) and parametrize over PROVIDERS where the provider matters.
"""
import numpy as np
import pytest

import tensorlite as tl
from tensorlite.autograd import gradcheck
from tensorlite.backend.registry import cpp_available

PROVIDERS = ["numpy"] + (["cpp"] if cpp_available() else [])

try:  # an optional oracle: never required
    import torch
except ImportError:  # pragma: no cover - depends on the environment
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed (optional oracle)")


@pytest.fixture(autouse=True)
def numpy_kernels():
    prev = tl.get_kernels()
    tl.set_kernels("numpy")
    yield
    tl.set_kernels(prev)


def rand(shape, lo=-2.0, hi=2.0, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).uniform(lo, hi, size=shape).astype(dtype)


def leaf(a, requires_grad=True):
    """A float64 leaf tensor holding a copy of the array a."""
    return tl.tensor(np.array(a, dtype=np.float64), dtype=tl.float64, requires_grad=requires_grad)


def close(t, expected, rtol=1e-6, atol=1e-8):
    """Assert a tensor equals an array (shape, and values to tolerance)."""
    got = np.asarray(t.detach() if isinstance(t, tl.Tensor) else t)
    expected = np.asarray(expected)
    assert got.shape == expected.shape, f"shape {got.shape} != expected {expected.shape}"
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)


def check_grad(fn, *arrays, **kw):
    """gradcheck fn over float64 leaves made from the arrays."""
    return gradcheck(fn, [leaf(a) for a in arrays], **kw)


def away_from(a, points, gap=0.1):
    """Nudge entries of a that lie within gap of any of `points` (kinks) away from them."""
    a = np.array(a, dtype=np.float64)
    for p in points:
        near = np.abs(a - p) < gap
        a[near] = p + np.where(a[near] >= p, gap, -gap) * 2
    return a


# Broadcast pairs: equal shapes, size-1 dims, broadcasting in both directions,
# fewer dims on either side, 0-d operands, and empty dims where NumPy allows them.
BROADCAST_PAIRS = [
    ((3, 4), (3, 4)),
    ((3, 1), (1, 4)),
    ((1, 4), (3, 1)),
    ((4,), (3, 4)),
    ((3, 4), (4,)),
    ((2, 1, 3), (4, 1)),
    ((), (3,)),
    ((2, 3), ()),
    ((1,), (1,)),
    ((0, 3), (1, 3)),
    ((2, 0, 3), (2, 1, 3)),
    ((1,), (0,)),
]
