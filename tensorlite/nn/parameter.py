"""Parameter: a leaf Tensor that a Module registers as trainable."""
from ..tensor import Tensor


class Parameter(Tensor):
    def __init__(self, data=None, requires_grad=True):
        if data is None:
            import numpy as np
            data = np.zeros((0,), dtype=np.float32)
        if isinstance(data, Tensor):
            self._init(data._data, data.device, requires_grad=False)
        else:
            super().__init__(data)
        self.requires_grad = requires_grad

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()
