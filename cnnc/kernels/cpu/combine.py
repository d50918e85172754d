"""Ops that combine values: add, sub and mul that broadcast, sum_to (their gradient), concat, and windows (slice, crop)."""

import numpy as np
from numba import njit, prange


# Two inputs of equal rank whose shapes differ (equal shapes are an elementwise loop): NumPy broadcasts.
@njit(cache=True)
def broadcast_add(x0, x1, out):
    np.add(x0, x1, out)


@njit(cache=True)
def broadcast_sub(x0, x1, out):
    np.subtract(x0, x1, out)


@njit(cache=True)
def broadcast_mul(x0, x1, out):
    np.multiply(x0, x1, out)


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
