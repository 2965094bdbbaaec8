"""tensorlite.amp: GradScaler (dynamic loss scaling) and autocast, PyTorch's names.

GradScaler scales the loss, unscales the gradients, skips the step when one is inf or NaN
and adapts the scale, on any device and dtype. autocast runs matmuls and Linears in
bfloat16 or float16 with float32 accumulation (see its docstring). (tensorlite.cuda.amp holds the
same two with the device fixed to 'cuda', like torch.cuda.amp.)
"""
import functools
import math
import warnings

from . import _autocast
from . import _dtype as dt
from .autograd.function import TensorBase
from .backend.device import cuda_unavailable_reason, xp_of

_DEVICES = ("cpu", "cuda")


def _device_type(device, who):
    d = str(device).split(":")[0]
    if d not in _DEVICES:
        raise ValueError(f"{who}: device {device!r} is not supported (expected 'cpu' or 'cuda')")
    return d


class GradScaler:
    """Multiply the loss by a scale before backward, so that small float16 gradients do not
    flush to zero; divide the gradients back before the optimizer steps; skip any step
    whose gradients hold inf or NaN and halve the scale then; double it after
    growth_interval clean steps. enabled=False makes every method a pass-through (scale()
    returns the loss itself, step() just calls optimizer.step()), as in PyTorch; so does a
    'cuda' scaler on a machine without a usable GPU, with a warning, as in PyTorch."""

    def __init__(self, device="cuda", init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5,
                 growth_interval=2000, enabled=True):
        self._device = _device_type(device, "GradScaler")
        if enabled and self._device == "cuda" and cuda_unavailable_reason() is not None:
            warnings.warn("GradScaler is enabled for 'cuda', but CUDA is not available "
                          f"({cuda_unavailable_reason()}); disabling it", UserWarning, stacklevel=2)
            enabled = False
        if not growth_factor > 1.0:
            raise ValueError(f"GradScaler: growth_factor must be > 1, got {growth_factor}")
        if not 0.0 < backoff_factor < 1.0:
            raise ValueError(f"GradScaler: backoff_factor must be in (0, 1), got {backoff_factor}")
        if not isinstance(growth_interval, int) or growth_interval <= 0:
            raise ValueError(f"GradScaler: growth_interval must be a positive int, got {growth_interval!r}")
        self._enabled = bool(enabled)
        self._scale = float(init_scale)
        self._growth_factor, self._backoff_factor = float(growth_factor), float(backoff_factor)
        self._growth_interval = growth_interval
        self._growth_tracker = 0
        self._per_optimizer = {}  # id(optimizer) -> {"unscaled": bool, "found_inf": bool}

    # ---- the training-loop calls -----------------------------------------------------------
    def scale(self, outputs):
        """outputs (a tensor, or nested lists/tuples of them) times the current scale."""
        if not self._enabled:
            return outputs
        if isinstance(outputs, TensorBase):
            return outputs * self._scale
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(o) for o in outputs)
        raise TypeError(f"GradScaler.scale: expected a tensor or a list/tuple of tensors, got "
                        f"{type(outputs).__name__}")

    def unscale_(self, optimizer):
        """Divide the optimizer's gradients by the scale in place (once per step: call it
        before clipping gradients) and note whether any is inf or NaN."""
        if not self._enabled:
            return
        st = self._state(optimizer)
        if st["unscaled"]:
            raise RuntimeError("GradScaler.unscale_() has already been called on this optimizer "
                               "since the last update()")
        inv = 1.0 / self._scale
        found = False
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad._data
                p.grad._data = g * g.dtype.type(inv)  # a new array: .grad may be a shared view
                found = found or not bool(xp_of(g).isfinite(p.grad._data).all())
        st["unscaled"], st["found_inf"] = True, found

    def step(self, optimizer, *args, **kwargs):
        """Unscale (unless unscale_ ran), then optimizer.step(*args, **kwargs) -- skipped
        when a gradient is inf or NaN. Returns what optimizer.step returned (None if skipped)."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise RuntimeError("GradScaler.step: closure use is not supported (as in PyTorch)")
        st = self._state(optimizer)
        if not st["unscaled"]:
            self.unscale_(optimizer)
        if st["found_inf"]:
            return None
        return optimizer.step(*args, **kwargs)

    def update(self, new_scale=None):
        """Adapt the scale after a step: back off if any gradient was inf or NaN, grow after
        growth_interval clean steps; or set it to new_scale."""
        if not self._enabled:
            return
        if new_scale is not None:
            s = float(new_scale.item() if isinstance(new_scale, TensorBase) else new_scale)
            if not (math.isfinite(s) and s > 0):
                raise ValueError(f"GradScaler.update: new_scale must be a positive finite number, got {s}")
            self._scale = s
        else:
            if not self._per_optimizer:
                raise RuntimeError("GradScaler.update: no inf checks were recorded before update(); "
                                   "call scaler.step(optimizer) first")
            if any(st["found_inf"] for st in self._per_optimizer.values()):
                self._scale *= self._backoff_factor
                self._growth_tracker = 0
            else:
                self._growth_tracker += 1
                if self._growth_tracker == self._growth_interval:
                    self._scale *= self._growth_factor
                    self._growth_tracker = 0
        self._per_optimizer = {}

    def _state(self, optimizer):
        return self._per_optimizer.setdefault(id(optimizer), {"unscaled": False, "found_inf": False})

    # ---- inspection and checkpoints --------------------------------------------------------
    def is_enabled(self):
        return self._enabled

    def get_scale(self):
        return self._scale if self._enabled else 1.0

    def get_growth_factor(self):
        return self._growth_factor

    def set_growth_factor(self, new_factor):
        self._growth_factor = float(new_factor)

    def get_backoff_factor(self):
        return self._backoff_factor

    def set_backoff_factor(self, new_factor):
        self._backoff_factor = float(new_factor)

    def get_growth_interval(self):
        return self._growth_interval

    def set_growth_interval(self, new_interval):
        self._growth_interval = int(new_interval)

    def state_dict(self):
        """PyTorch's keys; empty for a disabled scaler, as in PyTorch."""
        if not self._enabled:
            return {}
        return {"scale": self._scale, "growth_factor": self._growth_factor,
                "backoff_factor": self._backoff_factor, "growth_interval": self._growth_interval,
                "_growth_tracker": self._growth_tracker}

    def load_state_dict(self, state_dict):
        if not self._enabled:
            return
        if not state_dict:
            raise RuntimeError("GradScaler.load_state_dict: the state dict is empty, possibly "
                               "because it was saved from a disabled GradScaler")
        self._scale = float(state_dict["scale"])
        self._growth_factor = float(state_dict["growth_factor"])
        self._backoff_factor = float(state_dict["backoff_factor"])
        self._growth_interval = int(state_dict["growth_interval"])
        self._growth_tracker = int(state_dict["_growth_tracker"])


