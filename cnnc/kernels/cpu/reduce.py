"""Reductions on the CPU: sum and mean over axes or over everything, broadcasts back (their
gradients, and expand), and the Gram matrix and its gradient as BLAS GEMMs.

Parallel loops over the outputs (a reduction over everything: over chunks, then their
partial sums); sums are float64. The GEMMs run per example and per block of columns or
rows under one prange, BLAS held to one thread in each.
"""

import numpy as np
from numba import njit, prange

from ..shared.reduce import loop_count, strided_offset, strided_sum
from .blas import _gemm, _one_zero

SUM_CHUNKS = 256  # chunks of a reduction over everything, summed in parallel
GEMM_BLOCK = 64  # columns (or rows) of one GEMM of the Gram matrix or its gradient


@njit(parallel=True, cache=True)
def reduce_axes(x, out, per, kept, kept_strides, summed, summed_strides, scale):
    # Output o of example e starts at the element of x its kept nest reaches, and sums the summed nest from there.
    k = loop_count(kept)
    for o in prange(out.size):
        e = o // k
        out[o] = strided_sum(x, e * per + strided_offset(o - e * k, kept, kept_strides), summed, summed_strides) * scale


@njit(parallel=True, cache=True)
def reduce_all(x, out, mean):
    n = x.size
    chunk = (n + SUM_CHUNKS - 1) // SUM_CHUNKS
    parts = np.zeros(SUM_CHUNKS)
    for p in prange(SUM_CHUNKS):
        acc = 0.0
        for i in range(p * chunk, min(n, p * chunk + chunk)):
            acc += x[i]
        parts[p] = acc
    total = parts.sum()
    out[0] = total / n if mean else total


@njit(parallel=True, cache=True)
def broadcast_axes(src, out, per, src_per, sizes, strides, scale, whole):
    # Each run of the innermost loop of out's nest in parallel; `whole`: scale divided by every element.
    s = scale / out.size if whole else scale
    last = len(sizes) - 1
    inner = sizes[last]
    stride = strides[last]
    for r in prange(out.size // inner):
        i = r * inner
        e = i // per
        b = e * src_per + strided_offset(i - e * per, sizes, strides)
        for j in range(inner):
            out[i + j] = src[b + j * stride] * s


@njit(cache=True)
def _pixel_rows(x, n, c, length, channels_last):
    # F^T of every example, L rows of C: what a channels-last buffer holds; a [C, L] buffer is transposed.
    if channels_last:
        return x
    return np.ascontiguousarray(x.reshape((n, c, length)).transpose(0, 2, 1)).reshape(x.size)


@njit(cache=True)
def _alpha_zero(like, alpha):
    # _gemm's scalars without accumulation: alpha, then beta = 0.
    v = np.zeros(2, like.dtype)
    v[0] = alpha
    return v


@njit(parallel=True, cache=True)
def gram(x, out, c, length, channels_last, scale):
    # G = scale * F F^T = scale * A^T A per example, A = F^T (L rows of C); each task a block of G's columns.
    n = out.size // (c * c)
    a = _pixel_rows(x, n, c, length, channels_last)
    alpha = _alpha_zero(out, scale)
    size = c * length
    nb = (c + GEMM_BLOCK - 1) // GEMM_BLOCK
    for t in prange(n * nb):
        e = t // nb
        j0 = (t - e * nb) * GEMM_BLOCK
        _gemm(True, c, min(GEMM_BLOCK, c - j0), length, a, e * size, c, a, e * size + j0, c, out, e * c * c + j0, c, alpha, False)


@njit(cache=True)
def _symmetrized(dy, n, c, scale):
    # S = scale * (dG + dG^T) of every example.
    s = np.empty(dy.size, dy.dtype)
    for e in range(n):
        o = e * c * c
        for i in range(c):
            for j in range(c):
                s[o + i * c + j] = (dy[o + i * c + j] + dy[o + j * c + i]) * scale
    return s


@njit(parallel=True, cache=True)
def gram_grad(dy, x, dx, c, length, channels_last, scale):
    # dF = S F with S = scale * (dG + dG^T); channels-last, dF^T = F^T S (S is symmetric). Each task a block of L.
    n = dy.size // (c * c)
    s = _symmetrized(dy, n, c, scale)
    one_zero = _one_zero(dx)
    size = c * length
    nb = (length + GEMM_BLOCK - 1) // GEMM_BLOCK
    if channels_last:
        for t in prange(n * nb):
            e = t // nb
            r0 = (t - e * nb) * GEMM_BLOCK
            rows = min(GEMM_BLOCK, length - r0)
            _gemm(False, rows, c, c, x, e * size + r0 * c, c, s, e * c * c, c, dx, e * size + r0 * c, c, one_zero, False)
    else:
        for t in prange(n * nb):
            e = t // nb
            j0 = (t - e * nb) * GEMM_BLOCK
            cols = min(GEMM_BLOCK, length - j0)
            _gemm(False, c, cols, c, s, e * c * c, c, x, e * size + j0, length, dx, e * size + j0, length, one_zero, False)
