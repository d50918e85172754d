"""Convolutions on the CPU: conv, conv_transpose and their gradients, as im2col/gather + BLAS GEMM.

Every 4-D buffer is NHWC; weights keep PyTorch's layout [out, in/groups, kh, kw].
One file serves conv, conv_transpose and their gradients:
  conv_forward      im2col + GEMM; also conv_transpose's input gradient
  few_rows_forward  the same for few output pixels, split over output channels; serial_forward
                    on one thread for the smallest
  conv_grad_input   gather + GEMM; also conv_transpose's forward
  conv_grad_weight  dy^T . im2col; also conv_transpose's weight gradient (operands swapped)
  direct_*          the same three for groups of very few channels (depthwise)
Work is split into tiles of rows (pixels across the whole batch) under one prange;
each thread builds its tile in its own slice of the scratch buffer (found with
get_thread_id) and calls BLAS gemm, held to one thread. Serial work lives in plain
@njit helpers: the parallel entries stay small, which keeps their compile time down.
Flat offsets are cast to uint64 so that Numba emits no negative-index wraparound in
the copy loops.
"""

import numpy as np
from numba import get_thread_id, njit, prange

from .blas import _gemm, _gemm_ab, _one_zero
from .holes import _epilogue
from .pool import _taps


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
    _, H, W, C = x.shape
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


@njit(cache=True)
def _im2col_as_stored(xf, colf, r0, rows, H, W, C, OH, OW, KH, KW, sh, sw, pt, pl, dh, dw):
    # Rows r0 .. r0+rows of the im2col matrix with columns (c, kh, kw): the order of a weight row
    # [in, kh, kw] as it is stored, so that the GEMM reads the weight without rearranging it.
    K = C * KH * KW
    ohw = OH * OW
    for r in range(r0, r0 + rows):
        n = r // ohw
        q = r - n * ohw
        oh = q // OW
        ow = q - oh * OW
        for kh in range(KH):
            ih = oh * sh - pt + kh * dh
            for kw in range(KW):
                iw = ow * sw - pl + kw * dw
                dst = np.uint64(r * K + kh * KW + kw)
                if ih >= 0 and ih < H and iw >= 0 and iw < W:
                    src = np.uint64(((n * H + ih) * W + iw) * C)
                    for c in range(C):
                        colf[dst + np.uint64(c * KH * KW)] = xf[src + np.uint64(c)]
                else:
                    for c in range(C):
                        colf[dst + np.uint64(c * KH * KW)] = 0.0


@njit(cache=True)
def _planar_image(x, weight, out, e, work, n, pt, pl):
    # Image n of a stride-1 conv with few input taps and few output channels (a first conv): each
    # input channel copied once into a zero-padded plane, then each output channel summed tap by tap
    # over the plane shifted by the tap, as long runs that vectorize. Outputs are computed over the
    # padded width Wp (the columns past OW are discarded), so every run is one contiguous span.
    _, H, W, C = x.shape
    OH, OW, Cout = out.shape[1], out.shape[2], out.shape[3]
    KH, KW = weight.shape[2], weight.shape[3]
    Hp, Wp = OH + KH - 1, OW + KW - 1
    plane = Hp * Wp + KW  # the last taps' runs reach KW - 1 elements past the plane
    span = OH * Wp
    acc = work[: Cout * span]
    planes = work[Cout * span : Cout * span + C * plane]
    planes[:] = 0.0
    for h in range(H):
        for w in range(W):
            for c in range(C):
                planes[c * plane + (h + pt) * Wp + w + pl] = x[n, h, w, c]
    for co in range(Cout):
        a = acc[co * span : (co + 1) * span]
        a[:] = 0.0
        for c in range(C):
            for kh in range(KH):
                for kw in range(KW):
                    wv = weight[co, c, kh, kw]
                    b = c * plane + kh * Wp + kw
                    p = planes[b : b + span]
                    for j in range(span):
                        a[j] += wv * p[j]
    o = out[n]
    for oh in range(OH):
        for ow in range(OW):
            for co in range(Cout):
                o[oh, ow, co] = acc[co * span + oh * Wp + ow]
    size = OH * OW * Cout
    _epilogue(out.reshape(out.size), n * size, (n + 1) * size, Cout, e)


@njit(parallel=True, cache=True)
def planar_forward(x, weight, out, scratch, e, pt, pl, per):
    # conv_forward for a stride-1 conv of few input taps and output channels (LeNet's first conv),
    # whose im2col + GEMM would be a GEMM a few columns wide: an image per thread (see _planar_image).
    for n in prange(out.shape[0]):
        base = get_thread_id() * per
        _planar_image(x, weight, out, e, scratch[base : base + per], n, pt, pl)


