"""Losses, each reduced to a scalar (the batch mean), and their gradients: softmax
cross-entropy over integer labels, and the pointwise losses (mse, bce with logits).

Cross-entropy runs one block per row (a row: one example's, or one pixel's, class
scores), reducing its max and sum of exponentials as shared-memory trees; the
per-row losses and the labelled count are then reduced by one block each.
Pointwise losses sum per block, then once more over the blocks. All sums are
float64, like the CPU's.
"""

import math

import numpy as np
from numba import cuda, float64, int64

from ..shared.loss import pointwise_grad, pointwise_term
from .common import THREADS, blocks, grid

LOSS_PARTS = 1024  # blocks of the first reduction pass of a pointwise loss


@cuda.jit(device=True)
def _tree_sum(sm, t, width):
    # sm[0] = sum(sm[:width]), width a power of two; every thread of the block calls it after a sync.
    step = width // 2
    while step > 0:
        if t < step:
            sm[t] += sm[t + step]
        cuda.syncthreads()
        step //= 2


@cuda.jit(device=True)
def _tree_max(sm, t, width):
    step = width // 2
    while step > 0:
        if t < step:
            sm[t] = max(sm[t], sm[t + step])
        cuda.syncthreads()
        step //= 2


@cuda.jit(cache=True)
def _labelled(t, ignore, count):
    sm = cuda.shared.array(THREADS, int64)
    tid = cuda.threadIdx.x
    width = cuda.blockDim.x
    k = 0
    for r in range(tid, t.size, width):
        if t[r] != ignore:
            k += 1
    sm[tid] = k
    cuda.syncthreads()
    _tree_sum(sm, tid, width)
    if tid == 0:
        count[0] = sm[0]


@cuda.jit(cache=True)
def _ce_rows(x, t, dy, count, losses, g, C, rows, ignore, want_loss, want_grad):
    sm = cuda.shared.array(THREADS, float64)
    tid = cuda.threadIdx.x
    width = cuda.blockDim.x
    n = count[0]
    scale = dy[0] / n if n else 0.0
    for r in range(cuda.blockIdx.x, rows, cuda.gridDim.x):
        base = r * C
        label = t[r]
        if label == ignore:  # the same for every thread of the block
            if tid == 0:
                losses[r] = 0.0
            if want_grad:
                for j in range(tid, C, width):
                    g[base + j] = 0.0
            continue
        if label < 0 or label >= C:  # never index with a bad label: NaN, never a wrong number
            if tid == 0:
                losses[r] = math.nan
            if want_grad:
                for j in range(tid, C, width):
                    g[base + j] = math.nan
            continue
        m = -math.inf
        for j in range(tid, C, width):
            m = max(m, float64(x[base + j]))
        sm[tid] = m
        cuda.syncthreads()
        _tree_max(sm, tid, width)
        m = sm[0]
        cuda.syncthreads()
        s = 0.0
        for j in range(tid, C, width):
            s += math.exp(x[base + j] - m)
        sm[tid] = s
        cuda.syncthreads()
        _tree_sum(sm, tid, width)
        s = sm[0]
        cuda.syncthreads()  # sm is refilled by the next row
        if want_loss and tid == 0:
            losses[r] = math.log(s) + m - x[base + label]
        if want_grad:
            for j in range(tid, C, width):
                v = math.exp(x[base + j] - m) / s * scale
                g[base + j] = v - scale if j == label else v


@cuda.jit(device=True)
def _block_sum(values, sm):
    # The sum of all values, by one block (sm: a shared float64 array of blockDim.x); every thread gets it.
    tid = cuda.threadIdx.x
    width = cuda.blockDim.x
    s = 0.0
    for r in range(tid, values.size, width):
        s += values[r]
    sm[tid] = s
    cuda.syncthreads()
    _tree_sum(sm, tid, width)
    return sm[0]


@cuda.jit(cache=True)
def _ce_mean(losses, count, out):
    sm = cuda.shared.array(THREADS, float64)
    total = _block_sum(losses, sm)
    if cuda.threadIdx.x == 0:
        out[0] = total / count[0] if count[0] else math.nan


def _width(n):
    # A power of two from a warp to a full block: threads for n items, one or more each.
    width = 32
    while width < n and width < THREADS:
        width *= 2
    return width


# Launchers.
def cross_entropy_with_grad(logits, labels, dy, out, dx, ignore, want_loss, want_grad):
    C = logits.shape[logits.ndim - 1]  # (the simulator's shapes take no negative index)
    rows = logits.size // C
    x = logits.reshape(logits.size)
    t = labels.reshape(labels.size)
    g = dx.reshape(dx.size)
    count = cuda.device_array(1, np.int64)
    _labelled[1, _width(rows)](t, ignore, count)
    losses = cuda.device_array(rows, np.float64)
    _ce_rows[grid(rows), _width(C)](x, t, dy.reshape(dy.size), count, losses, g, C, rows, ignore,
                                    want_loss, want_grad)
    if want_loss:
        _ce_mean[1, _width(rows)](losses, count, out.reshape(out.size))


def cross_entropy(logits, labels, out, ignore):
    cross_entropy_with_grad(logits, labels, out, out, logits, ignore, True, False)


def cross_entropy_grad(logits, labels, dy, dx, ignore):
    cross_entropy_with_grad(logits, labels, dy, dy, dx, ignore, False, True)


@cuda.jit(cache=True)
def _pointwise_parts(a, b, parts, kind, n):
    sm = cuda.shared.array(THREADS, float64)
    tid = cuda.threadIdx.x
    s = 0.0
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        s += pointwise_term(a, b, i, kind)
    sm[tid] = s
    cuda.syncthreads()
    _tree_sum(sm, tid, THREADS)
    if tid == 0:
        parts[cuda.blockIdx.x] = sm[0]


@cuda.jit(cache=True)
def _pointwise_mean(parts, out, n):
    sm = cuda.shared.array(THREADS, float64)
    total = _block_sum(parts, sm)
    if cuda.threadIdx.x == 0:
        out[0] = total / n


def pointwise_loss(p, t, out, kind):
    n = p.size
    chunks = min(blocks(n), LOSS_PARTS)
    parts = cuda.device_array(chunks, np.float64)
    _pointwise_parts[chunks, THREADS](p.reshape(n), t.reshape(n), parts, kind, n)
    _pointwise_mean[1, _width(chunks)](parts, out.reshape(out.size), n)


@cuda.jit(cache=True)
def _pointwise_grad(a, b, dy, g, kind, wrt, n):
    scale = dy[0] / n
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        pointwise_grad(a, b, g, i, kind, wrt, scale)


def pointwise_loss_grad(p, t, dy, dx, kind, wrt):
    n = p.size
    _pointwise_grad[blocks(n), THREADS](p.reshape(n), t.reshape(n), dy.reshape(dy.size), dx.reshape(n), kind, wrt, n)
