"""layer_norm over the last dim (size C): forward and backward.

Forward saves mean and rstd per row. Backward computes dx row by row and the
parameter gradients (dweight = sum dy*xhat, dbias = sum dy over all rows) without
atomics: the rows are split into G groups, each program sums its group into its own
row of a (G, C) partial buffer, and a second kernel adds the G partial rows up.
Rows wider than a register tile use loop kernels that walk the row in column blocks.

Squaring the deviations overflows once |x - mean| > ~1.8e19 (float32) / ~1.3e154
(float64): the variance is inf and rstd 0, a zeroed row. Such rows (rare) take a second
look, as in csrc/layer_norm.cpp: the deviations divided by the row's largest |deviation| s
are squared instead, rstd = (1/s) / sqrt(mean((xc/s)^2) + eps/s^2). The extra work sits
behind a branch on "did any row of this program overflow", so the common path only pays
for that test. The backward takes the small rstd as it is.

eps is a compile-time constant: Triton passes Python float arguments as float32,
which would round it for float64 inputs, and a model uses one eps.
"""
from __future__ import annotations

import numpy as np
import triton
import triton.language as tl

from . import _launch as L

_LOOP_BLOCK = 4096


@triton.jit
def _fwd_tile(X, W, B, Y, Mean, Rstd, M, C, EPS: tl.constexpr, HAS_W: tl.constexpr,
              HAS_B: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, ACC: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_C)
    rmask = rows < M
    cmask = cols < C
    mask = rmask[:, None] & cmask[None, :]
    offs = rows.to(tl.int64)[:, None] * C + cols[None, :]
    x = tl.load(X + offs, mask=mask, other=0.0).to(ACC)
    mean = tl.sum(x, axis=1) / C
    xc = tl.where(mask, x - mean[:, None], 0.0)
    var = tl.sum(xc * xc, axis=1) / C
    # 1/sqrt rather than rsqrt: the GPU's rsqrt is an approximation.
    rstd = 1.0 / tl.sqrt(var + EPS)
    y = xc * rstd[:, None]
    big = var == float("inf")  # squared deviations overflowed (module docstring)
    if tl.max(big.to(tl.int32), axis=0) > 0:
        s = tl.max(tl.abs(xc), axis=1)
        big = big & (s < float("inf"))  # inf inputs: no finite answer, rstd stays 0
        s = tl.where(big, s, 1.0)
        xs = xc / s[:, None]
        r = 1.0 / tl.sqrt(tl.sum(xs * xs, axis=1) / C + EPS / s / s)  # = s * rstd
        rstd = tl.where(big, r / s, rstd)
        y = tl.where(big[:, None], xs * r[:, None], y)  # r does not underflow
    if HAS_W:
        y = y * tl.load(W + cols, mask=cmask, other=0.0).to(ACC)[None, :]
    if HAS_B:
        y = y + tl.load(B + cols, mask=cmask, other=0.0).to(ACC)[None, :]
    tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)
    tl.store(Mean + rows, mean.to(Mean.dtype.element_ty), mask=rmask)
    tl.store(Rstd + rows, rstd.to(Rstd.dtype.element_ty), mask=rmask)


