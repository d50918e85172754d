"""The fully connected layer (y = x W^T, then the epilogue: the bias and what the fusion pass adds),
its input and weight gradients, and the bias gradient of any layer: np.dot (BLAS) and serial sums."""

import numpy as np
from numba import njit, prange

from .holes import _epilogue


# dense and dense_grad_input end with the epilogue (the bias, and what the fusion pass adds).
@njit(cache=True)
def dense(x, weight, out, e):
    np.dot(x, weight.T, out)
    _epilogue(out.reshape(out.size), 0, out.size, out.shape[1], e)


@njit(cache=True)
def dense_grad_input(dy, weight, dx, e):
    np.dot(dy, weight, dx)
    _epilogue(dx.reshape(dx.size), 0, dx.size, dx.shape[1], e)


@njit(cache=True)
def dense_grad_weight(x, dy, dw):
    np.dot(dy.T, x, dw)


@njit(cache=True)
def dense_grad_params(x, dy, dw, db):
    # The weight and bias gradients of one layer in one kernel: dy is read once more, while cached.
    np.dot(dy.T, x, dw)
    acc = np.zeros(dy.shape[1], np.float64)
    for r in range(dy.shape[0]):
        for j in range(dy.shape[1]):
            acc[j] += dy[r, j]
    for j in range(dy.shape[1]):
        db[j] = acc[j]


# Any rank but [N, features] comes as flat views: the GEMM's rows are every axis but the last, and
# one compile serves every rank. Each reshapes and calls its 2-D entry above.
@njit(cache=True)
def dense_rows(x, weight, out, e):
    units, features = weight.shape
    dense(x.reshape(x.size // features, features), weight, out.reshape(out.size // units, units), e)


@njit(cache=True)
def dense_grad_input_rows(dy, weight, dx, e):
    units, features = weight.shape
    dense_grad_input(dy.reshape(dy.size // units, units), weight, dx.reshape(dx.size // features, features), e)


@njit(cache=True)
def dense_grad_weight_rows(x, dy, dw):
    units, features = dw.shape
    dense_grad_weight(x.reshape(x.size // features, features), dy.reshape(dy.size // units, units), dw)


@njit(cache=True)
def dense_grad_params_rows(x, dy, dw, db):
    units, features = dw.shape
    dense_grad_params(x.reshape(x.size // features, features), dy.reshape(dy.size // units, units), dw, db)


# Over an image [N, H, W, C] (stored channels-last) the last logical axis is W: one GEMM per row of
# pixels, units x W times W x C, so the output [N, H, units, C] is stored channels-last too. The bias
# lies along the units; the epilogue, run on each row's tile while in cache, sees the image's channels.
# Rows run in parallel: each GEMM is small (a few microseconds), too small for BLAS's own threads.
@njit(cache=True, parallel=True)
def _dense_image(x, weight, bias, out, e):
    n, h, w, c = x.shape
    units = weight.shape[0]
    rows, tile = x.reshape(n * h, w, c), out.reshape(n * h, units, c)
    flat = out.reshape(out.size)
    for r in prange(n * h):
        np.dot(weight, rows[r], tile[r])
        for u in range(bias.size):
            for j in range(c):
                tile[r, u, j] += bias[u]
        _epilogue(flat, r * units * c, (r + 1) * units * c, c, e)


@njit(cache=True)
def dense_image(x, weight, out, e):
    _dense_image(x, weight, np.empty(0, weight.dtype), out, e)


@njit(cache=True)
def dense_image_bias(x, weight, bias, out, e):
    _dense_image(x, weight, bias, out, e)


@njit(cache=True, parallel=True)
def dense_grad_input_image(dy, weight, dx, e):
    n, h, units, c = dy.shape
    w = weight.shape[1]
    rows, tile = dy.reshape(n * h, units, c), dx.reshape(n * h, w, c)
    flat = dx.reshape(dx.size)
    for r in prange(n * h):
        np.dot(weight.T, rows[r], tile[r])
        _epilogue(flat, r * w * c, (r + 1) * w * c, c, e)


@njit(cache=True)
def dense_grad_weight_image(x, dy, dw):
    # dw = the sum over rows of pixels of dy[r] . x[r]^T (units x C times C x W)
    n, h, w, c = x.shape
    units = dw.shape[0]
    xs, dys = x.reshape(n * h, w, c), dy.reshape(n * h, units, c)
    term = np.empty_like(dw)
    dw[:] = 0
    for r in range(n * h):
        np.dot(dys[r], xs[r].T, term)
        dw += term


@njit(cache=True)
def bias_grad_image(dy, db):
    # The bias of dense over an image lies along the units, the third stored axis of [N, H, units, C].
    units = db.size
    rows = dy.reshape(dy.size // (units * dy.shape[3]), units, dy.shape[3])
    acc = np.zeros(units, np.float64)
    for r in range(rows.shape[0]):
        for u in range(units):
            for j in range(rows.shape[2]):
                acc[u] += rows[r, u, j]
    for u in range(units):
        db[u] = acc[u]


# Serial on purpose: a memory-bound pass that costs little next to the GEMMs around it,
# while a parallel version costs seconds more of cold compile.
@njit(cache=True)
def bias_grad(dy, db):
    # Channels are the last physical axis for both [N, C] and NHWC buffers.
    c = dy.shape[-1]
    rows = dy.size // c
    flat = dy.reshape(rows, c)
    acc = np.zeros(c, np.float64)
    for r in range(rows):
        for j in range(c):
            acc[j] += flat[r, j]
    for j in range(c):
        db[j] = acc[j]
