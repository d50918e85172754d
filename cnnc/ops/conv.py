"""Convolutions: conv (cross-correlation, as every framework computes it) and conv_transpose."""

from __future__ import annotations

from typing import Any

from ..backend.chain import bias_chain
from ..backend.cpu.fused import hosting
from ..backend.cpu.kernel import OUT, CpuKernel, In, Param, Scratch
from ..backend.cuda.fused import hosting as cuda_hosting
from ..backend.cuda.kernel import CudaKernel
from .base import (
    Attr,
    AttrError,
    Attrs,
    Fusion,
    Op,
    ShapeError,
    TensorType,
    boolean,
    expect_float,
    expect_rank,
    int_list,
    nonnegative_pair,
    param,
    positive_int,
    positive_pair,
    register,
    window_out,
)
from .templates import indented
from ..graph import BATCH


def padding(value: Any) -> Any:
    """An integer, a pair [h, w], or "same" / "valid"."""
    if value in ("same", "valid"):
        return value
    if isinstance(value, str):
        raise AttrError(f'expected an integer, a pair, "same" or "valid", got "{value}"')
    return nonnegative_pair(value)


def conv_pads(a: Attrs) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) padding. "same" puts the odd pixel at the end, as PyTorch does."""
    if a.pad == "valid":
        return (0, 0, 0, 0)
    if a.pad == "same":
        th = a.dilation[0] * (a.kernel[0] - 1)
        tw = a.dilation[1] * (a.kernel[1] - 1)
        return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    return (a.pad[0], a.pad[0], a.pad[1], a.pad[1])


def _check_groups(name: str, cin: int, cout: int, groups: int) -> None:
    if cin % groups or cout % groups:
        raise ShapeError(f"{name}: groups={groups} must divide both the input channels ({cin}) and the output channels ({cout})")


# -- kernels ------------------------------------------------------------------
#
# Every 4-D buffer is NHWC; weights keep PyTorch's layout [out, in/groups, kh, kw].
# One source serves conv, conv_transpose and their gradients:
#   conv_forward      im2col + GEMM; also conv_transpose's input gradient
#   conv_grad_input   gather + GEMM; also conv_transpose's forward
#   conv_grad_weight  dy^T . im2col; also conv_transpose's weight gradient (operands swapped)
#   direct_*          the same three for groups of very few channels (depthwise)
# Work is split into tiles of rows (pixels across the whole batch) under one prange;
# each thread builds its tile in its own slice of the scratch buffer (found with
# get_thread_id) and calls BLAS gemm, held to one thread. Serial work lives in plain
# @njit helpers: the parallel entries stay small, which keeps their compile time down.
# Flat offsets are cast to uint64 so that Numba emits no negative-index wraparound in
# the copy loops.
CONV_SOURCE = """
from numba import types

# BLAS ?gemm through Numba's own helper (the one np.dot calls), resolved by name, so the
# kernels stay cacheable. Unlike np.dot it takes leading dimensions and beta: GEMMs read
# and write channel slices of NHWC rows in place and accumulate without a temporary.
_xxgemm = types.ExternalFunction("numba_xxgemm", types.intc(
    types.int8, types.int8, types.int8, types.intp, types.intp, types.intp,
    types.intp, types.intp, types.intp, types.intp, types.intp, types.intp, types.intp, types.intp))


@njit(cache=True)
def _gemm(at, m, n, k, a, ao, lda, b, bo, ldb, c, co, ldc, one_zero, accumulate):
    # Row-major c[m, n] (= or +=) op(a)[m, k] . b[k, n], every matrix given as a flat array,
    # an offset and a row stride; op(a) is a [m, k], or with `at` the transpose of a [k, m].
    # `one_zero` is [1, 0] in the arrays' dtype (alpha and beta are passed by pointer).
    s = a.itemsize
    kind = np.int8(115) if s == 4 else np.int8(100)  # 's' or 'd'
    consts = np.intp(one_zero.ctypes.data)
    # Column-major BLAS sees each row-major matrix transposed: c^T = b^T . op(a)^T.
    _xxgemm(kind, np.int8(78), np.int8(84) if at else np.int8(78), n, m, k, consts,
            np.intp(b.ctypes.data) + bo * s, ldb, np.intp(a.ctypes.data) + ao * s, lda,
            consts + (0 if accumulate else s), np.intp(c.ctypes.data) + co * s, ldc)


@njit(cache=True)
def _one_zero(like):
    # [1, 0] for alpha and beta. Allocating here, not in a parallel kernel, keeps Numba
    # from turning the allocation into a parallel region of its own.
    v = np.zeros(2, like.dtype)
    v[0] = 1.0
    return v


