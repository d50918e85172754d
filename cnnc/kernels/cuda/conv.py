"""Convolutions on CUDA: conv, conv_transpose and their gradients, as implicit GEMMs.

The same three computations as the CPU's (see cnnc/kernels/cpu/conv.py), one tile of the
result per block of CONV_TILE x CONV_TILE threads: threadIdx.x walks the result's columns
(channels: contiguous in NHWC, so loads and stores of a warp are coalesced) and
threadIdx.y its rows (pixels across the batch). K is looped over in chunks of
CONV_TILE staged through shared memory; gathered patch elements outside the image
are zero. blockIdx.z is the group. Shared arrays need their element type when
compiled: DTYPE, the model's float type (a module is assembled per float type).

The forward conv and its input gradient share one kernel, _implicit_gemm: out[p, g*cols + j]
= sum over k = (kh, kw, c) of src gathered at (p, tap) times a weight, with src of shape
[N, SH, SW, SC] and out of [N, RH, RW, RC]. They differ in where a tap lands in src (the
hole _gather) and in how the weight is indexed (the hole _weight_index); each entry binds
both (conv_forward: _forward_gather, _forward_weight; conv_grad_input: _grad_input_gather,
_grad_input_weight).
"""

from numba import cuda, int64

from .common import THREADS, blocks, grid
from .holes import DTYPE, _epilogue, _gather, _weight_index

CONV_TILE = 16
CONV_PADDED = 17  # a shared row one longer than the tile: column walks hit distinct banks
CONV_ROWS = 4  # result rows per thread: each weight read from shared memory serves four
CONV_TILE_ROWS = CONV_TILE * CONV_ROWS


@cuda.jit(device=True)
def _forward_gather(src, n, rh, rw, kh, kw, g, inner, c, SH, SW, SC, sh, sw, pt, pl, dh, dw):
    # conv: src is x; a tap lands at input pixel (rh*sh - pt + kh*dh, rw*sw - pl + kw*dw).
    ih = rh * sh - pt + kh * dh
    iw = rw * sw - pl + kw * dw
    if ih >= 0 and ih < SH and iw >= 0 and iw < SW:
        return src[((n * SH + ih) * SW + iw) * SC + g * inner + c]
    return DTYPE(0)


@cuda.jit(device=True)
def _forward_weight(g, cols, inner, j, c, kh, kw, KH, KW):
    return (((g * cols + j) * inner + c) * KH + kh) * KW + kw


@cuda.jit(device=True)
def _grad_input_gather(src, n, rh, rw, kh, kw, g, inner, c, SH, SW, SC, sh, sw, pt, pl, dh, dw):
    # conv_grad_input in gather form: src is dy; the tap reads the output pixel whose window
    # put tap (kh, kw) on this input pixel, if there is one. Each block owns its dx tile: no atomics.
    th = rh + pt - kh * dh
    tw = rw + pl - kw * dw
    if th >= 0 and tw >= 0 and th % sh == 0 and tw % sw == 0:
        oh = th // sh
        ow = tw // sw
        if oh < SH and ow < SW:
            return src[((n * SH + oh) * SW + ow) * SC + g * inner + c]
    return DTYPE(0)


@cuda.jit(device=True)
def _grad_input_weight(g, cols, inner, j, c, kh, kw, KH, KW):
    return (((g * inner + c) * cols + j) * KH + kh) * KW + kw


@cuda.jit(cache=True)
def _implicit_gemm(src, w, out, e, N, SH, SW, SC, RH, RW, RC, KH, KW, sh, sw, pt, pl, dh, dw, groups):
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
                    v = _gather(src, rn[r], rrh[r], rrw[r], kh, kw, g, inner, c, SH, SW, SC, sh, sw, pt, pl, dh, dw)
                a[row, tx] = v
            v = DTYPE(0)
            k = k0 + ty
            if j < cols and k < K:
                tap = k // inner
                c = k - tap * inner
                kh = tap // KW
                kw = tap - kh * KW
                v = w[_weight_index(g, cols, inner, j, c, kh, kw, KH, KW)]
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