class autocast:  # noqa: N801 - PyTorch's spelling
    """torch.autocast(device_type, dtype=None, enabled=True, cache_enabled=None), as a
    context manager or decorator. Inside it, every matmul (and so every Linear) of tensors
    on device_type runs in the low-precision dtype (PyTorch's default: float16 on 'cuda',
    bfloat16 on 'cpu'): its operands are cast through recorded ops, so float32 master weights
    receive float32 gradients; the products accumulate in float32 (ops/matmul.py) and the
    result is rounded to the low dtype. The fused ops take the low dtype as it comes and keep
    their statistics (max, sums, mean and variance, log-sum-exp) in float32; residual adds
    with float32 tensors promote back to float32, as in PyTorch. On the CPU this emulates
    low precision for study and for checking a recipe: NumPy has no bfloat16/float16 BLAS,
    so it is slower than float32, not faster."""

    def __init__(self, device_type, dtype=None, enabled=True, cache_enabled=None):
        self.device = _device_type(device_type, "autocast")
        if dtype is None:
            dtype = dt.float16 if self.device == "cuda" else dt.bfloat16
        self.fast_dtype = dt.as_dtype(dtype)
        if self.fast_dtype not in (dt.float16, dt.bfloat16, dt.float32):
            raise ValueError(f"autocast: dtype must be float16, bfloat16 or float32, got "
                             f"{self.fast_dtype}")
        self._enabled = bool(enabled) and self.fast_dtype is not dt.float32
        self._saved = []

    def __enter__(self):
        self._saved.append(_autocast.set_fast_dtype(
            self.device, self.fast_dtype if self._enabled else None))
        return self

    def __exit__(self, *exc):
        _autocast.set_fast_dtype(self.device, self._saved.pop())
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with self:
                return fn(*args, **kwargs)
        return wrapper


def is_autocast_enabled(device_type=None):
    """Whether an autocast with a low-precision dtype is active (on device_type, or on any)."""
    if device_type is None:
        return any(_autocast.fast_dtype(d) is not None for d in _DEVICES)
    return _autocast.fast_dtype(_device_type(device_type, "is_autocast_enabled")) is not None