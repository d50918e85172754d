"""Losses, each reduced to a scalar (a mean or a sum), and their gradients: softmax cross-entropy
over integer labels or probabilities, and the pointwise losses (mse, bce with logits), each with
an optional weight per element.

Cross-entropy runs one block per row (a row: one element's class scores, e.g. one
example's, one pixel's or one token's), reducing its max and sum of exponentials (and,
for probabilities, its loss and the targets' sum) as shared-memory trees; the per-row
losses and the labelled count are then reduced by one block each.
Pointwise losses sum per block, then once more over the blocks. All sums are
float64, like the CPU's.
"""

import math

import numpy as np
from numba import cuda, float64, int64

from ..shared.loss import line_start, pointwise_grad, pointwise_term, swapped, weight_at
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
def _labelled(t, ignore, count, soft, rows):
    # The divisor of a mean: the labelled rows (every row for probabilities).
    sm = cuda.shared.array(THREADS, int64)
    tid = cuda.threadIdx.x
    width = cuda.blockDim.x
    if soft:
        if tid == 0:
            count[0] = rows
        return
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
def _ce_rows(x, t, w, dy, count, losses, g, rows, per, C, inner, ignore, label_swap, weight_swap, soft, mean, wrt):
    # wrt: -1 no gradient, 0 the logits, 1 the probabilities, 2 the weight.
    sm = cuda.shared.array(THREADS, float64)
    sm2 = cuda.shared.array(THREADS, float64)
    tid = cuda.threadIdx.x
    width = cuda.blockDim.x
    n = count[0] if mean else 1
    scale = dy[0] / n if n else 0.0
    for r in range(cuda.blockIdx.x, rows, cuda.gridDim.x):
        base = line_start(r, C, inner)
        k = swapped(r, per, weight_swap)
        label = 0
        if not soft:
            label = int(t[swapped(r, per, label_swap)])
            if label == ignore or label < 0 or label >= C:  # the same for every thread of the block
                # ignored: no loss, no gradient; a bad label: NaN, never a wrong number (nor a bad index)
                value = 0.0 if label == ignore else math.nan
                if tid == 0:
                    losses[r] = value
                    if wrt == 2:
                        g[k] = value
                if wrt == 0:
                    for j in range(tid, C, width):
                        g[base + j * inner] = value
                continue
        m = -math.inf
        for j in range(tid, C, width):
            m = max(m, float64(x[base + j * inner]))
        sm[tid] = m
        cuda.syncthreads()
        _tree_max(sm, tid, width)
        m = sm[0]
        cuda.syncthreads()
        s = 0.0
        for j in range(tid, C, width):
            s += math.exp(x[base + j * inner] - m)
        sm[tid] = s
        cuda.syncthreads()
        _tree_sum(sm, tid, width)
        s = sm[0]
        lse = m + math.log(s)
        cuda.syncthreads()  # sm is refilled next
        tsum = 1.0
        if soft:  # -sum(t log_softmax(x)) and sum(t), as two trees
            ce = 0.0
            tsum = 0.0
            for j in range(tid, C, width):
                tj = t[base + j * inner]
                ce += tj * (lse - x[base + j * inner])
                tsum += tj
            sm[tid] = ce
            sm2[tid] = tsum
            cuda.syncthreads()
            _tree_sum(sm, tid, width)
            _tree_sum(sm2, tid, width)
            ce = sm[0]
            tsum = sm2[0]
            cuda.syncthreads()  # sm and sm2 are refilled by the next row
        else:
            ce = lse - x[base + label * inner]
        wk = weight_at(w, k)
        ws = wk * scale
        if tid == 0:
            losses[r] = wk * ce
            if wrt == 2:
                g[k] = ce * scale
        if wrt == 0:  # (softmax * sum(t) - t) * w * scale
            for j in range(tid, C, width):
                i = base + j * inner
                v = math.exp(x[i] - m) / s * tsum
                if soft:
                    v -= t[i]
                elif j == label:
                    v -= 1.0
                g[i] = v * ws
        elif wrt == 1:
            for j in range(tid, C, width):
                g[base + j * inner] = (lse - x[base + j * inner]) * ws


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
def _ce_total(losses, count, out, mean):
    sm = cuda.shared.array(THREADS, float64)
    total = _block_sum(losses, sm)
    n = count[0] if mean else 1
    if cuda.threadIdx.x == 0:
        out[0] = total / n if n else math.nan


def _width(n):
    # A power of two from a warp to a full block: threads for n items, one or more each.
    width = 32
    while width < n and width < THREADS:
        width *= 2
    return width


# Launchers.
def cross_entropy_with_grad(x, t, weight, dy, out, g, ignore, C, inner, per, label_swap, weight_swap, soft, mean,
                            want_loss, wrt):
    # Flat buffers; wrt: -1 no gradient, 0 the logits, 1 the probabilities, 2 the weight (g: that one's gradient).
    rows = x.size // C
    count = cuda.device_array(1, np.int64)
    _labelled[1, _width(rows)](t, ignore, count, soft, rows)
    losses = cuda.device_array(rows, np.float64)
    _ce_rows[grid(rows), _width(C)](x, t, weight, dy.reshape(dy.size), count, losses, g, rows, per, C, inner, ignore,
                                    label_swap, weight_swap, soft, mean, wrt)
    if want_loss:
        _ce_total[1, _width(rows)](losses, count, out.reshape(out.size), mean)


def cross_entropy(logits, target, weight, out, ignore, C, inner, per, label_swap, weight_swap, soft, mean):
    cross_entropy_with_grad(logits, target, weight, out, out, logits, ignore, C, inner, per, label_swap, weight_swap, soft,
                            mean, True, -1)


def cross_entropy_grad(logits, target, weight, dy, dx, ignore, C, inner, per, label_swap, weight_swap, soft, mean, wrt):
    cross_entropy_with_grad(logits, target, weight, dy, dy, dx, ignore, C, inner, per, label_swap, weight_swap, soft, mean,
                            False, wrt)


@cuda.jit(cache=True)
def _pointwise_parts(a, b, w, parts, kind, pos, n):
    sm = cuda.shared.array(THREADS, float64)
    tid = cuda.threadIdx.x
    s = 0.0
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        s += pointwise_term(a, b, i, kind, pos) * weight_at(w, i)
    sm[tid] = s
    cuda.syncthreads()
    _tree_sum(sm, tid, THREADS)
    if tid == 0:
        parts[cuda.blockIdx.x] = sm[0]


@cuda.jit(cache=True)
def _pointwise_total(parts, out, divisor):
    sm = cuda.shared.array(THREADS, float64)
    total = _block_sum(parts, sm)
    if cuda.threadIdx.x == 0:
        out[0] = total / divisor


def pointwise_loss(a, b, w, out, kind, mean, pos):
    # Flat buffers.
    n = a.size
    chunks = min(blocks(n), LOSS_PARTS)
    parts = cuda.device_array(chunks, np.float64)
    _pointwise_parts[chunks, THREADS](a, b, w, parts, kind, pos, n)
    _pointwise_total[1, _width(chunks)](parts, out.reshape(out.size), n if mean else 1)


@cuda.jit(cache=True)
def _pointwise_grad(a, b, w, dy, g, kind, pos, wrt, divisor, n):
    scale = dy[0] / divisor
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        pointwise_grad(a, b, w, g, i, kind, wrt, scale, pos)


def pointwise_loss_grad(a, b, w, dy, g, kind, mean, pos, wrt):
    n = a.size
    _pointwise_grad[blocks(n), THREADS](a, b, w, dy.reshape(dy.size), g, kind, pos, wrt, n if mean else 1, n)
