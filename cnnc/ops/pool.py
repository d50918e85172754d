"""Pooling: maxpool, avgpool, global_avgpool and adaptive_avgpool, and their gradients.

Max pooling has its own kernels. The average pools are separable linear maps
of the input (see LINEAR_MAP_SOURCE, which resizing shares), so one pair of
kernels serves all of them and their gradients. Each family has a CUDA source
beside its CPU one (MAXPOOL_CUDA_SOURCE, LINEAR_MAP_CUDA_SOURCE,
GLOBAL_GRAD_CUDA_SOURCE).
"""

from __future__ import annotations

from ..backend.cpu.fused import hosting
from ..backend.cpu.kernel import FLAT_OUT, OUT, CpuKernel, In
from ..backend.cuda.kernel import CudaKernel
from .base import (
    Attr,
    Fusion,
    Op,
    ShapeError,
    TensorType,
    boolean,
    expect_float,
    expect_rank,
    nonnegative_pair,
    optional,
    positive_pair,
    register,
    window_out,
)
from ..graph import BATCH

# Max pooling over NHWC buffers, PyTorch's rules: padding counts as minus
# infinity, the first maximum in window order (rows, then columns) wins ties,
# and a NaN wins over any number. Loops run over the contiguous channels of
# one pixel at a time (1-D views), so they vectorize.
#
# The gradient recomputes each window's maximum from the input, then walks the
# window again in order and sends dy to the first position holding it (`todo`
# is 1 until a channel has found its position). Windows of output rows that
# are `phases` rows apart never share an input row, so each phase runs those
# rows in parallel without two threads adding into one element. Where the
# maximum is NaN, dy goes to the window's first NaN (PyTorch's: its last).
MAXPOOL_SOURCE = """
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
                m[ch] = v if (v > mm) | (v != v) else mm


@njit(parallel=True, cache=True)
def maxpool(x, out, kh, kw, sh, sw, ph, pw, dh, dw):
    n, h, w, c = x.shape
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
                        take = todo[ch] * ((v == m[ch]) | (v != v))
                        d[ch] = d[ch] + g[ch] if take != 0 else d[ch]  # not take * g: 0 * inf
                        todo[ch] -= take


@njit(parallel=True, cache=True)
def _zero(a):
    n, h = a.shape[0], a.shape[1]
    for t in prange(n * h):
        b = t // h
        a[b, t - b * h] = 0


@njit(cache=True)
def maxpool_grad(x, dy, dx, kh, kw, sh, sw, ph, pw, dh, dw):
    _zero(dx)
    phases = ((kh - 1) * dh + sh) // sh  # ceil(window span / stride)
    for phase in range(min(phases, dy.shape[1])):
        _maxpool_grad_rows(x, dy, dx, kh, kw, sh, sw, ph, pw, dh, dw, phase, phases)
"""

