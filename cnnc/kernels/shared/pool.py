"""The axis matrices of the average pools, and their transpose: written once, built on each target.

Average pools (and resizing, see shared/resize.py) are separable linear maps:
    out[oy, ox, :] = sum over iy, ix of ry[oy, iy] * rx[ox, ix] * x[iy, ix, :]
with a sparse matrix per axis, held as compressed rows (ptr, idx, wt): output o
reads inputs idx[ptr[o]:ptr[o + 1]] with weights wt[ptr[o]:ptr[o + 1]] (float64).

Each builder fills arrays its caller allocated (entries of idx and wt past
ptr[m] are unused), so the same code runs compiled on the CPU and, for the GPU,
as Python on the host (through `.py_func`), whose result is copied to the device.
"""


def window_axis(size, m, kernel, stride, pad, count_pad, ptr, idx, wt):
    # avg_pool2d's windows along one axis, at most `kernel` taps each. The window is cut
    # at the padded input's end; the divisor counts the padded positions in it (count_pad)
    # or only the real ones. PyTorch's 2-D divisor is the product of the two axes' divisors.
    ptr[0] = 0
    for o in range(m):
        lo = o * stride - pad
        hi = min(lo + kernel, size + pad)
        first = max(lo, 0)
        taps = max(min(hi, size) - first, 0)
        divisor = hi - lo if count_pad else min(hi, size) - first
        for k in range(taps):
            idx[ptr[o] + k] = first + k
            wt[ptr[o] + k] = 1.0 / divisor
        ptr[o + 1] = ptr[o] + taps


def adaptive_axis(size, m, ptr, idx, wt):
    # adaptive_avg_pool2d's windows: [floor(o * size / m), ceil((o + 1) * size / m)),
    # at most size // m + 2 taps each.
    ptr[0] = 0
    for o in range(m):
        lo = (o * size) // m
        taps = ((o + 1) * size + m - 1) // m - lo
        for k in range(taps):
            idx[ptr[o] + k] = lo + k
            wt[ptr[o] + k] = 1.0 / taps
        ptr[o + 1] = ptr[o] + taps


def transpose_axis(ptr, idx, wt, tptr, tidx, twt, fill):
    # The axis matrix transposed: for each input index (tptr.size - 1 of them), the outputs
    # that read it, in order. `fill` is work space of one entry per input.
    m = ptr.size - 1
    size = tptr.size - 1
    for i in range(size + 1):
        tptr[i] = 0
    for p in range(ptr[m]):
        tptr[idx[p] + 1] += 1
    for i in range(size):
        tptr[i + 1] += tptr[i]
    for i in range(size):
        fill[i] = tptr[i]
    for o in range(m):
        for p in range(ptr[o], ptr[o + 1]):
            i = idx[p]
            tidx[fill[i]] = o
            twt[fill[i]] = wt[p]
            fill[i] += 1
