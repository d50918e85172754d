"""The pointwise losses on element i of the flat prediction a and target b (kind 0: mse,
1: bce with logits), written once for both targets: the term the loss averages, and the
gradient with respect to input `wrt` (0: a, 1: b) given scale = dy / size."""

import math


def pointwise_term(a, b, i, kind):
    if kind == 0:  # mse
        d = a[i] - b[i]
        term = d * d
    else:  # bce with logits: max(x, 0) - x t + log(1 + exp(-|x|))
        x = a[i]
        term = max(x, 0.0) - x * b[i] + math.log1p(math.exp(-abs(x)))
    return term


def pointwise_grad(a, b, g, i, kind, wrt, scale):
    """Stores g[i]."""
    if kind == 0:
        d = 2.0 * (a[i] - b[i]) * scale
        g[i] = d if wrt == 0 else -d
    else:
        x = a[i]
        if wrt == 0:
            s = 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
            g[i] = (s - b[i]) * scale
        else:
            g[i] = -x * scale