# Average pools and resampling are separable linear maps:
#     out[oy, ox, :] = sum over iy, ix of ry[oy, iy] * rx[ox, ix] * x[iy, ix, :]
# with a sparse matrix per axis, held as compressed rows (ptr, idx, wt): output
# o reads inputs idx[ptr[o]:ptr[o + 1]] with weights wt[ptr[o]:ptr[o + 1]].
# `_separable` applies any such map, parallel over (example, output row). The
# gradient is the same kernel on the transposed axis matrices: each thread then
# gathers into its own input rows, so there is no scatter to race on.
# Axis matrices are tiny (about out * kernel entries) and built on every call.
LINEAR_MAP_SOURCE = """
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
    # The axis matrix transposed: for each input index, the outputs that read it (in order).
    m = ptr.size - 1
    tptr = np.zeros(size + 1, np.int64)
    for p in range(ptr[m]):
        tptr[idx[p] + 1] += 1
    for i in range(size):
        tptr[i + 1] += tptr[i]
    tidx = np.empty(ptr[m], np.int64)
    twt = np.empty(ptr[m], wt.dtype)
    fill = tptr[:size].copy()
    for o in range(m):
        for p in range(ptr[o], ptr[o + 1]):
            i = idx[p]
            tidx[fill[i]] = o
            twt[fill[i]] = wt[p]
            fill[i] += 1
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
def _window_axis(size, m, kernel, stride, pad, count_pad):
    # avg_pool2d's windows along one axis. The window is cut at the padded input's
    # end; the divisor counts the padded positions in it (count_pad) or only the
    # real ones. PyTorch's 2-D divisor is the product of the two axes' divisors.
    ptr = np.zeros(m + 1, np.int64)
    for o in range(m):
        lo = o * stride - pad
        hi = min(lo + kernel, size + pad)
        ptr[o + 1] = ptr[o] + max(min(hi, size) - max(lo, 0), 0)
    idx = np.empty(ptr[m], np.int64)
    wt = np.empty(ptr[m])
    for o in range(m):
        lo = o * stride - pad
        hi = min(lo + kernel, size + pad)
        divisor = hi - lo if count_pad else min(hi, size) - max(lo, 0)
        for p in range(ptr[o], ptr[o + 1]):
            idx[p] = max(lo, 0) + p - ptr[o]
            wt[p] = 1.0 / divisor
    return ptr, idx, wt


@njit(cache=True)
def _adaptive_axis(size, m):
    # adaptive_avg_pool2d's windows: [floor(o * size / m), ceil((o + 1) * size / m)).
    ptr = np.zeros(m + 1, np.int64)
    for o in range(m):
        ptr[o + 1] = ptr[o] + ((o + 1) * size + m - 1) // m - (o * size) // m
    idx = np.empty(ptr[m], np.int64)
    wt = np.empty(ptr[m])
    for o in range(m):
        lo = (o * size) // m
        for p in range(ptr[o], ptr[o + 1]):
            idx[p] = lo + p - ptr[o]
            wt[p] = 1.0 / (ptr[o + 1] - ptr[o])
    return ptr, idx, wt


@njit(cache=True)
def _nearest_axis(size, m):
    # interpolate(mode="nearest"): src = floor(dst * (size / m)), computed in float32
    # as PyTorch does (for float64 tensors too), so the rare rounding cases agree.
    ptr = np.arange(m + 1)
    idx = np.empty(m, np.int64)
    scale = np.float32(size) / np.float32(m)
    for o in range(m):
        idx[o] = min(math.floor(np.float32(o) * scale), size - 1)
    return ptr, idx, np.ones(m)


@njit(cache=True)
def _bilinear_axis(size, m, align):
    # interpolate(mode="bilinear"): align_corners maps the end pixels' centres onto
    # each other; otherwise pixel centres map by the ratio (half-pixel rule) and
    # source positions before the first centre clamp to it.
    ptr = np.zeros(m + 1, np.int64)
    idx = np.empty(2 * m, np.int64)
    wt = np.empty(2 * m)
    if align:
        scale = (size - 1) / (m - 1) if m > 1 else 0.0
    else:
        scale = size / m
    k = 0
    for o in range(m):
        real = scale * o if align else max(scale * (o + 0.5) - 0.5, 0.0)
        i = min(math.floor(real), size - 1)
        lam = min(max(real - i, 0.0), 1.0)
        if i < size - 1 and lam > 0.0:
            idx[k] = i
            wt[k] = 1.0 - lam
            idx[k + 1] = i + 1
            wt[k + 1] = lam
            k += 2
        else:  # one tap: on a pixel centre, or past the last one
            idx[k] = i
            wt[k] = 1.0
            k += 1
        ptr[o + 1] = k
    return ptr, idx, wt  # entries past ptr[m] are unused


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


@njit(cache=True)
def _resample_axis(size, m, bilinear, align):
    if bilinear:
        return _bilinear_axis(size, m, align)
    return _nearest_axis(size, m)


@njit(cache=True)
def upsample(x, out, bilinear, align):
    ay = _resample_axis(x.shape[1], out.shape[1], bilinear, align)
    ax = _resample_axis(x.shape[2], out.shape[2], bilinear, align)
    _map(x, out, ay, ax, False)


@njit(cache=True)
def upsample_grad(dy, dx, bilinear, align):
    ay = _resample_axis(dx.shape[1], dy.shape[1], bilinear, align)
    ax = _resample_axis(dx.shape[2], dy.shape[2], bilinear, align)
    _map(dy, dx, ay, ax, True)
"""


