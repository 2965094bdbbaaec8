"""Scaled dot-product attention, FlashAttention-2 style: forward and backward.

Forward: one program per (BLOCK_M queries, batch*head). It walks the keys in BLOCK_N
tiles with an online softmax (running max m, running sum l, rescaled accumulator), so
only one BLOCK_M x BLOCK_N score tile exists at a time, and saves the row logsumexp.
Scores are kept in base 2 (scaled by log2(e)) so that exp2 can be used throughout.

Backward (recomputes score tiles from q, k and lse):
1. _bwd_preprocess: D_i = rowsum(dO_i * O_i).
2. _bwd_dkdv: one program per key tile walks the query tiles; dV += P^T dO,
   dK += dS^T Q with dS = P * (dP - D), dP = dO V^T.
3. _bwd_dq: one program per query tile walks the key tiles; dQ += dS K.

Both backward kernels clamp the exponent of P = exp(S - lse) at 0 (P <= 1 holds exactly):
the recomputed scores round differently from the forward's, and with large scores (|q.k| *
scale ~1e9 in float32) that difference alone would make exp overflow to +inf.

Tiles that need no masking (fully inside Tk and, with is_causal, fully below the
diagonal) go through the same inner step compiled without the mask arithmetic.

A query row with no key to attend (all -inf after masking) ends with l = 0: its output
is 0 and its lse +inf, so exp(s - lse) = 0 in the backward and its gradients vanish.

scale is a compile-time constant: Triton passes Python float arguments as float32,
which would round it for float64 inputs, and a model uses one scale. The sequence
lengths are not specialised on (do_not_specialize): they only bound masks, and
specialising would compile a new kernel for every new Tq/Tk divisibility class.
"""
from __future__ import annotations


import numpy as np
import triton
import triton.language as tl

from . import _launch as L

# log2(e) and ln(2) appear as literals in the kernels (1.4426950408889634,
# 0.6931471805599453): compiled kernels may only read tl.constexpr globals.


@triton.jit
def _scores(q, K_base, Mask_base, cols, offs_m, offs_d, stride_kt, smq, smk, Tq, Tk,
            HEAD_D: tl.constexpr, QK_SCALE: tl.constexpr, HAS_MASK: tl.constexpr,
            ACC: tl.constexpr, DOT_PREC: tl.constexpr):
    """The scaled, masked score tile q @ K^T (in log2 units) and the K^T tile it used;
    shared by the forward and the dQ kernel."""
    dmask = offs_d < HEAD_D
    # K^T tile [BLOCK_D, BLOCK_N], loaded transposed so the score tile is q @ kT.
    kT = tl.load(K_base + cols[None, :] * stride_kt + offs_d[:, None],
                 mask=dmask[:, None] & (cols < Tk)[None, :], other=0.0)
    s = tl.dot(q, kT, input_precision=DOT_PREC).to(ACC) * QK_SCALE
    if HAS_MASK:
        am = tl.load(Mask_base + offs_m[:, None] * smq + cols[None, :] * smk,
                     mask=(offs_m < Tq)[:, None] & (cols < Tk)[None, :], other=0.0)
        s += am.to(ACC) * 1.4426950408889634
    return s, kT


@triton.jit
def _fwd_step(acc, m_i, l_i, q, K_base, V_base, Mask_base, start_n, offs_m, offs_d,
              stride_kt, stride_vt, smq, smk, Tq, Tk, HEAD_D: tl.constexpr, QK_SCALE: tl.constexpr,
              HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr, CHECK: tl.constexpr,
              BLOCK_N: tl.constexpr, ACC: tl.constexpr, DOT_PREC: tl.constexpr):
    cols = start_n + tl.arange(0, BLOCK_N)
    dmask = offs_d < HEAD_D
    s, kT = _scores(q, K_base, Mask_base, cols, offs_m, offs_d, stride_kt, smq, smk, Tq, Tk,
                    HEAD_D, QK_SCALE, HAS_MASK, ACC, DOT_PREC)
    if CHECK:
        valid = (cols < Tk)[None, :]
        if CAUSAL:
            valid = valid & (cols[None, :] <= offs_m[:, None])
        s = tl.where(valid, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    # Rows that have seen only -inf so far rescale against 0: no -inf - -inf NaN.
    m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.exp2(s - m_ref[:, None])
    alpha = tl.exp2(m_i - m_ref)
    l_i = l_i * alpha + tl.sum(p, axis=1)
    v = tl.load(V_base + cols[:, None] * stride_vt + offs_d[None, :],
                mask=(cols < Tk)[:, None] & dmask[None, :], other=0.0)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC).to(ACC)
    return acc, m_new, l_i


