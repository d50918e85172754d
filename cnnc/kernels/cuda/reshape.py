"""Reshaping (flatten, reshape): a copy in the logical (NCHW) element order, whatever the physical layouts.

One thread per output element (flat), which finds its logical index and reads
the input element holding it, so writes are coalesced.
"""

from numba import cuda

from ..shared.reshape import channels_last_index
from .common import THREADS, blocks


@cuda.jit(cache=True)
def _reshape(x, out, per, in_chw, ic, ih, iw, out_chw, oc, oh, ow):
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        s = i // per
        j = i - s * per  # physical position in the output example
        if out_chw:  # physical (h, w, c) -> logical (c, h, w)
            c = j % oc
            j = c * oh * ow + j // oc
        src = j
        if in_chw:  # logical (c, h, w) -> physical (h, w, c)
            src = channels_last_index(j, ic, ih, iw)
        out[i] = x[s * per + src]


def reshape(x, out, in_chw, ic, ih, iw, out_chw, oc, oh, ow, per):
    _reshape[blocks(out.size), THREADS](x, out, per, in_chw, ic, ih, iw, out_chw, oc, oh, ow)