# CUDA: one thread per output element (NHWC, so neighbouring threads read
# neighbouring channels), in a grid-stride loop. The gradient gathers: each
# thread owns one input element and adds dy from every window whose first
# maximum (in window order; a NaN wins) sits there, which is the position the
# CPU kernel's ordered walk picks, so ties resolve the same way.
MAXPOOL_CUDA_SOURCE = """
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
            if best < 0 or v > m or (v != v and m == m):
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
"""

# CUDA form of the separable linear maps: the same per-axis compressed rows,
# built on the host (the same arithmetic as the CPU's axis builders) once per
# shape and kept on the device; one thread per output element then gathers
# its taps. Gradients use the transposed axis matrices, so every thread
# gathers into its own input element and nothing is scattered.
LINEAR_MAP_CUDA_SOURCE = """
_axes = {}  # (kind, arguments, transposed, dtype) -> device (ptr, idx, wt)


def _window_axis(size, m, kernel, stride, pad, count_pad):
    ptr, idx, wt = [0], [], []
    for o in range(m):
        lo = o * stride - pad
        hi = min(lo + kernel, size + pad)
        divisor = hi - lo if count_pad else min(hi, size) - max(lo, 0)
        for i in range(max(lo, 0), min(hi, size)):
            idx.append(i)
            wt.append(1.0 / divisor)
        ptr.append(len(idx))
    return ptr, idx, wt


def _adaptive_axis(size, m):
    ptr, idx, wt = [0], [], []
    for o in range(m):
        lo = (o * size) // m
        hi = ((o + 1) * size + m - 1) // m
        for i in range(lo, hi):
            idx.append(i)
            wt.append(1.0 / (hi - lo))
        ptr.append(len(idx))
    return ptr, idx, wt


def _nearest_axis(size, m):
    # In float32, as PyTorch computes it (see the CPU kernel).
    scale = np.float32(size) / np.float32(m)
    idx = [min(math.floor(np.float32(o) * scale), size - 1) for o in range(m)]
    return list(range(m + 1)), idx, [1.0] * m


def _bilinear_axis(size, m, align):
    ptr, idx, wt = [0], [], []
    if align:
        scale = (size - 1) / (m - 1) if m > 1 else 0.0
    else:
        scale = size / m
    for o in range(m):
        real = scale * o if align else max(scale * (o + 0.5) - 0.5, 0.0)
        i = min(math.floor(real), size - 1)
        lam = min(max(real - i, 0.0), 1.0)
        if i < size - 1 and lam > 0.0:
            idx += [i, i + 1]
            wt += [1.0 - lam, lam]
        else:
            idx.append(i)
            wt.append(1.0)
        ptr.append(len(idx))
    return ptr, idx, wt


_BUILDERS = {"window": _window_axis, "adaptive": _adaptive_axis, "nearest": _nearest_axis, "bilinear": _bilinear_axis}


def _transpose(ptr, idx, wt, size):
    # For each input index, the outputs reading it, in output order.
    rows = [[] for _ in range(size)]
    for o in range(len(ptr) - 1):
        for p in range(ptr[o], ptr[o + 1]):
            rows[idx[p]].append((o, wt[p]))
    tptr, tidx, twt = [0], [], []
    for row in rows:
        tidx += [o for o, _ in row]
        twt += [w for _, w in row]
        tptr.append(len(tidx))
    return tptr, tidx, twt


def _axis(kind, args, grad, dtype):
    # args start with (input size, output size) of the forward map.
    key = (kind, args, grad, np.dtype(dtype).str)
    found = _axes.get(key)
    if found is None:
        ptr, idx, wt = _BUILDERS[kind](*args)
        if grad:
            ptr, idx, wt = _transpose(ptr, idx, wt, args[0])
        found = (
            cuda.to_device(np.array(ptr, np.int64)),
            cuda.to_device(np.array(idx + [0], np.int64)),  # never empty
            cuda.to_device(np.array(wt + [0.0], np.float64).astype(dtype)),
        )
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


def _map(x, out, kind, y_args, x_args, grad):
    yptr, yidx, ywt = _axis(kind, y_args, grad, x.dtype)
    xptr, xidx, xwt = _axis(kind, x_args, grad, x.dtype)
    _separable[blocks(out.size), THREADS](x, out, yptr, yidx, ywt, xptr, xidx, xwt)


def avgpool(x, out, kh, kw, sh, sw, ph, pw, count_pad):
    y_args = (x.shape[1], out.shape[1], kh, sh, ph, count_pad)
    _map(x, out, "window", y_args, (x.shape[2], out.shape[2], kw, sw, pw, count_pad), False)


def avgpool_grad(dy, dx, kh, kw, sh, sw, ph, pw, count_pad):
    y_args = (dx.shape[1], dy.shape[1], kh, sh, ph, count_pad)
    _map(dy, dx, "window", y_args, (dx.shape[2], dy.shape[2], kw, sw, pw, count_pad), True)


def adaptive_avgpool(x, out):
    _map(x, out, "adaptive", (x.shape[1], out.shape[1]), (x.shape[2], out.shape[2]), False)


def adaptive_avgpool_grad(dy, dx):
    _map(dy, dx, "adaptive", (dx.shape[1], dy.shape[1]), (dx.shape[2], dy.shape[2]), True)


def _resample_args(bilinear, align, size, m):
    return ("bilinear", (size, m, bool(align))) if bilinear else ("nearest", (size, m))


def _resample(x, out, source, result, bilinear, align, grad):
    # source, result: the forward map's input and output (x and out, or dx and dy for the gradient).
    kind, y_args = _resample_args(bilinear, align, source.shape[1], result.shape[1])
    _, x_args = _resample_args(bilinear, align, source.shape[2], result.shape[2])
    _map(x, out, kind, y_args, x_args, grad)


def upsample(x, out, bilinear, align):
    _resample(x, out, x, out, bilinear, align, False)


def upsample_grad(dy, dx, bilinear, align):
    _resample(dy, dx, dx, dy, bilinear, align, True)
"""


