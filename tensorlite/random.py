"""The seedable random generator behind rand/randn/randint, init and dropout.

Numbers are always drawn on the CPU (then moved), so a seed gives the same values
on every device and provider.
"""
import numpy as np

from . import _dtype as dt
from .backend.device import as_device, xp_for


class Generator:
    def __init__(self, seed=None):
        self._rng = np.random.Generator(np.random.PCG64(seed))
        self._seed = seed

    def manual_seed(self, seed):
        self._rng = np.random.Generator(np.random.PCG64(int(seed)))
        self._seed = int(seed)
        return self

    def initial_seed(self):
        return self._seed

    def get_state(self):
        """A JSON-serialisable dict (checkpoints store it without pickle)."""
        return _jsonable(self._rng.bit_generator.state)

    def set_state(self, state):
        self._rng.bit_generator.state = state

    @property
    def np(self):
        return self._rng


def _jsonable(state):
    return {k: (_jsonable(v) if isinstance(v, dict) else int(v) if isinstance(v, np.integer) else v)
            for k, v in state.items()}


default_generator = Generator(0)


def manual_seed(seed):
    """Seed the default generator (and so rand/randn/randint, init and dropout)."""
    return default_generator.manual_seed(seed)


def seed():
    s = int(np.random.SeedSequence().entropy % (2 ** 63))
    manual_seed(s)
    return s


def initial_seed():
    return default_generator.initial_seed()


def get_rng_state():
    return default_generator.get_state()


def set_rng_state(state):
    default_generator.set_state(state)


def _draw(kind, shape, dtype, device, generator=None, **kw):
    """Draw an array on the CPU and move it to `device`."""
    rng = (generator or default_generator).np
    npd = dt.as_dtype(dtype).np
    if kind == "normal":
        fd = npd if npd in (np.float32, np.float64) else np.float32
        a = rng.standard_normal(shape, dtype=fd)
        a = a * kw.get("std", 1.0) + kw.get("mean", 0.0)
    elif kind == "uniform":
        fd = npd if npd in (np.float32, np.float64) else np.float32
        lo, hi = kw.get("low", 0.0), kw.get("high", 1.0)
        a = rng.random(shape, dtype=fd) * (hi - lo) + lo
    elif kind == "integers":
        a = rng.integers(kw["low"], kw["high"], size=shape, dtype=np.int64)
    elif kind == "permutation":
        a = rng.permutation(kw["n"]).astype(np.int64)
    else:
        raise ValueError(kind)
    a = np.asarray(a, dtype=npd)
    xp = xp_for(as_device(device))
    return a if xp is np else xp.asarray(a)


def _multinomial(probs, num_samples, replacement, generator=None):
    """Indices drawn from each row of the 2-D float64 array probs (non-negative, each row
    with a positive sum; the caller checks), as an int64 array of shape (rows, num_samples)."""
    rng = (generator or default_generator).np
    rows, n = probs.shape
    if replacement:
        # inverse CDF: u in [0, total) lands in category i iff cdf[i-1] <= u < cdf[i], so a
        # zero-probability category (an empty interval) is never drawn
        cdf = np.cumsum(probs, axis=1)
        u = rng.random((rows, num_samples)) * cdf[:, -1:]
        out = np.stack([np.searchsorted(cdf[r], u[r], side="right") for r in range(rows)])
        return np.minimum(out, n - 1).astype(np.int64).reshape(rows, num_samples)
    # without replacement: give each category an exponential clock of rate p_i and keep the
    # num_samples that ring first; that is drawing one at a time proportionally to p among
    # those left (zero-probability categories ring at infinity, never)
    with np.errstate(divide="ignore"):
        keys = rng.exponential(size=(rows, n)) / probs
    return np.argsort(keys, axis=1, kind="stable")[:, :num_samples].astype(np.int64)
