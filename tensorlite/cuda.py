"""tensorlite.cuda: is a GPU usable, and why not."""
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