class _WindowPool(Op):
    """Shared shape rule of the sliding-window pools (stride defaults to the kernel)."""

    fusion = Fusion.REDUCTION

    def window(self, a):
        return a.kernel, a.stride or a.kernel

    def infer(self, a, x):
        expect_rank(self.name, x, 4)
        expect_float(self.name, x)
        kernel, stride = self.window(a)
        dilation = getattr(a, "dilation", (1, 1))
        for i in range(2):
            if a.pad[i] * 2 > kernel[i]:
                raise ShapeError(f"{self.name}: pad {list(a.pad)} must be at most half the kernel {list(kernel)}")
        _, c, h, w = x.shape
        oh = window_out(h, kernel[0], stride[0], a.pad[0], a.pad[0], dilation[0], a.ceil)
        ow = window_out(w, kernel[1], stride[1], a.pad[1], a.pad[1], dilation[1], a.ceil)
        if oh < 1 or ow < 1:
            raise ShapeError(f"{self.name}: window {list(kernel)} does not fit the input {x}")
        return TensorType((BATCH, c, oh, ow), x.dtype)

    def flops(self, a, out, x):
        kernel, _ = self.window(a)
        return out.sample_elements() * kernel[0] * kernel[1]

    def grad_attrs(self, g) -> dict:
        """The window with the stride made explicit, for the gradient op."""
        a = g.node.attrs
        kernel, stride = self.window(a)
        return dict(kernel=kernel, stride=stride, pad=a.pad)


