"""tensorlite.optim: optimizers and learning-rate schedules (PyTorch's names)."""
from .optimizer import Optimizer  # noqa: F401
from .sgd import SGD  # noqa: F401
from .adam import Adam, AdamW  # noqa: F401
from . import lr_scheduler  # noqa: F401
from ..nn.utils import clip_grad_norm_  # noqa: F401
