"""Which implementation runs a fused op: "numpy" (the reference), "cpp" (csrc/) or "triton" (kernels/).

The choice is per call, from the device of the inputs and a setting:
`tensorlite.set_kernels(name)` or the TENSORLITE_KERNELS environment variable.
Default: cpu -> cpp when the extension is built (numpy otherwise, with a warning
once), cuda -> triton.
"""
import importlib
import os
import warnings

PROVIDERS = ("numpy", "cpp", "triton")
_setting = [os.environ.get("TENSORLITE_KERNELS") or None]
_warned = set()


def set_kernels(name):
    """Force a provider for every fused op ("numpy", "cpp", "triton"), or None for the default."""
    if name is not None and name not in PROVIDERS:
        raise ValueError(f"set_kernels: unknown provider {name!r}; choose one of {PROVIDERS} or None")
    _setting[0] = name


def get_kernels():
    return _setting[0]


def _warn_once(key, msg):
    if key not in _warned:
        _warned.add(key)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


def cpp_available():
    try:
        importlib.import_module("tensorlite._C")
        return True
    except ImportError:
        return False


def _load(name):
    if name == "numpy":
        return importlib.import_module("tensorlite.reference")
    if name == "cpp":
        return importlib.import_module("tensorlite.backend.cpp_provider")
    if "tensorlite.kernels.provider" not in __import__("sys").modules:
        from .device import cuda_unavailable_reason, emulating_cuda
        if (emulating_cuda() or cuda_unavailable_reason() is not None) \
                and os.environ.get("TRITON_INTERPRET") != "1":
            # no GPU: Triton must interpret the kernels, and it decides that when they are
            # decorated, i.e. at this first import
            os.environ["TRITON_INTERPRET"] = "1"
            _warn_once("interp", "the triton provider has no GPU here: its kernels run in "
                                 "Triton's interpreter (correct, but slow)")
    return importlib.import_module("tensorlite.kernels.provider")


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
    _warn_once("nocpp", "tensorlite._C (the C++ kernels) is not built: fused ops run on the "
                        "slower NumPy reference")
    return "numpy"


def get_provider(device_type):
    """(name, module) of the provider that runs fused ops on this device type now."""
    name = provider_name(device_type)
    return name, _load(name)
