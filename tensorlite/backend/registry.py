"""The fused ops and who runs them: open this file first.

Six hot ops of a transformer -- softmax, layer norm, attention, cross-entropy, GELU and
the AdamW step -- are each one kernel, written three times with the same signatures:

    "numpy"   tensorlite/reference/   plain NumPy, written to be read: the spec
    "cpp"     csrc/ (tensorlite._C)   C++ with OpenMP and SIMD, for the CPU
    "triton"  kernels/                Triton, for the GPU (or its interpreter on a CPU)

FUSED_OPS below is the contract every provider module implements, name for name.
Arguments are checked once, before a provider is called, by the autograd Functions in
ops/fused.py (with ops/fused_checks.py); providers are plain array code that trusts its
inputs (the C++ side keeps only the cheap asserts that protect memory).

Which provider runs is decided per call from the device of the inputs and a setting:
`tensorlite.set_kernels(name)` or the TENSORLITE_KERNELS environment variable. Default:
cpu -> cpp when the extension is built (numpy otherwise, with a warning once),
cuda -> triton.
"""
import os
import sys
import warnings

# name -> (arguments) -> results. Arrays are NumPy (CPU) or CuPy (GPU) arrays of any
# strides; "| None" marks optional arrays; the reduction dim is always the last one.
FUSED_OPS = {
    "softmax_forward": "(x) -> y",
    "softmax_backward": "(y, dy) -> dx",
    "log_softmax_forward": "(x) -> y",
    "log_softmax_backward": "(y, dy) -> dx",
    "layer_norm_forward": "(x, weight | None, bias | None, eps) -> (y, mean, rstd)",
    "layer_norm_backward": "(dy, x, weight | None, mean, rstd) -> (dx, dweight | None, dbias)",
    "attention_forward": "(q, k, v, mask | None, is_causal, scale) -> (o, lse)",
    "attention_backward": "(q, k, v, o, lse, do, mask | None, is_causal, scale) -> (dq, dk, dv)",
    "cross_entropy_forward": "(logits, targets, ignore_index, label_smoothing) -> (loss, lse)",
    "cross_entropy_backward": "(logits, targets, lse, dloss, ignore_index, label_smoothing) -> dlogits",
    "gelu_forward": "(x, approximate) -> y",
    "gelu_backward": "(x, dy, approximate) -> dx",
    "adamw_step": "(params, grads, exp_avgs, exp_avg_sqs, *, lr, beta1, beta2, eps, "
                  "weight_decay, step) -> None, updating the lists' arrays in place",
}

PROVIDERS = ("numpy", "cpp", "triton")

# the float dtypes each provider computes in (the C++ loops are written for two); float16 and
# bfloat16 inputs to numpy/cpp are widened to float32 by ops/fused.py and the results rounded
# back, so every provider takes every float dtype and accumulates half inputs in float32
DTYPES = {
    "numpy": ("float32", "float64"),
    "cpp": ("float32", "float64"),
    "triton": ("float16", "bfloat16", "float32", "float64"),
}


def _load_numpy():
    from .. import reference
    return reference


def _load_cpp():
    from .. import _C
    return _C


def dtype_name(dtype):
    """numpy's dtype.name, remembered per dtype: the property builds the string anew each
    time (~2 us), and every fused op asks a few times per call."""
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = dtype.name
    return name


_DTYPE_NAMES = {}


def _load_triton():
    if "tensorlite.kernels.provider" not in sys.modules:
        from .device import cuda_unavailable_reason, emulating_cuda
        if (emulating_cuda() or cuda_unavailable_reason() is not None) \
                and os.environ.get("TRITON_INTERPRET") != "1":
            # no GPU: Triton must interpret the kernels, and it decides that when they are
            # decorated, i.e. at this first import
            os.environ["TRITON_INTERPRET"] = "1"
            warn_once("interp", "the triton provider has no GPU here: its kernels run in "
                                "Triton's interpreter (correct, but slow)")
    from ..kernels import provider
    return provider


_LOADERS = {"numpy": _load_numpy, "cpp": _load_cpp, "triton": _load_triton}
_loaded = {}
_setting = [os.environ.get("TENSORLITE_KERNELS") or None]
_warned = set()


def warn_once(key, msg):
    """A RuntimeWarning the first time `key` is seen in this process (e.g. a slower path)."""
    if key not in _warned:
        _warned.add(key)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


def set_kernels(name):
    """Force a provider for every fused op ("numpy", "cpp", "triton"), or None for the default."""
    if name is not None and name not in PROVIDERS:
        raise ValueError(f"set_kernels: unknown provider {name!r}; choose one of {PROVIDERS} or None")
    _setting[0] = name


def get_kernels():
    return _setting[0]


def cpp_available():
    """Whether tensorlite._C imports (asked once: every fused op's provider choice asks)."""
    if not _cpp_ok:
        try:
            _load_cpp()
            _cpp_ok.append(True)
        except ImportError:
            _cpp_ok.append(False)
    return _cpp_ok[0]


_cpp_ok = []


def load(name):
    """The provider module `name`, checked once to define every op of FUSED_OPS."""
    mod = _loaded.get(name)
    if mod is None:
        mod = _LOADERS[name]()
        missing = [op for op in FUSED_OPS if not callable(getattr(mod, op, None))]
        if missing:
            raise RuntimeError(f"provider {name!r} ({mod.__name__}) lacks fused ops {missing}")
        _loaded[name] = mod
    return mod


def provider_name(device_type):
    forced = _setting[0]
    if env_name := os.environ.get("TENSORLITE_KERNELS"):
        forced = forced or env_name
    if forced is not None:
        if forced not in PROVIDERS:
            raise ValueError(f"TENSORLITE_KERNELS={forced!r} is not one of {PROVIDERS}")
        if forced == "cpp" and device_type == "cuda":
            raise RuntimeError("the cpp provider runs on the CPU only; use 'triton' or 'numpy' "
                               "for cuda tensors (tensorlite.set_kernels)")
        if forced == "cpp" and not cpp_available():
            raise RuntimeError("kernels 'cpp' were requested but tensorlite._C is not built; "
                               "reinstall with `pip install -e .` and a C++ compiler")
        return forced
    if device_type == "cuda":
        return "triton"
    if cpp_available():
        return "cpp"
    warn_once("nocpp", "tensorlite._C (the C++ kernels) is not built: fused ops run on the "
                       "slower NumPy reference")
    return "numpy"


def get_provider(device_type):
    """(name, module) of the provider that runs fused ops on this device type now."""
    name = provider_name(device_type)
    return name, load(name)
