"""Ops that combine values: add, sub and mul that broadcast, sum_to (their gradient), concat, and windows (slice, crop).

One thread per output element, with a grid stride.
"""

from numba import cuda

from .common import THREADS, blocks, unflatten

# Broadcasting reads each input through strides that are 0 along its broadcast axes
# (physical shapes right-aligned into four axes). The operation: ADD, SUB or MUL.
ADD = 0
SUB = 1
MUL = 2


@cuda.jit(cache=True)
def _broadcast(x0, x1, out, operation, d1, d2, d3, a0, a1, a2, a3, b0, b1, b2, b3):
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        k0, k1, k2, k3 = unflatten(i, d1, d2, d3)
        u = x0[k0 * a0 + k1 * a1 + k2 * a2 + k3 * a3]
        v = x1[k0 * b0 + k1 * b1 + k2 * b2 + k3 * b3]
        if operation == MUL:
            out[i] = u * v
        elif operation == SUB:
            out[i] = u - v
        else:
            out[i] = u + v


def _strides(shape, dims):
    # Element strides of a contiguous array of `shape` read at the indices of `dims` (0: broadcast).
    shape = (1,) * (4 - len(shape)) + tuple(shape)
    strides, step = [0, 0, 0, 0], 1
    for axis in range(3, -1, -1):
        strides[axis] = step if shape[axis] > 1 else 0
        step *= shape[axis]
    return strides


def _launch_broadcast(x0, x1, out, operation):
    dims = (1,) * (4 - out.ndim) + tuple(out.shape)
    args = (*dims[1:], *_strides(x0.shape, dims), *_strides(x1.shape, dims))
    _broadcast[blocks(out.size), THREADS](x0.reshape(x0.size), x1.reshape(x1.size), out.reshape(out.size), operation, *args)


# Launchers: two inputs of equal rank whose shapes differ (equal shapes are an elementwise loop).
def broadcast_add(x0, x1, out):
    _launch_broadcast(x0, x1, out, ADD)


def broadcast_sub(x0, x1, out):
    _launch_broadcast(x0, x1, out, SUB)


def broadcast_mul(x0, x1, out):
    _launch_broadcast(x0, x1, out, MUL)


# sum_to gathers: each output element sums the inputs that map onto it (index
# min(i, t - 1) per axis, as on the CPU), so no atomics.
@cuda.jit(device=True)
def _sources(k, t, s):
    # The input indices i along one axis with min(i, t - 1) == k.
    return k, (k + 1 if k < t - 1 else s)


@cuda.jit(cache=True)
def _sum_to(x, out, s1, s2, s3, t1, t2, t3):
    n = x.size // (s1 * s2 * s3)
    tn = out.size // (t1 * t2 * t3)
    for o in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        k0, k1, k2, k3 = unflatten(o, t1, t2, t3)
        lo0, hi0 = _sources(k0, tn, n)
        lo1, hi1 = _sources(k1, t1, s1)
        lo2, hi2 = _sources(k2, t2, s2)
        lo3, hi3 = _sources(k3, t3, s3)
        acc = 0.0
        for i in range(lo0, hi0):
            for j in range(lo1, hi1):
                for k in range(lo2, hi2):
                    base = ((i * s1 + j) * s2 + k) * s3
                    for m in range(lo3, hi3):
                        acc += x[base + m]
        out[o] = acc


def sum_to(x, out, s1, s2, s3, t1, t2, t3):
    _sum_to[blocks(out.size), THREADS](x, out, s1, s2, s3, t1, t2, t3)


# concat: each output element finds the input whose part of the row holds it.
# xs: the inputs, flat, as one tuple; sizes: their lengths along the axis (a tuple of ints).
@cuda.jit(cache=True)
def _concat(xs, out, inner, sizes):
    total = 0
    for n in sizes:
        total += n * inner
    last = len(xs) - 1
    for o in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        r = o // total
        q = o - r * total  # the position in the output row, then in input k's part of it
        k = 0
        m = sizes[0] * inner
        while k < last and q >= m:
            q -= m
            k += 1
            m = sizes[k] * inner
        out[o] = xs[k][r * m + q]


def concat(xs, out, inner, sizes):
    _concat[blocks(out.size), THREADS](xs, out, inner, sizes)


# Slice and crop take a window of a buffer seen as [rows, h, w, inner]: out[r, i, j, :] = x[r, top + i, left + j, :]
# (a slice is a window of one row: h = 1). Each output element reads its input element.
@cuda.jit(cache=True)
def _crop(x, out, h, w, inner, top, left, sh, sw):
    for o in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        r, i, j, k = unflatten(o, sh, sw, inner)
        out[o] = x[((r * h + top + i) * w + left + j) * inner + k]


def crop(x, out, h, w, inner, top, left, sh, sw):
    _crop[blocks(out.size), THREADS](x, out, h, w, inner, top, left, sh, sw)


# Their gradients: x placed at the window of a zero buffer [rows, h, w, inner].
@cuda.jit(cache=True)
def _uncrop(x, out, h, w, inner, top, left, sh, sw):
    for o in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        r, i, j, k = unflatten(o, h, w, inner)
        i -= top
        j -= left
        if 0 <= i < sh and 0 <= j < sw:
            out[o] = x[((r * sh + i) * sw + j) * inner + k]
        else:
            out[o] = 0.0


def uncrop(x, out, h, w, inner, top, left, sh, sw):
    _uncrop[blocks(out.size), THREADS](x, out, h, w, inner, top, left, sh, sw)