@register
class MaxPool(_WindowPool):
    """Max over each window; padding counts as minus infinity."""

    name = "maxpool"
    attrs = (
        Attr("kernel", positive_pair),
        Attr("stride", optional(positive_pair), None, doc="defaults to the kernel"),
        Attr("pad", nonnegative_pair, 0),
        Attr("dilation", positive_pair, 1),
        Attr("ceil", boolean, False, doc="round the output size up (PyTorch's ceil_mode)"),
    )

    def cpu(self, a, out, x):
        kernel, stride = self.window(a)
        return CpuKernel(MAXPOOL_SOURCE, "maxpool", (In(0), OUT, *kernel, *stride, *a.pad, *a.dilation))

    def cuda(self, a, out, x):
        kernel, stride = self.window(a)
        return CudaKernel(MAXPOOL_CUDA_SOURCE, "maxpool", (In(0), OUT, *kernel, *stride, *a.pad, *a.dilation))

    def grad(self, g, dy):
        if g.needs_input_grad(0):
            attrs = self.grad_attrs(g)
            g.input_grad(0, g.apply("maxpool_grad", [g.node.inputs[0], dy], dilation=g.node.attrs.dilation, **attrs))


@register
class MaxPoolGrad(Op):
    """dx of maxpool from x and dy: each window's dy goes to its (recomputed) argmax."""

    name = "maxpool_grad"
    inputs = 2
    internal = True
    fusion = Fusion.REDUCTION
    attrs = (Attr("kernel", tuple), Attr("stride", tuple), Attr("pad", tuple), Attr("dilation", tuple))

    def infer(self, a, x, dy):
        return x

    def cpu(self, a, out, x, dy):
        return CpuKernel(MAXPOOL_SOURCE, "maxpool_grad", (In(0), In(1), OUT, *a.kernel, *a.stride, *a.pad, *a.dilation))

    def cuda(self, a, out, x, dy):
        return CudaKernel(MAXPOOL_CUDA_SOURCE, "maxpool_grad", (In(0), In(1), OUT, *a.kernel, *a.stride, *a.pad, *a.dilation))


@register
class AvgPool(_WindowPool):
    """Mean over each window."""

    name = "avgpool"
    attrs = (
        Attr("kernel", positive_pair),
        Attr("stride", optional(positive_pair), None, doc="defaults to the kernel"),
        Attr("pad", nonnegative_pair, 0),
        Attr("ceil", boolean, False),
        Attr("count_pad", boolean, True, doc="count padded zeros in the divisor (PyTorch's count_include_pad)"),
    )

    def cpu(self, a, out, x):
        kernel, stride = self.window(a)
        return CpuKernel(LINEAR_MAP_SOURCE, "avgpool", (In(0), OUT, *kernel, *stride, *a.pad, int(a.count_pad)))

    def cuda(self, a, out, x):
        kernel, stride = self.window(a)
        return CudaKernel(LINEAR_MAP_CUDA_SOURCE, "avgpool", (In(0), OUT, *kernel, *stride, *a.pad, int(a.count_pad)))

    def grad(self, g, dy):
        if g.needs_input_grad(0):
            a = g.node.attrs
            x = g.type_of(g.node.inputs[0])
            dx = g.apply("avgpool_grad", [dy], count_pad=a.count_pad, in_size=x.shape[2:], **self.grad_attrs(g))
            g.input_grad(0, dx)


class _ToInputSize(Op):
    """A gradient op from dy alone: dx has dy's channels and the forward input's `in_size`."""

    internal = True
    fusion = Fusion.REDUCTION

    def infer(self, a, dy):
        return TensorType((BATCH, dy.shape[1], *a.in_size), dy.dtype)


@register
class AvgPoolGrad(_ToInputSize):
    """dx of avgpool: each input gathers dy / divisor from the windows holding it."""

    name = "avgpool_grad"
    attrs = (Attr("kernel", tuple), Attr("stride", tuple), Attr("pad", tuple), Attr("count_pad", bool), Attr("in_size", tuple))

    def cpu(self, a, out, dy):
        return CpuKernel(LINEAR_MAP_SOURCE, "avgpool_grad", (In(0), OUT, *a.kernel, *a.stride, *a.pad, int(a.count_pad)))

    def cuda(self, a, out, dy):
        return CudaKernel(LINEAR_MAP_CUDA_SOURCE, "avgpool_grad", (In(0), OUT, *a.kernel, *a.stride, *a.pad, int(a.count_pad)))


