"""The `numpy` provider: every fused op's forward and backward in plain, readable NumPy.

This is the spec (docs/KERNELS.md): the C++ and Triton providers are tested
against these functions, and these are tested against finite differences.
They also run on CuPy arrays, through the array module of their input.
"""
from .adamw import adamw_step
from .attention import attention_backward, attention_forward
from .cross_entropy import cross_entropy_backward, cross_entropy_forward
from .gelu import gelu_backward, gelu_forward
from .layernorm import layer_norm_backward, layer_norm_forward
from .softmax import (log_softmax_backward, log_softmax_forward, softmax_backward,
                      softmax_forward)

__all__ = [
    "softmax_forward", "softmax_backward", "log_softmax_forward", "log_softmax_backward",
    "layer_norm_forward", "layer_norm_backward",
    "attention_forward", "attention_backward",
    "cross_entropy_forward", "cross_entropy_backward",
    "gelu_forward", "gelu_backward",
    "adamw_step",
]
