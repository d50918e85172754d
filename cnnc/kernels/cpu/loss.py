"""Losses, each reduced to a scalar (the batch mean), and their gradients: softmax
cross-entropy over integer labels, and the pointwise losses (mse, bce with logits).
Parallel loops over the rows (elements); the sums are float64."""

import math

import numpy as np
from numba import njit, prange

from ..shared.loss import pointwise_grad, pointwise_term


@njit(cache=True)
def _max_and_sum_exp(x, r, c):
    m = -np.inf
    for j in range(c):
        m = max(m, x[r, j])
    s = 0.0
    for j in range(c):
        s += math.exp(x[r, j] - m)
    return m, s


@njit(cache=True)
def _labelled(t, ignore):
    count = 0
    for r in range(t.size):
        if t[r] != ignore:
            count += 1
    return count


@njit(parallel=True, cache=True)
def cross_entropy_with_grad(logits, labels, dy, out, dx, ignore, want_loss, want_grad):
    # The loss and (scaled by dy) its gradient in one pass: each row's softmax is computed once.
    c = logits.shape[-1]
    rows = logits.size // c
    x = logits.reshape(rows, c)
    g = dx.reshape(rows, c)
    t = labels.reshape(-1)
    count = _labelled(t, ignore)
    scale = dy[0] / count if count else 0.0
    losses = np.zeros(rows)
    for r in prange(rows):
        label = t[r]
        if label == ignore:
            if want_grad:
                g[r, :] = 0.0
            continue
        if label < 0 or label >= c:  # never index with a bad label: NaN, never a wrong number
            losses[r] = np.nan
            if want_grad:
                g[r, :] = np.nan
            continue
        m, s = _max_and_sum_exp(x, r, c)
        if want_loss:
            losses[r] = math.log(s) + m - x[r, label]
        if want_grad:
            for j in range(c):
                g[r, j] = math.exp(x[r, j] - m) / s * scale
            g[r, label] -= scale
    if want_loss:
        out[0] = losses.sum() / count if count else np.nan


@njit(cache=True)
def cross_entropy(logits, labels, out, ignore):
    cross_entropy_with_grad(logits, labels, out, out, logits, ignore, True, False)


@njit(cache=True)
def cross_entropy_grad(logits, labels, dy, dx, ignore):
    cross_entropy_with_grad(logits, labels, dy, dy, dx, ignore, False, True)


@njit(parallel=True, cache=True)
def pointwise_loss(p, t, out, kind):
    a = p.reshape(-1)
    b = t.reshape(-1)
    total = np.zeros(a.size)
    for i in prange(a.size):
        total[i] = pointwise_term(a, b, i, kind)
    out[0] = total.sum() / a.size


@njit(parallel=True, cache=True)
def pointwise_loss_grad(p, t, dy, dx, kind, wrt):
    a = p.reshape(-1)
    b = t.reshape(-1)
    g = dx.reshape(-1)
    scale = dy[0] / a.size
    for i in prange(a.size):
        pointwise_grad(a, b, g, i, kind, wrt, scale)
