"""The optimizers' update rules (PyTorch's), for element i of the flat arenas: written once, each target
runs them in its parallel loop (cnnc/kernels/cpu/optim.py, cnnc/kernels/cuda/optim.py)."""

import math


def sgd_update(p, g, buf, i, lr, momentum, weight_decay, dampening, nesterov, first):
    d = g[i] + weight_decay * p[i]
    if momentum != 0.0:
        if first:
            buf[i] = d
        else:
            buf[i] = momentum * buf[i] + (1.0 - dampening) * d
        d = d + momentum * buf[i] if nesterov else buf[i]
    p[i] -= lr * d


def adam_update(p, g, m, v, i, lr, beta1, beta2, eps, weight_decay, c1, c2):
    d = g[i] + weight_decay * p[i]
    m[i] = beta1 * m[i] + (1.0 - beta1) * d
    v[i] = beta2 * v[i] + (1.0 - beta2) * d * d
    p[i] -= lr * (m[i] / c1) / (math.sqrt(v[i] / c2) + eps)
