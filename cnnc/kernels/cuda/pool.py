"""Pooling on NHWC buffers: max pooling, and the separable linear maps behind the average pools.

Max pooling: one thread per output element (NHWC, so neighbouring threads read
neighbouring channels), in a grid-stride loop. The gradient gathers: each thread
owns one input element and adds dy from every window whose first maximum (in
window order; a NaN wins) sits there, which is the position the CPU kernel's
ordered walk picks, so ties resolve the same way.

Average pools (and resizing, cuda/resize.py) are separable linear maps with one
sparse matrix per axis, as compressed rows built by the CPU's builders
(shared/pool.py), run as Python on the host once per shape and kept on the
device. One thread per output element then gathers its taps. Gradients use the
transposed axis matrices, so every thread gathers into its own input element
and nothing is scattered.
"""

import math

import numpy as np
from numba import cuda

from ..shared.pool import adaptive_axis, transpose_axis, window_axis
from .common import THREADS, blocks, unflatten
from .holes import _epilogue


@cuda.jit(device=True)
def _window_argmax(x, b, ch, y0, x0, kh, kw, dh, dw, H, W):
    # The window's maximum and the flat (row * W + column) position of its first occurrence.
    m = -math.inf
    best = -1
    for ky in range(kh):
        iy = y0 + ky * dh
        if iy < 0 or iy >= H:
            continue
        for kx in range(kw):
            ix = x0 + kx * dw
            if ix < 0 or ix >= W:
                continue
            v = x[b, iy, ix, ch]
            if best < 0 or v > m or (v != v and m == m):  # noqa: PLR0124 (a NaN replaces a number)
                m = v
                best = iy * W + ix
    return m, best


@cuda.jit(cache=True)
def _maxpool(x, out, kh, kw, sh, sw, ph, pw, dh, dw):
    N, H, W, C = x.shape
    OH = out.shape[1]
    OW = out.shape[2]
    for i in range(cuda.grid(1), N * OH * OW * C, cuda.gridsize(1)):
        b, oy, ox, ch = unflatten(i, OH, OW, C)
        m, _ = _window_argmax(x, b, ch, oy * sh - ph, ox * sw - pw, kh, kw, dh, dw, H, W)
        out[b, oy, ox, ch] = m


@cuda.jit(cache=True)
def _maxpool_grad(x, dy, dx, kh, kw, sh, sw, ph, pw, dh, dw):
    N, H, W, C = x.shape
    OH = dy.shape[1]
    OW = dy.shape[2]
    for i in range(cuda.grid(1), N * H * W * C, cuda.gridsize(1)):
        b, iy, ix, ch = unflatten(i, H, W, C)
        here = iy * W + ix
        acc = 0.0
        for ky in range(kh):
            ty = iy + ph - ky * dh  # the window row start that puts tap ky on iy
            if ty < 0 or ty % sh != 0 or ty // sh >= OH:
                continue
            oy = ty // sh
            for kx in range(kw):
                tx = ix + pw - kx * dw
                if tx < 0 or tx % sw != 0 or tx // sw >= OW:
                    continue
                ox = tx // sw
                _, best = _window_argmax(x, b, ch, oy * sh - ph, ox * sw - pw, kh, kw, dh, dw, H, W)
                if best == here:
                    acc += dy[b, oy, ox, ch]
        dx[b, iy, ix, ch] = acc


def maxpool(x, out, kh, kw, sh, sw, ph, pw, dh, dw):
    _maxpool[blocks(out.size), THREADS](x, out, kh, kw, sh, sw, ph, pw, dh, dw)


def maxpool_grad(x, dy, dx, kh, kw, sh, sw, ph, pw, dh, dw):
    _maxpool_grad[blocks(dx.size), THREADS](x, dy, dx, kh, kw, sh, sw, ph, pw, dh, dw)


_axes = {}  # (builder, arguments, transposed, dtype) -> device (ptr, idx, wt)


def _empty_axis(m, taps):
    # Host arrays for an axis matrix of m outputs and at most `taps` (at least one) entries.
    return np.zeros(m + 1, np.int64), np.zeros(max(taps, 1), np.int64), np.zeros(max(taps, 1))


