"""The launch layer: how the Triton kernels in kernels/ receive our arrays.

Triton launches a kernel with any argument that has a ``data_ptr()`` method and a
``dtype`` attribute, and passes it as a pointer. Our arrays are NumPy arrays (on the
CPU) or CuPy arrays (on a GPU), neither of which has ``data_ptr()``, so every array
argument is wrapped in a tiny adapter:

- CuPy array, compiled kernel on a GPU: ``_DevicePtr(arr.data.ptr, dtype)``.
- NumPy array, Triton's interpreter (``TRITON_INTERPRET=1``): ``_HostPtr``. Before
  running a kernel the interpreter copies every pointer argument to host memory and
  afterwards copies it back, through torch's storage methods (``untyped_storage()``,
  ``cpu()``, ``new_empty()``, ``set_()``, ``copy_()``; see ``GridExecutor._init_args_hst``
  in triton/runtime/interpreter.py, triton 3.9). A NumPy array already *is* host
  memory, so ``_HostPtr`` answers each of those calls with itself and the kernel reads
  and writes the array in place. This keeps torch out of the picture without patching
  Triton.

Whether a kernel is interpreted is fixed when its ``@triton.jit`` runs, i.e. when the
kernel module is imported: Triton reads TRITON_INTERPRET at that moment. So the checks
here compare each kernel with the arrays it is given and say what to do when they
do not fit, instead of letting the interpreter dereference a GPU address (a crash) or
a GPU launch receive a host address.
"""
from __future__ import annotations

import numpy as np
import triton
import triton.language as tl
from triton import knobs

from ..backend.device import xp_of  # noqa: F401 (the one array-module helper, for the kernels)

cdiv = triton.cdiv
next_pow2 = triton.next_power_of_2

_MODE_HINT = (
    "set TRITON_INTERPRET=1 in the environment before tensorlite.kernels (and triton) "
    "is imported to run the Triton kernels on the CPU through Triton's interpreter"
)

# numpy dtype name -> Triton element type. "bfloat16" is ml_dtypes' NumPy dtype, which
# recent CuPy versions accept; NumPy itself has no bfloat16.
_TL_DTYPES = {
    "float16": tl.float16,
    "bfloat16": tl.bfloat16,
    "float32": tl.float32,
    "float64": tl.float64,
    "int8": tl.int8,
    "int32": tl.int32,
    "int64": tl.int64,
    "uint8": tl.uint8,
}

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def interpreting() -> bool:
    """True when kernels defined now run in Triton's interpreter (on host memory)."""
    return bool(knobs.runtime.interpret)


def check_usable() -> None:
    """Raise unless the Triton provider can run here: a GPU, or the interpreter."""
    if interpreting():
        return
    try:
        triton.runtime.driver.active.get_current_target()
    except RuntimeError as e:
        raise RuntimeError(
            "tensorlite.kernels (the 'triton' provider) found no GPU that Triton can use, "
            f"and Triton's interpreter is off: {_MODE_HINT}."
        ) from e


def _is_cupy(x) -> bool:
    return type(x).__module__.split(".")[0] == "cupy"


def tl_dtype(dtype) -> tl.dtype:
    try:
        return _TL_DTYPES[np.dtype(dtype).name]
    except KeyError:
        raise TypeError(f"no Triton element type for array dtype {np.dtype(dtype)}") from None


def acc_dtype(dtype):
    """(numpy dtype, Triton dtype) that a kernel accumulates in and stores statistics in.

    float64 inputs keep float64 all the way; float32/16/bfloat16 accumulate in float32.
    """
    if np.dtype(dtype).name == "float64":
        return np.dtype(np.float64), tl.float64
    return np.dtype(np.float32), tl.float32


def dot_precision(dtype) -> str:
    """tl.dot input precision: on a GPU, fp32 operands would otherwise be rounded to
    tf32 (10-bit mantissa), far outside the 1e-5 agreement the fp32 path promises."""
    return "ieee" if np.dtype(dtype).name in ("float32", "float64") else "tf32"


def as_rows(x):
    """A contiguous (M, N) view of x over its last dim, N = x.shape[-1]."""
    xp = xp_of(x)
    x = xp.ascontiguousarray(x)
    n = x.shape[-1]
    m = 1
    for s in x.shape[:-1]:
        m *= s
    return x.reshape(m, n)  # not (-1, n): ambiguous when n == 0


