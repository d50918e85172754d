"""PNG's per-row filters, undone. Sub, average and Paeth depend on the pixel to the left,
so the rows are decoded serially, in a small compiled loop (kept in the kernel cache)."""

import numpy as np
from numba import njit


@njit(cache=True)
def unfilter_rows(raw, height, stride, channels, out):
    # Decode into `out`; the index of the first row with an unknown filter, or -1.
    zero = np.int32(0)
    for y in range(height):
        base = y * (stride + 1)
        kind = raw[base]
        if kind > 4:
            return y
        for i in range(stride):
            a = np.int32(out[y, i - channels]) if i >= channels else zero
            b = np.int32(out[y - 1, i]) if y > 0 else zero
            c = np.int32(out[y - 1, i - channels]) if y > 0 and i >= channels else zero
            if kind == 0:
                pred = zero
            elif kind == 1:
                pred = a
            elif kind == 2:
                pred = b
            elif kind == 3:
                pred = (a + b) // 2
            else:  # Paeth
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            out[y, i] = (np.int32(raw[base + 1 + i]) + pred) & 255
    return -1
