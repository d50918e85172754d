"""Reductions on CUDA: sum and mean over axes or over everything, broadcasts back (their
gradients, and expand), and the Gram matrix and its gradient.

An output that sums few elements gets a thread; otherwise a block, whose threads split its
elements and add them as a shared-memory tree, and where outputs are few their elements
are split over several blocks (blockIdx.y) whose parts a second pass adds. Sums are
float64, like the CPU's. A broadcast is a thread per output element. The Gram matrix and
its gradient are one tiled GEMM over every example (blockIdx.z).
"""

import math

import numpy as np
from numba import cuda, float64

from ..shared.reduce import loop_count, strided_offset, strided_sum
from .common import THREADS, blocks, grid
from .holes import DTYPE
from .loss import _tree_sum, _width

FEW = 32  # elements per output up to which a thread sums an output alone
PARTS = 1024  # the blocks a reduction of few outputs is split into, at most
PER_THREAD = 8  # elements each thread of a split reduction sums, at least


@cuda.jit(cache=True)
def _reduce_threads(x, out, per, kept, kept_strides, summed, summed_strides, scale):
    k = loop_count(kept)
    for o in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        e = o // k
        out[o] = strided_sum(x, e * per + strided_offset(o - e * k, kept, kept_strides), summed, summed_strides) * scale


@cuda.jit(cache=True)
def _reduce_blocks(x, parts, outputs, per, kept, kept_strides, summed, summed_strides):
    # parts[o * P + p]: the share of output o's sum that block row p (of P = gridDim.y) adds.
    sm = cuda.shared.array(THREADS, float64)
    tid = cuda.threadIdx.x
    width = cuda.blockDim.x
    p = cuda.blockIdx.y
    nparts = cuda.gridDim.y
    k = loop_count(kept)
    count = loop_count(summed)
    for o in range(cuda.blockIdx.x, outputs, cuda.gridDim.x):
        e = o // k
        base = e * per + strided_offset(o - e * k, kept, kept_strides)
        acc = 0.0
        for r in range(p * width + tid, count, nparts * width):
            acc += x[base + strided_offset(r, summed, summed_strides)]
        sm[tid] = acc
        cuda.syncthreads()
        _tree_sum(sm, tid, width)
        if tid == 0:
            parts[o * nparts + p] = sm[0]
        cuda.syncthreads()  # sm is refilled for the next output


@cuda.jit(cache=True)
def _add_parts(parts, out, nparts, scale):
    for o in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        acc = 0.0
        for p in range(nparts):
            acc += parts[o * nparts + p]
        out[o] = acc * scale