def row_tile(n_cols: int, max_cols: int):
    """(BLOCK_M, BLOCK_N) for a kernel that keeps whole rows of n_cols in registers.

    A GPU program holds ~4-16K elements comfortably; the interpreter runs each program
    as NumPy calls, so it wants as few (and as large) programs as possible.
    """
    block_n = max(16, next_pow2(n_cols))
    if block_n > max_cols:
        return None
    tile = (1 << 16) if interpreting() else 4096
    block_m = max(1, tile // block_n)
    return block_m, block_n


def warps_for(tile_elems: int) -> int:
    """Warps for a program holding tile_elems values per live tensor: ~16 values per
    thread (4096 -> 8 warps), which kept every row kernel spill-free on sm_90."""
    return int(min(16, max(4, tile_elems // 512)))


def elem_strides(a) -> tuple:
    """Strides in elements (Triton pointer arithmetic counts elements, not bytes)."""
    item = a.dtype.itemsize
    if any(s % item for s in a.strides):
        raise ValueError(f"array strides {a.strides} are not a multiple of its item size {item}")
    return tuple(s // item for s in a.strides)


class _DevicePtr:
    """A pointer argument for a compiled (GPU) launch."""
    __slots__ = ("_ptr", "dtype", "_keep")

    def __init__(self, ptr: int, dtype: tl.dtype, keep):
        self._ptr = int(ptr)
        self.dtype = dtype
        # Holds the array so a temporary (e.g. a contiguous copy) outlives the launch.
        self._keep = keep

    def data_ptr(self) -> int:
        return self._ptr


class _HostPtr(_DevicePtr):
    """A NumPy array as a pointer argument for Triton's interpreter.

    The methods below are the storage calls the interpreter makes to copy a torch
    tensor to the host and back (module docstring). The memory is already on the
    host, so the "copy" is the array itself and copying back is a no-op.
    """
    __slots__ = ()

    def untyped_storage(self):
        return self

    def cpu(self):
        return self

    def new_empty(self, *args, **kwargs):
        return self

    def set_(self, *args, **kwargs):
        return self

    def storage_offset(self) -> int:
        return 0

    def size(self):
        return ()

    def stride(self):
        return ()

    def copy_(self, other):
        return self


def _is_interpreted(kernel) -> bool:
    from triton.runtime.interpreter import InterpretedFunction
    return isinstance(kernel, InterpretedFunction)


def _convert(arg, interpreted: bool, kernel_name: str):
    if isinstance(arg, np.ndarray):
        if not interpreted:
            raise RuntimeError(
                f"Triton kernel {kernel_name} was compiled for a GPU but got a NumPy "
                f"(host) array; pass CuPy arrays, or {_MODE_HINT}."
            )
        return _HostPtr(arg.ctypes.data, tl_dtype(arg.dtype), arg)
    if _is_cupy(arg) and hasattr(arg, "data") and hasattr(arg, "dtype"):
        if interpreted:
            raise RuntimeError(
                f"Triton kernel {kernel_name} runs in Triton's interpreter (TRITON_INTERPRET=1), "
                "which reads host memory, but got a CuPy (GPU) array; pass NumPy arrays, or "
                "unset TRITON_INTERPRET before importing tensorlite.kernels to run on the GPU."
            )
        return _DevicePtr(arg.data.ptr, tl_dtype(arg.dtype), arg)
    if isinstance(arg, np.generic):
        # Triton specialises Python ints/floats; NumPy scalars would be unknown types.
        return arg.item()
    return arg


def launch(kernel, grid, *args, **meta) -> None:
    """Run ``kernel[grid](*args, **meta)`` with arrays turned into pointer arguments.

    ``meta`` holds constexprs and launch options (num_warps, num_stages); the
    interpreter ignores the launch options. Errors from Triton propagate unchanged.
    """
    interpreted = _is_interpreted(kernel)
    name = getattr(kernel, "__name__", repr(kernel))
    converted = [_convert(a, interpreted, name) for a in args]
    if interpreted:
        kernel[grid](*converted, **meta)
        return
    device = next((a for a in args if _is_cupy(a)), None)
    if device is None:
        kernel[grid](*converted, **meta)
        return
    import cupy
    # Torch-free Triton launches on the device's default (legacy) stream; work queued
    # by CuPy on another stream would race with the kernel.
    if cupy.cuda.get_current_stream().ptr != 0:
        raise RuntimeError(
            f"Triton kernel {name}: CuPy's current stream is not the default stream, "
            "but Triton launches on the default stream; run tensorlite's GPU ops outside "
            "`with cupy.cuda.Stream():` blocks."
        )
    with device.device:
        kernel[grid](*converted, **meta)
