"""The axis matrices of resizing (nearest and bilinear interpolation), written once for both targets.

The same compressed rows (ptr, idx, wt) as the average pools' (see shared/pool.py),
filled into arrays the caller allocated: at most one tap per output for nearest,
two for bilinear (entries past ptr[m] are unused).
"""

import math

import numpy as np


def nearest_axis(size, m, ptr, idx, wt):
    # interpolate(mode="nearest"): src = floor(dst * (size / m)), computed in float32
    # as PyTorch does (for float64 tensors too), so the rare rounding cases agree.
    scale = np.float32(size) / np.float32(m)
    ptr[0] = 0
    for o in range(m):
        idx[o] = min(math.floor(np.float32(o) * scale), size - 1)
        wt[o] = 1.0
        ptr[o + 1] = o + 1


def bilinear_axis(size, m, align, ptr, idx, wt):
    # interpolate(mode="bilinear"): align_corners maps the end pixels' centres onto
    # each other; otherwise pixel centres map by the ratio (half-pixel rule) and
    # source positions before the first centre clamp to it.
    if align:
        scale = (size - 1) / (m - 1) if m > 1 else 0.0
    else:
        scale = size / m
    ptr[0] = 0
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
