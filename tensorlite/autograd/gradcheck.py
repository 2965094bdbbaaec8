"""Compare analytic gradients with central finite differences, in float64."""
import numpy as np

from .api import grad as autograd_grad
from .function import TensorBase
from .grad_mode import no_grad


class GradcheckError(AssertionError):
    pass


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True, max_entries=None,
              seed=0):
    """fn(*inputs) -> Tensor. Every floating input with requires_grad is checked: the gradient
    of sum(fn(*inputs) * r) for a fixed random r is compared entry by entry with
    (f(x + eps) - f(x - eps)) / (2 eps). Inputs must be float64 (a float32 check would
    measure rounding, not the derivative). max_entries: check a random subset of entries.
    Returns True, or raises GradcheckError naming the input, the worst entry and both values."""
    inputs = tuple(inputs) if isinstance(inputs, (list, tuple)) else (inputs,)
    check = [i for i, x in enumerate(inputs) if isinstance(x, TensorBase) and x.requires_grad]
    if not check:
        raise ValueError("gradcheck: no input requires grad")
    for i in check:
        if inputs[i].dtype.np != np.float64:
            raise TypeError(f"gradcheck: input {i} is {inputs[i].dtype}; use float64 inputs")
    rng = np.random.default_rng(seed)
    out = fn(*inputs)
    r = rng.standard_normal(out.shape)
    weight = out._make(np.asarray(r, dtype=np.float64), out.device)

    def scalar():
        with no_grad():
            return float((fn(*inputs) * weight).sum().item())

    analytic = autograd_grad((out * weight).sum(), [inputs[i] for i in check], allow_unused=True)
    for k, i in enumerate(check):
        x = inputs[i]
        a = np.zeros(x.shape) if analytic[k] is None else np.asarray(analytic[k])
        if not x._data.flags.c_contiguous:  # (an empty array shares no memory with its view)
            raise ValueError(f"gradcheck: input {i} must be contiguous")
        flat = x._data.reshape(-1)
        idx = np.arange(flat.size)
        if max_entries is not None and flat.size > max_entries:
            idx = rng.choice(flat.size, max_entries, replace=False)
        worst, bad = None, 0  # report the worst failing entry, not just the first
        for j in idx:
            orig = flat[j]
            flat[j] = orig + eps
            fp = scalar()
            flat[j] = orig - eps
            fm = scalar()
            flat[j] = orig
            num = (fp - fm) / (2 * eps)
            an = a.reshape(-1)[j]
            err = abs(an - num)
            if not err <= atol + rtol * abs(num):  # `not <=` so a NaN on either side fails
                bad += 1
                if worst is None or not err <= worst[0]:
                    worst = (err, j, an, num)
        if worst is not None:
            err, j, an, num = worst
            msg = (f"gradcheck: input {i}, entry {tuple(int(v) for v in np.unravel_index(j, x.shape))}"
                   f": analytic {an:.10g} vs numerical {num:.10g} (|diff| {err:.3g}); "
                   f"{bad} of {len(idx)} entries differ")
            if raise_exception:
                raise GradcheckError(msg)
            return False
    return True