@triton.jit(do_not_specialize=["H", "Tq", "Tk"])
def _attn_fwd(Q, K, V, Mask, O, Lse,
              sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sob, soh, sot,
              smb, smh, smq, smk, H, Tq, Tk,
              HEAD_D: tl.constexpr, QK_SCALE: tl.constexpr, HAS_MASK: tl.constexpr,
              CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
              BLOCK_D: tl.constexpr, ACC: tl.constexpr, DOT_PREC: tl.constexpr):
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < HEAD_D
    q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqt + offs_d[None, :],
                mask=(offs_m < Tq)[:, None] & dmask[None, :], other=0.0)
    K_base = K + b * skb + h * skh
    V_base = V + b * svb + h * svh
    Mask_base = Mask + b * smb + h * smh
    acc = tl.zeros([BLOCK_M, BLOCK_D], ACC)
    m_i = tl.full([BLOCK_M], float("-inf"), ACC)
    l_i = tl.zeros([BLOCK_M], ACC)
    # Key tiles that need no masking: inside Tk and (causal) left of every row's diagonal.
    n_end = Tk
    if CAUSAL:
        n_end = tl.minimum(Tk, start_m + BLOCK_M)
        n_full = tl.minimum(Tk // BLOCK_N, (start_m + 1) // BLOCK_N) * BLOCK_N
    else:
        n_full = (Tk // BLOCK_N) * BLOCK_N
    for start_n in range(0, n_full, BLOCK_N):
        acc, m_i, l_i = _fwd_step(acc, m_i, l_i, q, K_base, V_base, Mask_base, start_n, offs_m,
                                  offs_d, skt, svt, smq, smk, Tq, Tk, HEAD_D, QK_SCALE, HAS_MASK,
                                  CAUSAL, False, BLOCK_N, ACC, DOT_PREC)
    for start_n in range(n_full, n_end, BLOCK_N):
        acc, m_i, l_i = _fwd_step(acc, m_i, l_i, q, K_base, V_base, Mask_base, start_n, offs_m,
                                  offs_d, skt, svt, smq, smk, Tq, Tk, HEAD_D, QK_SCALE, HAS_MASK,
                                  CAUSAL, True, BLOCK_N, ACC, DOT_PREC)
    has_key = l_i > 0.0
    l_safe = tl.where(has_key, l_i, 1.0)
    o = acc / l_safe[:, None]
    lse = tl.where(has_key, (m_i + tl.log2(l_safe)) * 0.6931471805599453, float("inf"))
    rmask = offs_m < Tq
    tl.store(O + b * sob + h * soh + offs_m[:, None] * sot + offs_d[None, :],
             o.to(O.dtype.element_ty), mask=rmask[:, None] & dmask[None, :])
    tl.store(Lse + bh.to(tl.int64) * Tq + offs_m, lse.to(Lse.dtype.element_ty), mask=rmask)


@triton.jit(do_not_specialize=["H", "Tq"])
def _bwd_preprocess(O, DO, Delta, sob, soh, sot, sdb, sdh, sdt, H, Tq,
                    HEAD_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
                    ACC: tl.constexpr):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_m < Tq)[:, None] & (offs_d < HEAD_D)[None, :]
    o = tl.load(O + b * sob + h * soh + offs_m[:, None] * sot + offs_d[None, :], mask=mask,
                other=0.0).to(ACC)
    do = tl.load(DO + b * sdb + h * sdh + offs_m[:, None] * sdt + offs_d[None, :], mask=mask,
                 other=0.0).to(ACC)
    tl.store(Delta + bh.to(tl.int64) * Tq + offs_m, tl.sum(o * do, axis=1), mask=offs_m < Tq)


@triton.jit
def _dkdv_step(dk, dv, k, v, Q_base, DO_base, Lse_base, Delta_base, Mask_base, start_m, cols,
               offs_d, sqt, sdt, smq, smk, Tq, Tk, HEAD_D: tl.constexpr, QK_SCALE: tl.constexpr,
               HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr, CHECK: tl.constexpr,
               BLOCK_M: tl.constexpr, ACC: tl.constexpr, DOT_PREC: tl.constexpr):
    rows = start_m + tl.arange(0, BLOCK_M)
    rmask = rows < Tq
    dmask = offs_d < HEAD_D
    # Q^T and dO^T tiles [BLOCK_D, BLOCK_M]: the key-major products need them transposed.
    qT = tl.load(Q_base + rows[None, :] * sqt + offs_d[:, None],
                 mask=dmask[:, None] & rmask[None, :], other=0.0)
    doT = tl.load(DO_base + rows[None, :] * sdt + offs_d[:, None],
                  mask=dmask[:, None] & rmask[None, :], other=0.0)
    # Padding rows get lse = +inf, hence p = 0.
    lse2 = tl.load(Lse_base + rows, mask=rmask, other=float("inf")).to(ACC) * 1.4426950408889634
    delta = tl.load(Delta_base + rows, mask=rmask, other=0.0).to(ACC)
    sT = tl.dot(k, qT, input_precision=DOT_PREC).to(ACC) * QK_SCALE
    if HAS_MASK:
        am = tl.load(Mask_base + rows[None, :] * smq + cols[:, None] * smk,
                     mask=rmask[None, :] & (cols < Tk)[:, None], other=0.0)
        sT += am.to(ACC) * 1.4426950408889634
    # P <= 1 exactly, but sT is recomputed with a rounding other than the forward's: with
    # |scores| ~1e9+ one ulp of s exceeds exp's range, so unclamped exp2 could give +inf.
    pT = tl.exp2(tl.minimum(sT - lse2[None, :], 0.0))
    if CHECK:
        # Padding key columns only feed dK/dV rows that are never stored; the causal
        # mask is the one that matters here.
        if CAUSAL:
            pT = tl.where(cols[:, None] <= rows[None, :], pT, 0.0)
    dv += tl.dot(pT.to(doT.dtype), tl.trans(doT), input_precision=DOT_PREC).to(ACC)
    dpT = tl.dot(v, doT, input_precision=DOT_PREC).to(ACC)
    dsT = pT * (dpT - delta[None, :])
    dk += tl.dot(dsT.to(qT.dtype), tl.trans(qT), input_precision=DOT_PREC).to(ACC)
    return dk, dv


@triton.jit(do_not_specialize=["H", "Tq", "Tk"])
def _bwd_dkdv(Q, K, V, DO, Lse, Delta, Mask, DK, DV,
              sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sdb, sdh, sdt,
              smb, smh, smq, smk, H, Tq, Tk,
              HEAD_D: tl.constexpr, SCALE: tl.constexpr, QK_SCALE: tl.constexpr,
              HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr,
              BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr,
              DOT_PREC: tl.constexpr):
    start_n = tl.program_id(0) * BLOCK_N
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    cols = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    kvmask = (cols < Tk)[:, None] & (offs_d < HEAD_D)[None, :]
    k = tl.load(K + b * skb + h * skh + cols[:, None] * skt + offs_d[None, :], mask=kvmask,
                other=0.0)
    v = tl.load(V + b * svb + h * svh + cols[:, None] * svt + offs_d[None, :], mask=kvmask,
                other=0.0)
    Q_base = Q + b * sqb + h * sqh
    DO_base = DO + b * sdb + h * sdh
    Lse_base = Lse + bh.to(tl.int64) * Tq
    Delta_base = Delta + bh.to(tl.int64) * Tq
    Mask_base = Mask + b * smb + h * smh
    dk = tl.zeros([BLOCK_N, BLOCK_D], ACC)
    dv = tl.zeros([BLOCK_N, BLOCK_D], ACC)
    m_begin = 0
    m_full = 0
    if CAUSAL:
        # Query tiles above this key tile's diagonal see none of its keys; tiles from
        # m_full on have every row >= every key of the tile (no mask needed).
        m_begin = (start_n // BLOCK_M) * BLOCK_M
        m_full = tl.minimum(tl.cdiv(start_n + BLOCK_N - 1, BLOCK_M) * BLOCK_M, Tq)
        m_full = tl.maximum(m_full, m_begin)
    for start_m in range(m_begin, m_full, BLOCK_M):
        dk, dv = _dkdv_step(dk, dv, k, v, Q_base, DO_base, Lse_base, Delta_base, Mask_base,
                            start_m, cols, offs_d, sqt, sdt, smq, smk, Tq, Tk, HEAD_D, QK_SCALE,
                            HAS_MASK, CAUSAL, True, BLOCK_M, ACC, DOT_PREC)
    for start_m in range(m_full, Tq, BLOCK_M):
        dk, dv = _dkdv_step(dk, dv, k, v, Q_base, DO_base, Lse_base, Delta_base, Mask_base,
                            start_m, cols, offs_d, sqt, sdt, smq, smk, Tq, Tk, HEAD_D, QK_SCALE,
                            HAS_MASK, CAUSAL, False, BLOCK_M, ACC, DOT_PREC)
    dk = dk * SCALE
    out = bh.to(tl.int64) * Tk * HEAD_D + cols[:, None] * HEAD_D + offs_d[None, :]
    tl.store(DK + out, dk.to(DK.dtype.element_ty), mask=kvmask)
    tl.store(DV + out, dv.to(DV.dtype.element_ty), mask=kvmask)


@triton.jit
def _dq_step(dq, q, do, lse2, delta, K_base, V_base, Mask_base, start_n, offs_m, offs_d,
             skt, svt, smq, smk, Tq, Tk, HEAD_D: tl.constexpr, QK_SCALE: tl.constexpr,
             HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr, CHECK: tl.constexpr,
             BLOCK_N: tl.constexpr, ACC: tl.constexpr, DOT_PREC: tl.constexpr):
    cols = start_n + tl.arange(0, BLOCK_N)
    dmask = offs_d < HEAD_D
    vT = tl.load(V_base + cols[None, :] * svt + offs_d[:, None],
                 mask=dmask[:, None] & (cols < Tk)[None, :], other=0.0)
    s, kT = _scores(q, K_base, Mask_base, cols, offs_m, offs_d, skt, smq, smk, Tq, Tk,
                    HEAD_D, QK_SCALE, HAS_MASK, ACC, DOT_PREC)
    p = tl.exp2(tl.minimum(s - lse2[:, None], 0.0))  # P <= 1: see _dkdv_step
    if CHECK:
        valid = (cols < Tk)[None, :]
        if CAUSAL:
            valid = valid & (cols[None, :] <= offs_m[:, None])
        p = tl.where(valid, p, 0.0)
    dp = tl.dot(do, vT, input_precision=DOT_PREC).to(ACC)
    ds = p * (dp - delta[:, None])
    dq += tl.dot(ds.to(kT.dtype), tl.trans(kT), input_precision=DOT_PREC).to(ACC)
    return dq


@triton.jit(do_not_specialize=["H", "Tq", "Tk"])
def _bwd_dq(Q, K, V, DO, Lse, Delta, Mask, DQ,
            sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sdb, sdh, sdt,
            smb, smh, smq, smk, H, Tq, Tk,
            HEAD_D: tl.constexpr, SCALE: tl.constexpr, QK_SCALE: tl.constexpr,
            HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr,
            BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr,
            DOT_PREC: tl.constexpr):
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    rmask = offs_m < Tq
    qmask = rmask[:, None] & (offs_d < HEAD_D)[None, :]
    q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqt + offs_d[None, :], mask=qmask,
                other=0.0)
    do = tl.load(DO + b * sdb + h * sdh + offs_m[:, None] * sdt + offs_d[None, :], mask=qmask,
                 other=0.0)
    lse2 = tl.load(Lse + bh.to(tl.int64) * Tq + offs_m, mask=rmask,
                   other=float("inf")).to(ACC) * 1.4426950408889634
    delta = tl.load(Delta + bh.to(tl.int64) * Tq + offs_m, mask=rmask, other=0.0).to(ACC)
    K_base = K + b * skb + h * skh
    V_base = V + b * svb + h * svh
    Mask_base = Mask + b * smb + h * smh
    dq = tl.zeros([BLOCK_M, BLOCK_D], ACC)
    n_end = Tk
    if CAUSAL:
        n_end = tl.minimum(Tk, start_m + BLOCK_M)
        n_full = tl.minimum(Tk // BLOCK_N, (start_m + 1) // BLOCK_N) * BLOCK_N
    else:
        n_full = (Tk // BLOCK_N) * BLOCK_N
    for start_n in range(0, n_full, BLOCK_N):
        dq = _dq_step(dq, q, do, lse2, delta, K_base, V_base, Mask_base, start_n, offs_m, offs_d,
                      skt, svt, smq, smk, Tq, Tk, HEAD_D, QK_SCALE, HAS_MASK, CAUSAL, False,
                      BLOCK_N, ACC, DOT_PREC)
    for start_n in range(n_full, n_end, BLOCK_N):
        dq = _dq_step(dq, q, do, lse2, delta, K_base, V_base, Mask_base, start_n, offs_m, offs_d,
                      skt, svt, smq, smk, Tq, Tk, HEAD_D, QK_SCALE, HAS_MASK, CAUSAL, True,
                      BLOCK_N, ACC, DOT_PREC)
    dq = dq * SCALE
    out = bh.to(tl.int64) * Tq * HEAD_D + offs_m[:, None] * HEAD_D + offs_d[None, :]
    tl.store(DQ + out, dq.to(DQ.dtype.element_ty), mask=qmask)


# ----------------------------------------------------------------------------- wrappers

def _qkv(q, k):
    b, h, tq, d = q.shape
    return b, h, tq, k.shape[2], d


def _rows_unit_stride(a):
    """a itself when its last dim is unit-stride (the kernels take the other strides
    as arguments), else a contiguous copy."""
    if a.shape[-1] > 1 and a.strides[-1] != a.dtype.itemsize or any(s < 0 for s in a.strides):
        return L.xp_of(a).ascontiguousarray(a)
    return a


def _strides3(a):
    s = L.elem_strides(a)
    return s[0], s[1], s[2]


def _mask_args(mask, q):
    """(mask array or a dummy, its 4 element strides with 0 on broadcast dims)."""
    if mask is None:
        return q, (0, 0, 0, 0)
    shape = mask.shape
    if any(s < 0 for s in mask.strides):
        mask = L.xp_of(mask).ascontiguousarray(mask)
    st = L.elem_strides(mask)
    # A size-1 dim is broadcast: stride 0 reads its one entry for every index.
    st = tuple(0 if n == 1 else s for n, s in zip(shape, st))
    return mask, st


def _blocks(tq, tk, d, dtype, kind):
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) for the forward / dkdv / dq kernels."""
    bd = max(16, L.next_pow2(d))
    if L.interpreting():
        # Few, large programs: each one is a sequence of NumPy calls.
        return (min(64, max(16, L.next_pow2(tq))), min(64, max(16, L.next_pow2(tk))), 4, 1)
    name = np.dtype(dtype).name
    if name == "float64":
        return 32, 32, 4, 1
    if name == "float32":
        # IEEE fp32 dots run on CUDA cores and keep operands in registers: small tiles.
        return 64, 32, 4, 2
    warps = 8 if bd >= 128 else 4
    if kind == "fwd":
        return 128, 64 if bd <= 128 else 32, warps, 3
    if kind == "dkdv":
        return 32, 128 if bd <= 64 else 64, warps, 2
    return 128 if bd <= 64 else 64, 32, warps, 2


def _fwd(q, k, v, mask, is_causal, scale, block_m=None, block_n=None):
    b, h, tq, tk, d = _qkv(q, k)
    scale = float(scale)
    xp = L.xp_of(q)
    q, k, v = _rows_unit_stride(q), _rows_unit_stride(k), _rows_unit_stride(v)
    mask_arr, mst = _mask_args(mask, q)
    stat_dtype, acc = L.acc_dtype(q.dtype)
    o = xp.empty((b, h, tq, d), q.dtype)
    lse = xp.empty((b, h, tq), stat_dtype)
    if lse.size == 0:
        return o, lse
    bm, bn, warps, stages = _blocks(tq, tk, d, q.dtype, "fwd")
    bm, bn = block_m or bm, block_n or bn
    L.launch(_attn_fwd, (L.cdiv(tq, bm), b * h), q, k, v, mask_arr, o, lse,
             *_strides3(q), *_strides3(k), *_strides3(v), *_strides3(o), *mst, h, tq, tk,
             HEAD_D=d, QK_SCALE=scale * 1.4426950408889634, HAS_MASK=mask is not None,
             CAUSAL=bool(is_causal), BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=max(16, L.next_pow2(d)),
             ACC=acc, DOT_PREC=L.dot_precision(q.dtype), num_warps=warps, num_stages=stages)
    return o, lse


def _bwd(q, k, v, o, lse, do, mask, is_causal, scale, block_m=None, block_n=None):
    b, h, tq, tk, d = _qkv(q, k)
    scale = float(scale)
    xp = L.xp_of(q)
    q, k, v = _rows_unit_stride(q), _rows_unit_stride(k), _rows_unit_stride(v)
    o, do = _rows_unit_stride(o), _rows_unit_stride(do)
    mask_arr, mst = _mask_args(mask, q)
    stat_dtype, acc = L.acc_dtype(q.dtype)
    lse = xp.ascontiguousarray(lse, dtype=stat_dtype)
    dq = xp.empty((b, h, tq, d), q.dtype)
    dk = xp.empty((b, h, tk, d), q.dtype)
    dv = xp.empty((b, h, tk, d), q.dtype)
    if tq == 0 or tk == 0:
        # Nothing attends to anything: every gradient is zero.
        for g in (dq, dk, dv):
            g[...] = 0
        return dq, dk, dv
    bd = max(16, L.next_pow2(d))
    delta = xp.empty((b, h, tq), stat_dtype)
    pre_m = 64 if not L.interpreting() else min(256, max(16, L.next_pow2(tq)))
    L.launch(_bwd_preprocess, (L.cdiv(tq, pre_m), b * h), o, do, delta, *_strides3(o),
             *_strides3(do), h, tq, HEAD_D=d, BLOCK_M=pre_m, BLOCK_D=bd, ACC=acc, num_warps=4)
    common = dict(HEAD_D=d, SCALE=scale, QK_SCALE=scale * 1.4426950408889634,
                  HAS_MASK=mask is not None, CAUSAL=bool(is_causal), BLOCK_D=bd, ACC=acc,
                  DOT_PREC=L.dot_precision(q.dtype))
    args = (*_strides3(q), *_strides3(k), *_strides3(v), *_strides3(do), *mst, h, tq, tk)
    bm, bn, warps, stages = _blocks(tq, tk, d, q.dtype, "dkdv")
    bm, bn = block_m or bm, block_n or bn
    L.launch(_bwd_dkdv, (L.cdiv(tk, bn), b * h), q, k, v, do, lse, delta, mask_arr, dk, dv,
             *args, BLOCK_M=bm, BLOCK_N=bn, num_warps=warps, num_stages=stages, **common)
    bm, bn, warps, stages = _blocks(tq, tk, d, q.dtype, "dq")
    bm, bn = block_m or bm, block_n or bn
    L.launch(_bwd_dq, (L.cdiv(tq, bm), b * h), q, k, v, do, lse, delta, mask_arr, dq,
             *args, BLOCK_M=bm, BLOCK_N=bn, num_warps=warps, num_stages=stages, **common)
    return dq, dk, dv


def _interpreted_bf16(a):
    """True for a bfloat16 array under Triton's interpreter, which keeps bfloat16 as its
    uint16 bit patterns and runs tl.dot on them as integers (garbage): such inputs are
    widened to float32 for the kernels and the results narrowed back. A GPU keeps the
    bfloat16 tensor-core dots (accumulating in float32 either way)."""
    return L.interpreting() and np.dtype(a.dtype).name == "bfloat16"


def _widen(*arrays):
    return [None if a is None else a.astype(np.float32) if _interpreted_bf16(a) else a
            for a in arrays]


def attention_forward(q, k, v, mask, is_causal, scale):
    if not _interpreted_bf16(q):
        return _fwd(q, k, v, mask, is_causal, scale)
    o, lse = _fwd(*_widen(q, k, v, mask), is_causal, scale)
    return o.astype(q.dtype), lse


def attention_backward(q, k, v, o, lse, do, mask, is_causal, scale):
    if not _interpreted_bf16(q):
        return _bwd(q, k, v, o, lse, do, mask, is_causal, scale)
    q_, k_, v_, o_, do_, mask_ = _widen(q, k, v, o, do, mask)
    return tuple(g.astype(q.dtype) for g in _bwd(q_, k_, v_, o_, lse, do_, mask_, is_causal,
                                                   scale))
