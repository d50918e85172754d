"""Resizing (nearest and bilinear upsampling) and its gradient: the average pools' separable
linear map (cuda/pool.py), with the interpolation's axis matrices (shared/resize.py)
built on the host.

An integer scale gives out = in * scale, so in / out is PyTorch's 1 / scale_factor:
the kernels need only the two sizes.
"""

from ..shared.resize import bilinear_axis, nearest_axis
from .pool import _empty_axis, _map


# As Python on the host, like the pools' builders (see cuda/pool.py).
def _nearest_axis(size, m):
    ptr, idx, wt = _empty_axis(m, m)
    nearest_axis.py_func(size, m, ptr, idx, wt)
    return ptr, idx, wt


def _bilinear_axis(size, m, align):
    ptr, idx, wt = _empty_axis(m, 2 * m)
    bilinear_axis.py_func(size, m, align, ptr, idx, wt)
    return ptr, idx, wt


def _resample_axis(bilinear, align, size, m):
    return (_bilinear_axis, (size, m, bool(align))) if bilinear else (_nearest_axis, (size, m))


def _resample(x, out, source, result, bilinear, align, grad):
    # source, result: the forward map's input and output (x and out, or dx and dy for the gradient).
    y_axis = _resample_axis(bilinear, align, source.shape[1], result.shape[1])
    x_axis = _resample_axis(bilinear, align, source.shape[2], result.shape[2])
    _map(x, out, y_axis, x_axis, grad)


def upsample(x, out, bilinear, align):
    _resample(x, out, x, out, bilinear, align, False)


def upsample_grad(dy, dx, bilinear, align):
    _resample(dy, dx, dx, dy, bilinear, align, True)
