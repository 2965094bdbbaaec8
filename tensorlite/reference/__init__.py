"""The `numpy` provider: every fused op's forward and backward in plain, readable NumPy.

This is the spec (backend/registry.py lists the ops, docs/KERNELS.md the contract): the
C++ and Triton providers are tested against these functions, and these are tested
against finite differences. They also run on CuPy arrays, through the array module of
their input. Like every provider they trust their inputs: ops/fused.py checks them first.
gpt.py is the same idea one level up: a whole GPT with a hand-written backward.
"""
from .adamw import adamw_step  # noqa: F401
from .attention import attention_backward, attention_forward  # noqa: F401
from .cross_entropy import cross_entropy_backward, cross_entropy_forward  # noqa: F401
from .gelu import gelu_backward, gelu_forward  # noqa: F401
from .layer_norm import layer_norm_backward, layer_norm_forward  # noqa: F401
from .softmax import (log_softmax_backward, log_softmax_forward, softmax_backward,  # noqa: F401
                      softmax_forward)
