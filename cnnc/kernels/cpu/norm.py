"""Batchnorm (forward, gradients, and the fused batchnorm group), dropout and dropout2d on the CPU.

Both read the run-time mode flag (`training`) rather than baking the mode into
the kernel, so one compiled model serves train() and eval(). Buffers are
[rows, C] with channels last for both [N, C] and NHWC [N, H, W, C], so every
kernel takes flat views and the channel count: one compile per dtype.
Statistics accumulate in float64 over a fixed number of row chunks (partial
sums per chunk), which keeps results independent of the thread count.
"""

import numpy as np
from numba import njit, prange, uint64

from ..shared.norm import (
    bn_channel_constants,
    bn_grad_constants,
    bn_moments,
    bn_update_running,
    channel_draw,
    dropout_drops,
    dropout_stream,
)
from .holes import _post, _stage


@njit(cache=True)
def _bn_chunks(rows):
    return min(rows, 64)


@njit(cache=True)
def _bn_first_row(xr):
    # The shift for one-pass sums: a value near each channel's mean avoids
    # cancellation in sum((x - s)^2) - sum(x - s)^2 / n.
    c = xr.shape[1]
    shift = np.empty(c, np.float64)
    for j in range(c):
        shift[j] = xr[0, j]
    return shift


@njit(cache=True)
def _bn_sum_x(xr, shift, p, lo, hi):
    # Rows [lo, hi): p[0] += x - s, p[1] += (x - s)^2 per channel.
    c = xr.shape[1]
    s1 = p[0]
    s2 = p[1]
    for r in range(lo, hi):
        for j in range(c):
            d = xr[r, j] - shift[j]
            s1[j] += d
            s2[j] += d * d


@njit(cache=True)
def _bn_sum_xdy(xr, dyr, shift, p, lo, hi):
    # Rows [lo, hi): as _bn_sum_x, and p[2] += dy, p[3] += dy * (x - s).
    c = xr.shape[1]
    s1 = p[0]
    s2 = p[1]
    s3 = p[2]
    s4 = p[3]
    for r in range(lo, hi):
        for j in range(c):
            d = xr[r, j] - shift[j]
            g = np.float64(dyr[r, j])
            s1[j] += d
            s2[j] += d * d
            s3[j] += g
            s4[j] += g * d


@njit(cache=True)
def _bn_total(part):
    # The per-chunk partial sums added up: [chunks, k, c] -> [k, c].
    chunks, k, c = part.shape
    out = np.zeros((k, c), np.float64)
    for t in range(chunks):
        for i in range(k):
            for j in range(c):
                out[i, j] += part[t, i, j]
    return out


