"""The fully connected layer (y = x W^T, then the epilogue: the bias and what the fusion pass adds),
its input and weight gradients, and the bias gradient of any layer: np.dot (BLAS) and serial sums."""

import numpy as np
from numba import njit

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
