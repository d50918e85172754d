"""Holes of the CUDA kernels: names the lowering fills for each module (see cnnc.kernels.source).

These stubs keep the kernel files valid Python; the assembler never copies them.
"""

from numba import cuda, float32

# The model's float type, for shared and local arrays (whose element type is fixed when compiled):
# a module is assembled per float type.
DTYPE = float32


@cuda.jit(device=True)
def _epilogue(o, i, c, acc, e):
    """Store element i (channel c) of a kernel's output, computed as `acc`, through the fused chain."""
    o[i] = acc


@cuda.jit(device=True)
def _post(o, i, c, acc, e):
    """The chain after batch normalization, on element i whose normalized value is `acc`."""
    o[i] = acc


def _stage(*args):
    """The launcher (an anchor with its epilogue, or an elementwise loop) that fills a fused group's first value."""
    return


@cuda.jit(device=True)
def _gather(src, n, rh, rw, kh, kw, g, inner, c, SH, SW, SC, sh, sw, pt, pl, dh, dw):
    """The element of src that tap (kh, kw), channel c of group g, reads for result pixel (n, rh, rw), or 0."""
    return DTYPE(0)


@cuda.jit(device=True)
def _weight_index(g, cols, inner, j, c, kh, kw, KH, KW):
    """The flat index of the weight that result column j of group g takes from reduction index (kh, kw, c)."""
    return 0
