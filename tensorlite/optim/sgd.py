"""SGD with momentum, Nesterov momentum and (L2) weight decay, as torch.optim.SGD."""
from .optimizer import Optimizer, check_number, grad_array


class SGD(Optimizer):
    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def _check_group(self, group):
        check_number("SGD", "lr", group["lr"])
        check_number("SGD", "momentum", group["momentum"])
        # (1 - dampening) scales each new gradient: past 1 it would point uphill
        check_number("SGD", "dampening", group["dampening"], 0.0, 1.0, high_included=True)
        check_number("SGD", "weight_decay", group["weight_decay"])
        if not isinstance(group["nesterov"], bool):
            raise TypeError(f"SGD: nesterov must be True or False, got {group['nesterov']!r}")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("SGD: nesterov momentum needs momentum > 0 and dampening = 0")

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