@njit(cache=True)
def _fit_tile(tile, total, nslots):
    # Rows per tile: at most `tile` (what the scratch holds), and as even as possible over
    # a multiple of nslots tiles, since prange hands each thread an equal run of tiles.
    n = (total + tile - 1) // tile
    n = (n + nslots - 1) // nslots * nslots
    return max(1, (total + n - 1) // n)


@njit(cache=True)
def _im2col(xf, colf, r0, rows, H, W, C, OH, OW, KH, KW, sh, sw, pt, pl, dh, dw, c0, cg):
    # Row r holds output pixel r0 + r (across the batch); columns are (kh, kw, c) so
    # that each tap copies a contiguous run of cg channels starting at channel c0.
    K = KH * KW * cg
    ohw = OH * OW
    run = KW * cg
    for r in range(rows):
        p = r0 + r
        n = p // ohw
        q = p - n * ohw
        oh = q // OW
        ow = q - oh * OW
        iw0 = ow * sw - pl
        # With dilation 1, no groups and the window row inside the image, the whole
        # window row (kw, c) is one contiguous run of the input row.
        whole = dw == 1 and cg == C and iw0 >= 0 and iw0 + KW <= W
        for kh in range(KH):
            ih = oh * sh - pt + kh * dh
            dst = np.uint64(r * K + kh * run)
            if ih < 0 or ih >= H:
                for c in range(run):
                    colf[dst + np.uint64(c)] = 0.0
            elif whole:
                src = np.uint64(((n * H + ih) * W + iw0) * C)
                for c in range(run):
                    colf[dst + np.uint64(c)] = xf[src + np.uint64(c)]
            else:
                for kw in range(KW):
                    iw = iw0 + kw * dw
                    d = dst + np.uint64(kw * cg)
                    if iw >= 0 and iw < W:
                        src = np.uint64(((n * H + ih) * W + iw) * C + c0)
                        for c in range(cg):
                            colf[d + np.uint64(c)] = xf[src + np.uint64(c)]
                    else:
                        for c in range(cg):
                            colf[d + np.uint64(c)] = 0.0


@njit(cache=True)
def _gemm_weight(weight, wm, groups, u):
    # wm[g, (kh, kw, ci), j] = weight[g*og + j, ci, kh, kw]: one GEMM matrix per group,
    # filled here for block u of 16 output channels (whole cache lines written, 16 weight
    # rows read), so that a prange over the blocks fills it all.
    Cout, cg, KH, KW = weight.shape
    og = Cout // groups
    K = KH * KW * cg
    nb = (og + 15) // 16
    g = u // nb
    j0 = (u - g * nb) * 16
    j1 = min(og, j0 + 16)
    for kh in range(KH):
        for kw in range(KW):
            for ci in range(cg):
                row = np.uint64((g * K + (kh * KW + kw) * cg + ci) * og)
                for j in range(j0, j1):
                    wm[row + np.uint64(j)] = weight[g * og + j, ci, kh, kw]


@njit(cache=True)
def _forward_tile(x, wm, e, out, col, one_zero, r0, rows, KH, KW, sh, sw, pt, pl, dh, dw, groups, plain):
    # Output rows r0 .. r0+rows (pixels across the batch): im2col into `col`, GEMM into the
    # output rows (each group's channel slice in place), then the epilogue (the bias, and
    # whatever the fusion pass put there) while they are in cache.
    N, H, W, C = x.shape
    OH, OW, Cout = out.shape[1], out.shape[2], out.shape[3]
    cg = C // groups
    og = Cout // groups
    K = KH * KW * cg
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    if plain:
        _gemm(False, rows, Cout, C, xf, r0 * C, C, wm, 0, Cout, of, r0 * Cout, Cout, one_zero, False)
    else:
        for g in range(groups):
            _im2col(xf, col, r0, rows, H, W, C, OH, OW, KH, KW, sh, sw, pt, pl, dh, dw, g * cg, cg)
            _gemm(False, rows, og, K, col, 0, K, wm, g * K * og, og, of, r0 * Cout + g * og, Cout, one_zero, False)
    _epilogue(of, r0 * Cout, (r0 + rows) * Cout, Cout, e)


@njit(parallel=True, cache=True)
def conv_forward(x, weight, out, scratch, e, sh, sw, pt, pl, dh, dw, groups, tile, nslots):
    # out[n, oh, ow, co] = bias[co] + sum x[n, oh*sh - pt + kh*dh, ow*sw - pl + kw*dw, g*cg + ci] * weight[co, ci, kh, kw]
    N, H, W, C = x.shape
    OH, OW = out.shape[1], out.shape[2]
    KH, KW = weight.shape[2], weight.shape[3]
    K = KH * KW * (C // groups)
    wsize = weight.size
    wm = scratch[:wsize]
    og = weight.shape[0] // groups
    for u in prange(groups * ((og + 15) // 16)):
        _gemm_weight(weight, wm, groups, u)
    one_zero = _one_zero(scratch)
    # A 1x1, stride-1, unpadded, ungrouped conv is a GEMM over the pixels as they are.
    plain = KH == 1 and KW == 1 and sh == 1 and sw == 1 and pt == 0 and pl == 0 and groups == 1 and OH == H and OW == W
    per = tile * K
    total = N * OH * OW
    rt = _fit_tile(tile, total, nslots)
    for t in prange((total + rt - 1) // rt):
        base = wsize + get_thread_id() * per
        r0 = t * rt
        _forward_tile(x, wm, e, out, scratch[base : base + per], one_zero, r0, min(rt, total - r0),
                      KH, KW, sh, sw, pt, pl, dh, dw, groups, plain)


@njit(cache=True)
def _phase_taps(K, d, p, s):
    # The taps k of one axis, grouped by the phase (k*d - p) % s of the input pixels they reach.
    count = np.zeros(s, np.int64)
    taps = np.zeros((s, K), np.int64)
    for k in range(K):
        f = (k * d - p) % s
        taps[f, count[f]] = k
        count[f] += 1
    return count, taps


@njit(cache=True)
def _phase_plan(weight, N, H, W, og, sh, sw, pt, pl, dh, dw, groups, tile):
    # The taps of each phase f = ph*sw + pw; where each phase's weight matrices start in
    # wm (woff: per group, [(a, b, j), ci] over its taps); the first tile of each phase.
    cg, KH, KW = weight.shape[1], weight.shape[2], weight.shape[3]
    nkh, khs = _phase_taps(KH, dh, pt, sh)
    nkw, kws = _phase_taps(KW, dw, pl, sw)
    nph = sh * sw
    woff = np.zeros(nph + 1, np.int64)
    tstart = np.zeros(nph + 1, np.int64)
    for f in range(nph):
        ph = f // sw
        pw = f - ph * sw
        woff[f + 1] = woff[f] + groups * nkh[ph] * nkw[pw] * og * cg
        qh = (H - ph + sh - 1) // sh if ph < H else 0
        qw = (W - pw + sw - 1) // sw if pw < W else 0
        tstart[f + 1] = tstart[f] + (N * qh * qw + tile - 1) // tile
    return nkh, khs, nkw, kws, woff, tstart


@njit(cache=True)
def _phase_weight(weight, wm, nkh, khs, nkw, kws, woff, sw, groups, co):
    # Output channel co's rows of every phase's weight matrix [(a, b, j), ci].
    cg = weight.shape[1]
    og = weight.shape[0] // groups
    g = co // og
    j = co - g * og
    for f in range(woff.size - 1):
        ph = f // sw
        pw = f - ph * sw
        kp = nkh[ph] * nkw[pw] * og
        for a in range(nkh[ph]):
            for b in range(nkw[pw]):
                row = woff[f] + (g * kp + (a * nkw[pw] + b) * og + j) * cg
                for ci in range(cg):
                    wm[row + ci] = weight[co, ci, khs[ph, a], kws[pw, b]]


@njit(cache=True)
def _grad_input_tile(dy, wm, e, dx, work, one_zero, ph, pw, r0, rows, tile, na, kh_list, nb, kw_list,
                     kmax, sh, sw, pt, pl, dh, dw, groups):
    # Rows r0 .. r0+rows of phase (ph, pw), whose pixels are (n, ph + sh*i, pw + sw*j): gather
    # the dy of the taps that reach them, GEMM with the phase's weight matrix, store.
    N, OH, OW, Cout = dy.shape
    H, W, C = dx.shape[1], dx.shape[2], dx.shape[3]
    cg = C // groups
    og = Cout // groups
    qh = (H - ph + sh - 1) // sh
    qw = (W - pw + sw - 1) // sw
    kp = na * nb * og
    dyf = dy.reshape(dy.size)
    dxf = dx.reshape(dx.size)
    ot = work[tile * kmax : tile * kmax + rows * cg]
    # At stride 1 the phase's rows are dx's rows, in order: GEMM straight into them.
    inplace = sh == 1 and sw == 1
    for g in range(groups):
        for r in range(rows):
            p = r0 + r
            n = p // (qh * qw)
            q = p - n * qh * qw
            i = q // qw
            ih = ph + sh * i
            iw = pw + sw * (q - i * qw)
            for a in range(na):
                th = ih + pt - kh_list[a] * dh
                oh = th // sh
                inside = th >= 0 and oh < OH
                for b in range(nb):
                    tw = iw + pl - kw_list[b] * dw
                    ow = tw // sw
                    dst = np.uint64(r * kp + (a * nb + b) * og)
                    if inside and tw >= 0 and ow < OW:
                        src = np.uint64(((n * OH + oh) * OW + ow) * Cout + g * og)
                        for j in range(og):
                            work[dst + np.uint64(j)] = dyf[src + np.uint64(j)]
                    else:
                        for j in range(og):
                            work[dst + np.uint64(j)] = 0.0
        if inplace:  # at stride 1 every tap reaches every pixel, so kp > 0
            _gemm(False, rows, cg, kp, work, 0, kp, wm, g * kp * cg, cg, dxf, r0 * C + g * cg, C, one_zero, False)
        else:
            if kp > 0:
                _gemm(False, rows, cg, kp, work, 0, kp, wm, g * kp * cg, cg, ot, 0, cg, one_zero, False)
            else:
                ot[:] = 0.0
            for r in range(rows):
                p = r0 + r
                n = p // (qh * qw)
                q = p - n * qh * qw
                i = q // qw
                dst = np.uint64(((n * H + ph + sh * i) * W + pw + sw * (q - i * qw)) * C + g * cg)
                src = np.uint64(r * cg)
                for ci in range(cg):
                    dxf[dst + np.uint64(ci)] = ot[src + np.uint64(ci)]
    # The epilogue on the rows just written: one run at stride 1, a pixel at a time otherwise.
    if inplace:
        _epilogue(dxf, r0 * C, (r0 + rows) * C, C, e)
    else:
        for r in range(rows):
            p = r0 + r
            n = p // (qh * qw)
            q = p - n * qh * qw
            i = q // qw
            dst = ((n * H + ph + sh * i) * W + pw + sw * (q - i * qw)) * C
            _epilogue(dxf, dst, dst + C, C, e)


@njit(parallel=True, cache=True)
def conv_grad_input(dy, weight, dx, scratch, e, sh, sw, pt, pl, dh, dw, groups, tile, nslots):
    # dx[n, ih, iw, g*cg + ci] = bias + sum dy[n, oh, ow, co] * weight[co, ci, kh, kw] over the
    # (oh, ow, kh, kw) with oh*sh - pt + kh*dh = ih and ow*sw - pl + kw*dw = iw.
    # Gather formulation: each input pixel collects the dy rows of the output pixels whose
    # windows cover it, then one GEMM per group; tiles own their dx rows, so no races.
    # Pixels are grouped by phase (ih % sh, iw % sw): all pixels of one phase are reached
    # by the same taps, so the columns hold no structural zeros at stride > 1.
    N, OH, OW, Cout = dy.shape
    H, W, C = dx.shape[1], dx.shape[2], dx.shape[3]
    cg, KH, KW = weight.shape[1], weight.shape[2], weight.shape[3]
    og = Cout // groups
    nph = sh * sw
    rt = _fit_tile(tile, N * H * W, nslots)
    nkh, khs, nkw, kws, woff, tstart = _phase_plan(weight, N, H, W, og, sh, sw, pt, pl, dh, dw, groups, rt)
    wsize = weight.size
    wm = scratch[:wsize]
    for co in prange(Cout):
        _phase_weight(weight, wm, nkh, khs, nkw, kws, woff, sw, groups, co)
    one_zero = _one_zero(scratch)
    kmax = KH * KW * og
    per = tile * (kmax + cg)
    for t in prange(tstart[nph]):
        base = wsize + get_thread_id() * per
        f = 0
        while tstart[f + 1] <= t:
            f += 1
        ph = f // sw
        pw = f - ph * sw
        r0 = (t - tstart[f]) * rt
        rows = min(rt, N * ((H - ph + sh - 1) // sh) * ((W - pw + sw - 1) // sw) - r0)
        _grad_input_tile(dy, wm[woff[f] : woff[f + 1]], e, dx, scratch[base : base + per], one_zero,
                         ph, pw, r0, rows, tile, nkh[ph], khs[ph], nkw[pw], kws[pw], kmax, sh, sw, pt, pl, dh, dw, groups)


@njit(cache=True)
def _grad_weight_tiles(x, dy, acc, col, one_zero, t0, t1, tile, KH, KW, sh, sw, pt, pl, dh, dw, groups):
    # acc[co, (kh, kw, ci)] = the sum of dy^T . col over the row tiles t0 .. t1: each output
    # channel's row is contiguous, so the reduction reads and writes whole rows.
    N, H, W, C = x.shape
    OH, OW, Cout = dy.shape[1], dy.shape[2], dy.shape[3]
    cg = C // groups
    og = Cout // groups
    K = KH * KW * cg
    total = N * OH * OW
    xf = x.reshape(x.size)
    dyf = dy.reshape(dy.size)
    if t1 == t0:
        acc[:] = 0.0
    for t in range(t0, t1):
        r0 = t * tile
        rows = min(tile, total - r0)
        for g in range(groups):
            _im2col(xf, col, r0, rows, H, W, C, OH, OW, KH, KW, sh, sw, pt, pl, dh, dw, g * cg, cg)
            # The first tile overwrites (beta = 0), so acc needs no clearing pass.
            _gemm(True, og, K, rows, dyf, r0 * Cout + g * og, Cout, col, 0, K, acc, g * og * K, K, one_zero, t > t0)


@njit(cache=True)
def _reduce_slots(scratch, per, nslots, dwt, co):
    # dwt[co, ci, kh, kw] = the sum over slots of acc[co, (kh, kw, ci)].
    Cout, cg, KH, KW = dwt.shape
    K = KH * KW * cg
    src = np.uint64(co * K)
    for kh in range(KH):
        for kw in range(KW):
            for ci in range(cg):
                i = src + np.uint64((kh * KW + kw) * cg + ci)
                v = scratch[i]
                for s in range(1, nslots):
                    v += scratch[np.uint64(s * per) + i]
                dwt[co, ci, kh, kw] = v


@njit(cache=True)
def _reduce_direct_slots(scratch, per, nslots, dwt, co):
    # dwt[co] = the sum over slots of acc [(kh, kw), co, ci] (the direct kernels' layout).
    Cout, cg, KH, KW = dwt.shape
    for ci in range(cg):
        for kh in range(KH):
            for kw in range(KW):
                i = ((kh * KW + kw) * Cout + co) * cg + ci
                v = scratch[i]
                for s in range(1, nslots):
                    v += scratch[s * per + i]
                dwt[co, ci, kh, kw] = v


@njit(parallel=True, cache=True)
def conv_grad_weight(x, dy, dwt, scratch, sh, sw, pt, pl, dh, dw, groups, tile, nslots):
    # dwt[co, ci, kh, kw] = sum over output pixels of dy[n, oh, ow, co] * x[n, oh*sh - pt + kh*dh, ow*sw - pl + kw*dw, g*cg + ci]:
    # dy^T . col per row tile, accumulated per slot (a fixed share of the tiles, so the
    # sum does not depend on scheduling), then reduced into PyTorch's layout.
    N, OH, OW, Cout = dy.shape
    KH, KW = dwt.shape[2], dwt.shape[3]
    K = KH * KW * dwt.shape[1]
    wsize = dwt.size
    per = wsize + tile * K
    rt = _fit_tile(tile, N * OH * OW, nslots)
    ntiles = (N * OH * OW + rt - 1) // rt
    one_zero = _one_zero(scratch)
    for s in prange(nslots):
        base = s * per
        _grad_weight_tiles(x, dy, scratch[base : base + wsize], scratch[base + wsize : base + per], one_zero,
                           s * ntiles // nslots, (s + 1) * ntiles // nslots, rt, KH, KW, sh, sw, pt, pl, dh, dw, groups)
    for co in prange(Cout):
        _reduce_slots(scratch, per, nslots, dwt, co)


@njit(cache=True)
def _direct_weight(weight, wm):
    # wm[(kh, kw), co, ci] = weight[co, ci, kh, kw]
    Cout, cg, KH, KW = weight.shape
    for co in range(Cout):
        for ci in range(cg):
            for kh in range(KH):
                for kw in range(KW):
                    wm[((kh * KW + kw) * Cout + co) * cg + ci] = weight[co, ci, kh, kw]


@njit(cache=True)
def _direct_forward_tile(x, wm, e, out, p0, p1, KH, KW, sh, sw, pt, pl, dh, dw, groups):
    N, H, W, C = x.shape
    OH, OW, Cout = out.shape[1], out.shape[2], out.shape[3]
    cg = C // groups
    og = Cout // groups
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    ohw = OH * OW
    for p in range(p0, p1):
        n = p // ohw
        q = p - n * ohw
        oh = q // OW
        ow = q - oh * OW
        ob = np.uint64(p * Cout)
        for c in range(Cout):
            of[ob + np.uint64(c)] = 0.0
        for kh in range(KH):
            ih = oh * sh - pt + kh * dh
            if ih < 0 or ih >= H:
                continue
            for kw in range(KW):
                iw = ow * sw - pl + kw * dw
                if iw < 0 or iw >= W:
                    continue
                xb = np.uint64(((n * H + ih) * W + iw) * C)
                tb = np.uint64((kh * KW + kw) * Cout * cg)
                if cg == 1 and og == 1:
                    for c in range(Cout):
                        of[ob + np.uint64(c)] += xf[xb + np.uint64(c)] * wm[tb + np.uint64(c)]
                else:
                    for g in range(groups):
                        for j in range(og):
                            co = g * og + j
                            s = 0.0
                            for ci in range(cg):
                                s += xf[xb + np.uint64(g * cg + ci)] * wm[tb + np.uint64(co * cg + ci)]
                            of[ob + np.uint64(co)] += s
    _epilogue(of, p0 * Cout, p1 * Cout, Cout, e)


@njit(parallel=True, cache=True)
def direct_forward(x, weight, out, scratch, e, sh, sw, pt, pl, dh, dw, groups, tile, nslots):
    # conv_forward for groups of few channels (depthwise): per output pixel, a loop over the
    # taps, vectorized over the channels; a GEMM of a few columns per group would waste its tile.
    wm = scratch[: weight.size]
    _direct_weight(weight, wm)
    total = out.shape[0] * out.shape[1] * out.shape[2]
    for t in prange((total + tile - 1) // tile):
        _direct_forward_tile(x, wm, e, out, t * tile, min(total, (t + 1) * tile),
                             weight.shape[2], weight.shape[3], sh, sw, pt, pl, dh, dw, groups)


@njit(cache=True)
def _direct_grad_input_tile(dy, wm, e, dx, p0, p1, KH, KW, sh, sw, pt, pl, dh, dw, groups):
    N, OH, OW, Cout = dy.shape
    H, W, C = dx.shape[1], dx.shape[2], dx.shape[3]
    cg = C // groups
    og = Cout // groups
    dyf = dy.reshape(dy.size)
    dxf = dx.reshape(dx.size)
    hw = H * W
    for p in range(p0, p1):
        n = p // hw
        q = p - n * hw
        ih = q // W
        iw = q - ih * W
        db = np.uint64(p * C)
        for c in range(C):
            dxf[db + np.uint64(c)] = 0.0
        for kh in range(KH):
            th = ih + pt - kh * dh
            if th < 0 or th % sh != 0 or th // sh >= OH:
                continue
            oh = th // sh
            for kw in range(KW):
                tw = iw + pl - kw * dw
                if tw < 0 or tw % sw != 0 or tw // sw >= OW:
                    continue
                ow = tw // sw
                yb = np.uint64(((n * OH + oh) * OW + ow) * Cout)
                tb = np.uint64((kh * KW + kw) * Cout * cg)
                if cg == 1 and og == 1:
                    for c in range(C):
                        dxf[db + np.uint64(c)] += dyf[yb + np.uint64(c)] * wm[tb + np.uint64(c)]
                else:
                    for g in range(groups):
                        for ci in range(cg):
                            s = 0.0
                            for j in range(og):
                                co = g * og + j
                                s += dyf[yb + np.uint64(co)] * wm[tb + np.uint64(co * cg + ci)]
                            dxf[db + np.uint64(g * cg + ci)] += s
    _epilogue(dxf, p0 * C, p1 * C, C, e)


@njit(parallel=True, cache=True)
def direct_grad_input(dy, weight, dx, scratch, e, sh, sw, pt, pl, dh, dw, groups, tile, nslots):
    # conv_grad_input for groups of few channels: per input pixel, a loop over the taps that
    # reach it (those whose offset is a multiple of the stride), vectorized over the channels.
    wm = scratch[: weight.size]
    _direct_weight(weight, wm)
    total = dx.shape[0] * dx.shape[1] * dx.shape[2]
    for t in prange((total + tile - 1) // tile):
        _direct_grad_input_tile(dy, wm, e, dx, t * tile, min(total, (t + 1) * tile),
                                weight.shape[2], weight.shape[3], sh, sw, pt, pl, dh, dw, groups)


@njit(cache=True)
def _direct_grad_weight_rows(x, dy, acc, p0, p1, KH, KW, sh, sw, pt, pl, dh, dw, groups):
    # acc[(kh, kw), co, ci] over the output pixels p0 .. p1.
    N, H, W, C = x.shape
    OH, OW, Cout = dy.shape[1], dy.shape[2], dy.shape[3]
    cg = C // groups
    og = Cout // groups
    xf = x.reshape(x.size)
    dyf = dy.reshape(dy.size)
    ohw = OH * OW
    acc[:] = 0.0
    for p in range(p0, p1):
        n = p // ohw
        q = p - n * ohw
        oh = q // OW
        ow = q - oh * OW
        yb = np.uint64(p * Cout)
        for kh in range(KH):
            ih = oh * sh - pt + kh * dh
            if ih < 0 or ih >= H:
                continue
            for kw in range(KW):
                iw = ow * sw - pl + kw * dw
                if iw < 0 or iw >= W:
                    continue
                xb = np.uint64(((n * H + ih) * W + iw) * C)
                tb = np.uint64((kh * KW + kw) * Cout * cg)
                if cg == 1 and og == 1:
                    for c in range(Cout):
                        acc[tb + np.uint64(c)] += dyf[yb + np.uint64(c)] * xf[xb + np.uint64(c)]
                else:
                    for g in range(groups):
                        for j in range(og):
                            co = g * og + j
                            v = dyf[yb + np.uint64(co)]
                            for ci in range(cg):
                                acc[tb + np.uint64(co * cg + ci)] += v * xf[xb + np.uint64(g * cg + ci)]


@njit(parallel=True, cache=True)
def direct_grad_weight(x, dy, dwt, scratch, sh, sw, pt, pl, dh, dw, groups, tile, nslots):
    # conv_grad_weight for groups of few channels: each slot accumulates [(kh, kw), co, ci]
    # over its share of the output pixels, vectorized over the channels; then a reduction
    # (these weights are small).
    per = dwt.size
    total = dy.shape[0] * dy.shape[1] * dy.shape[2]
    for s in prange(nslots):
        _direct_grad_weight_rows(x, dy, scratch[s * per : (s + 1) * per], s * total // nslots, (s + 1) * total // nslots,
                                 dwt.shape[2], dwt.shape[3], sh, sw, pt, pl, dh, dw, groups)
    for co in prange(dwt.shape[0]):
        _reduce_direct_slots(scratch, per, nslots, dwt, co)
"""


def _slots() -> int:
    """Thread slots in scratch: get_thread_id() is below Numba's pool size."""
    from numba import config

    return max(1, int(config.NUMBA_NUM_THREADS))


def _tile(k: int) -> int:
    """Rows (pixels) per GEMM tile for k columns.

    Larger tiles measured faster up to about 512 rows for 64..256 channels, and a GEMM
    of 128 rows ran a quarter slower than one of 256 at 512 channels; past about 1M
    elements (4 MB in float32) per tile, larger ones only grow each thread's scratch.
    The kernels shrink tiles when the batch is small, so that every thread gets work.
    """
    return min(512, max(256, (1 << 20) // max(k, 1)))


def _geometry(stride, pads, dilation, groups) -> tuple[int, ...]:
    return (stride[0], stride[1], pads[0], pads[1], dilation[0], dilation[1], groups)


DIRECT_TILE = 64  # pixels per prange iteration in the direct kernels


def _direct(cg: int, og: int) -> bool:
    """Groups this narrow (depthwise: 1 x 1) go to the direct kernels: a GEMM of a few columns wastes its tile."""
    return cg * og <= 4


def forward_kernel(cin: int, cout: int, kernel, stride, pads, dilation, groups: int, epilogue) -> CpuKernel:
    """conv_forward from input 0 (`cin` channels) with `weight` into `cout` channels: conv,
    and conv_transpose's input gradient. `epilogue` (a Chain or None) runs on each tile."""
    cg, og = cin // groups, cout // groups
    k = kernel[0] * kernel[1] * cg
    tile = _tile(k)
    slots = _slots()
    if _direct(cg, og):
        entry, size, tile = "direct_forward", cout * k, DIRECT_TILE
    else:
        entry, size = "conv_forward", cout * k + slots * tile * k
    return hosting(
        CONV_SOURCE, entry, epilogue,
        (In(0), Param("weight"), OUT, Scratch((size,))), (*_geometry(stride, pads, dilation, groups), tile, slots),
    )


def grad_input_kernel(cin: int, cout: int, kernel, stride, pads, dilation, groups: int, epilogue) -> CpuKernel:
    """conv_grad_input from input 0 (dy, `cout` channels) with `weight` into `cin` channels:
    conv's input gradient, and conv_transpose's forward."""
    cg, og = cin // groups, cout // groups
    kmax = kernel[0] * kernel[1] * og
    tile = _tile(kmax)
    slots = _slots()
    wsize = cout * kernel[0] * kernel[1] * cg
    if _direct(cg, og):
        entry, size, tile = "direct_grad_input", wsize, DIRECT_TILE
    else:
        entry, size = "conv_grad_input", wsize + slots * tile * (kmax + cg)
    return hosting(
        CONV_SOURCE, entry, epilogue,
        (In(0), Param("weight"), OUT, Scratch((size,))), (*_geometry(stride, pads, dilation, groups), tile, slots),
    )


def grad_weight_kernel(cin: int, cout: int, kernel, stride, pads, dilation, groups: int) -> CpuKernel:
    """conv_grad_weight from inputs (x with `cin` channels, dy with `cout`) into [cout, cin/groups, kh, kw]."""
    cg, og = cin // groups, cout // groups
    k = kernel[0] * kernel[1] * cg
    tile = _tile(k)
    slots = _slots()
    if _direct(cg, og):
        entry, size = "direct_grad_weight", slots * cout * k
    else:
        entry = "conv_grad_weight"
        size = slots * (groups * k * og + tile * k)
    return CpuKernel(
        CONV_SOURCE,
        entry,
        (In(0), In(1), OUT, Scratch((size,)), *_geometry(stride, pads, dilation, groups), tile, slots),
    )


# -- CUDA kernels -------------------------------------------------------------
#
# The same three computations as implicit GEMMs on the GPU, one tile of the result per
# block of CONV_TILE x CONV_TILE threads: threadIdx.x walks the result's columns
# (channels: contiguous in NHWC, so loads and stores of a warp are coalesced) and
# threadIdx.y its rows (pixels across the batch). K is looped over in chunks of
# CONV_TILE staged through shared memory; gathered patch elements outside the image
# are zero. blockIdx.z is the group. Shared arrays need their element type when
# compiled, so the kernels exist once per float dtype (DTYPE, see typed) and the
# launchers pick by the output's dtype.
#
# The forward conv and its input gradient share one skeleton: out[p, g*cols + j] = sum
# over k = (kh, kw, c) of src gathered at (p, tap) times a weight, with src of shape
# [N, SH, SW, SC] and out of [N, RH, RW, RC]. They differ in where a tap lands in src
# (GATHER, which sets v) and in how the weight is indexed (WEIGHT).
IMPLICIT_GEMM = """
@cuda.jit(cache=True)
def _conv_NAME_DTYPE(src, w, out, e, N, SH, SW, SC, RH, RW, RC, KH, KW, sh, sw, pt, pl, dh, dw, groups):
    a = cuda.shared.array((CONV_TILE_ROWS, CONV_PADDED), DTYPE)  # a[row, k]: CONV_ROWS rows a thread
    b = cuda.shared.array((CONV_TILE, CONV_PADDED), DTYPE)  # b[k, column]
    acc = cuda.local.array(CONV_ROWS, DTYPE)
    rn = cuda.local.array(CONV_ROWS, int64)  # each row's pixel (n, rh, rw), found once per tile
    rrh = cuda.local.array(CONV_ROWS, int64)
    rrw = cuda.local.array(CONV_ROWS, int64)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    inner = SC // groups  # the reduction's innermost axis: a group's channels of src
    cols = RC // groups
    K = KH * KW * inner
    g = cuda.blockIdx.z
    j = cuda.blockIdx.y * CONV_TILE + tx
    total = N * RH * RW
    for m0 in range(cuda.blockIdx.x * CONV_TILE_ROWS, total, cuda.gridDim.x * CONV_TILE_ROWS):
        for r in range(CONV_ROWS):
            acc[r] = DTYPE(0)
            q = m0 + ty + r * CONV_TILE
            rn[r] = q // (RH * RW)
            q -= rn[r] * (RH * RW)
            rrh[r] = q // RW
            rrw[r] = q - rrh[r] * RW
        for k0 in range(0, K, CONV_TILE):
            k = k0 + tx
            tap = k // inner
            c = k - tap * inner
            kh = tap // KW
            kw = tap - kh * KW
            for r in range(CONV_ROWS):
                row = ty + r * CONV_TILE
                p = m0 + row
                v = DTYPE(0)
                if p < total and k < K:
                    n = rn[r]
                    rh = rrh[r]
                    rw = rrw[r]
                    GATHER
                a[row, tx] = v
            v = DTYPE(0)
            k = k0 + ty
            if j < cols and k < K:
                tap = k // inner
                c = k - tap * inner
                kh = tap // KW
                kw = tap - kh * KW
                v = w[WEIGHT]
            b[ty, tx] = v
            cuda.syncthreads()
            for kk in range(CONV_TILE):
                bv = b[kk, tx]
                for r in range(CONV_ROWS):
                    acc[r] += a[ty + r * CONV_TILE, kk] * bv
            cuda.syncthreads()
        if j < cols:
            co = g * cols + j
            for r in range(CONV_ROWS):
                p = m0 + ty + r * CONV_TILE
                if p < total:
                    _epilogue(out, p * RC + co, co, acc[r], e)
"""

# conv: src is x; a tap lands at input pixel (rh*sh - pt + kh*dh, rw*sw - pl + kw*dw).
FORWARD_GATHER = """
ih = rh * sh - pt + kh * dh
iw = rw * sw - pl + kw * dw
if ih >= 0 and ih < SH and iw >= 0 and iw < SW:
    v = src[((n * SH + ih) * SW + iw) * SC + g * inner + c]
"""
FORWARD_WEIGHT = "(((g * cols + j) * inner + c) * KH + kh) * KW + kw"

# conv_grad_input in gather form: src is dy; the tap reads the output pixel whose window
# put tap (kh, kw) on this input pixel, if there is one. Each block owns its dx tile: no atomics.
GRAD_INPUT_GATHER = """
th = rh + pt - kh * dh
tw = rw + pl - kw * dw
if th >= 0 and tw >= 0 and th % sh == 0 and tw % sw == 0:
    oh = th // sh
    ow = tw // sw
    if oh < SH and ow < SW:
        v = src[((n * SH + oh) * SW + ow) * SC + g * inner + c]
"""
GRAD_INPUT_WEIGHT = "(((g * inner + c) * cols + j) * KH + kh) * KW + kw"


def implicit_gemm(name: str, gather: str, weight: str) -> str:
    """The IMPLICIT_GEMM kernel `_conv_{name}_DTYPE` with its gather and weight index."""
    return IMPLICIT_GEMM.replace("NAME", name).replace(" " * 20 + "GATHER\n", indented(gather, 20)).replace("WEIGHT", weight)


CONV_CUDA_KERNELS = implicit_gemm("forward", FORWARD_GATHER, FORWARD_WEIGHT) + implicit_gemm(
    "grad_input", GRAD_INPUT_GATHER, GRAD_INPUT_WEIGHT) + """

@cuda.jit(cache=True)
def _conv_grad_weight_DTYPE(x, dy, dwt, N, H, W, C, OH, OW, Cout, KH, KW, sh, sw, pt, pl, dh, dw, groups):
    # dwt[g*og + j, ci, kh, kw] = sum over output pixels p of dy[p, g*og + j] * patch[p, (kh, kw, ci)]:
    # a tile of [og, K] per block, the pixels looped over in chunks through shared memory.
    a = cuda.shared.array((CONV_TILE, CONV_PADDED), DTYPE)
    b = cuda.shared.array((CONV_TILE, CONV_PADDED), DTYPE)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    cg = C // groups
    og = Cout // groups
    K = KH * KW * cg
    g = cuda.blockIdx.z
    r0 = cuda.blockIdx.y * CONV_TILE
    total = N * OH * OW
    ohw = OH * OW
    for c0 in range(cuda.blockIdx.x * CONV_TILE, K, cuda.gridDim.x * CONV_TILE):
        acc = DTYPE(0)
        for p0 in range(0, total, CONV_TILE):
            p = p0 + ty
            v = DTYPE(0)
            if p < total and r0 + tx < og:
                v = dy[p * Cout + g * og + r0 + tx]
            a[ty, tx] = v
            v = DTYPE(0)
            k = c0 + tx
            if p < total and k < K:
                n = p // ohw
                q = p - n * ohw
                oh = q // OW
                tap = k // cg
                kh = tap // KW
                ih = oh * sh - pt + kh * dh
                iw = (q - oh * OW) * sw - pl + (tap - kh * KW) * dw
                if ih >= 0 and ih < H and iw >= 0 and iw < W:
                    v = x[((n * H + ih) * W + iw) * C + g * cg + k - tap * cg]
            b[ty, tx] = v
            cuda.syncthreads()
            for kk in range(CONV_TILE):
                acc += a[kk, ty] * b[kk, tx]
            cuda.syncthreads()
        j = r0 + ty
        k = c0 + tx
        if j < og and k < K:
            tap = k // cg
            kh = tap // KW
            dwt[(((g * og + j) * cg + k - tap * cg) * KH + kh) * KW + tap - kh * KW] = acc


@cuda.jit(cache=True)
def _direct_forward_DTYPE(x, w, o, e, N, H, W, C, OH, OW, Cout, KH, KW, sh, sw, pt, pl, dh, dw, groups):
    # conv for groups of very few channels (depthwise): a thread per output element, looping
    # over the taps; consecutive threads take consecutive channels, so loads are coalesced.
    cg = C // groups
    og = Cout // groups
    ohw = OH * OW
    for i in range(cuda.grid(1), N * ohw * Cout, cuda.gridsize(1)):
        p = i // Cout
        co = i - p * Cout
        n = p // ohw
        q = p - n * ohw
        oh = q // OW
        ow = q - oh * OW
        g = co // og
        acc = DTYPE(0)
        for kh in range(KH):
            ih = oh * sh - pt + kh * dh
            if ih < 0 or ih >= H:
                continue
            for kw in range(KW):
                iw = ow * sw - pl + kw * dw
                if iw < 0 or iw >= W:
                    continue
                base = ((n * H + ih) * W + iw) * C + g * cg
                for ci in range(cg):
                    acc += x[base + ci] * w[((co * cg + ci) * KH + kh) * KW + kw]
        _epilogue(o, i, co, acc, e)


@cuda.jit(cache=True)
def _direct_grad_input_DTYPE(dy, w, dx, e, N, OH, OW, Cout, H, W, C, KH, KW, sh, sw, pt, pl, dh, dw, groups):
    # conv_grad_input for groups of very few channels: a thread per dx element, gathering the
    # taps that reach it (those whose offset is a multiple of the stride).
    cg = C // groups
    og = Cout // groups
    hw = H * W
    for i in range(cuda.grid(1), N * hw * C, cuda.gridsize(1)):
        p = i // C
        c = i - p * C
        n = p // hw
        q = p - n * hw
        ih = q // W
        iw = q - ih * W
        g = c // cg
        ci = c - g * cg
        acc = DTYPE(0)
        for kh in range(KH):
            th = ih + pt - kh * dh
            if th < 0 or th % sh != 0 or th // sh >= OH:
                continue
            for kw in range(KW):
                tw = iw + pl - kw * dw
                if tw < 0 or tw % sw != 0 or tw // sw >= OW:
                    continue
                base = ((n * OH + th // sh) * OW + tw // sw) * Cout + g * og
                for jo in range(og):
                    acc += dy[base + jo] * w[(((g * og + jo) * cg + ci) * KH + kh) * KW + kw]
        _epilogue(dx, i, c, acc, e)
"""

# Launchers: shapes from the arrays, then flat views for the kernels.
CONV_CUDA_LAUNCHERS = """
CONV_TILE = 16
CONV_PADDED = 17  # a shared row one longer than the tile: column walks hit distinct banks
CONV_ROWS = 4  # result rows per thread: each weight read from shared memory serves four
CONV_TILE_ROWS = CONV_TILE * CONV_ROWS


def _conv_kernel(name, array):
    return globals()[name + "_" + str(array.dtype)]


def _conv_tiles(n):
    return (n + CONV_TILE - 1) // CONV_TILE


def _row_tiles(n):
    return (n + CONV_TILE_ROWS - 1) // CONV_TILE_ROWS


def conv_forward(x, weight, out, e, sh, sw, pt, pl, dh, dw, groups):
    N, H, W, C = x.shape
    OH, OW, Cout = out.shape[1], out.shape[2], out.shape[3]
    launch = (grid(_row_tiles(N * OH * OW)), _conv_tiles(Cout // groups), groups)
    _conv_kernel("_conv_forward", out)[launch, (CONV_TILE, CONV_TILE)](
        x.reshape(x.size), weight.reshape(weight.size), out.reshape(out.size), e,
        N, H, W, C, OH, OW, Cout, weight.shape[2], weight.shape[3], sh, sw, pt, pl, dh, dw, groups)


def conv_grad_input(dy, weight, dx, e, sh, sw, pt, pl, dh, dw, groups):
    N, OH, OW, Cout = dy.shape
    H, W, C = dx.shape[1], dx.shape[2], dx.shape[3]
    launch = (grid(_row_tiles(N * H * W)), _conv_tiles(C // groups), groups)
    _conv_kernel("_conv_grad_input", dx)[launch, (CONV_TILE, CONV_TILE)](
        dy.reshape(dy.size), weight.reshape(weight.size), dx.reshape(dx.size), e,
        N, OH, OW, Cout, H, W, C, weight.shape[2], weight.shape[3], sh, sw, pt, pl, dh, dw, groups)


def conv_grad_weight(x, dy, dwt, e, sh, sw, pt, pl, dh, dw, groups):
    N, H, W, C = x.shape
    OH, OW, Cout = dy.shape[1], dy.shape[2], dy.shape[3]
    KH, KW = dwt.shape[2], dwt.shape[3]
    launch = (grid(_conv_tiles(KH * KW * (C // groups))), _conv_tiles(Cout // groups), groups)
    _conv_kernel("_conv_grad_weight", dwt)[launch, (CONV_TILE, CONV_TILE)](
        x.reshape(x.size), dy.reshape(dy.size), dwt.reshape(dwt.size),
        N, H, W, C, OH, OW, Cout, KH, KW, sh, sw, pt, pl, dh, dw, groups)


def direct_forward(x, weight, out, e, sh, sw, pt, pl, dh, dw, groups):
    N, H, W, C = x.shape
    OH, OW, Cout = out.shape[1], out.shape[2], out.shape[3]
    _conv_kernel("_direct_forward", out)[blocks(out.size), THREADS](
        x.reshape(x.size), weight.reshape(weight.size), out.reshape(out.size), e,
        N, H, W, C, OH, OW, Cout, weight.shape[2], weight.shape[3], sh, sw, pt, pl, dh, dw, groups)


def direct_grad_input(dy, weight, dx, e, sh, sw, pt, pl, dh, dw, groups):
    N, OH, OW, Cout = dy.shape
    H, W, C = dx.shape[1], dx.shape[2], dx.shape[3]
    _conv_kernel("_direct_grad_input", dx)[blocks(dx.size), THREADS](
        dy.reshape(dy.size), weight.reshape(weight.size), dx.reshape(dx.size), e,
        N, OH, OW, Cout, H, W, C, weight.shape[2], weight.shape[3], sh, sw, pt, pl, dh, dw, groups)
"""


def typed(kernels: str) -> str:
    """The kernels once per float dtype: `DTYPE` in names and shared arrays becomes float32 / float64."""
    return "".join(kernels.replace("DTYPE", dtype) for dtype in ("float32", "float64"))


CONV_CUDA_SOURCE = CONV_CUDA_LAUNCHERS + typed(CONV_CUDA_KERNELS)


def cuda_forward_kernel(cin: int, cout: int, kernel, stride, pads, dilation, groups: int, epilogue) -> CudaKernel:
    """The CUDA conv_forward (see forward_kernel): conv, and conv_transpose's input gradient."""
    entry = "direct_forward" if _direct(cin // groups, cout // groups) else "conv_forward"
    return cuda_hosting(CONV_CUDA_SOURCE, entry, epilogue, (In(0), Param("weight"), OUT),
                        _geometry(stride, pads, dilation, groups))


def cuda_grad_input_kernel(cin: int, cout: int, kernel, stride, pads, dilation, groups: int, epilogue) -> CudaKernel:
    """The CUDA conv_grad_input (see grad_input_kernel): conv's input gradient, conv_transpose's forward."""
    entry = "direct_grad_input" if _direct(cin // groups, cout // groups) else "conv_grad_input"
    return cuda_hosting(CONV_CUDA_SOURCE, entry, epilogue, (In(0), Param("weight"), OUT),
                        _geometry(stride, pads, dilation, groups))


def cuda_grad_weight_kernel(stride, pads, dilation, groups: int) -> CudaKernel:
    """The CUDA conv_grad_weight from inputs (x, dy) into [cout, cin/groups, kh, kw]."""
    return cuda_hosting(CONV_CUDA_SOURCE, "conv_grad_weight", None, (In(0), In(1), OUT),
                        _geometry(stride, pads, dilation, groups))


@register
class Conv(Op):
    """2-D convolution over [channels, height, width]; weight [out, in/groups, kh, kw]."""

    name = "conv"
    fusion = Fusion.OUT_ELEMWISE_FUSABLE
    attrs = (
        Attr("channels", positive_int, doc="output channels"),
        Attr("kernel", positive_pair, doc="kernel size, n or [kh, kw]"),
        Attr("stride", positive_pair, 1),
        Attr("pad", padding, 0, doc='n, [ph, pw], "same" or "valid"'),
        Attr("dilation", positive_pair, 1),
        Attr("groups", positive_int, 1),
        Attr("bias", boolean, True),
    )

    def infer(self, a, x):
        expect_rank(self.name, x, 4)
        expect_float(self.name, x)
        _, cin, h, w = x.shape
        _check_groups(self.name, cin, a.channels, a.groups)
        if a.pad == "same" and a.stride != (1, 1):
            raise ShapeError('conv: pad="same" needs stride 1')
        pt, pb, pl, pr = conv_pads(a)
        oh = window_out(h, a.kernel[0], a.stride[0], pt, pb, a.dilation[0])
        ow = window_out(w, a.kernel[1], a.stride[1], pl, pr, a.dilation[1])
        if oh < 1 or ow < 1:
            raise ShapeError(
                f"conv: kernel {list(a.kernel)} (dilation {list(a.dilation)}) does not fit "
                f"the padded input {x}"
            )
        return TensorType((BATCH, a.channels, oh, ow), x.dtype)

    def params(self, a, x):
        cin = x.shape[1]
        fan_in = cin // a.groups * a.kernel[0] * a.kernel[1]
        specs = [param("weight", (a.channels, cin // a.groups, *a.kernel), "kaiming_uniform", fan_in)]
        if a.bias:
            specs.append(param("bias", (a.channels,), "fan_in_uniform", fan_in))
        return specs

    def macs(self, a, out, x):
        return out.sample_elements() * (x.shape[1] // a.groups) * a.kernel[0] * a.kernel[1]

    pads = staticmethod(conv_pads)

    def cpu(self, a, out, x, epilogue=None):
        pt, _, pl, _ = conv_pads(a)
        epilogue = epilogue or (bias_chain() if a.bias else None)
        return forward_kernel(x.shape[1], a.channels, a.kernel, a.stride, (pt, pl), a.dilation, a.groups, epilogue)

    def cuda(self, a, out, x, epilogue=None):
        pt, _, pl, _ = conv_pads(a)
        epilogue = epilogue or (bias_chain("acc") if a.bias else None)
        return cuda_forward_kernel(x.shape[1], a.channels, a.kernel, a.stride, (pt, pl), a.dilation, a.groups, epilogue)

    def grad(self, g, dy):
        a = g.node.attrs
        x = g.node.inputs[0]
        pt, _, pl, _ = conv_pads(a)
        geometry = dict(stride=a.stride, pads=(pt, pl), dilation=a.dilation, groups=a.groups)
        if g.needs_input_grad(0):  # usually not: the first conv's input is the image
            weight = {"weight": g.node.params["weight"]}
            shape = g.type_of(x).sample_shape
            g.input_grad(0, g.apply("conv_grad_input", [dy], weight, shape=shape, kernel=a.kernel, **geometry))
        if g.needs_param_grad("weight"):
            g.param_grad("weight", g.apply("conv_grad_weight", [x, dy], kernel=a.kernel, **geometry))
        if a.bias and g.needs_param_grad("bias"):
            g.param_grad("bias", g.apply("bias_grad", [dy]))


@register
class ConvTranspose(Op):
    """Transposed convolution (the gradient of conv w.r.t. its input); weight [in, out/groups, kh, kw]."""

    name = "conv_transpose"
    fusion = Fusion.OUT_ELEMWISE_FUSABLE
    attrs = (
        Attr("channels", positive_int, doc="output channels"),
        Attr("kernel", positive_pair),
        Attr("stride", positive_pair, 1),
        Attr("pad", nonnegative_pair, 0),
        Attr("output_pad", nonnegative_pair, 0, doc="extra rows/columns at the end of the output"),
        Attr("dilation", positive_pair, 1),
        Attr("groups", positive_int, 1),
        Attr("bias", boolean, True),
    )

    def infer(self, a, x):
        expect_rank(self.name, x, 4)
        expect_float(self.name, x)
        _, cin, h, w = x.shape
        _check_groups(self.name, cin, a.channels, a.groups)
        for i, axis in enumerate(("height", "width")):
            if a.output_pad[i] >= max(a.stride[i], a.dilation[i]):
                raise ShapeError(
                    f"conv_transpose: output_pad {a.output_pad[i]} along the {axis} must be smaller "
                    f"than the stride or the dilation"
                )
        oh, ow = (
            (size - 1) * a.stride[i] - 2 * a.pad[i] + a.dilation[i] * (a.kernel[i] - 1) + a.output_pad[i] + 1
            for i, size in enumerate((h, w))
        )
        if oh < 1 or ow < 1:
            raise ShapeError(f"conv_transpose: padding {list(a.pad)} leaves no output for input {x}")
        return TensorType((BATCH, a.channels, oh, ow), x.dtype)

    def params(self, a, x):
        cin = x.shape[1]
        # PyTorch computes the fan-in of a transposed weight from its dim 1.
        fan_in = a.channels // a.groups * a.kernel[0] * a.kernel[1]
        specs = [param("weight", (cin, a.channels // a.groups, *a.kernel), "kaiming_uniform", fan_in)]
        if a.bias:
            specs.append(param("bias", (a.channels,), "fan_in_uniform", fan_in))
        return specs

    def macs(self, a, out, x):
        return x.sample_elements() * (a.channels // a.groups) * a.kernel[0] * a.kernel[1]

    def cpu(self, a, out, x, epilogue=None):
        # The forward of conv_transpose is the input gradient of the conv it transposes.
        epilogue = epilogue or (bias_chain() if a.bias else None)
        return grad_input_kernel(a.channels, x.shape[1], a.kernel, a.stride, a.pad, a.dilation, a.groups, epilogue)

    def cuda(self, a, out, x, epilogue=None):
        epilogue = epilogue or (bias_chain("acc") if a.bias else None)
        return cuda_grad_input_kernel(a.channels, x.shape[1], a.kernel, a.stride, a.pad, a.dilation, a.groups, epilogue)

    def grad(self, g, dy):
        a = g.node.attrs
        x = g.node.inputs[0]
        geometry = dict(stride=a.stride, pads=tuple(a.pad), dilation=a.dilation, groups=a.groups)
        if g.needs_input_grad(0):
            weight = {"weight": g.node.params["weight"]}
            shape = g.type_of(x).sample_shape
            g.input_grad(0, g.apply("conv_transpose_grad_input", [dy], weight, shape=shape, kernel=a.kernel, **geometry))
        if g.needs_param_grad("weight"):
            # The weight gradient of the transposed conv: conv's, with x and dy swapped.
            g.param_grad("weight", g.apply("conv_grad_weight", [dy, x], kernel=a.kernel, **geometry))
        if a.bias and g.needs_param_grad("bias"):
            g.param_grad("bias", g.apply("bias_grad", [dy]))


# -- gradient ops -------------------------------------------------------------

_GEOMETRY = (
    Attr("kernel", positive_pair),
    Attr("stride", positive_pair),
    Attr("pads", nonnegative_pair, doc="(top, left) padding; the bottom and right follow from the shapes"),
    Attr("dilation", positive_pair),
    Attr("groups", positive_int),
)


class _InputGrad(Op):
    """An input gradient whose shape is given explicitly: [channels, height, width]."""

    internal = True
    fusion = Fusion.OUT_ELEMWISE_FUSABLE
    attrs = (Attr("shape", int_list, doc="dx's [channels, height, width]"), *_GEOMETRY)

    def infer(self, a, dy):
        return TensorType((BATCH, *a.shape), dy.dtype)


@register
class ConvGradInput(_InputGrad):
    """dx of conv from dy: gather the covering output pixels, GEMM with the weight."""

    name = "conv_grad_input"

    def macs(self, a, out, dy):
        return dy.sample_elements() * (out.shape[1] // a.groups) * a.kernel[0] * a.kernel[1]

    def cpu(self, a, out, dy, epilogue=None):
        return grad_input_kernel(out.shape[1], dy.shape[1], a.kernel, a.stride, a.pads, a.dilation, a.groups, epilogue)

    def cuda(self, a, out, dy, epilogue=None):
        return cuda_grad_input_kernel(out.shape[1], dy.shape[1], a.kernel, a.stride, a.pads, a.dilation, a.groups, epilogue)


@register
class ConvTransposeGradInput(_InputGrad):
    """dx of conv_transpose from dy: a conv of dy with the same weight."""

    name = "conv_transpose_grad_input"

    def macs(self, a, out, dy):
        return out.sample_elements() * (dy.shape[1] // a.groups) * a.kernel[0] * a.kernel[1]

    def cpu(self, a, out, dy, epilogue=None):
        return forward_kernel(dy.shape[1], out.shape[1], a.kernel, a.stride, a.pads, a.dilation, a.groups, epilogue)

    def cuda(self, a, out, dy, epilogue=None):
        return cuda_forward_kernel(dy.shape[1], out.shape[1], a.kernel, a.stride, a.pads, a.dilation, a.groups, epilogue)


@register
class ConvGradWeight(Op):
    """dW of conv from (x, dy), in PyTorch's layout [out, in/groups, kh, kw].

    With (dy, x) it is the weight gradient of conv_transpose: [in, out/groups, kh, kw].
    """

    name = "conv_grad_weight"
    inputs = 2
    internal = True
    attrs = _GEOMETRY

    def infer(self, a, x, dy):
        return TensorType((dy.shape[1], x.shape[1] // a.groups, *a.kernel), dy.dtype)

    def macs(self, a, out, x, dy):
        return dy.sample_elements() * (x.shape[1] // a.groups) * a.kernel[0] * a.kernel[1]

    def cpu(self, a, out, x, dy):
        return grad_weight_kernel(x.shape[1], dy.shape[1], a.kernel, a.stride, a.pads, a.dilation, a.groups)

    def cuda(self, a, out, x, dy):
        return cuda_grad_weight_kernel(a.stride, a.pads, a.dilation, a.groups)
