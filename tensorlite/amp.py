"""tensorlite.amp: GradScaler (dynamic loss scaling) and autocast, PyTorch's names.

GradScaler is complete: it scales the loss, unscales the gradients, skips the step when
one is inf or NaN and adapts the scale, on any device and dtype. autocast is a stub that
accepts only what changes nothing -- enabled=False or dtype=float32 -- and says so for the
rest: tensorlite has no per-op low-precision casting yet. (tensorlite.cuda.amp holds the
same two with the device fixed to 'cuda', like torch.cuda.amp.)
"""
import functools
import math
import warnings

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
    context manager or decorator. Only the forms that change nothing are accepted now:
    enabled=False, or dtype=float32. A low-precision dtype (PyTorch's default: float16 on
    'cuda', bfloat16 on 'cpu') raises NotImplementedError at construction, saying what
    to do instead; nanoGPT-style code that uses nullcontext() on the CPU never gets here."""

    def __init__(self, device_type, dtype=None, enabled=True, cache_enabled=None):
        self.device = _device_type(device_type, "autocast")
        if dtype is None:
            dtype = dt.float16 if self.device == "cuda" else dt.bfloat16
        self.fast_dtype = dt.as_dtype(dtype)
        self._enabled = bool(enabled)
        if self._enabled and self.fast_dtype is not dt.float32:
            raise NotImplementedError(
                f"autocast(device_type={self.device!r}, dtype={self.fast_dtype}): low-precision "
                "autocast is not implemented in tensorlite yet. Run in float32 (autocast(..., "
                "enabled=False) or contextlib.nullcontext()), or cast the whole model with "
                f"model.to({self.fast_dtype}) and its inputs likewise")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with self:
                return fn(*args, **kwargs)
        return wrapper


def is_autocast_enabled(device_type=None):
    """Always False: no autocast that changes dtypes exists yet (see autocast)."""
    return False