# Launchers.
def reduce_axes(x, out, per, kept, kept_strides, summed, summed_strides, scale):
    count = math.prod(summed)
    if count <= FEW:
        _reduce_threads[blocks(out.size), THREADS](x, out, per, kept, kept_strides, summed, summed_strides, scale)
        return
    width = _width(count)
    nparts = max(1, min(PARTS // out.size, count // (width * PER_THREAD)))
    parts = cuda.device_array(out.size * nparts, np.float64)
    _reduce_blocks[(grid(out.size), nparts), width](x, parts, out.size, per, kept, kept_strides, summed, summed_strides)
    _add_parts[blocks(out.size), THREADS](parts, out, nparts, scale)


def reduce_all(x, out, mean):
    # Every element of the batch into one output: one summed loop, read straight through.
    reduce_axes(x, out, 0, (1,), (0,), (x.size,), (1,), 1.0 / x.size if mean else 1.0)


@cuda.jit(cache=True)
def _broadcast(src, out, per, src_per, sizes, strides, scale):
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        e = i // per
        out[i] = src[e * src_per + strided_offset(i - e * per, sizes, strides)] * scale


def broadcast_axes(src, out, per, src_per, sizes, strides, scale, whole):
    # `whole`: scale divided by every element.
    _broadcast[blocks(out.size), THREADS](src, out, per, src_per, sizes, strides, scale / out.size if whole else scale)


# The Gram matrix and its gradient: o[e, m, n] = scale * sum_k a[e, m, k] b[e, k, n] for every example e,
# each operand given by its step between examples and its two strides (a transpose is a swap of strides).
# A block computes a GEMM_TILE x GEMM_TILE tile of o (threadIdx.x walks n: stores coalesce), staging K
# in chunks through shared memory, each operand's tile loaded with threadIdx.x along whichever of its
# axes is contiguous. Shared arrays need their element type when compiled: DTYPE, the model's float type.
GEMM_TILE = 16
GEMM_PADDED = 17  # a shared row one longer than the tile: column walks hit distinct banks


@cuda.jit(cache=True)
def _batched_gemm(a, astep, sam, sak, b, bstep, sbk, sbn, o, M, N, K, examples, scale):
    ta = cuda.shared.array((GEMM_TILE, GEMM_PADDED), DTYPE)  # ta[m, k]
    tb = cuda.shared.array((GEMM_TILE, GEMM_PADDED), DTYPE)  # tb[k, n]
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    for e in range(cuda.blockIdx.z, examples, cuda.gridDim.z):
        a0 = e * astep
        b0 = e * bstep
        o0 = e * M * N
        for n0 in range(cuda.blockIdx.y * GEMM_TILE, N, cuda.gridDim.y * GEMM_TILE):
            for m0 in range(cuda.blockIdx.x * GEMM_TILE, M, cuda.gridDim.x * GEMM_TILE):
                acc = DTYPE(0)
                for k0 in range(0, K, GEMM_TILE):
                    v = DTYPE(0)
                    if sak == 1:
                        if m0 + ty < M and k0 + tx < K:
                            v = a[a0 + (m0 + ty) * sam + k0 + tx]
                        ta[ty, tx] = v
                    else:
                        if m0 + tx < M and k0 + ty < K:
                            v = a[a0 + (m0 + tx) * sam + (k0 + ty) * sak]
                        ta[tx, ty] = v
                    v = DTYPE(0)
                    if sbn == 1:
                        if k0 + ty < K and n0 + tx < N:
                            v = b[b0 + (k0 + ty) * sbk + n0 + tx]
                        tb[ty, tx] = v
                    else:
                        if k0 + tx < K and n0 + ty < N:
                            v = b[b0 + (k0 + tx) * sbk + (n0 + ty) * sbn]
                        tb[tx, ty] = v
                    cuda.syncthreads()
                    for kk in range(GEMM_TILE):
                        acc += ta[ty, kk] * tb[kk, tx]
                    cuda.syncthreads()
                if m0 + ty < M and n0 + tx < N:
                    o[o0 + (m0 + ty) * N + n0 + tx] = acc * scale


def _gemm(a, astep, sam, sak, b, bstep, sbk, sbn, o, M, N, K, examples, scale):
    tiles = (grid((M + GEMM_TILE - 1) // GEMM_TILE), grid((N + GEMM_TILE - 1) // GEMM_TILE), grid(examples))
    _batched_gemm[tiles, (GEMM_TILE, GEMM_TILE)](a, astep, sam, sak, b, bstep, sbk, sbn, o, M, N, K, examples, scale)


def gram(x, out, c, length, channels_last, scale):
    n = out.size // (c * c)
    step = c * length
    if channels_last:  # A = F^T, L rows of C: G[i, j] = sum_l A[l, i] A[l, j]
        _gemm(x, step, 1, c, x, step, c, 1, out, c, c, length, n, scale)
    else:  # F, C rows of L: G[i, j] = sum_l F[i, l] F[j, l]
        _gemm(x, step, length, 1, x, step, 1, length, out, c, c, length, n, scale)


@cuda.jit(cache=True)
def _symmetrize(dy, s, c, scale):
    # s = scale * (dG + dG^T) of every example.
    cc = c * c
    for i in range(cuda.grid(1), dy.size, cuda.gridsize(1)):
        e = i // cc
        q = i - e * cc
        r = q // c
        s[i] = (dy[i] + dy[e * cc + (q - r * c) * c + r]) * scale


def gram_grad(dy, x, dx, c, length, channels_last, scale):
    n = dy.size // (c * c)
    s = cuda.device_array(dy.size, dy.dtype)
    _symmetrize[blocks(dy.size), THREADS](dy, s, c, scale)
    step = c * length
    if channels_last:  # dA = A S, L rows of C (S is symmetric)
        _gemm(x, step, c, 1, s, c * c, c, 1, dx, length, c, c, n, 1.0)
    else:  # dF = S F, C rows of L
        _gemm(s, c * c, c, 1, x, step, length, 1, dx, c, length, c, n, 1.0)