# The builders run on the host, as Python (`py_func`): the same arithmetic as the CPU's,
# without the FMA contraction that compiling for the GPU may apply.
def _window_axis(size, m, kernel, stride, pad, count_pad):
    ptr, idx, wt = _empty_axis(m, m * kernel)
    window_axis.py_func(size, m, kernel, stride, pad, count_pad, ptr, idx, wt)
    return ptr, idx, wt


def _adaptive_axis(size, m):
    ptr, idx, wt = _empty_axis(m, m * (size // m + 2))
    adaptive_axis.py_func(size, m, ptr, idx, wt)
    return ptr, idx, wt


def _transpose(ptr, idx, wt, size):
    tptr, tidx, twt = _empty_axis(size, int(ptr[-1]))
    transpose_axis.py_func(ptr, idx, wt, tptr, tidx, twt, np.zeros(size, np.int64))
    return tptr, tidx, twt


def _axis(build, args, grad, dtype):
    # args start with (input size, output size) of the forward map.
    key = (build, args, grad, np.dtype(dtype).str)
    found = _axes.get(key)
    if found is None:
        ptr, idx, wt = build(*args)
        if grad:
            ptr, idx, wt = _transpose(ptr, idx, wt, args[0])
        found = (cuda.to_device(ptr), cuda.to_device(idx), cuda.to_device(wt.astype(dtype)))
        _axes[key] = found
    return found


@cuda.jit(cache=True)
def _separable(x, out, yptr, yidx, ywt, xptr, xidx, xwt):
    C = x.shape[3]
    N = out.shape[0]
    OH = out.shape[1]
    OW = out.shape[2]
    for i in range(cuda.grid(1), N * OH * OW * C, cuda.gridsize(1)):
        b, oy, ox, ch = unflatten(i, OH, OW, C)
        acc = 0.0
        for p in range(yptr[oy], yptr[oy + 1]):
            iy = yidx[p]
            wy = ywt[p]
            for q in range(xptr[ox], xptr[ox + 1]):
                acc += wy * xwt[q] * x[b, iy, xidx[q], ch]
        out[b, oy, ox, ch] = acc


def _map(x, out, y_axis, x_axis, grad):
    # y_axis, x_axis: (builder, its arguments) of each axis of the forward map.
    yptr, yidx, ywt = _axis(*y_axis, grad, x.dtype)
    xptr, xidx, xwt = _axis(*x_axis, grad, x.dtype)
    _separable[blocks(out.size), THREADS](x, out, yptr, yidx, ywt, xptr, xidx, xwt)


def avgpool(x, out, kh, kw, sh, sw, ph, pw, count_pad):
    y_args = (x.shape[1], out.shape[1], kh, sh, ph, count_pad)
    x_args = (x.shape[2], out.shape[2], kw, sw, pw, count_pad)
    _map(x, out, (_window_axis, y_args), (_window_axis, x_args), False)


def avgpool_grad(dy, dx, kh, kw, sh, sw, ph, pw, count_pad):
    y_args = (dx.shape[1], dy.shape[1], kh, sh, ph, count_pad)
    x_args = (dx.shape[2], dy.shape[2], kw, sw, pw, count_pad)
    _map(dy, dx, (_window_axis, y_args), (_window_axis, x_args), True)


def adaptive_avgpool(x, out):
    _map(x, out, (_adaptive_axis, (x.shape[1], out.shape[1])), (_adaptive_axis, (x.shape[2], out.shape[2])), False)


def adaptive_avgpool_grad(dy, dx):
    _map(dy, dx, (_adaptive_axis, (dx.shape[1], dy.shape[1])), (_adaptive_axis, (dx.shape[2], dy.shape[2])), True)


# One thread per dx element (flat NHWC): its channel's dy / (H * W), stored through the epilogue.
@cuda.jit(cache=True)
def _global_avgpool_grad(dy, dx, e, C, hw, n):
    inv = 1.0 / hw
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        c = i % C
        _epilogue(dx, i, c, dy[(i // (hw * C)) * C + c] * inv, e)


def global_avgpool_grad(dy, dx, e, C, hw):
    _global_avgpool_grad[blocks(dx.size), THREADS](dy, dx, e, C, hw, dx.size)