@triton.jit
def _fwd_loop(X, W, B, Y, Mean, Rstd, C, EPS: tl.constexpr, HAS_W: tl.constexpr,
              HAS_B: tl.constexpr, BLOCK_C: tl.constexpr, ACC: tl.constexpr):
    row = tl.program_id(0)
    base = row.to(tl.int64) * C
    cols = tl.arange(0, BLOCK_C)
    acc = tl.zeros([BLOCK_C], ACC)
    for start in range(0, C, BLOCK_C):
        acc += tl.load(X + base + start + cols, mask=start + cols < C, other=0.0).to(ACC)
    mean = tl.sum(acc, axis=0) / C
    # Second pass over (x - mean)^2 rather than E[x^2] - mean^2, which cancels badly.
    acc = tl.zeros([BLOCK_C], ACC)
    for start in range(0, C, BLOCK_C):
        mask = start + cols < C
        x = tl.load(X + base + start + cols, mask=mask, other=0.0).to(ACC)
        xc = tl.where(mask, x - mean, 0.0)
        acc += xc * xc
    var = tl.sum(acc, axis=0) / C
    rstd = 1.0 / tl.sqrt(var + EPS)
    if var == float("inf"):  # (module docstring) two more passes, for this rare row only
        m = tl.zeros([BLOCK_C], ACC)
        for start in range(0, C, BLOCK_C):
            mask = start + cols < C
            x = tl.load(X + base + start + cols, mask=mask, other=0.0).to(ACC)
            m = tl.maximum(m, tl.where(mask, tl.abs(x - mean), 0.0))
        s = tl.max(m, axis=0)
        if s < float("inf"):  # inf inputs: no finite answer, rstd stays 0
            acc = tl.zeros([BLOCK_C], ACC)
            for start in range(0, C, BLOCK_C):
                mask = start + cols < C
                x = tl.load(X + base + start + cols, mask=mask, other=0.0).to(ACC)
                xs = tl.where(mask, (x - mean) / s, 0.0)
                acc += xs * xs
            rstd = (1.0 / s) / tl.sqrt(tl.sum(acc, axis=0) / C + EPS / s / s)
    for start in range(0, C, BLOCK_C):
        mask = start + cols < C
        x = tl.load(X + base + start + cols, mask=mask, other=0.0).to(ACC)
        y = (x - mean) * rstd
        if HAS_W:
            y = y * tl.load(W + start + cols, mask=mask, other=0.0).to(ACC)
        if HAS_B:
            y = y + tl.load(B + start + cols, mask=mask, other=0.0).to(ACC)
        tl.store(Y + base + start + cols, y.to(Y.dtype.element_ty), mask=mask)
    tl.store(Mean + row, mean.to(Mean.dtype.element_ty))
    tl.store(Rstd + row, rstd.to(Rstd.dtype.element_ty))


@triton.jit
def _bwd_tile(DY, X, W, Mean, Rstd, DX, DWp, DBp, M, C, ROWS_PER_PROG,
              HAS_W: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
              ACC: tl.constexpr):
    g = tl.program_id(0)
    cols = tl.arange(0, BLOCK_C)
    cmask = cols < C
    if HAS_W:
        w = tl.load(W + cols, mask=cmask, other=0.0).to(ACC)
    dw = tl.zeros([BLOCK_C], ACC)
    db = tl.zeros([BLOCK_C], ACC)
    first = g * ROWS_PER_PROG
    for r0 in range(first, tl.minimum(first + ROWS_PER_PROG, M), BLOCK_M):
        rows = r0 + tl.arange(0, BLOCK_M)
        rmask = (rows < M) & (rows < first + ROWS_PER_PROG)
        mask = rmask[:, None] & cmask[None, :]
        offs = rows.to(tl.int64)[:, None] * C + cols[None, :]
        x = tl.load(X + offs, mask=mask, other=0.0).to(ACC)
        dy = tl.load(DY + offs, mask=mask, other=0.0).to(ACC)
        mean = tl.load(Mean + rows, mask=rmask, other=0.0).to(ACC)
        rstd = tl.load(Rstd + rows, mask=rmask, other=0.0).to(ACC)
        xhat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
        if HAS_W:
            wdy = dy * w[None, :]
        else:
            wdy = dy
        c1 = tl.sum(xhat * wdy, axis=1) / C
        c2 = tl.sum(wdy, axis=1) / C
        dx = (wdy - (xhat * c1[:, None] + c2[:, None])) * rstd[:, None]
        tl.store(DX + offs, dx.to(DX.dtype.element_ty), mask=mask)
        if HAS_W:
            dw += tl.sum(dy * xhat, axis=0)
        db += tl.sum(dy, axis=0)
    tl.store(DWp + g.to(tl.int64) * C + cols, dw, mask=cmask)
    tl.store(DBp + g.to(tl.int64) * C + cols, db, mask=cmask)


