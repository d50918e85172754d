"""Pooling on NHWC buffers: max pooling, and the separable linear maps behind the average pools.

Max pooling follows PyTorch's rules: padding counts as minus infinity, the first
maximum in window order (rows, then columns) wins ties, and a NaN wins over any
number. Loops run over the contiguous channels of one pixel at a time (1-D
views), so they vectorize.

The gradient recomputes each window's maximum from the input, then walks the
window again in order and sends dy to the first position holding it (`todo` is
1 until a channel has found its position). Windows of output rows that are
`phases` rows apart never share an input row, so each phase runs those rows in
parallel without two threads adding into one element. Where the maximum is NaN,
dy goes to the window's first NaN (PyTorch's: its last).

Average pools (and resizing, cpu/resize.py) are separable linear maps with one
sparse matrix per axis (see shared/pool.py). `_separable` applies any such map,
parallel over (example, output row). The gradient is the same kernel on the
transposed axis matrices: each thread then gathers into its own input rows, so
there is no scatter to race on. Axis matrices are tiny (about out * kernel
entries) and built on every call.
"""

import numpy as np
from numba import njit, prange

from ..shared.pool import adaptive_axis, transpose_axis, window_axis
from .holes import _epilogue


@njit(cache=True)
def _taps(start, k, step, size):
    # The taps lo..hi-1 of a window (start + tap * step) that fall inside 0..size-1.
    lo = 0
    while lo < k and start + lo * step < 0:
        lo += 1
    hi = k
    while hi > lo and start + (hi - 1) * step >= size:
        hi -= 1
    return lo, hi


@njit(cache=True)
def _window_max(x, b, y0, ky0, ky1, dh, x0, kx0, kx1, dw, m):
    m[:] = -np.inf
    for ky in range(ky0, ky1):
        xr = x[b, y0 + ky * dh]
        for kx in range(kx0, kx1):
            r = xr[x0 + kx * dw]
            for ch in range(m.size):
                v = r[ch]
                mm = m[ch]
                m[ch] = v if (v > mm) | (v != v) else mm  # noqa: PLR0124 (v != v: a NaN)


@njit(parallel=True, cache=True)
def maxpool(x, out, kh, kw, sh, sw, ph, pw, dh, dw):
    n, h, w, _ = x.shape
    oh = out.shape[1]
    ow = out.shape[2]
    for t in prange(n * oh):
        b = t // oh
        oy = t - b * oh
        y0 = oy * sh - ph
        ky0, ky1 = _taps(y0, kh, dh, h)
        for ox in range(ow):
            x0 = ox * sw - pw
            kx0, kx1 = _taps(x0, kw, dw, w)
            _window_max(x, b, y0, ky0, ky1, dh, x0, kx0, kx1, dw, out[b, oy, ox])


@njit(parallel=True, cache=True)
def _maxpool_grad_rows(x, dy, dx, kh, kw, sh, sw, ph, pw, dh, dw, phase, phases):
    n, h, w, c = x.shape
    oh = dy.shape[1]
    ow = dy.shape[2]
    rows = (oh - phase + phases - 1) // phases
    for t in prange(n * rows):
        b = t // rows
        oy = (t - b * rows) * phases + phase
        m = np.empty(c, x.dtype)
        todo = np.empty(c, x.dtype)
        y0 = oy * sh - ph
        ky0, ky1 = _taps(y0, kh, dh, h)
        for ox in range(ow):
            x0 = ox * sw - pw
            kx0, kx1 = _taps(x0, kw, dw, w)
            _window_max(x, b, y0, ky0, ky1, dh, x0, kx0, kx1, dw, m)
            g = dy[b, oy, ox]
            todo[:] = 1
            for ky in range(ky0, ky1):
                iy = y0 + ky * dh
                xr = x[b, iy]
                dr = dx[b, iy]
                for kx in range(kx0, kx1):
                    r = xr[x0 + kx * dw]
                    d = dr[x0 + kx * dw]
                    for ch in range(c):
                        v = r[ch]
                        take = todo[ch] * ((v == m[ch]) | (v != v))  # noqa: PLR0124 (a NaN)
                        d[ch] = d[ch] + g[ch] if take != 0 else d[ch]  # not take * g: 0 * inf
                        todo[ch] -= take


@njit(parallel=True, cache=True)
def _zero(a):
    n, h = a.shape[0], a.shape[1]
    for t in prange(n * h):
        b = t // h
        a[b, t - b * h] = 0


@njit(parallel=True, cache=True)
def _maxpool_grad_disjoint(x, dy, dx, kh, kw):
    # Windows that tile the input (stride = kernel, no padding or dilation: maxpool(2)): each input
    # pixel is in at most one window, so dx is written once, with no pass to zero it and no sums.
    n, h, w, c = x.shape
    oh = dy.shape[1]
    ow = dy.shape[2]
    for t in prange(n * oh):
        b = t // oh
        oy = t - b * oh
        m = np.empty(c, x.dtype)
        todo = np.empty(c, x.dtype)
        for ox in range(ow):
            _window_max(x, b, oy * kh, 0, kh, 1, ox * kw, 0, kw, 1, m)
            g = dy[b, oy, ox]
            todo[:] = 1
            for ky in range(kh):
                xr = x[b, oy * kh + ky]
                dr = dx[b, oy * kh + ky]
                for kx in range(kw):
                    r = xr[ox * kw + kx]
                    d = dr[ox * kw + kx]
                    for ch in range(c):
                        v = r[ch]
                        take = todo[ch] * ((v == m[ch]) | (v != v))  # noqa: PLR0124 (a NaN)
                        d[ch] = g[ch] if take != 0 else 0  # the first maximum takes it (as the general kernel)
                        todo[ch] -= take
        for ky in range(kh):  # the columns no window reaches
            dx[b, oy * kh + ky, ow * kw :] = 0
    for b in prange(n):  # the rows no window reaches
        dx[b, oh * kh :] = 0


