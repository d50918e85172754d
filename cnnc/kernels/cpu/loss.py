"""Losses, each reduced to a scalar (a mean or a sum), and their gradients: softmax cross-entropy
over integer labels or probabilities, and the pointwise losses (mse, bce with logits), each with
an optional weight per element. Parallel loops over the rows (elements); the sums are float64."""

import math

import numpy as np
from numba import njit, prange

from ..shared.loss import line_start, pointwise_grad, pointwise_term, swapped, weight_at


@njit(cache=True)
def _max_and_sum_exp(x, base, C, inner, e, keep):
    # The row's max and sum of exp(x - max), in the logits' own precision (float32 logits take
    # float32 exps, half the cost) with a float64 sum; `keep`: each exp also stored in e (the
    # gradient's buffer), so the gradient needs no second exp.
    m = x[base]
    for j in range(1, C):
        m = max(m, x[base + j * inner])
    s = 0.0
    if keep:
        for j in range(C):
            i = base + j * inner
            v = math.exp(x[i] - m)
            e[i] = v
            s += v
    else:
        for j in range(C):
            s += math.exp(x[base + j * inner] - m)
    return m, s


@njit(cache=True)
def _labelled(t, ignore):
    count = 0
    for r in range(t.size):
        if t[r] != ignore:
            count += 1
    return count


@njit(cache=True)
def _fill_row(g, base, C, inner, k, wrt, value):
    # An ignored (0) or a bad (NaN) row's gradient.
    if wrt == 2:
        g[k] = value
    elif wrt >= 0:
        for j in range(C):
            g[base + j * inner] = value


@njit(parallel=True, cache=True)
def cross_entropy_with_grad(x, t, weight, dy, out, g, ignore, C, inner, per, label_swap, weight_swap, soft, mean,
                            want_loss, wrt):
    # The loss and (scaled by dy) one gradient in one pass: each row's softmax is computed once.
    # Flat buffers; wrt: -1 none, 0 the logits, 1 the probabilities, 2 the weight (g: that one's gradient).
    rows = x.size // C
    n = (rows if soft else _labelled(t, ignore)) if mean else 1
    scale = dy[0] / n if n else 0.0
    losses = np.zeros(rows)
    for p in prange(rows):
        r = np.int64(p)  # prange counts unsigned: mixed with signed numbers, an index would become a float
        base = line_start(r, C, inner)
        k = swapped(r, per, weight_swap)
        label = 0
        if not soft:
            label = int(t[swapped(r, per, label_swap)])
            if label == ignore:
                _fill_row(g, base, C, inner, k, wrt, 0.0)
                continue
            if label < 0 or label >= C:  # never index with a bad label: NaN, never a wrong number
                losses[r] = np.nan
                _fill_row(g, base, C, inner, k, wrt, np.nan)
                continue
        m, s = _max_and_sum_exp(x, base, C, inner, g, wrt == 0)
        lse = m + math.log(s)
        tsum = 1.0
        if soft:
            ce = 0.0
            tsum = 0.0
            for j in range(C):
                tj = t[base + j * inner]
                ce += tj * (lse - x[base + j * inner])
                tsum += tj
        else:
            ce = lse - x[base + label * inner]
        w = weight_at(weight, k)
        losses[r] = w * ce
        ws = w * scale
        if wrt == 0:  # (softmax * sum(t) - t) * w * scale; g holds the exps
            f = tsum / s
            for j in range(C):
                i = base + j * inner
                v = g[i] * f
                g[i] = (v - t[i] if soft else v) * ws
            if not soft:
                g[base + label * inner] -= ws
        elif wrt == 1:
            for j in range(C):
                g[base + j * inner] = (lse - x[base + j * inner]) * ws
        elif wrt == 2:
            g[k] = ce * scale
    if want_loss:
        out[0] = losses.sum() / n if n else np.nan


@njit(cache=True)
def cross_entropy(logits, target, weight, out, ignore, C, inner, per, label_swap, weight_swap, soft, mean):
    cross_entropy_with_grad(logits, target, weight, out, out, logits, ignore, C, inner, per, label_swap, weight_swap, soft,
                            mean, True, -1)


@njit(cache=True)
def cross_entropy_grad(logits, target, weight, dy, dx, ignore, C, inner, per, label_swap, weight_swap, soft, mean, wrt):
    cross_entropy_with_grad(logits, target, weight, dy, dy, dx, ignore, C, inner, per, label_swap, weight_swap, soft, mean,
                            False, wrt)


@njit(parallel=True, cache=True)
def pointwise_loss(a, b, w, out, kind, mean, pos):
    # Flat buffers.
    total = np.zeros(a.size)
    for i in prange(a.size):
        total[i] = pointwise_term(a, b, i, kind, pos) * weight_at(w, i)
    out[0] = total.sum() / a.size if mean else total.sum()


@njit(parallel=True, cache=True)
def pointwise_loss_grad(a, b, w, dy, g, kind, mean, pos, wrt):
    scale = dy[0] / a.size if mean else dy[0] * 1.0
    for i in prange(a.size):
        pointwise_grad(a, b, w, g, i, kind, wrt, scale, pos)