@njit(cache=True)
def _planar_grad_weight_image(x, dy, acc, work, n, pt, pl, KH, KW, accumulate, one_zero):
    # acc[co, (c, kh, kw)] (+)= image n's share of the weight gradient of a conv that planar_forward
    # computes: the input's zero-padded planes, shifted by each tap, as the rows of one matrix; dy laid
    # out over the same padded width (zeros in the columns past OW); one GEMM of the two.
    _, H, W, C = x.shape
    OH, OW, Cout = dy.shape[1], dy.shape[2], dy.shape[3]
    Hp, Wp = OH + KH - 1, OW + KW - 1
    plane = Hp * Wp + KW
    span = OH * Wp
    T = C * KH * KW
    planes = work[: C * plane]
    col = work[C * plane : C * plane + T * span]
    dyt = work[C * plane + T * span : C * plane + T * span + Cout * span]
    planes[:] = 0.0
    for h in range(min(H, Hp - pt)):
        for w in range(min(W, Wp - pl)):
            for c in range(C):
                planes[c * plane + (h + pt) * Wp + w + pl] = x[n, h, w, c]
    for c in range(C):
        for kh in range(KH):
            for kw in range(KW):
                t = (c * KH + kh) * KW + kw
                b = c * plane + kh * Wp + kw
                col[t * span : (t + 1) * span] = planes[b : b + span]
    dyt[:] = 0.0
    for oh in range(OH):
        for ow in range(OW):
            for co in range(Cout):
                dyt[co * span + oh * Wp + ow] = dy[n, oh, ow, co]
    _gemm_ab(False, True, Cout, T, span, dyt, 0, span, col, 0, span, acc, 0, T, one_zero, accumulate)


@njit(parallel=True, cache=True)
def planar_grad_weight(x, dy, dwt, scratch, pt, pl, per, nslots):
    # conv_grad_weight of the convs planar_forward computes: each slot sums a fixed share of the
    # images (so the result does not depend on scheduling), then the slots are added.
    N = dy.shape[0]
    KH, KW = dwt.shape[2], dwt.shape[3]
    size = dwt.size
    one_zero = _one_zero(scratch)
    for s in prange(nslots):
        acc = scratch[s * per : s * per + size]
        n0, n1 = s * N // nslots, (s + 1) * N // nslots
        if n1 == n0:
            acc[:] = 0.0
        for n in range(n0, n1):
            _planar_grad_weight_image(x, dy, acc, scratch[s * per + size : (s + 1) * per], n, pt, pl, KH, KW, n > n0,
                                      one_zero)
    flat = dwt.reshape(size)
    for i in prange(size):
        v = scratch[i]
        for s in range(1, nslots):
            v += scratch[s * per + i]
        flat[i] = v


@njit(cache=True)
def serial_forward(x, weight, out, scratch, e, sh, sw, pt, pl, dh, dw):
    # conv_forward for work too small to share (ungrouped): waking the thread pool costs more than it
    # does. The scratch holds the im2col of every output pixel.
    N, H, W, C = x.shape
    OH, OW, Cout = out.shape[1], out.shape[2], out.shape[3]
    KH, KW = weight.shape[2], weight.shape[3]
    K = KH * KW * C
    total = N * OH * OW
    of = out.reshape(out.size)
    _im2col_as_stored(x.reshape(x.size), scratch, 0, total, H, W, C, OH, OW, KH, KW, sh, sw, pt, pl, dh, dw)
    one_zero = _one_zero(scratch)
    _gemm_ab(False, True, total, Cout, K, scratch, 0, K, weight.reshape(weight.size), 0, K, of, 0, Cout, one_zero,
             False)
    _epilogue(of, 0, total * Cout, Cout, e)


