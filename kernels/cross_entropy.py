"""Cross entropy fused with log-softmax: forward and backward.

Forward: BLOCK_M rows per program walk the vocabulary in BLOCK_V-wide blocks keeping
an online logsumexp (running max and rescaled running sum) and the running sum of
the logits (for label smoothing), then read the target logit directly. No N x V array
is written. Backward: each program owns a BLOCK_M x BLOCK_V tile of dlogits and
recomputes softmax there from the saved lse, so one pass writes dlogits.

label_smoothing is a compile-time constant: Triton passes Python float arguments as
float32, which would round it for float64 logits, and a run uses a single value.
"""
from __future__ import annotations

import numpy as np
import triton
import triton.language as tl

from . import _launch as L


@triton.jit
def _ce_fwd(X, T, Loss, Lse, M, V, ignore_index, SMOOTHING: tl.constexpr, BLOCK_M: tl.constexpr,
            BLOCK_V: tl.constexpr, ACC: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < M
    base = rows.to(tl.int64) * V
    cols = tl.arange(0, BLOCK_V)
    m = tl.full([BLOCK_M], float("-inf"), ACC)
    s = tl.zeros([BLOCK_M], ACC)
    xsum = tl.zeros([BLOCK_M], ACC)
    # Padding columns read -inf (exp -> 0); padding rows read 0 and so stay finite.
    pad = tl.where(rmask[:, None], float("-inf"), 0.0)
    for start in range(0, V, BLOCK_V):
        c = start + cols
        mask = rmask[:, None] & (c < V)[None, :]
        x = tl.load(X + base[:, None] + c[None, :], mask=mask, other=pad).to(ACC)
        m_new = tl.maximum(m, tl.max(x, axis=1))
        # Rescale against 0 while a row has seen only -inf logits: avoids -inf - -inf.
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        s = s * tl.exp(m - m_ref) + tl.sum(tl.exp(x - m_ref[:, None]), axis=1)
        if SMOOTHING != 0.0:
            xsum += tl.sum(tl.where(mask, x, 0.0), axis=1)
        m = m_new
    lse = m + tl.log(s)
    t = tl.load(T + rows, mask=rmask, other=0)
    valid = rmask & (t != ignore_index)
    x_t = tl.load(X + base + t, mask=valid, other=0.0).to(ACC)
    loss = lse - x_t
    if SMOOTHING != 0.0:
        loss = (1.0 - SMOOTHING) * loss + SMOOTHING * (lse - xsum / V)
    loss = tl.where(valid, loss, 0.0)
    tl.store(Loss + rows, loss.to(Loss.dtype.element_ty), mask=rmask)
    tl.store(Lse + rows, lse.to(Lse.dtype.element_ty), mask=rmask)


@triton.jit
def _ce_bwd(X, T, Lse, DLoss, DX, M, V, ignore_index, SMOOTHING: tl.constexpr,
            BLOCK_M: tl.constexpr, BLOCK_V: tl.constexpr, ACC: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
    rmask = rows < M
    mask = rmask[:, None] & (cols < V)[None, :]
    offs = rows.to(tl.int64)[:, None] * V + cols[None, :]
    t = tl.load(T + rows, mask=rmask, other=0)
    valid = rmask & (t != ignore_index)
    # Ignored and padding rows get lse = +inf so that exp(x - lse) = 0 (and dloss = 0).
    lse = tl.load(Lse + rows, mask=valid, other=float("inf")).to(ACC)
    dloss = tl.load(DLoss + rows, mask=valid, other=0.0).to(ACC)
    x = tl.load(X + offs, mask=mask, other=0.0).to(ACC)
    p = tl.exp(x - lse[:, None])
    # Not tl.where(hit, 1.0 - SMOOTHING, 0.0): two Python scalars make a float32 select.
    target = (cols[None, :] == t[:, None]).to(ACC) * (1.0 - SMOOTHING)
    # V cast first: SMOOTHING / V with an int V would be computed in float32.
    dx = dloss[:, None] * (p - target - SMOOTHING / tl.cast(V, ACC))
    dx = tl.where(valid[:, None], dx, 0.0)
    tl.store(DX + offs, dx.to(DX.dtype.element_ty), mask=mask)



def _fwd_blocks(n: int, v: int):
    if L.interpreting():
        block_v = min(L.next_pow2(max(v, 16)), 4096)
        return max(1, min(L.next_pow2(n), (1 << 16) // block_v)), block_v
    # Small vocabularies: several rows per program; large ones: one row, wide blocks.
    block_v = min(L.next_pow2(max(v, 16)), 4096)
    return max(1, min(L.next_pow2(n), 4096 // block_v)), block_v


def cross_entropy_forward(logits, targets, ignore_index=-100, label_smoothing=0.0, *,
                          block_v: int | None = None):
    """block_v overrides the vocabulary block (tests use it to force several blocks)."""
    xp = L.xp_of(logits)
    n, v = logits.shape
    x = xp.ascontiguousarray(logits)
    t = xp.ascontiguousarray(targets, dtype=np.int64)
    stat_dtype, acc = L.acc_dtype(logits.dtype)
    loss = xp.empty((n,), logits.dtype)
    lse = xp.empty((n,), stat_dtype)
    if n == 0:
        return loss, lse
    bm, bv = _fwd_blocks(n, v)
    if block_v:
        bv = block_v
    L.launch(_ce_fwd, (L.cdiv(n, bm),), x, t, loss, lse, n, v, int(ignore_index),
             SMOOTHING=float(label_smoothing), BLOCK_M=bm, BLOCK_V=bv, ACC=acc,
             num_warps=L.warps_for(bm * bv))
    return loss, lse


def cross_entropy_backward(logits, targets, lse, dloss, ignore_index=-100, label_smoothing=0.0,
                           *, block_v: int | None = None):
    xp = L.xp_of(logits)
    n, v = logits.shape
    stat_dtype, acc = L.acc_dtype(logits.dtype)
    x = xp.ascontiguousarray(logits)
    t = xp.ascontiguousarray(targets, dtype=np.int64)
    lse = xp.ascontiguousarray(lse, dtype=stat_dtype)
    dloss = xp.ascontiguousarray(dloss)
    dx = xp.empty((n, v), logits.dtype)
    if n == 0 or v == 0:
        return dx
    if L.interpreting():
        bv = min(L.next_pow2(max(v, 16)), 1 << 14)
        bm = max(1, min(L.next_pow2(n), (1 << 16) // bv))
    else:
        bv = min(L.next_pow2(max(v, 16)), 1024)
        bm = max(1, min(L.next_pow2(n), 4096 // bv))
    if block_v:
        bv = block_v
    L.launch(_ce_bwd, (L.cdiv(n, bm), L.cdiv(v, bv)), x, t, lse, dloss, dx, n, v,
             int(ignore_index), SMOOTHING=float(label_smoothing), BLOCK_M=bm, BLOCK_V=bv, ACC=acc,
             num_warps=L.warps_for(bm * bv))
    return dx
