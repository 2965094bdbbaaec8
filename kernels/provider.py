"""The "triton" provider: the fused ops of docs/KERNELS.md as Triton kernels.

Takes and returns CuPy arrays on a GPU, or NumPy arrays when Triton's interpreter is
on (TRITON_INTERPRET=1 set before this module is imported). Importing it raises a
RuntimeError that says so when neither a GPU nor the interpreter is available.
"""
from . import _launch

_launch.check_usable()

from .adamw import adamw_step  # noqa: E402,F401
from .attention import attention_backward, attention_forward  # noqa: E402,F401
from .cross_entropy import cross_entropy_backward, cross_entropy_forward  # noqa: E402,F401
from .gelu import gelu_backward, gelu_forward  # noqa: E402,F401
from .layer_norm import layer_norm_backward, layer_norm_forward  # noqa: E402,F401
from .softmax import (log_softmax_backward, log_softmax_forward,  # noqa: E402,F401
                      softmax_backward, softmax_forward)