@register
class GlobalAvgPool(Op):
    """Mean over height and width: [C, H, W] -> [C, 1, 1]."""

    name = "global_avgpool"
    fusion = Fusion.REDUCTION

    def infer(self, a, x):
        expect_rank(self.name, x, 4)
        expect_float(self.name, x)
        return TensorType((BATCH, x.shape[1], 1, 1), x.dtype)

    def flops(self, a, out, x):
        return x.sample_elements()

    def cpu(self, a, out, x):
        return CpuKernel(LINEAR_MAP_SOURCE, "adaptive_avgpool", (In(0), OUT))  # one window: the whole image

    def cuda(self, a, out, x):
        return CudaKernel(LINEAR_MAP_CUDA_SOURCE, "adaptive_avgpool", (In(0), OUT))

    def grad(self, g, dy):
        if g.needs_input_grad(0):
            x = g.type_of(g.node.inputs[0])
            g.input_grad(0, g.apply("global_avgpool_grad", [dy], in_size=x.shape[2:]))


# dy / (H * W) broadcast over every position, each pixel's channels followed by the epilogue.
GLOBAL_GRAD_SOURCE = """
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
"""

# One thread per dx element (flat NHWC): its channel's dy / (H * W), stored through the epilogue.
GLOBAL_GRAD_CUDA_SOURCE = """
@cuda.jit(cache=True)
def _global_avgpool_grad(dy, dx, e, C, hw, n):
    inv = 1.0 / hw
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        c = i % C
        _epilogue(dx, i, c, dy[(i // (hw * C)) * C + c] * inv, e)


def global_avgpool_grad(dy, dx, e, C, hw):
    _global_avgpool_grad[blocks(dx.size), THREADS](dy, dx, e, C, hw, dx.size)
"""


@register
class GlobalAvgPoolGrad(_ToInputSize):
    """dx of global_avgpool: dy / (H * W) at every position."""

    name = "global_avgpool_grad"
    fusion = Fusion.OUT_ELEMWISE_FUSABLE
    attrs = (Attr("in_size", tuple),)

    def cpu(self, a, out, dy, epilogue=None):
        return hosting(GLOBAL_GRAD_SOURCE, "global_avgpool_grad", epilogue, (In(0), OUT), ())

    def cuda(self, a, out, dy, epilogue=None):
        from ..backend.cuda.fused import hosting as cuda_hosting

        hw = a.in_size[0] * a.in_size[1]
        return cuda_hosting(GLOBAL_GRAD_CUDA_SOURCE, "global_avgpool_grad", epilogue, (In(0, flat=True), FLAT_OUT), (dy.shape[1], hw))


@register
class AdaptiveAvgPool(Op):
    """Mean over an adaptive grid of windows giving a fixed output size (PyTorch's AdaptiveAvgPool2d)."""

    name = "adaptive_avgpool"
    fusion = Fusion.REDUCTION
    attrs = (Attr("size", positive_pair, doc="output size, n or [h, w]"),)

    def infer(self, a, x):
        expect_rank(self.name, x, 4)
        expect_float(self.name, x)
        return TensorType((BATCH, x.shape[1], *a.size), x.dtype)

    def flops(self, a, out, x):
        return x.sample_elements()

    def cpu(self, a, out, x):
        return CpuKernel(LINEAR_MAP_SOURCE, "adaptive_avgpool", (In(0), OUT))

    def cuda(self, a, out, x):
        return CudaKernel(LINEAR_MAP_CUDA_SOURCE, "adaptive_avgpool", (In(0), OUT))

    def grad(self, g, dy):
        if g.needs_input_grad(0):
            x = g.type_of(g.node.inputs[0])
            g.input_grad(0, g.apply("adaptive_avgpool_grad", [dy], in_size=x.shape[2:]))


@register
class AdaptiveAvgPoolGrad(_ToInputSize):
    """dx of adaptive_avgpool: each input gathers dy / window area from the windows holding it."""

    name = "adaptive_avgpool_grad"
    attrs = (Attr("in_size", tuple),)

    def cpu(self, a, out, dy):
        return CpuKernel(LINEAR_MAP_SOURCE, "adaptive_avgpool_grad", (In(0), OUT))

    def cuda(self, a, out, dy):
        return CudaKernel(LINEAR_MAP_CUDA_SOURCE, "adaptive_avgpool_grad", (In(0), OUT))
