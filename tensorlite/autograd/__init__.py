"""Reverse-mode automatic differentiation: the graph (function.py), the backward pass
(engine.py, and its end-of-backward callbacks: queue_callback), its entry points
backward() and grad() (api.py), grad modes (grad_mode.py) and the finite-difference
checker (gradcheck.py)."""
# Function is the PyTorch-style base for users (Tensors in and out); ArrayFunction is the
# raw-array base that tensorlite's own ops subclass (docs/ARCHITECTURE.md)
from .function import TensorFunction as Function, Function as ArrayFunction, Context  # noqa: F401
from .grad_mode import (no_grad, enable_grad, is_grad_enabled, set_grad_enabled,  # noqa: F401
                        set_detect_anomaly, detect_anomaly, is_anomaly_enabled)
from .api import backward, grad  # noqa: F401
from .engine import queue_callback  # noqa: F401
from .gradcheck import gradcheck  # noqa: F401