@njit(parallel=True, cache=True)
def few_rows_forward(x, weight, out, scratch, e, sh, sw, pt, pl, dh, dw, nslots):
    # conv_forward for few output pixels (a small batch of small images; ungrouped): the im2col of every row,
    # then GEMMs split over blocks of output channels that read the weight as it is stored, so
    # that each thread reads only its share of a large weight and nothing rearranges it first.
    N, H, W, C = x.shape
    OH, OW, Cout = out.shape[1], out.shape[2], out.shape[3]
    KH, KW = weight.shape[2], weight.shape[3]
    K = KH * KW * C
    total = N * OH * OW
    col = scratch[: total * K]
    one_zero = _one_zero(scratch)
    rb = (total + nslots - 1) // nslots
    for t in prange(nslots):
        _im2col_as_stored(x.reshape(x.size), col, t * rb, max(0, min(rb, total - t * rb)), H, W, C, OH, OW,
                          KH, KW, sh, sw, pt, pl, dh, dw)
    wf = weight.reshape(weight.size)
    of = out.reshape(out.size)
    cb = max(16, (Cout + 4 * nslots - 1) // (4 * nslots))  # channels per block: 4 blocks per thread
    for b in prange((Cout + cb - 1) // cb):
        j0 = b * cb
        _gemm_ab(False, True, total, min(cb, Cout - j0), K, col, 0, K, wf, j0 * K, K, of, j0, Cout, one_zero, False)
    for t in prange(nslots):
        r0 = min(total, t * rb)
        _epilogue(of, r0 * Cout, min(total, r0 + rb) * Cout, Cout, e)


@njit(parallel=True, cache=True)
def conv_forward(x, weight, out, scratch, e, sh, sw, pt, pl, dh, dw, groups, tile, nslots):
    # out[n, oh, ow, co] = bias[co] + sum x[n, oh*sh - pt + kh*dh, ow*sw - pl + kw*dw, g*cg + ci] * weight[co, ci, kh, kw]
    N, H, W, C = x.shape
    OH, OW = out.shape[1], out.shape[2]
    KH, KW = weight.shape[2], weight.shape[3]
    K = KH * KW * (C // groups)
    total = N * OH * OW
    wsize = weight.size
    wm = scratch[:wsize]
    og = weight.shape[0] // groups
    for u in prange(groups * ((og + 15) // 16)):
        _gemm_weight(weight, wm, groups, u)
    one_zero = _one_zero(scratch)
    # A 1x1, stride-1, unpadded, ungrouped conv is a GEMM over the pixels as they are.
    plain = KH == 1 and KW == 1 and sh == 1 and sw == 1 and pt == 0 and pl == 0 and groups == 1 and OH == H and OW == W
    per = tile * K
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
    _, OH, OW, Cout = dy.shape
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
    N, Cout = dy.shape[0], dy.shape[3]
    H, W = dx.shape[1], dx.shape[2]
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
def _scatter_image(dy, weight, dx, e, dcol, one_zero, n, rt, sh, sw, pt, pl, dh, dw):
    # Image n of conv_grad_input by scattering: for each run of rt output pixels, their products with
    # the weight as stored, dcol[r, (ci, kh, kw)] = sum_co dy[r, co] weight[co, ci, kh, kw] (a GEMM as
    # wide as the kernel's taps), then each added into the input pixel its tap reaches.
    _, OH, OW, Cout = dy.shape
    H, W, C = dx.shape[1], dx.shape[2], dx.shape[3]
    KH, KW = weight.shape[2], weight.shape[3]
    K = C * KH * KW
    dyf = dy.reshape(dy.size)
    dxf = dx.reshape(dx.size)
    d = dx[n]
    d[:] = 0.0
    npix = OH * OW
    for r0 in range(0, npix, rt):
        rows = min(rt, npix - r0)
        _gemm_ab(False, False, rows, K, Cout, dyf, (n * npix + r0) * Cout, Cout, weight.reshape(weight.size), 0, K,
                 dcol, 0, K, one_zero, False)
        for r in range(rows):
            oh = (r0 + r) // OW
            ow = r0 + r - oh * OW
            kh0, kh1 = _taps(oh * sh - pt, KH, dh, H)  # the taps that reach the input
            kw0, kw1 = _taps(ow * sw - pl, KW, dw, W)
            for kh in range(kh0, kh1):
                for kw in range(kw0, kw1):
                    target = d[oh * sh - pt + kh * dh, ow * sw - pl + kw * dw]
                    src = r * K + kh * KW + kw
                    for c in range(C):
                        target[c] += dcol[src + c * KH * KW]
    size = H * W * C
    _epilogue(dxf, n * size, (n + 1) * size, C, e)


@njit(parallel=True, cache=True)
def scatter_grad_input(dy, weight, dx, scratch, e, sh, sw, pt, pl, dh, dw, rt, per):
    # conv_grad_input into few channels (LeNet's second conv; conv_transpose into an image), where
    # gathering dy for each input pixel makes a GEMM a few columns wide: an image per thread, scattered
    # (see _scatter_image); each image's pixels are written by its thread alone.
    one_zero = _one_zero(scratch)
    for n in prange(dy.shape[0]):
        base = get_thread_id() * per
        _scatter_image(dy, weight, dx, e, scratch[base : base + per], one_zero, n, rt, sh, sw, pt, pl, dh, dw)


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
    _, cg, KH, KW = dwt.shape
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
    _, H, W, C = x.shape
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
    _, OH, OW, Cout = dy.shape
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
    _, H, W, C = x.shape
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
