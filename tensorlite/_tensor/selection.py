"""Tensor's ordering and sampling methods: sort, argsort, topk, msort and multinomial, as a
mixin that tensorlite.tensor.Tensor composes.

The indices are computed outside the graph; the values are one Gather of them, so their
gradient flows back to the positions they came from (ties included: each value came from
exactly one position). This module does not import tensorlite.tensor.
"""
import numbers

import numpy as np

from ..autograd.function import TensorBase
from ..backend.device import xp_of, to_numpy
from ..ops import indexing as I
from ..ops._util import norm_dim, shape_str
from ..random import _multinomial
from .operators import _MinMax


def _order(a, dim, descending):
    """Stable sort indices of a along dim. NaN sorts above every number, as in PyTorch:
    last ascending (NumPy's order), first descending."""
    xp = xp_of(a)
    if not descending:
        return xp.argsort(a, axis=dim, kind="stable")
    # a descending stable order is the ascending stable order of the reversed array, read
    # backwards: equal keys then keep their original order (negating would not: it
    # overflows the smallest integer and keeps NaN last)
    n = a.shape[dim]
    rev = xp.argsort(xp.flip(a, dim), axis=dim, kind="stable")
    return xp.flip(n - 1 - rev, dim)


class SelectionMixin:
    """Part of tensorlite.tensor.Tensor; relies on its core (_data, _device, dtype, _make)."""

    def _sorted(self, dim, descending, k, name):
        if self.ndim == 0:
            norm_dim(dim, 0, name)
            idx = self._make(xp_of(self._data).zeros((), dtype=np.int64), self._device)
            return _MinMax(self.clone(), idx)
        d = norm_dim(dim, self.ndim, name)
        order = _order(self._data, d, descending)
        if k is not None:
            order = order[(slice(None),) * d + (slice(0, k),)]
        idx = self._make(xp_of(self._data).ascontiguousarray(order.astype(np.int64, copy=False)),
                         self._device)
        return _MinMax(I.Gather.apply(self, idx, dim=d), idx)

    def sort(self, dim=-1, descending=False, *, stable=False):
        """(values, indices) along dim. Always stable (stable=False allows any order of
        ties; the stable one is among them)."""
        return self._sorted(dim, descending, None, "sort")

    def argsort(self, dim=-1, descending=False, *, stable=False):
        if self.ndim == 0:
            norm_dim(dim, 0, "argsort")
            return self._make(xp_of(self._data).zeros((), dtype=np.int64), self._device)
        order = _order(self._data, norm_dim(dim, self.ndim, "argsort"), descending)
        return self._make(order.astype(np.int64, copy=False), self._device)

    def msort(self):
        return self.sort(0).values

    def topk(self, k, dim=-1, largest=True, sorted=True):  # noqa: A002 - PyTorch's argument name
        """The k largest (or smallest) entries along dim as (values, indices), in order.
        sorted=False allows any order; these are sorted either way. NaN counts as largest."""
        if isinstance(k, TensorBase):
            k = k.item()
        if not isinstance(k, numbers.Integral) or isinstance(k, bool):
            raise TypeError(f"topk: k must be an integer, got {type(k).__name__}")
        n = self.shape[norm_dim(dim, self.ndim, "topk")] if self.ndim else 1
        if not 0 <= k <= n:
            raise RuntimeError(f"topk: k ({k}) is out of range for dim {dim} of size {n} "
                               f"(shape {shape_str(self.shape)})")
        return self._sorted(dim, largest, int(k), "topk")

    def multinomial(self, num_samples, replacement=False, *, generator=None):
        """Category indices drawn from each row of this 1-D or 2-D tensor of non-negative
        weights (they need not sum to 1). Without replacement no index repeats within a
        row. Drawn on the CPU from tensorlite's generator (or `generator`), then moved."""
        if self.ndim not in (1, 2):
            raise ValueError(f"multinomial: expected a 1-D or 2-D tensor of probabilities, got "
                             f"shape {shape_str(self.shape)}")
        if not self.dtype.is_floating_point:
            raise TypeError(f"multinomial: expected floating point probabilities, got {self.dtype}")
        if not isinstance(num_samples, numbers.Integral) or num_samples <= 0:
            raise ValueError(f"multinomial: num_samples must be a positive integer, got {num_samples!r}")
        p = to_numpy(self._data).astype(np.float64).reshape(-1, self.shape[-1])
        n = p.shape[1]
        if not replacement and num_samples > n:
            raise RuntimeError(f"multinomial: cannot draw {num_samples} samples without replacement "
                               f"from {n} categories")
        if not np.isfinite(p).all() or (p < 0).any():
            raise RuntimeError("multinomial: the probabilities contain inf, nan or a negative entry")
        if n == 0 or (p.sum(axis=1) <= 0).any():
            raise RuntimeError("multinomial: a row of probabilities sums to 0")
        if not replacement and ((p > 0).sum(axis=1) < num_samples).any():
            raise RuntimeError(f"multinomial: a row has fewer than {num_samples} categories of "
                               "non-zero probability to draw without replacement")
        out = _multinomial(p, int(num_samples), replacement, generator)
        if self.ndim == 1:
            out = out.reshape(-1)
        return self._make(xp_of(self._data).asarray(out), self._device)

