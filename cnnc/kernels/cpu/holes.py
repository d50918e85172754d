"""Holes of the CPU kernels: names the lowering fills for each module (see cnnc.kernels.source).

These stubs keep the kernel files valid Python; the assembler never copies them.
"""

from numba import njit


@njit(cache=True)
def _epilogue(o, lo, hi, C, e):
    """The fused elementwise chain, run on o[lo:hi] (whole rows of C channels) just written; `e` holds its operands."""
    return


@njit(cache=True)
def _post(o, lo, hi, C, e, x, m, s, b):
    """The chain after batch normalization, run on o[lo:hi] from x normalized by the per-channel m, s, b."""
    return


@njit(cache=True)
def _stage(*args):
    """The kernel (an anchor with its epilogue, or an elementwise loop) that fills a fused group's first value."""
    return
