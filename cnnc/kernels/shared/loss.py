"""Numerics of the losses, written once for both targets.

Cross-entropy sees the logits as rows of C class scores `inner` apart (`line_start`);
a tensor without the class axis (labels, a weight) holds row r at `swapped(r, ...)`.
The pointwise losses work on element i of the flat prediction a and target b (kind 0:
mse, 1: bce with logits, `pos` its weight of positive targets): the term the loss sums,
and the gradient with respect to input `wrt` (0: a, 1: b, 2: the weight w).
A missing weight is None: `weight_at` is 1 then, decided when the kernel compiles.
"""

import math


def line_start(r, C, inner):
    """Where row r's first class score lies in the logits seen as [rows / inner, C, inner]."""
    return (r // inner) * C * inner + r % inner


def swapped(r, per, swap):
    """Where a tensor without the class axis holds row r: in each example (`per` rows), row (i, j)
    is its element (j, i), i taking `swap` values (1: the same order)."""
    if swap == 1:
        return r
    n = r // per
    q = r - n * per
    inner = per // swap
    return n * per + (q % inner) * swap + q // inner


def weight_at(w, k):
    if w is None:
        return 1.0
    return float(w[k])


def _softplus_of_minus(x):
    # log(1 + exp(-x)), without overflow
    return math.log1p(math.exp(-abs(x))) + max(-x, 0.0)


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def pointwise_term(a, b, i, kind, pos):
    if kind == 0:  # mse
        d = a[i] - b[i]
        term = d * d
    else:  # bce with logits: max(x, 0) - x t + log(1 + exp(-|x|)), plus (pos - 1) t log(1 + exp(-x))
        x = float(a[i])
        t = b[i]
        term = max(x, 0.0) - x * t + math.log1p(math.exp(-abs(x))) + (pos - 1.0) * t * _softplus_of_minus(x)
    return term


def pointwise_grad(a, b, w, g, i, kind, wrt, scale, pos):
    """Stores g[i]: d(w_i term_i)/d(input wrt) * scale, where scale = dy (/ size for a mean)."""
    if wrt == 2:
        g[i] = pointwise_term(a, b, i, kind, pos) * scale
        return
    s = weight_at(w, i) * scale
    if kind == 0:
        d = 2.0 * (a[i] - b[i]) * s
        g[i] = d if wrt == 0 else -d
    else:
        x = float(a[i])
        t = b[i]
        if wrt == 0:
            g[i] = (_sigmoid(x) - t - (pos - 1.0) * t * _sigmoid(-x)) * s
        else:
            g[i] = (-x + (pos - 1.0) * _softplus_of_minus(x)) * s
