"""One AdamW step over many parameters, in place (the torch.optim.AdamW formula).

For step t (1-based), per element:
    p   -= lr * weight_decay * p            decoupled weight decay, applied first
    m    = beta1 * m + (1 - beta1) * g       first moment (running mean of g)
    v    = beta2 * v + (1 - beta2) * g * g   second moment (running mean of g^2)
    mhat = m / (1 - beta1**t)                bias corrections: m and v start at 0
    vhat = v / (1 - beta2**t)
    p   -= lr * mhat / (sqrt(vhat) + eps)
"""
from ._xp import check_float, get_xp


def _check(params, grads, exp_avgs, exp_avg_sqs, step):
    op = "adamw_step"
    n = len(params)
    if not (len(grads) == len(exp_avgs) == len(exp_avg_sqs) == n):
        raise ValueError(f"{op}: lists differ in length: params {n}, grads {len(grads)}, "
                         f"exp_avgs {len(exp_avgs)}, exp_avg_sqs {len(exp_avg_sqs)}")
    if step < 1:
        raise ValueError(f"{op}: step is 1-based, got {step}")
    for i, (p, g, m, v) in enumerate(zip(params, grads, exp_avgs, exp_avg_sqs)):
        check_float(f"{op} (parameter {i})", param=p, grad=g, exp_avg=m, exp_avg_sq=v)
        for name, a in (("grad", g), ("exp_avg", m), ("exp_avg_sq", v)):
            if a.shape != p.shape:
                raise ValueError(f"{op}: parameter {i} has shape {p.shape} but its {name} "
                                 f"has shape {a.shape}")


def adamw_step(params, grads, exp_avgs, exp_avg_sqs, *, lr, beta1, beta2, eps,
               weight_decay, step):
    """Updates params, exp_avgs and exp_avg_sqs in place; returns None."""
    _check(params, grads, exp_avgs, exp_avg_sqs, step)
    bias_correction1 = 1.0 - beta1 ** step
    bias_correction2 = 1.0 - beta2 ** step
    for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs):
        xp = get_xp(p)
        p -= lr * weight_decay * p
        m *= beta1
        m += (1.0 - beta1) * g
        v *= beta2
        v += (1.0 - beta2) * g * g
        mhat = m / bias_correction1
        vhat = v / bias_correction2
        p -= lr * mhat / (xp.sqrt(vhat) + eps)
