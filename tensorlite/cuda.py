"""tensorlite.cuda: is a GPU usable, and why not; torch.cuda's seeding and amp names."""
from . import _dtype as _dt
from . import amp as _amp
from . import random as _random
from .backend.device import cuda_unavailable_reason


def is_available():
    """True when device='cuda' can be used (CuPy installed and a GPU visible, or
    TENSORLITE_EMULATE_CUDA=1 for the NumPy-backed test mode)."""
    return cuda_unavailable_reason() is None


def synchronize():
    from .backend.device import emulating_cuda
    if is_available() and not emulating_cuda():
        import cupy
        cupy.cuda.Device().synchronize()


def device_count():
    if not is_available():
        return 0
    from .backend.device import emulating_cuda
    if emulating_cuda():
        return 1
    import cupy
    return cupy.cuda.runtime.getDeviceCount()


def is_bf16_supported(including_emulation=True):
    """False: CuPy has no bfloat16 arrays, so tensorlite computes no bfloat16 on the GPU
    (nanoGPT then picks float16 with a GradScaler)."""
    return False


# one generator serves every device (numbers are drawn on the CPU and moved), so seeding
# "the GPU's" generator seeds that one: the same seed gives the same numbers on both devices
def manual_seed(seed):
    _random.manual_seed(seed)


def manual_seed_all(seed):
    _random.manual_seed(seed)


def seed():
    _random.seed()


def seed_all():
    _random.seed()


def initial_seed():
    return _random.initial_seed()


class amp:  # noqa: N801 - torch.cuda.amp's spelling
    """torch.cuda.amp: tensorlite.amp's GradScaler and autocast with the device fixed to
    'cuda' (a GradScaler made here without a usable GPU disables itself with a warning)."""

    class GradScaler(_amp.GradScaler):
        def __init__(self, init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5,
                     growth_interval=2000, enabled=True):
            super().__init__("cuda", init_scale, growth_factor, backoff_factor, growth_interval,
                             enabled)

    @staticmethod
    def autocast(enabled=True, dtype=_dt.float16, cache_enabled=True):
        return _amp.autocast("cuda", dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)
