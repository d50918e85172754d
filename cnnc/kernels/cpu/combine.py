"""Ops that combine values: add, sub and mul that broadcast, sum_to (their gradient), concat, and windows (slice, crop)."""

import numpy as np
from numba import njit, prange


# Two inputs of equal rank whose shapes differ (equal shapes are an elementwise loop). One kernel
# for the three ops (`op`: 0 add, 1 subtract, 2 multiply) and every rank: NumPy's broadcasting
# ufuncs cost Numba about a second to compile for each op, rank and dtype.
@njit(cache=True)
def _broadcast_strides(x, out):
    # Element strides of the C-contiguous x over out's axes: 0 along the axes it is broadcast on.
    st = np.zeros(out.ndim, np.int64)
    s = 1
    for ax in range(out.ndim - 1, -1, -1):
        if x.shape[ax] != 1:
            st[ax] = s
        s *= x.shape[ax]
    return st


@njit(cache=True)
def broadcast(x0, x1, out, op):
    nd = out.ndim
    s0 = _broadcast_strides(x0, out)
    s1 = _broadcast_strides(x1, out)
    inner = out.shape[nd - 1]
    a = x0.reshape(x0.size)
    b = x1.reshape(x1.size)
    o = out.reshape(out.size)
    j0, j1 = s0[nd - 1], s1[nd - 1]
    for r in range(out.size // inner if inner > 0 else 0):
        p0 = 0
        p1 = 0
        rest = r
        for ax in range(nd - 2, -1, -1):  # the row's index along each outer axis
            k = rest % out.shape[ax]
            rest //= out.shape[ax]
            p0 += k * s0[ax]
            p1 += k * s1[ax]
        base = r * inner
        if op == 0:
            for j in range(inner):
                o[base + j] = a[p0 + j * j0] + b[p1 + j * j1]
        elif op == 1:
            for j in range(inner):
                o[base + j] = a[p0 + j * j0] - b[p1 + j * j1]
        else:
            for j in range(inner):
                o[base + j] = a[p0 + j * j0] * b[p1 + j * j1]


@njit(cache=True)
def sum_to(x, out, s1, s2, s3, t1, t2, t3):
    n = x.shape[0]
    tn = out.shape[0]
    v = x.reshape((n, s1, s2, s3))
    o = out.reshape((tn, t1, t2, t3))
    acc = np.zeros(o.shape)
    for i in range(n):
        for j in range(s1):
            for k in range(s2):
                for m in range(s3):
                    acc[min(i, tn - 1), min(j, t1 - 1), min(k, t2 - 1), min(m, t3 - 1)] += v[i, j, k, m]
    o[...] = acc


@njit(parallel=True, cache=True)
def concat(xs, out, inner, sizes):
    """Each output row is the inputs' rows laid end to end.

    xs: the inputs, flat, as one tuple; sizes: their lengths along the axis (a tuple of ints).
    Seen flat, input k is [rows, sizes[k] * inner]. One compile serves every shape of a given
    number of inputs. Rows are sliced into views indexed from 0, so the copy loops index with
    provably non-negative range variables and vectorize.
    """
    total = 0
    for n in sizes:
        total += n * inner
    rows = out.size // total
    o = out.reshape((rows, total))
    for r in prange(rows):
        row = o[r]
        offset = 0
        for k in range(len(xs)):
            m = sizes[k] * inner
            src = xs[k][r * m : r * m + m]
            dst = row[offset : offset + m]
            for q in range(m):
                dst[q] = src[q]
            offset += m


# Slice and crop take a window of a buffer seen as [rows, h, w, inner]: out[r, i, j, :] = x[r, top + i, left + j, :]
# (a slice is a window of one row: h = 1). Each (r, i) is a contiguous run of sw * inner elements.
@njit(parallel=True, cache=True)
def crop(x, out, h, w, inner, top, left, sh, sw):
    m = sw * inner
    runs = out.size // m
    for p in prange(runs):
        r = p // sh
        first = ((r * h + top + p - r * sh) * w + left) * inner
        src = x[first : first + m]  # views indexed from 0, so the copy vectorizes
        dst = out[p * m : p * m + m]
        for q in range(m):
            dst[q] = src[q]


# Their gradients: x placed at the window of a zero buffer [rows, h, w, inner].
@njit(parallel=True, cache=True)
def uncrop(x, out, h, w, inner, top, left, sh, sw):
    n = w * inner
    runs = out.size // n
    m = sw * inner
    before = left * inner
    for p in prange(runs):
        r = p // h
        i = p - r * h - top
        row = out[p * n : p * n + n]
        if 0 <= i < sh:
            first = (r * sh + i) * m
            src = x[first : first + m]
            for q in range(before):
                row[q] = 0.0
            for q in range(m):
                row[before + q] = src[q]
            for q in range(before + m, n):
                row[q] = 0.0
        else:
            for q in range(n):
                row[q] = 0.0
