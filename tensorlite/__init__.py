"""tensorlite: a from-scratch tensor library with reverse-mode autograd, fused C++ and
Triton kernels, and a GPT built only from these pieces.

    import tensorlite as tl
    x = tl.randn(3, 4, requires_grad=True)
    (x.softmax(-1) * x).sum().backward()
    x.grad
"""
import os as _os

__version__ = "0.1.0"

# The C++ kernels no longer use OpenMP (their own pool sleeps when idle), but a libgomp loaded
# later in the process (e.g. PyTorch's, when torch is imported after tensorlite) reads this
# when it starts: its idle workers would otherwise spin on the cores that BLAS and Python need.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from . import _malloc  # noqa: E402
_malloc.keep_freed_memory()  # freed activations are reused, not page-faulted in again (_malloc.py)

from ._dtype import (dtype, float32, float64, float16, int64, int32, uint8, bool_ as bool,  # noqa: E402,F401,A004
                     float, double, half, long, int, get_default_dtype, set_default_dtype,
                     promote_types, bfloat16)
from .backend.device import device  # noqa: E402,F401
from .backend.registry import set_kernels, get_kernels  # noqa: E402,F401
from .tensor import Tensor, matmul  # noqa: E402,F401
from .factories import (tensor, as_tensor, from_numpy, zeros, ones, empty, full, zeros_like,  # noqa: E402,F401
                        ones_like, full_like, empty_like, arange, linspace, eye, rand, randn,
                        randint, randperm, normal, cat, stack, where, from_dlpack)
from .random import manual_seed, seed, initial_seed, get_rng_state, set_rng_state, Generator  # noqa: E402,F401
from .autograd import no_grad, enable_grad, is_grad_enabled, set_grad_enabled  # noqa: E402,F401
from .autograd.grad_mode import set_detect_anomaly, detect_anomaly  # noqa: E402,F401
from . import autograd  # noqa: E402,F401
from . import cuda  # noqa: E402,F401
from . import amp, backends  # noqa: E402,F401 (torch.amp, torch.backends)
from .amp import autocast, is_autocast_enabled  # noqa: E402,F401
from .backends import set_float32_matmul_precision, get_float32_matmul_precision  # noqa: E402,F401
from ._threads import set_num_threads, get_num_threads  # noqa: E402,F401
from ._functions import *  # noqa: E402,F401,F403
from ._functions import __all__ as _fn_all  # noqa: E402


def is_tensor(x):
    return isinstance(x, Tensor)


concat = cat
concatenate = cat

from . import nn, optim, models  # noqa: E402,F401
from .serialization import save, load  # noqa: E402,F401
from . import profiler, summary, viz  # noqa: E402,F401 (study tools; tensorlite.summary is also callable)
from .pretrained import from_pretrained  # noqa: E402,F401
from . import distributed, utils  # noqa: E402,F401 (PyTorch's tensorlite.utils.data path)
