"""Reverse-mode automatic differentiation: the graph (function.py), the backward pass
(engine.py), its entry points backward() and grad() (api.py), grad modes (grad_mode.py)
and the finite-difference checker (gradcheck.py)."""
from .function import Function, Context  # noqa: F401
from .grad_mode import (no_grad, enable_grad, is_grad_enabled, set_grad_enabled,  # noqa: F401
                        set_detect_anomaly, detect_anomaly, is_anomaly_enabled)
from .api import backward, grad  # noqa: F401
from .gradcheck import gradcheck  # noqa: F401
