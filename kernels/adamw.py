"""AdamW: one fused, in-place step over a flat buffer (param, grad, m, v).

The contract's list API launches the kernel once per parameter array: the arrays are
separate allocations, so a single flattened view would need a copy in and out.
The hyperparameters travel as a small array in the accumulation dtype rather than as
scalar arguments, because Triton passes Python floats as float32, which would round
lr, eps and the bias corrections of a float64 step. Derived constants (1 - beta,
lr * weight_decay, the bias corrections) are formed on the host in double precision,
as the NumPy reference forms them from Python floats; 1 - beta2 computed in float32
from a rounded beta2 would be off by ~1e-5 relative.
"""
from __future__ import annotations

import numpy as np
import triton
import triton.language as tl

from . import _launch as L

@triton.jit
def _adamw_kernel(P, G, Mv, Vv, HP, N, BLOCK: tl.constexpr, ACC: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    # HP = [lr, beta1, 1 - beta1, beta2, 1 - beta2, eps, lr * weight_decay, bc1, bc2]
    lr = tl.load(HP + 0)
    beta1 = tl.load(HP + 1)
    one_m_beta1 = tl.load(HP + 2)
    beta2 = tl.load(HP + 3)
    one_m_beta2 = tl.load(HP + 4)
    eps = tl.load(HP + 5)
    lr_wd = tl.load(HP + 6)
    bc1 = tl.load(HP + 7)
    bc2 = tl.load(HP + 8)
    p = tl.load(P + offs, mask=mask, other=0.0).to(ACC)
    g = tl.load(G + offs, mask=mask, other=0.0).to(ACC)
    m = tl.load(Mv + offs, mask=mask, other=0.0).to(ACC)
    v = tl.load(Vv + offs, mask=mask, other=0.0).to(ACC)
    p = p - lr_wd * p
    m = beta1 * m + one_m_beta1 * g
    v = beta2 * v + one_m_beta2 * g * g
    p = p - lr * (m / bc1) / (tl.sqrt(v / bc2) + eps)
    tl.store(P + offs, p.to(P.dtype.element_ty), mask=mask)
    tl.store(Mv + offs, m.to(Mv.dtype.element_ty), mask=mask)
    tl.store(Vv + offs, v.to(Vv.dtype.element_ty), mask=mask)



def adamw_step(params, grads, exp_avgs, exp_avg_sqs, *, lr, beta1, beta2, eps,
               weight_decay, step) -> None:
    hp_cache = {}
    block = 1 << 16 if L.interpreting() else 1024
    for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs):
        if p.size == 0:
            continue
        xp = L.xp_of(p)
        acc_np, acc_tl = L.acc_dtype(p.dtype)
        key = (xp.__name__, acc_np.name)
        if key not in hp_cache:
            host = np.array([lr, beta1, 1.0 - beta1, beta2, 1.0 - beta2, eps,
                             lr * weight_decay, 1.0 - beta1 ** step, 1.0 - beta2 ** step],
                            dtype=acc_np)
            hp_cache[key] = xp.asarray(host)
        L.launch(_adamw_kernel, (L.cdiv(p.size, block),), p, g, m, v, hp_cache[key], p.size,
                 BLOCK=block, ACC=acc_tl, num_warps=4)
