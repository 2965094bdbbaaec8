"""tensorlite.utils: helpers with PyTorch's names (tensorlite.utils.data = torch.utils.data)."""
from . import data  # noqa: F401