@triton.jit
def _bwd_loop(DY, X, W, Mean, Rstd, DX, DWp, DBp, M, C, ROWS_PER_PROG, HAS_W: tl.constexpr,
              BLOCK_C: tl.constexpr, ACC: tl.constexpr):
    # DWp/DBp come zeroed; this program owns row g of each, so read-add-write is safe.
    g = tl.program_id(0)
    cols = tl.arange(0, BLOCK_C)
    pbase = g.to(tl.int64) * C
    first = g * ROWS_PER_PROG
    for row in range(first, tl.minimum(first + ROWS_PER_PROG, M)):
        base = tl.cast(row, tl.int64) * C
        mean = tl.load(Mean + row).to(ACC)
        rstd = tl.load(Rstd + row).to(ACC)
        a1 = tl.zeros([BLOCK_C], ACC)
        a2 = tl.zeros([BLOCK_C], ACC)
        for start in range(0, C, BLOCK_C):
            mask = start + cols < C
            x = tl.load(X + base + start + cols, mask=mask, other=0.0).to(ACC)
            dy = tl.load(DY + base + start + cols, mask=mask, other=0.0).to(ACC)
            xhat = tl.where(mask, (x - mean) * rstd, 0.0)
            if HAS_W:
                dy = dy * tl.load(W + start + cols, mask=mask, other=0.0).to(ACC)
            a1 += xhat * dy
            a2 += dy
        c1 = tl.sum(a1, axis=0) / C
        c2 = tl.sum(a2, axis=0) / C
        for start in range(0, C, BLOCK_C):
            mask = start + cols < C
            x = tl.load(X + base + start + cols, mask=mask, other=0.0).to(ACC)
            dy = tl.load(DY + base + start + cols, mask=mask, other=0.0).to(ACC)
            xhat = tl.where(mask, (x - mean) * rstd, 0.0)
            if HAS_W:
                wdy = dy * tl.load(W + start + cols, mask=mask, other=0.0).to(ACC)
            else:
                wdy = dy
            dx = (wdy - (xhat * c1 + c2)) * rstd
            tl.store(DX + base + start + cols, dx.to(DX.dtype.element_ty), mask=mask)
            p = pbase + start + cols
            tl.store(DWp + p, tl.load(DWp + p, mask=mask, other=0.0) + dy * xhat, mask=mask)
            tl.store(DBp + p, tl.load(DBp + p, mask=mask, other=0.0) + dy, mask=mask)


@triton.jit
def _sum_partials(DWp, DBp, DW, DB, G, C, HAS_W: tl.constexpr, BLOCK_G: tl.constexpr,
                  BLOCK_C: tl.constexpr, ACC: tl.constexpr):
    cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < C
    dw = tl.zeros([BLOCK_G, BLOCK_C], ACC)
    db = tl.zeros([BLOCK_G, BLOCK_C], ACC)
    for g0 in range(0, G, BLOCK_G):
        gs = g0 + tl.arange(0, BLOCK_G)
        mask = (gs < G)[:, None] & cmask[None, :]
        offs = gs.to(tl.int64)[:, None] * C + cols[None, :]
        if HAS_W:
            dw += tl.load(DWp + offs, mask=mask, other=0.0)
        db += tl.load(DBp + offs, mask=mask, other=0.0)
    if HAS_W:
        tl.store(DW + cols, tl.sum(dw, axis=0).to(DW.dtype.element_ty), mask=cmask)
    tl.store(DB + cols, tl.sum(db, axis=0).to(DB.dtype.element_ty), mask=cmask)


def _max_tile_cols(dtype) -> int:
    return 8192 if np.dtype(dtype).name == "float64" else 16384


def _contiguous(p):
    return None if p is None else L.xp_of(p).ascontiguousarray(p)


