"""A fused elementwise group on its own: the group's chain over every element, in blocks of whole rows."""

from numba import njit, prange

from .holes import _epilogue


@njit(parallel=True, cache=True)
def fused_loop(o, e, C, block):
    n = o.size
    for b in prange((n + block - 1) // block):
        lo = b * block
        _epilogue(o, lo, min(n, lo + block), C, e)
