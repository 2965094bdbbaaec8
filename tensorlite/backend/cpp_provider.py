"""The `cpp` provider: the fused ops of csrc/ (module tensorlite._C), OpenMP on the CPU.

The C++ functions already take the contract's signatures (docs/KERNELS.md) -- None
for a missing weight/bias/mask, Python scalars, non-contiguous or float32/float64
arrays -- so this module only names them. Importing it fails with ImportError when
the extension is not built; tensorlite.backend.providers checks that first.
"""
from tensorlite import _C

softmax_forward = _C.softmax_forward
softmax_backward = _C.softmax_backward
log_softmax_forward = _C.log_softmax_forward
log_softmax_backward = _C.log_softmax_backward

layer_norm_forward = _C.layer_norm_forward
layer_norm_backward = _C.layer_norm_backward

attention_forward = _C.attention_forward
attention_backward = _C.attention_backward

cross_entropy_forward = _C.cross_entropy_forward
cross_entropy_backward = _C.cross_entropy_backward

gelu_forward = _C.gelu_forward
gelu_backward = _C.gelu_backward

adamw_step = _C.adamw_step

__all__ = [
    "softmax_forward", "softmax_backward", "log_softmax_forward", "log_softmax_backward",
    "layer_norm_forward", "layer_norm_backward",
    "attention_forward", "attention_backward",
    "cross_entropy_forward", "cross_entropy_backward",
    "gelu_forward", "gelu_backward",
    "adamw_step",
]
