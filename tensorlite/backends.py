"""tensorlite.backends: torch.backends' switches, so that training scripts which set them
run unchanged. Every flag is accepted and stored, and none changes what tensorlite
computes: CPU matmuls are NumPy's float32/float64 BLAS (no TF32 exists there), the GPU
path is CuPy with its own defaults, and there is no cuDNN or MPS backend. A misspelt flag
raises AttributeError instead of being stored and silently ignored.
"""
from .backend.device import cuda_unavailable_reason


class _Flags:
    """A fixed set of named flags (the subclass's __slots__ and defaults)."""
    __slots__ = ()
    _defaults = {}

    def __init__(self):
        for k, v in self._defaults.items():
            setattr(self, k, v)

    def __repr__(self):
        body = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._defaults)
        return f"{type(self).__name__}({body})"


class _Matmul(_Flags):
    __slots__ = ("allow_tf32", "allow_fp16_reduced_precision_reduction",
                 "allow_bf16_reduced_precision_reduction")
    _defaults = {"allow_tf32": False, "allow_fp16_reduced_precision_reduction": True,
                 "allow_bf16_reduced_precision_reduction": True}


class _Cuda(_Flags):
    """torch.backends.cuda: matmul flags and the scaled-dot-product-attention switches
    (tensorlite has one fused attention kernel per provider whatever these say)."""
    __slots__ = ("matmul", "_sdp")
    _defaults = {}

    def __init__(self):
        self.matmul = _Matmul()
        self._sdp = {"flash": True, "mem_efficient": True, "math": True, "cudnn": True}

    def __repr__(self):
        return f"cuda(matmul={self.matmul!r})"

    def is_built(self):
        """Whether the GPU path can exist here at all (CuPy importable); use
        tensorlite.cuda.is_available() for whether a GPU is usable now."""
        reason = cuda_unavailable_reason()
        return reason is None or "not installed" not in reason

    def enable_flash_sdp(self, enabled):
        self._sdp["flash"] = bool(enabled)

    def flash_sdp_enabled(self):
        return self._sdp["flash"]

    def enable_mem_efficient_sdp(self, enabled):
        self._sdp["mem_efficient"] = bool(enabled)

    def mem_efficient_sdp_enabled(self):
        return self._sdp["mem_efficient"]

    def enable_math_sdp(self, enabled):
        self._sdp["math"] = bool(enabled)

    def math_sdp_enabled(self):
        return self._sdp["math"]

    def enable_cudnn_sdp(self, enabled):
        self._sdp["cudnn"] = bool(enabled)

    def cudnn_sdp_enabled(self):
        return self._sdp["cudnn"]


class _Cudnn(_Flags):
    __slots__ = ("enabled", "benchmark", "deterministic", "allow_tf32")
    _defaults = {"enabled": True, "benchmark": False, "deterministic": False, "allow_tf32": True}

    def is_available(self):
        return False  # tensorlite calls no cuDNN

    def version(self):
        return None


class _Mps(_Flags):
    __slots__ = ()

    def is_available(self):
        return False

    def is_built(self):
        return False


cuda = _Cuda()
cudnn = _Cudnn()
mps = _Mps()

_PRECISIONS = ("highest", "high", "medium")
_precision = ["highest"]


def set_float32_matmul_precision(precision):
    """Stored and returned by get_float32_matmul_precision; float32 matmuls are always
    full float32 here ('highest')."""
    if precision not in _PRECISIONS:
        raise ValueError(f"set_float32_matmul_precision: precision must be one of {_PRECISIONS}, "
                         f"got {precision!r}")
    _precision[0] = precision


def get_float32_matmul_precision():
    return _precision[0]
