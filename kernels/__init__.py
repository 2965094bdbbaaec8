"""Triton kernels for tensorlite's fused ops (imported as ``tensorlite.kernels``).

``tensorlite.kernels.provider`` is the "triton" provider of docs/KERNELS.md. This
package imports nothing heavy itself, so ``import tensorlite`` never needs triton:
triton is imported when the provider (or a kernel module) is first used.

Without a GPU, set TRITON_INTERPRET=1 before the kernel modules are imported and the
same kernels run on NumPy arrays through Triton's interpreter (see _launch.py).
"""

