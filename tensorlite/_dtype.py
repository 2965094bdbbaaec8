"""tensorlite's dtypes: thin named wrappers over NumPy dtypes, plus PyTorch's promotion rules."""
import numbers
import sys

import numpy as np


class dtype:
    __slots__ = ("name", "np", "is_floating_point", "itemsize")

    def __init__(self, name, np_dtype, is_floating_point):
        self.name = name
        self.np = np.dtype(np_dtype)
        self.is_floating_point = is_floating_point
        self.itemsize = self.np.itemsize

    def __repr__(self):
        return f"tensorlite.{self.name}"

    def __reduce__(self):  # dtypes are singletons; copy/deepcopy must keep identity
        return (_by_name, (self.name,))


float32 = dtype("float32", np.float32, True)
float64 = dtype("float64", np.float64, True)
float16 = dtype("float16", np.float16, True)
int64 = dtype("int64", np.int64, False)
int32 = dtype("int32", np.int32, False)
uint8 = dtype("uint8", np.uint8, False)
bool_ = dtype("bool", np.bool_, False)
float = float32  # noqa: A001 - PyTorch spells these aliases the same way
double = float64
half = float16
long = int64
int = int32  # noqa: A001


class _OptionalDtype(dtype):
    """A dtype whose NumPy type comes from an optional package, imported the first time the
    NumPy type is needed (ml_dtypes takes most of a second to import; most runs never touch
    bfloat16). Without the package the name still exists, so `tl.bfloat16` in a config or a
    dict of dtypes works, and anything that needs its arrays says what to install."""
    __slots__ = ("package", "attr", "_np")

    def __init__(self, name, package, attr, itemsize):
        self.name, self.is_floating_point, self.itemsize = name, True, itemsize
        self.package, self.attr, self._np = package, attr, None

    @property
    def np(self):
        if self._np is None:
            try:
                mod = __import__(self.package)
            except ImportError:
                raise TypeError(f"tensorlite.{self.name} needs the {self.package} package for its "
                                f"NumPy dtype: pip install {self.package}") from None
            self._np = np.dtype(getattr(mod, self.attr))
            _register(self)
        return self._np


bfloat16 = _OptionalDtype("bfloat16", "ml_dtypes", "bfloat16", 2)

_ALL = [float32, float64, float16, int64, int32, uint8, bool_]
_BY_NP = {d.np: d for d in _ALL}
_NAMES = {d.name: d for d in _ALL}
_NAMES["bfloat16"] = bfloat16  # even before (or without) ml_dtypes: .np says what is missing


def _register(d):
    _ALL.append(d)
    _BY_NP[d.np] = d


def _by_name(name):
    return _NAMES[name]


def get_default_dtype():
    return _default[0]


def set_default_dtype(d):
    d = as_dtype(d)
    if not d.is_floating_point:
        raise TypeError(f"set_default_dtype: only floating dtypes are allowed, got {d}")
    _default[0] = d


_default = [float32]


def as_dtype(d):
    """Accept a tensorlite dtype, a NumPy dtype/type or a name; return a tensorlite dtype."""
    if d is None or isinstance(d, dtype):
        return d
    if d is bool:
        return bool_
    if isinstance(d, str) and d in _NAMES:
        return _NAMES[d]
    try:
        npd = np.dtype(d)
    except TypeError:
        raise TypeError(f"unknown dtype {d!r}") from None
    if npd not in _BY_NP and npd.name == "bfloat16" and "ml_dtypes" in sys.modules:
        _ = bfloat16.np  # an array of ml_dtypes' bfloat16 exists: register the dtype now
    if npd not in _BY_NP:
        raise TypeError(f"dtype {npd} is not supported by tensorlite "
                        f"(supported: {', '.join(x.name for x in _ALL)})")
    return _BY_NP[npd]


def _category(d):
    if d is bool_:
        return 0
    return 2 if d.is_floating_point else 1


def scalar_dtype(x):
    """The dtype a bare Python number gets on its own (PyTorch: bool, int64, default float)."""
    if isinstance(x, (bool, np.bool_)):
        return bool_
    if isinstance(x, numbers.Integral):
        return int64
    if isinstance(x, numbers.Real):
        return get_default_dtype()
    raise TypeError(f"expected a number, got {type(x).__name__}")


def promote_types(a, b):
    """Type promotion between two tensor dtypes (PyTorch's table, which NumPy mostly shares,
    except that int with float gives the float dtype, not float64)."""
    ca, cb = _category(a), _category(b)
    if ca != cb:
        return a if ca > cb else b
    return as_dtype(np.promote_types(a.np, b.np))


def result_type(a, b):
    """Promotion for a binary op. Each operand is (dtype, kind) where kind is 'tensor'
    (a tensor with dims), 'zerodim' (a 0-d tensor) or 'scalar' (a Python number).
    Lower kinds only win when they are of a higher category (float scalar * int tensor)."""
    (da, ka), (db, kb) = a, b
    rank = {"tensor": 2, "zerodim": 1, "scalar": 0}
    if rank[ka] == rank[kb]:
        return promote_types(da, db)
    hi, lo = (a, b) if rank[ka] > rank[kb] else (b, a)
    if _category(lo[0]) > _category(hi[0]):
        # float scalar with int tensor -> default float; int scalar with bool tensor -> int64
        return get_default_dtype() if lo[0].is_floating_point and lo[1] == "scalar" else lo[0]
    return hi[0]