def layer_norm_forward(x, weight, bias, eps, *, loop_block: int | None = None):
    """loop_block forces the loop kernel with that column block (tests use it)."""
    weight, bias = _contiguous(weight), _contiguous(bias)
    xp = L.xp_of(x)
    x2 = L.as_rows(x)
    m, c = x2.shape
    stat_dtype, acc = L.acc_dtype(x.dtype)
    y = xp.empty(x2.shape, x.dtype)
    mean = xp.empty((m,), stat_dtype)
    rstd = xp.empty((m,), stat_dtype)
    if m > 0 and c > 0:
        w = weight if weight is not None else x2
        b = bias if bias is not None else x2
        flags = dict(HAS_W=weight is not None, HAS_B=bias is not None, ACC=acc)
        tile = None if loop_block else L.row_tile(c, _max_tile_cols(x.dtype))
        if tile is not None:
            bm, bc = tile
            L.launch(_fwd_tile, (L.cdiv(m, bm),), x2, w, b, y, mean, rstd, m, c, EPS=float(eps),
                     BLOCK_M=bm, BLOCK_C=bc, num_warps=L.warps_for(bm * bc), **flags)
        else:
            bc = loop_block or _LOOP_BLOCK
            L.launch(_fwd_loop, (m,), x2, w, b, y, mean, rstd, c, EPS=float(eps), BLOCK_C=bc,
                     num_warps=L.warps_for(bc), **flags)
    lead = x.shape[:-1]
    return y.reshape(x.shape), mean.reshape(lead), rstd.reshape(lead)


def _groups(n_tiles: int) -> int:
    # Enough programs to fill a GPU (a few per SM) while keeping the (G, C) partial
    # buffers small; the interpreter runs programs one after another, so few.
    return max(1, min(n_tiles, 4 if L.interpreting() else 512))


def layer_norm_backward(dy, x, weight, mean, rstd, *, loop_block: int | None = None,
                        groups: int | None = None):
    """loop_block / groups force the loop kernel / the number of row groups (tests)."""
    weight = _contiguous(weight)
    xp = L.xp_of(x)
    x2 = L.as_rows(x)
    dy2 = L.as_rows(dy)
    m, c = x2.shape
    stat_dtype, acc = L.acc_dtype(x.dtype)
    mean = xp.ascontiguousarray(mean, dtype=stat_dtype).reshape(-1)
    rstd = xp.ascontiguousarray(rstd, dtype=stat_dtype).reshape(-1)
    dx = xp.empty(x2.shape, x.dtype)
    dweight = xp.empty((c,), weight.dtype) if weight is not None else None
    dbias = xp.empty((c,), x.dtype)
    if c == 0:
        return dx.reshape(x.shape), dweight, dbias
    if m == 0:
        if dweight is not None:
            dweight[...] = 0
        dbias[...] = 0
        return dx.reshape(x.shape), dweight, dbias
    w = weight if weight is not None else x2
    has_w = weight is not None
    tile = None if loop_block else L.row_tile(c, _max_tile_cols(x.dtype))
    if tile is not None:
        bm, bc = tile
        bm = min(bm, L.next_pow2(m))
        g = groups or _groups(L.cdiv(m, bm))
        per = L.cdiv(m, g)
        g = L.cdiv(m, per)
        dwp = xp.empty((g, c), stat_dtype)
        dbp = xp.empty((g, c), stat_dtype)
        L.launch(_bwd_tile, (g,), dy2, x2, w, mean, rstd, dx, dwp, dbp, m, c, per,
                 HAS_W=has_w, BLOCK_M=bm, BLOCK_C=bc, ACC=acc, num_warps=L.warps_for(bm * bc))
    else:
        bc = loop_block or _LOOP_BLOCK
        g = groups or _groups(m)
        per = L.cdiv(m, g)
        g = L.cdiv(m, per)
        dwp = xp.zeros((g, c), stat_dtype)
        dbp = xp.zeros((g, c), stat_dtype)
        L.launch(_bwd_loop, (g,), dy2, x2, w, mean, rstd, dx, dwp, dbp, m, c, per,
                 HAS_W=has_w, BLOCK_C=bc, ACC=acc, num_warps=L.warps_for(bc))
    block_c = min(L.next_pow2(c), 256)
    block_g = min(L.next_pow2(g), 32 if not L.interpreting() else 512)
    L.launch(_sum_partials, (L.cdiv(c, block_c),), dwp, dbp,
             dweight if has_w else dbias, dbias, g, c, HAS_W=has_w, BLOCK_G=block_g,
             BLOCK_C=block_c, ACC=acc, num_warps=4)
    return dx.reshape(x.shape), dweight, dbias
