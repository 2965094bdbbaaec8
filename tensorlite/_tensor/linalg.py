"""Tensor's norm, bmm and isclose, and the free function einsum, as a mixin that
tensorlite.tensor.Tensor composes (this module does not import tensorlite.tensor)."""
import numbers

from .. import _dtype as dt
from ..autograd.function import TensorBase
from ..backend.device import xp_of
from ..ops import linalg as L
from ..ops._util import norm_dims, shape_str, broadcast_shape
from .operators import matmul


class LinalgMixin:
    """Part of tensorlite.tensor.Tensor; relies on its core (_data, _device, dtype, to(),
    _make)."""

    def norm(self, p="fro", dim=None, keepdim=False, dtype=None):
        """The vector p-norm over dim (all dims when None), as torch.norm computes it: 'fro'
        is p=2 over the dims given; p may be any number, inf or -inf. The nuclear norm
        ('nuc', a matrix norm through the SVD) is not implemented."""
        x = self if dtype is None else self.to(dtype)
        if not x.dtype.is_floating_point:
            raise TypeError(f"norm: expected a floating point tensor, got {x.dtype}; convert it "
                            "with .float() or pass dtype=")
        if p == "fro":
            p = 2.0
        elif p == "nuc":
            raise NotImplementedError("norm: p='nuc' (the nuclear norm) is not implemented in "
                                      "tensorlite; vector norms (any number, inf, -inf, 'fro') are")
        elif isinstance(p, str) or not isinstance(p, numbers.Real):
            raise ValueError(f"norm: p must be a number, inf, -inf, 'fro' or 'nuc', got {p!r}")
        dims = norm_dims(dim, x.ndim, "norm")
        if x.ndim == 0:  # a 0-d tensor's norm is |x|; NumPy has no axis to reduce over
            return L.VectorNorm.apply(x.reshape(1), p=float(p), dims=(0,), keepdim=False).reshape(())
        return L.VectorNorm.apply(x, p=float(p), dims=dims, keepdim=keepdim)

    def bmm(self, mat2):
        """(b, n, m) @ (b, m, p) -> (b, n, p); unlike matmul, no broadcasting."""
        if not isinstance(mat2, TensorBase):
            raise TypeError(f"bmm: mat2 must be a tensor, got {type(mat2).__name__}")
        if self.ndim != 3 or mat2.ndim != 3:
            raise ValueError(f"bmm: expected two 3-D tensors, got shapes {shape_str(self.shape)} "
                             f"and {shape_str(mat2.shape)}")
        if self.shape[0] != mat2.shape[0]:
            raise ValueError(f"bmm: batch sizes differ ({self.shape[0]} and {mat2.shape[0]}); bmm "
                             "does not broadcast (matmul does)")
        return matmul(self, mat2)

    def isclose(self, other, rtol=1e-05, atol=1e-08, equal_nan=False):
        """|self - other| <= atol + rtol * |other|, elementwise, as a bool tensor."""
        o = other._data if isinstance(other, TensorBase) else other
        if isinstance(other, TensorBase):
            broadcast_shape(self.shape, other.shape, "isclose")
        xp = xp_of(self._data)
        return self._make(xp.asarray(xp.isclose(self._data, o, rtol=rtol, atol=atol,
                                                equal_nan=equal_nan)), self._device)


def einsum(equation, *operands):
    """Einstein summation (torch.einsum): 'ij,jk->ik', implicit output ('ij,jk' sums the
    letters that repeat and keeps the others in alphabetical order), '...' for leading
    dims, a repeated letter in one operand for its diagonal ('ii->i'). A letter's sizes
    must match or be 1 (broadcast). Differentiable in every operand."""
    if not isinstance(equation, str):
        raise TypeError("einsum: the first argument must be the equation string (the sublist "
                        "form einsum(a, [0, 1], b, [1, 2]) is not supported)")
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    if not operands or not all(isinstance(o, TensorBase) for o in operands):
        raise TypeError("einsum: expected one or more tensors after the equation")
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(operands):
        raise ValueError(f"einsum: equation {equation!r} has {len(terms)} operand(s) but "
                         f"{len(operands)} tensor(s) were given")
    for t in terms + [rhs]:
        bad = set(t.replace("...", "")) - set(_LETTERS)
        if bad or t.replace("...", "").count(".") or t.count("...") > 1:
            raise ValueError(f"einsum: invalid subscripts {t!r} in {equation!r}: use letters a-z, "
                             "A-Z and at most one '...' per operand")
    terms, rhs = _expand_ellipsis(terms, rhs if arrow else None, operands, equation)
    sizes = {}
    for t, o in zip(terms, operands):
        for c, s in zip(t, o.shape):
            prev = sizes.get(c)
            if prev is None or prev == 1:
                sizes[c] = s
            elif s not in (1, prev):
                raise ValueError(f"einsum: subscript {c!r} has sizes {prev} and {s} in {equation!r}")
    counts = {}
    for c in "".join(terms):
        counts[c] = counts.get(c, 0) + 1
    if rhs is None:
        rhs = "".join(sorted(c for c, k in counts.items() if k == 1))
    for c in rhs:
        if c not in counts or rhs.count(c) > 1:
            raise ValueError(f"einsum: output subscript {c!r} must appear once in the output and "
                             f"in some operand ({equation!r})")
    res = operands[0].dtype
    for o in operands[1:]:
        res = dt.promote_types(res, o.dtype)
    ops = []
    for t, o in zip(terms, operands):
        o = o if o.dtype is res else o.to(res)
        full = tuple(sizes[c] for c in t)
        if o.shape != full:  # size-1 dims broadcast: expand them (expand's backward sums back)
            if len(set(t)) != len(t):
                raise ValueError(f"einsum: cannot broadcast an operand with a repeated subscript "
                                 f"({t!r} of shape {shape_str(o.shape)})")
            o = o.expand(full)
        ops.append(o)
    return L.Einsum.apply(*ops, equation=",".join(terms) + "->" + rhs)


_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _expand_ellipsis(terms, rhs, operands, equation):
    """Replace '...' by letters the equation does not use, right-aligned across operands
    (NumPy's broadcasting of the ellipsis dims)."""
    for t, o in zip(terms, operands):
        named = len(t.replace("...", ""))
        if ("..." in t and named > o.ndim) or ("..." not in t and named != o.ndim):
            raise ValueError(f"einsum: subscripts {t!r} do not fit an operand with {o.ndim} dims "
                             f"({equation!r})")
    n_ell = max([o.ndim - len(t.replace("...", "")) for t, o in zip(terms, operands) if "..." in t],
                default=0)
    free = [c for c in _LETTERS if c not in equation][:n_ell]
    if len(free) < n_ell:
        raise ValueError(f"einsum: not enough unused letters for the '...' dims of {equation!r}")
    out = []
    for t, o in zip(terms, operands):
        k = o.ndim - len(t.replace("...", ""))
        out.append(t.replace("...", "".join(free[n_ell - k:]) if k else ""))
    if rhs is not None:
        rhs = rhs.replace("...", "".join(free))
    elif n_ell:
        # implicit output: the ellipsis dims lead, then the once-used named letters
        named = "".join(t for t in out)
        counts = {c: named.count(c) for c in set(named) if c not in free}
        rhs = "".join(free) + "".join(sorted(c for c, k in counts.items() if k == 1))
    return out, rhs


__all__ = ["einsum"]