@cuda.jit(cache=True)
def _conv_grad_weight(x, dy, dwt, N, H, W, C, OH, OW, Cout, KH, KW, sh, sw, pt, pl, dh, dw, groups):
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
def _direct_forward(x, w, o, e, N, H, W, C, OH, OW, Cout, KH, KW, sh, sw, pt, pl, dh, dw, groups):
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
def _direct_grad_input(dy, w, dx, e, N, OH, OW, Cout, H, W, C, KH, KW, sh, sw, pt, pl, dh, dw, groups):
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


# Launchers: shapes from the arrays, then flat views for the kernels.
def _conv_tiles(n):
    return (n + CONV_TILE - 1) // CONV_TILE


def _row_tiles(n):
    return (n + CONV_TILE_ROWS - 1) // CONV_TILE_ROWS


def conv_forward(x, weight, out, e, sh, sw, pt, pl, dh, dw, groups):
    N, H, W, C = x.shape
    OH, OW, Cout = out.shape[1], out.shape[2], out.shape[3]
    launch = (grid(_row_tiles(N * OH * OW)), _conv_tiles(Cout // groups), groups)
    _implicit_gemm[launch, (CONV_TILE, CONV_TILE)](
        x.reshape(x.size), weight.reshape(weight.size), out.reshape(out.size), e,
        N, H, W, C, OH, OW, Cout, weight.shape[2], weight.shape[3], sh, sw, pt, pl, dh, dw, groups)


def conv_grad_input(dy, weight, dx, e, sh, sw, pt, pl, dh, dw, groups):
    N, OH, OW, Cout = dy.shape
    H, W, C = dx.shape[1], dx.shape[2], dx.shape[3]
    launch = (grid(_row_tiles(N * H * W)), _conv_tiles(C // groups), groups)
    _implicit_gemm[launch, (CONV_TILE, CONV_TILE)](
        dy.reshape(dy.size), weight.reshape(weight.size), dx.reshape(dx.size), e,
        N, OH, OW, Cout, H, W, C, weight.shape[2], weight.shape[3], sh, sw, pt, pl, dh, dw, groups)


def conv_grad_weight(x, dy, dwt, sh, sw, pt, pl, dh, dw, groups):
    N, H, W, C = x.shape
    OH, OW, Cout = dy.shape[1], dy.shape[2], dy.shape[3]
    KH, KW = dwt.shape[2], dwt.shape[3]
    launch = (grid(_conv_tiles(KH * KW * (C // groups))), _conv_tiles(Cout // groups), groups)
    _conv_grad_weight[launch, (CONV_TILE, CONV_TILE)](
        x.reshape(x.size), dy.reshape(dy.size), dwt.reshape(dwt.size),
        N, H, W, C, OH, OW, Cout, KH, KW, sh, sw, pt, pl, dh, dw, groups)


def direct_forward(x, weight, out, e, sh, sw, pt, pl, dh, dw, groups):
    N, H, W, C = x.shape
    OH, OW, Cout = out.shape[1], out.shape[2], out.shape[3]
    _direct_forward[blocks(out.size), THREADS](
        x.reshape(x.size), weight.reshape(weight.size), out.reshape(out.size), e,
        N, H, W, C, OH, OW, Cout, weight.shape[2], weight.shape[3], sh, sw, pt, pl, dh, dw, groups)


def direct_grad_input(dy, weight, dx, e, sh, sw, pt, pl, dh, dw, groups):
    N, OH, OW, Cout = dy.shape
    H, W, C = dx.shape[1], dx.shape[2], dx.shape[3]
    _direct_grad_input[blocks(dx.size), THREADS](
        dy.reshape(dy.size), weight.reshape(weight.size), dx.reshape(dx.size), e,
        N, OH, OW, Cout, H, W, C, weight.shape[2], weight.shape[3], sh, sw, pt, pl, dh, dw, groups)
