"""softmax / log_softmax over the last dim: forward and backward.

Two shapes of kernel:
- tile kernels keep BLOCK_M whole rows in registers: one read, one write per element.
- loop kernels handle one row longer than a register tile: the forward keeps an
  online (running max, rescaled running sum) pair over column blocks, then writes in
  a second pass; the backward needs sum(dy*y) (or sum(dy)) first, then writes.
"""
from __future__ import annotations

import numpy as np
import triton
import triton.language as tl

from . import _launch as L

# Column block of the loop kernels (rows wider than _max_tile_cols).
_LOOP_BLOCK = 4096


@triton.jit
def _fwd_tile(X, Y, M, N, LOG: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
              ACC: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    mask = (rows < M)[:, None] & (cols < N)[None, :]
    offs = rows.to(tl.int64)[:, None] * N + cols[None, :]
    # Padding columns read -inf (exp -> 0); padding rows read 0 so that they compute
    # finite garbage (never stored) instead of -inf - -inf = NaN.
    pad = tl.where((rows < M)[:, None], float("-inf"), 0.0)
    x = tl.load(X + offs, mask=mask, other=pad).to(ACC)
    z = x - tl.max(x, axis=1)[:, None]
    e = tl.exp(z)
    s = tl.sum(e, axis=1)
    if LOG:
        y = z - tl.log(s)[:, None]
    else:
        y = e / s[:, None]
    tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _fwd_loop(X, Y, N, LOG: tl.constexpr, BLOCK_N: tl.constexpr, ACC: tl.constexpr):
    base = tl.program_id(0).to(tl.int64) * N
    cols = tl.arange(0, BLOCK_N)
    m = tl.full([], float("-inf"), ACC)
    s = tl.zeros([], ACC)
    for start in range(0, N, BLOCK_N):
        x = tl.load(X + base + start + cols, mask=start + cols < N, other=float("-inf")).to(ACC)
        m_new = tl.maximum(m, tl.max(x, axis=0))
        # While every value seen is -inf, rescale against 0 so no -inf - -inf NaN appears.
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        s = s * tl.exp(m - m_ref) + tl.sum(tl.exp(x - m_ref), axis=0)
        m = m_new
    log_s = tl.log(s)
    for start in range(0, N, BLOCK_N):
        mask = start + cols < N
        x = tl.load(X + base + start + cols, mask=mask, other=0.0).to(ACC)
        if LOG:
            y = x - m - log_s
        else:
            y = tl.exp(x - m) / s
        tl.store(Y + base + start + cols, y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_tile(Yv, DY, DX, M, N, LOG: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
              ACC: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    mask = (rows < M)[:, None] & (cols < N)[None, :]
    offs = rows.to(tl.int64)[:, None] * N + cols[None, :]
    y = tl.load(Yv + offs, mask=mask, other=0.0).to(ACC)
    dy = tl.load(DY + offs, mask=mask, other=0.0).to(ACC)
    if LOG:
        dx = dy - tl.exp(y) * tl.sum(dy, axis=1)[:, None]
    else:
        dx = y * (dy - tl.sum(dy * y, axis=1)[:, None])
    tl.store(DX + offs, dx.to(DX.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_loop(Yv, DY, DX, N, LOG: tl.constexpr, BLOCK_N: tl.constexpr, ACC: tl.constexpr):
    base = tl.program_id(0).to(tl.int64) * N
    cols = tl.arange(0, BLOCK_N)
    acc = tl.zeros([BLOCK_N], ACC)
    for start in range(0, N, BLOCK_N):
        mask = start + cols < N
        dy = tl.load(DY + base + start + cols, mask=mask, other=0.0).to(ACC)
        if LOG:
            acc += dy
        else:
            acc += dy * tl.load(Yv + base + start + cols, mask=mask, other=0.0).to(ACC)
    total = tl.sum(acc, axis=0)
    for start in range(0, N, BLOCK_N):
        mask = start + cols < N
        y = tl.load(Yv + base + start + cols, mask=mask, other=0.0).to(ACC)
        dy = tl.load(DY + base + start + cols, mask=mask, other=0.0).to(ACC)
        if LOG:
            dx = dy - tl.exp(y) * total
        else:
            dx = y * (dy - total)
        tl.store(DX + base + start + cols, dx.to(DX.dtype.element_ty), mask=mask)


def _max_tile_cols(dtype) -> int:
    # float64 rows take twice the registers of float32 ones.
    return 8192 if np.dtype(dtype).name == "float64" else 16384


def _forward(x, log: bool, loop_block: int | None = None):
    """loop_block forces the loop kernel with that column block (tests use it)."""
    xp = L.xp_of(x)
    x2 = L.as_rows(x)
    m, n = x2.shape
    y = xp.empty(x2.shape, x.dtype)
    if m == 0 or n == 0:
        return y.reshape(x.shape)
    _, acc = L.acc_dtype(x.dtype)
    tile = None if loop_block else L.row_tile(n, _max_tile_cols(x.dtype))
    if tile is not None:
        bm, bn = tile
        L.launch(_fwd_tile, (L.cdiv(m, bm),), x2, y, m, n, LOG=log, BLOCK_M=bm, BLOCK_N=bn,
                 ACC=acc, num_warps=L.warps_for(bm * bn))
    else:
        bn = loop_block or _LOOP_BLOCK
        L.launch(_fwd_loop, (m,), x2, y, n, LOG=log, BLOCK_N=bn, ACC=acc,
                 num_warps=L.warps_for(bn))
    return y.reshape(x.shape)


def _backward(y, dy, log: bool, loop_block: int | None = None):
    xp = L.xp_of(y)
    y2 = L.as_rows(y)
    dy2 = L.as_rows(dy)
    m, n = y2.shape
    dx = xp.empty(y2.shape, y.dtype)
    if m == 0 or n == 0:
        return dx.reshape(y.shape)
    _, acc = L.acc_dtype(y.dtype)
    tile = None if loop_block else L.row_tile(n, _max_tile_cols(y.dtype))
    if tile is not None:
        bm, bn = tile
        L.launch(_bwd_tile, (L.cdiv(m, bm),), y2, dy2, dx, m, n, LOG=log, BLOCK_M=bm,
                 BLOCK_N=bn, ACC=acc, num_warps=L.warps_for(bm * bn))
    else:
        bn = loop_block or _LOOP_BLOCK
        L.launch(_bwd_loop, (m,), y2, dy2, dx, n, LOG=log, BLOCK_N=bn, ACC=acc,
                 num_warps=L.warps_for(bn))
    return dx.reshape(y.shape)


def softmax_forward(x):
    return _forward(x, log=False)


def softmax_backward(y, dy):
    return _backward(y, dy, log=False)


def log_softmax_forward(x):
    return _forward(x, log=True)


def log_softmax_backward(y, dy):
    return _backward(y, dy, log=True)
