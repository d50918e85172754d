"""Reshaping (flatten, reshape): a copy in the logical (NCHW) element order, whatever the physical layouts."""

from numba import njit

from ..shared.reshape import channels_last_index


# A serial copy: cheap next to the layers around it, and quick to compile.
@njit(cache=True)
def reshape(x, out, in_chw, ic, ih, iw, out_chw, oc, oh, ow):
    n = x.shape[0]
    per = x.size // n
    xf = x.reshape((n, per))
    of = out.reshape((n, per))
    for s in range(n):
        for j in range(per):
            src = j
            if in_chw:  # logical (c, h, w) -> physical (h, w, c)
                src = channels_last_index(j, ic, ih, iw)
            dst = j
            if out_chw:
                dst = channels_last_index(j, oc, oh, ow)
            of[s, dst] = xf[s, src]
