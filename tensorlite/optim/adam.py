"""Adam (L2 weight decay added to the gradient) and AdamW (decoupled weight decay).

AdamW's update runs as one fused kernel over all parameters of a group (the provider's
adamw_step: C++ on the CPU, Triton on the GPU, NumPy reference when forced)."""

from ..backend.device import xp_of
from ..ops.fused import adamw_step
from .optimizer import Optimizer, check_betas, check_number, grad_array


class _AdamBase(Optimizer):
    def _check_group(self, group):
        who = type(self).__name__
        check_number(who, "lr", group["lr"])
        check_number(who, "eps", group["eps"])
        check_number(who, "weight_decay", group["weight_decay"])
        group["betas"] = check_betas(who, group["betas"])


class Adam(_AdamBase):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def step(self):
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                xp = _xp(p)
                g = grad_array(p)
                if wd:
                    g = g + wd * p._data
                st = self._state(p)
                if not st:
                    st.update(step=0, exp_avg=xp.zeros_like(p._data), exp_avg_sq=xp.zeros_like(p._data))
                st["step"] += 1
                t = st["step"]
                st["exp_avg"] = b1 * st["exp_avg"] + (1 - b1) * g
                st["exp_avg_sq"] = b2 * st["exp_avg_sq"] + (1 - b2) * g * g
                mhat = st["exp_avg"] / (1 - b1 ** t)
                vhat = st["exp_avg_sq"] / (1 - b2 ** t)
                p._data -= (lr * mhat / (xp.sqrt(vhat) + eps)).astype(p._data.dtype, copy=False)
                p._version.value += 1


class AdamW(_AdamBase):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, *,
                 foreach=None, fused=None):
        # foreach/fused choose among PyTorch's implementations; this one is always one fused
        # kernel per group, so both are accepted and ignored (nanoGPT probes for `fused`)
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def step(self):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            # parameters are batched by (device, step count) so each batch is one kernel call
            batches = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self._state(p)
                if not st:
                    xp = _xp(p)
                    st.update(step=0, exp_avg=xp.zeros_like(p._data), exp_avg_sq=xp.zeros_like(p._data))
                st["step"] += 1
                batches.setdefault((p.device.type, st["step"]), []).append(p)
            for (dev, step), ps in batches.items():
                adamw_step(
                    dev, [p._data for p in ps], [grad_array(p) for p in ps],
                    [self.state[id(p)]["exp_avg"] for p in ps],
                    [self.state[id(p)]["exp_avg_sq"] for p in ps],
                    lr=float(group["lr"]), beta1=float(b1), beta2=float(b2), eps=float(group["eps"]),
                    weight_decay=float(group["weight_decay"]), step=int(step))
                for p in ps:
                    p._version.value += 1


def _xp(p):
    return xp_of(p._data)