@njit(parallel=True, cache=True)
def _batch_constants(x, weight, bias, running_mean, running_var, training, c, eps, momentum, affine):
    # Per-channel (mean, scale, shift) in x's dtype, so that y = (x - mean) * scale + shift:
    # from the batch statistics in training (updating the running averages), else the running ones.
    rows = x.size // c
    xr = x.reshape((rows, c))
    mean = np.empty(c, np.float64)
    var = np.empty(c, np.float64)
    if training[0]:
        shift = _bn_first_row(xr)
        chunks = _bn_chunks(rows)
        part = np.zeros((chunks, 2, c), np.float64)
        for t in prange(chunks):
            _bn_sum_x(xr, shift, part[t], t * rows // chunks, (t + 1) * rows // chunks)
        sums = _bn_total(part)
        for j in range(c):
            d, var[j] = bn_moments(sums[0, j], sums[1, j], rows)
            mean[j] = shift[j] + d
            bn_update_running(running_mean, running_var, j, mean[j], var[j], rows, momentum)
    else:
        for j in range(c):
            mean[j] = running_mean[j]
            var[j] = running_var[j]
    m = np.empty(c, x.dtype)
    s = np.empty(c, x.dtype)
    b = np.empty(c, x.dtype)
    for j in range(c):
        bn_channel_constants(m, s, b, j, mean[j], var[j], weight, bias, eps, affine)
    return m, s, b


@njit(parallel=True, cache=True)
def batchnorm(x, weight, bias, running_mean, running_var, training, out, c, eps, momentum, affine):
    m, s, b = _batch_constants(x, weight, bias, running_mean, running_var, training, c, eps, momentum, affine)
    rows = x.size // c
    xr = x.reshape((rows, c))
    orr = out.reshape((rows, c))
    for r in prange(rows):
        for j in range(c):
            orr[r, j] = (xr[r, j] - m[j]) * s[j] + b[j]


@njit(parallel=True, cache=True)
def batchnorm_grads(x, dy, weight, running_mean, running_var, training, dx, dw, db, c, eps, affine, want_dx, want_dw, want_db):
    # The input, weight and bias gradients (those wanted) from one pass of sums (see bn_grad_constants).
    rows = dy.size // c
    xr = x.reshape((rows, c))
    dyr = dy.reshape((rows, c))
    train = training[0] != 0
    if train:
        shift = _bn_first_row(xr)
    else:
        shift = np.empty(c, np.float64)
        for j in range(c):
            shift[j] = running_mean[j]
    chunks = _bn_chunks(rows)
    part = np.zeros((chunks, 4, c), np.float64)
    for t in prange(chunks):
        _bn_sum_xdy(xr, dyr, shift, part[t], t * rows // chunks, (t + 1) * rows // chunks)
    sums = _bn_total(part)
    m = np.empty(c, dx.dtype)
    a = np.empty(c, dx.dtype)
    k = np.empty(c, dx.dtype)
    b = np.empty(c, dx.dtype)
    for j in range(c):
        bn_grad_constants(sums[0, j], sums[1, j], sums[2, j], sums[3, j], shift, running_var, weight, dw, db,
                          m, a, k, b, j, rows, eps, affine, train, want_dw, want_db)
    if want_dx:
        dxr = dx.reshape((rows, c))
        for r in prange(rows):
            for j in range(c):
                dxr[r, j] = dyr[r, j] * a[j] + (xr[r, j] - m[j]) * k[j] + b[j]


@njit(cache=True)
def batchnorm_grad_input(x, dy, weight, running_mean, running_var, training, dx, c, eps, affine):
    unused = np.empty(c, dx.dtype)
    batchnorm_grads(x, dy, weight, running_mean, running_var, training, dx, unused, unused, c, eps, affine,
                    True, False, False)


@njit(cache=True)
def batchnorm_grad_weight(x, dy, running_mean, running_var, training, dw, c, eps):
    # dw = sum(dy * x_hat), x_hat from the batch statistics (training) or the running ones (eval).
    batchnorm_grads(x, dy, running_var, running_mean, running_var, training, dy, dw, dw, c, eps, False,
                    False, True, False)


# The fused batchnorm group: a stage (the anchor with its own epilogue, or an elementwise
# loop) fills x; then batchnorm's statistics and constants, computed by the same function
# as the batchnorm kernel (so the results are the same to the bit); then one normalizing
# pass that runs the chain of ops after batchnorm (`_post`).
@njit(parallel=True, cache=True)
def _bn_normalize(x, o, m, s, b, C, e, block):
    n = o.size
    for blk in prange((n + block - 1) // block):
        lo = blk * block
        _post(o, lo, min(n, lo + block), C, e, x, m, s, b)


@njit(cache=True)
def fused_batchnorm(stage, x, weight, bias, running_mean, running_var, training, o, e, C, eps, momentum, affine, block):
    _stage(*stage)
    m, s, b = _batch_constants(x, weight, bias, running_mean, running_var, training, C, eps, momentum, affine)
    _bn_normalize(x, o, m, s, b, C, e, block)


@njit(cache=True)
def _no_stage():
    # The stage of a group whose batchnorm reads a value computed by an earlier kernel.
    return


# Masks are hashes (dropout_drops, shared with the GPU): dropout draws once per element,
# dropout2d once per (example, channel).
@njit(parallel=True, cache=True)
def dropout(x, rng, training, out, p):
    n = out.size
    if training[0] == 0 or p == 0.0:
        for i in prange(n):
            out[i] = x[i]
        return
    base = dropout_stream(rng[0], rng[1], rng[2])
    threshold = uint64(p * 9007199254740992.0)  # p * 2^53
    scale = 1.0 / (1.0 - p)
    for i in prange(n):
        if dropout_drops(base, i, threshold):
            out[i] = 0.0
        else:
            out[i] = x[i] * scale


@njit(parallel=True, cache=True)
def dropout2d(x, rng, training, out, p, channels, stride, per_example):
    n = out.size
    if training[0] == 0 or p == 0.0:
        for i in prange(n):
            out[i] = x[i]
        return
    base = dropout_stream(rng[0], rng[1], rng[2])
    threshold = uint64(p * 9007199254740992.0)  # p * 2^53
    scale = 1.0 / (1.0 - p)
    # A block holds every channel once, each a run of `stride` elements (a pixel's channels when
    # channels-last, a whole example of [C, L]), within one example: its draws follow its first.
    block = channels * stride
    for r in prange(n // block):
        lo = r * block
        first = channel_draw(lo, channels, stride, per_example)
        for c in range(channels):
            keep = not dropout_drops(base, first + c, threshold)
            for i in range(lo + c * stride, lo + (c + 1) * stride):
                out[i] = x[i] * scale if keep else 0.0
