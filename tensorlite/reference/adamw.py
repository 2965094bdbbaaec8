"""One AdamW step over many parameters, in place (the torch.optim.AdamW formula).

For step t (1-based), per element:
    p   -= lr * weight_decay * p            decoupled weight decay, applied first
    m    = beta1 * m + (1 - beta1) * g       first moment (running mean of g)
    v    = beta2 * v + (1 - beta2) * g * g   second moment (running mean of g^2)
    mhat = m / (1 - beta1**t)                bias corrections: m and v start at 0
    vhat = v / (1 - beta2**t)
    p   -= lr * mhat / (sqrt(vhat) + eps)
"""
from ..backend.device import xp_of


def adamw_step(params, grads, exp_avgs, exp_avg_sqs, *, lr, beta1, beta2, eps,
               weight_decay, step):
    """Updates params, exp_avgs and exp_avg_sqs in place; returns None."""
    bias_correction1 = 1.0 - beta1 ** step
    bias_correction2 = 1.0 - beta2 ** step
    for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs):
        xp = xp_of(p)
        p -= lr * weight_decay * p
        m *= beta1
        m += (1.0 - beta1) * g
        v *= beta2
        v += (1.0 - beta2) * g * g
        mhat = m / bias_correction1
        vhat = v / bias_correction2
        p -= lr * mhat / (xp.sqrt(vhat) + eps)
