"""SGD with momentum, Nesterov momentum and (L2) weight decay, as torch.optim.SGD."""
from .optimizer import Optimizer, grad_array


class SGD(Optimizer):
    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: nesterov momentum needs momentum > 0 and dampening = 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def step(self):
        for group in self.param_groups:
            lr, mom, damp = group["lr"], group["momentum"], group["dampening"]
            wd, nesterov = group["weight_decay"], group["nesterov"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = grad_array(p)
                if wd:
                    g = g + wd * p._data
                if mom:
                    st = self._state(p)
                    buf = st.get("momentum_buffer")
                    buf = g.copy() if buf is None else mom * buf + (1 - damp) * g
                    st["momentum_buffer"] = buf
                    g = g + mom * buf if nesterov else buf
                p._data -= (lr * g).astype(p._data.dtype, copy=False)
                p._version.value += 1
