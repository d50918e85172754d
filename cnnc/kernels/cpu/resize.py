"""Resizing (nearest and bilinear upsampling) and its gradient: the average pools' separable
linear map (cpu/pool.py), with the interpolation's axis matrices (shared/resize.py).

An integer scale gives out = in * scale, so in / out is PyTorch's 1 / scale_factor:
the kernels need only the two sizes.
"""

from numba import njit

from ..shared.resize import bilinear_axis, nearest_axis
from .pool import _empty_axis, _map


@njit(cache=True)
def _resample_axis(size, m, bilinear, align):
    if bilinear:
        ptr, idx, wt = _empty_axis(m, 2 * m)
        bilinear_axis(size, m, align, ptr, idx, wt)
    else:
        ptr, idx, wt = _empty_axis(m, m)
        nearest_axis(size, m, ptr, idx, wt)
    return ptr, idx, wt


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
