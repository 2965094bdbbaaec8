"""Shared pieces of the tests/test_fused_*.py files (one file per fused op).

Each op of backend/registry.py (FUSED_OPS) is written by every provider of PROVIDERS.
An op's test file checks
- the "numpy" provider (tensorlite/reference/, the spec) against formulas, finite
  differences and, where torch is importable, torch;
- the other providers against the reference on the same inputs, each to the tolerance
  it was written for (`check` below);
- bad arguments at the op boundary (nn.functional, Tensor methods, the ops/fused.py
  Functions, optim.AdamW) under every provider (fixture `each_provider`): one message
  naming the op, whichever provider runs;
- the C++ extension's own memory-safety guards, by calling tensorlite._C directly.
What only one provider has (Triton's forced block sizes, float16; the C++ instruction-set
variants) is a test marked for that provider in the same file. Triton runs through its
interpreter on the CPU (conftest.py): its shapes stay small.
"""
import importlib.util
import re

import numpy as np
import pytest
from hypothesis import strategies as st

import tensorlite as tl
from tensorlite.backend import registry
from tensorlite.backend.registry import DTYPES, PROVIDERS

from _nn_helpers import require_provider

FLOATS = [np.float32, np.float64]
# hypothesis: arrays of rows, (*lead, C_) with up to three leading dims (some empty)
ROWS = dict(lead=st.lists(st.integers(0, 4), min_size=0, max_size=3), C_=st.integers(1, 70),
            dtype=st.sampled_from(FLOATS), seed=st.integers(0, 2**16))


def _absent(name):
    """Why provider `name` is not there at all (not built / not installed), or None: cheap,
    for collection. When a test runs, require_provider (tests/_nn_helpers.py) also imports
    the provider, and skips with the import error if that fails."""
    if name == "cpp" and not registry.cpp_available():
        return "tensorlite._C is not built (pip install -e . with a C++ compiler)"
    if name == "triton" and importlib.util.find_spec("triton") is None:
        return "triton is not installed"
    return None


NEEDS = {n: pytest.mark.skipif(_absent(n) is not None, reason=f"provider {n!r}: {_absent(n)}")
         for n in PROVIDERS}
needs_cpp, needs_triton = NEEDS["cpp"], NEEDS["triton"]


def providers(*names):
    """One pytest.param per provider (default: all of PROVIDERS), skipped where absent."""
    return [pytest.param(n, marks=NEEDS[n], id=n) for n in (names or PROVIDERS)]


def _id(v):
    if isinstance(v, (tuple, list)):  # a shape: 2x3; shapes: 2x3+7
        sep = "+" if any(isinstance(a, (tuple, list)) for a in v) else "x"
        return sep.join(_id(a) for a in v) or "()"
    if isinstance(v, type) or callable(v):
        return getattr(v, "__name__", str(v))
    return str(v)


def cases(provider, *rows):
    """pytest.params (provider, *row) for parametrize("provider,a,b,...", ...): the cases a
    provider runs, skipped with it."""
    return [pytest.param(provider, *row, marks=NEEDS[provider],
                         id="-".join(_id(v) for v in (provider, *row))) for row in rows]


def assert_defines(name, *ops):
    """Provider `name` defines each of ops, which the contract (FUSED_OPS) lists. Fails, not
    skips, when the provider is there but lacks one."""
    reason = _absent(name)
    if reason is not None:
        pytest.skip(f"provider {name!r}: {reason}")
    mod = registry.load(name)
    for op in ops:
        assert op in registry.FUSED_OPS, op
        assert callable(getattr(mod, op, None)), f"provider {name!r} ({mod.__name__}) lacks {op}"


def load(name):
    """Provider `name`'s module (registry.load), or skip the test where it is absent."""
    require_provider(name)
    return registry.load(name)


@pytest.fixture(params=providers(), name="each_provider")
def each_provider_fixture(request):
    """`each_provider`: runs the test once per provider, forced with tensorlite.set_kernels
    (reset to None after); yields the provider's name. Import each_provider_fixture into a
    test module to use it."""
    name = request.param
    require_provider(name)
    tl.set_kernels(name)
    try:
        yield name
    finally:
        tl.set_kernels(None)


def dtype_message(op, arg, dtype, provider):
    """The op boundary's message (a regex) for an argument of a dtype `provider` lacks."""
    return re.escape(f"{op}: {arg} has dtype {np.dtype(dtype).name}; the {provider!r} kernels "
                     f"take {' or '.join(DTYPES[provider])}")


def t(a, **kw):
    """A tensor holding the array a (its dtype kept)."""
    return tl.tensor(np.asarray(a), **kw)


# ---------------------------------------------------------------- comparisons

def f64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


CPP_TOL = {np.float32: (1e-5, 1e-6), np.float64: (1e-10, 1e-12)}   # (rtol, atol)
TRITON_TOL = {np.float32: 1e-5, np.float64: 1e-12}                 # of the largest value


def close(got, want, dtype, scale=1.0):
    """got (dtype) vs want (float64 reference): relative, with an absolute floor scaled to
    the data -- the C++ kernels' tolerance."""
    dtype = np.dtype(dtype).type
    assert got.dtype == dtype, (got.dtype, dtype)
    rtol, atol = CPP_TOL[dtype]
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * scale)


def assert_close(ours, ref, tol, what=""):
    """max |ours - ref| <= tol * max |ref|, same shape, same non-finite entries -- the Triton
    kernels' tolerance."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape, (what, ours.shape, ref.shape)
    fin = np.isfinite(ref)
    np.testing.assert_array_equal(np.isfinite(ours), fin, err_msg=what)
    np.testing.assert_array_equal(ours[~fin], ref[~fin], err_msg=what)
    if fin.any():
        scale = max(float(np.abs(ref[fin]).max()), 1e-30)
        e = float(np.abs(ours[fin].astype(np.float64) - ref[fin]).max()) / scale
        assert e <= tol, f"{what}: relative error {e:.3g} > {tol:.1g}"


def check(provider, got, want, dtype, what="", scale=1.0, rel=1.0):
    """A provider's result (in dtype) against the reference's (float64, same inputs), to the
    tolerance the provider was written to: for "triton", the largest error within rel x
    1e-5 (float32) / 1e-12 (float64) of the largest reference value; otherwise elementwise
    (close above) with an absolute floor of scale x 1e-6 / 1e-12."""
    dtype = np.dtype(dtype).type
    assert got.dtype == dtype, (what, got.dtype, dtype)
    assert got.shape == np.shape(want), (what, got.shape, np.shape(want))
    if provider == "triton":
        assert_close(got, want, rel * TRITON_TOL[dtype], what)
    else:
        close(got, want, dtype, scale)


def rel_err(a, ref64):
    fin = np.isfinite(ref64)
    return float(np.abs(a[fin].astype(np.float64) - ref64[fin]).max()
                 / max(float(np.abs(ref64[fin]).max()), 1e-30))


# ---------------------------------------------------------------- finite differences

def numeric_grad(f, x, h=1e-6):
    """Central-difference gradient of the scalar function f at x (float64, perturbed in place)."""
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        up = f()
        flat[i] = old - h
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * h)
    return g


def assert_grad(analytic, numeric, tol=1e-7):
    np.testing.assert_allclose(analytic, numeric, rtol=tol,
                               atol=tol * max(1.0, np.abs(numeric).max()))