@njit(cache=True)
def maxpool_grad(x, dy, dx, kh, kw, sh, sw, ph, pw, dh, dw):
    if sh == kh and sw == kw and ph == 0 and pw == 0 and dh == 1 and dw == 1 and dy.shape[1] * kh <= x.shape[1] \
            and dy.shape[2] * kw <= x.shape[2]:
        _maxpool_grad_disjoint(x, dy, dx, kh, kw)
        return
    _zero(dx)
    phases = ((kh - 1) * dh + sh) // sh  # ceil(window span / stride)
    for phase in range(min(phases, dy.shape[1])):
        _maxpool_grad_rows(x, dy, dx, kh, kw, sh, sw, ph, pw, dh, dw, phase, phases)


@njit(parallel=True, cache=True)
def _separable(x, out, yptr, yidx, ywt, xptr, xidx, xwt):
    n = x.shape[0]
    c = x.shape[3]
    oh = out.shape[1]
    ow = out.shape[2]
    for t in prange(n * oh):
        b = t // oh
        oy = t - b * oh
        orow = out[b, oy]
        for ox in range(ow):
            o = orow[ox]
            first = True  # the first tap assigns, saving a pass to zero the output
            for p in range(yptr[oy], yptr[oy + 1]):
                xr = x[b, yidx[p]]
                wy = ywt[p]
                for q in range(xptr[ox], xptr[ox + 1]):
                    r = xr[xidx[q]]
                    wgt = wy * xwt[q]
                    if first:
                        for ch in range(c):
                            o[ch] = wgt * r[ch]
                        first = False
                    else:
                        for ch in range(c):
                            o[ch] += wgt * r[ch]
            if first:  # an empty window
                o[:] = 0


@njit(cache=True)
def _transpose(ptr, idx, wt, size):
    # The axis matrix transposed (see transpose_axis), onto `size` inputs.
    taps = ptr[ptr.size - 1]
    tptr = np.empty(size + 1, np.int64)
    tidx = np.empty(taps, np.int64)
    twt = np.empty(taps, wt.dtype)
    transpose_axis(ptr, idx, wt, tptr, tidx, twt, np.empty(size, np.int64))
    return tptr, tidx, twt


@njit(cache=True)
def _map(x, out, y_axis, x_axis, grad):
    # Apply the map (or, for a gradient, its transpose) with weights in the buffers' dtype.
    yptr, yidx, ywt = y_axis
    xptr, xidx, xwt = x_axis
    if grad:
        yptr, yidx, ywt = _transpose(yptr, yidx, ywt, out.shape[1])
        xptr, xidx, xwt = _transpose(xptr, xidx, xwt, out.shape[2])
    _separable(x, out, yptr, yidx, ywt.astype(x.dtype), xptr, xidx, xwt.astype(x.dtype))


@njit(cache=True)
def _empty_axis(m, taps):
    # Arrays for an axis matrix of m outputs and at most `taps` entries.
    return np.empty(m + 1, np.int64), np.empty(taps, np.int64), np.empty(taps)


@njit(cache=True)
def _window_axis(size, m, kernel, stride, pad, count_pad):
    ptr, idx, wt = _empty_axis(m, m * kernel)
    window_axis(size, m, kernel, stride, pad, count_pad, ptr, idx, wt)
    return ptr, idx, wt


@njit(cache=True)
def _adaptive_axis(size, m):
    ptr, idx, wt = _empty_axis(m, m * (size // m + 2))
    adaptive_axis(size, m, ptr, idx, wt)
    return ptr, idx, wt


@njit(cache=True)
def avgpool(x, out, kh, kw, sh, sw, ph, pw, count_pad):
    ay = _window_axis(x.shape[1], out.shape[1], kh, sh, ph, count_pad)
    ax = _window_axis(x.shape[2], out.shape[2], kw, sw, pw, count_pad)
    _map(x, out, ay, ax, False)


@njit(cache=True)
def avgpool_grad(dy, dx, kh, kw, sh, sw, ph, pw, count_pad):
    ay = _window_axis(dx.shape[1], dy.shape[1], kh, sh, ph, count_pad)
    ax = _window_axis(dx.shape[2], dy.shape[2], kw, sw, pw, count_pad)
    _map(dy, dx, ay, ax, True)


@njit(cache=True)
def adaptive_avgpool(x, out):
    _map(x, out, _adaptive_axis(x.shape[1], out.shape[1]), _adaptive_axis(x.shape[2], out.shape[2]), False)


@njit(cache=True)
def adaptive_avgpool_grad(dy, dx):
    _map(dy, dx, _adaptive_axis(dx.shape[1], dy.shape[1]), _adaptive_axis(dx.shape[2], dy.shape[2]), True)


# dy / (H * W) broadcast over every position, each pixel's channels followed by the epilogue.
@njit(parallel=True, cache=True)
def global_avgpool_grad(dy, dx, e):
    N, H, W, C = dx.shape
    dyf = dy.reshape(dy.size)
    dxf = dx.reshape(dx.size)
    hw = H * W
    inv = 1.0 / hw
    for n in prange(N):
        for p in range(hw):
            base = (n * hw + p) * C
            for c in range(C):
                dxf[base + c] = dyf[n * C + c] * inv
            _epilogue(dxf, base, base + C, C, e)
