"""Batchnorm (forward, gradients, and the fused batchnorm group), dropout and dropout2d on the GPU.

The statistics are the CPU's (cnnc/kernels/cpu/norm.py), from float64 partial
sums. They come from 2-D blocks of BN_TILE_C channels by BN_TILE_R rows, so
neighbouring threads read neighbouring channels (coalesced); each block reduces
its rows as a shared-memory tree and writes one partial per channel, and a
second kernel (one thread per channel) adds the chunks' partials and derives
the per-channel constants. Launchers read the host mode flag (`training`) and
RNG array and pass them on as scalars.
"""

import numpy as np
from numba import cuda, float64

from ..shared.norm import (
    bn_channel_constants,
    bn_grad_constants,
    bn_moments,
    bn_update_running,
    channel_draw,
    dropout_drops,
    dropout_stream,
)
from .common import THREADS, blocks
from .holes import _post, _stage

BN_TILE_C = 32
BN_TILE_R = 8
BN_SUMS = 4


def _bn_chunks(rows):
    # Row chunks of the partial sums: enough blocks to fill a GPU, each thread summing many rows.
    return max(1, min(256, rows // 512))


@cuda.jit(cache=True)
def _bn_partial_sums(x, dy, shift, part, C, rows, per_chunk, with_dy):
    # part[chunk, :, c] = sums over the chunk's rows of (x - s), (x - s)^2, dy, dy * (x - s).
    sm = cuda.shared.array((BN_SUMS, BN_TILE_R, BN_TILE_C), float64)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    c = cuda.blockIdx.x * cuda.blockDim.x + tx
    chunk = cuda.blockIdx.y
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    s4 = 0.0
    if c < C:
        sh = float64(shift[c])
        lo = chunk * per_chunk
        hi = min(rows, lo + per_chunk)
        for r in range(lo + ty, hi, BN_TILE_R):
            d = float64(x[r * C + c]) - sh
            s1 += d
            s2 += d * d
            if with_dy:
                g = float64(dy[r * C + c])
                s3 += g
                s4 += g * d
    sm[0, ty, tx] = s1
    sm[1, ty, tx] = s2
    sm[2, ty, tx] = s3
    sm[3, ty, tx] = s4
    cuda.syncthreads()
    step = BN_TILE_R // 2
    while step > 0:
        if ty < step:
            for k in range(BN_SUMS):
                sm[k, ty, tx] += sm[k, ty + step, tx]
        cuda.syncthreads()
        step //= 2
    if ty == 0 and c < C:
        for k in range(BN_SUMS):
            part[chunk, k, c] = sm[k, 0, tx]


def _bn_partials(x, dy, shift, C, with_dy):
    rows = x.size // C
    chunks = _bn_chunks(rows)
    per_chunk = (rows + chunks - 1) // chunks
    part = cuda.device_array((chunks, BN_SUMS, C), np.float64)
    tile = min(C, BN_TILE_C)  # fewer channels than a tile: no idle columns
    launch = ((C + tile - 1) // tile, chunks)
    _bn_partial_sums[launch, (tile, BN_TILE_R)](x, dy, shift, part, C, rows, per_chunk, with_dy)
    return part, chunks, rows


@cuda.jit(cache=True)
def _bn_constants(part, chunks, x, weight, bias, running_mean, running_var, m, s, b, C, rows, eps, momentum,
                  affine, train):
    for c in range(cuda.grid(1), C, cuda.gridsize(1)):
        if train:
            s1 = 0.0
            s2 = 0.0
            for t in range(chunks):
                s1 += part[t, 0, c]
                s2 += part[t, 1, c]
            d, var = bn_moments(s1, s2, rows)
            mean = float64(x[c]) + d  # the shift: the first row
            bn_update_running(running_mean, running_var, c, mean, var, rows, momentum)
        else:
            mean = float64(running_mean[c])
            var = float64(running_var[c])
        bn_channel_constants(m, s, b, c, mean, var, weight, bias, eps, affine)


def batch_constants(x, weight, bias, running_mean, running_var, training, C, eps, momentum, affine):
    # Per-channel (m, s, b) in x's dtype with y = (x - m) * s + b: the batch statistics in
    # training (updating the running ones), the running statistics in eval mode.
    train = int(training[0]) != 0
    if train:
        part, chunks, rows = _bn_partials(x, x, x[:C], C, False)
    else:
        part, chunks, rows = cuda.device_array((1, BN_SUMS, C), np.float64), 0, x.size // C
    m = cuda.device_array(C, x.dtype)
    s = cuda.device_array(C, x.dtype)
    b = cuda.device_array(C, x.dtype)
    _bn_constants[blocks(C, 32), 32](part, chunks, x, weight, bias, running_mean, running_var, m, s, b, C, rows,
                                      eps, momentum, affine, train)
    return m, s, b


@cuda.jit(cache=True)
def _bn_apply(o, x, m, s, b, C, n):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        c = i % C
        o[i] = (x[i] - m[c]) * s[c] + b[c]


def batchnorm(x, weight, bias, running_mean, running_var, training, out, C, eps, momentum, affine):
    m, s, b = batch_constants(x, weight, bias, running_mean, running_var, training, C, eps, momentum, affine)
    _bn_apply[blocks(out.size), THREADS](out, x, m, s, b, C, out.size)


@cuda.jit(cache=True)
def _bn_grad_constants(part, chunks, shift, weight, running_var, dw, db, m, a, k, b, C, rows, eps, affine, train,
                       want_dw, want_db):
    # As the CPU's batchnorm_grads: dx = dy * a + (x - m) * k + b per channel.
    for c in range(cuda.grid(1), C, cuda.gridsize(1)):
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        s4 = 0.0
        for t in range(chunks):
            s1 += part[t, 0, c]
            s2 += part[t, 1, c]
            s3 += part[t, 2, c]
            s4 += part[t, 3, c]
        bn_grad_constants(s1, s2, s3, s4, shift, running_var, weight, dw, db, m, a, k, b, c, rows, eps, affine,
                          train, want_dw, want_db)


@cuda.jit(cache=True)
def _bn_grad_input(x, dy, dx, m, a, k, b, C, n):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        c = i % C
        dx[i] = dy[i] * a[c] + (x[i] - m[c]) * k[c] + b[c]


def batchnorm_grads(x, dy, weight, running_mean, running_var, training, dx, dw, db, C, eps, affine, want_dx, want_dw,
                    want_db):
    # The wanted gradients from one reduction pass: the sums, the per-channel constants, then dx.
    train = int(training[0]) != 0
    shift = x[:C] if train else running_mean
    part, chunks, rows = _bn_partials(x, dy, shift, C, True)
    m = cuda.device_array(C, dy.dtype)
    a = cuda.device_array(C, dy.dtype)
    k = cuda.device_array(C, dy.dtype)
    b = cuda.device_array(C, dy.dtype)
    _bn_grad_constants[blocks(C, 32), 32](part, chunks, shift, weight, running_var, dw, db, m, a, k, b, C, rows, eps,
                                           affine, train, want_dw, want_db)
    if want_dx:
        _bn_grad_input[blocks(dy.size), THREADS](x, dy, dx, m, a, k, b, C, dy.size)


def batchnorm_grad_input(x, dy, weight, running_mean, running_var, training, dx, C, eps, affine):
    batchnorm_grads(x, dy, weight, running_mean, running_var, training, dx, running_var, running_var, C, eps, affine,
                    True, False, False)


def batchnorm_grad_weight(x, dy, running_mean, running_var, training, dw, C, eps):
    batchnorm_grads(x, dy, running_var, running_mean, running_var, training, dy, dw, dw, C, eps, False,
                    False, True, False)


# The fused batchnorm group: the stage's launcher fills x, batch_constants (the batchnorm
# kernel's own) gives the constants, then one pass normalizes and runs the chain after
# batchnorm (`_post`) on every element.
@cuda.jit(cache=True)
def _bn_normalize(o, x, m, s, b, e, C, n):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        c = i % C
        _post(o, i, c, (x[i] - m[c]) * s[c] + b[c], e)


def fused_batchnorm(stage, x, weight, bias, running_mean, running_var, training, o, e, C, eps, momentum, affine, block):
    # `block` is the CPU's unit of work, passed to both targets alike; a GPU thread takes one element.
    _stage(*stage)
    m, s, b = batch_constants(x, weight, bias, running_mean, running_var, training, C, eps, momentum, affine)
    _bn_normalize[blocks(o.size), THREADS](o, x, m, s, b, e, C, o.size)


def _no_stage():
    # The stage of a group whose batchnorm reads a value computed by an earlier kernel.
    return


# The same masks as the CPU's: each thread hashes the draw of its own elements (dropout: one
# per element; dropout2d: one per (example, channel)).
@cuda.jit(cache=True)
def _dropout(x, out, seed, step, key, threshold, scale, n):
    base = dropout_stream(seed, step, key)
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        if dropout_drops(base, i, threshold):
            out[i] = 0.0
        else:
            out[i] = float64(x[i]) * scale


@cuda.jit(cache=True)
def _dropout2d(x, out, seed, step, key, threshold, scale, channels, stride, per_example, n):
    base = dropout_stream(seed, step, key)
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        if dropout_drops(base, channel_draw(i, channels, stride, per_example), threshold):
            out[i] = 0.0
        else:
            out[i] = float64(x[i]) * scale


@cuda.jit(cache=True)
def _dropout_copy(x, out, n):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        out[i] = x[i]


def _dropout_draws(rng, p):
    """(seed, step, key, threshold, scale) of a dropout launch, as the CPU derives them."""
    threshold = np.uint64(int(p * 9007199254740992.0))  # p * 2^53, truncated as the CPU does
    seed, step, key = (np.uint64(v) for v in rng[:3])
    return seed, step, key, threshold, 1.0 / (1.0 - p)


def dropout(x, rng, training, out, p):
    n = out.size
    if int(training[0]) == 0 or p == 0.0:
        _dropout_copy[blocks(n), THREADS](x, out, n)
        return
    _dropout[blocks(n), THREADS](x, out, *_dropout_draws(rng, p), n)


def dropout2d(x, rng, training, out, p, channels, stride, per_example):
    n = out.size
    if int(training[0]) == 0 or p == 0.0:
        _dropout_copy[blocks(n), THREADS](x, out, n)
        return
    _dropout2d[blocks(n), THREADS](x, out, *_dropout_draws(rng, p), channels, stride, per_example, n)
