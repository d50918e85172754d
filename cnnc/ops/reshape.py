"""Reshaping: flatten and reshape (the batch axis is always kept)."""

from __future__ import annotations

import math

from ..backend.cpu.kernel import FLAT_OUT, OUT, CpuKernel, In
from ..backend.cuda.kernel import CudaKernel
from ..backend.layout import is_channels_last
from .base import Attr, Fusion, Op, ShapeError, TensorType, int_list, register
from ..graph import BATCH

# Reshaping follows the logical (NCHW) element order, whatever the physical layouts.
# A serial copy: cheap next to the layers around it, and quick to compile.
RESHAPE_SOURCE = """
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
                c = j // (ih * iw)
                r = j - c * ih * iw
                src = r * ic + c
            dst = j
            if out_chw:
                c = j // (oh * ow)
                r = j - c * oh * ow
                dst = r * oc + c
            of[s, dst] = xf[s, src]
"""

# CUDA: one thread per output element (flat), which finds its logical index and
# reads the input element holding it, so writes are coalesced.
RESHAPE_CUDA_SOURCE = """
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
            c = j // (ih * iw)
            src = (j - c * ih * iw) * ic + c
        out[i] = x[s * per + src]


def reshape(x, out, in_chw, ic, ih, iw, out_chw, oc, oh, ow, per):
    _reshape[blocks(out.size), THREADS](x, out, per, in_chw, ic, ih, iw, out_chw, oc, oh, ow)
"""


def _chw(t: TensorType) -> tuple[bool, int, int, int]:
    if is_channels_last(t):
        return (True, *t.shape[1:])
    return (False, 1, 1, 1)


def reshape_kernel(out: TensorType, x: TensorType) -> CpuKernel:
    return CpuKernel(RESHAPE_SOURCE, "reshape", (In(0), OUT, *_chw(x), *_chw(out)))


def reshape_cuda_kernel(out: TensorType, x: TensorType) -> CudaKernel:
    return CudaKernel(RESHAPE_CUDA_SOURCE, "reshape", (In(0, flat=True), FLAT_OUT, *_chw(x), *_chw(out), x.sample_elements()))


class _Reshaping(Op):
    fusion = Fusion.INJECTIVE

    def flops(self, a, out, x):
        return 0

    def cpu(self, a, out, x):
        return reshape_kernel(out, x)

    def cuda(self, a, out, x):
        return reshape_cuda_kernel(out, x)

    def grad(self, g, dy):
        g.input_grad(0, g.apply("reshape", [dy], shape=g.type_of(g.node.inputs[0]).sample_shape))


@register
class Flatten(_Reshaping):
    """[C, H, W] -> [C*H*W]."""

    name = "flatten"

    def infer(self, a, x):
        if not x.batched:
            raise ShapeError(f"flatten expects a batched input, got {x}")
        return TensorType((BATCH, x.sample_elements()), x.dtype)


@register
class Reshape(_Reshaping):
    """Reshape one example to `shape` (one entry may be -1: inferred)."""

    name = "reshape"
    attrs = (Attr("shape", int_list, doc="the new shape of one example, e.g. [16, 25]"),)

    def infer(self, a, x):
        if not x.batched:
            raise ShapeError(f"reshape expects a batched input, got {x}")
        shape = list(a.shape)
        if shape.count(-1) > 1 or any(d == 0 or d < -1 for d in shape):
            raise ShapeError(f"reshape: shape {shape} may hold positive sizes and at most one -1")
        total = x.sample_elements()
        known = math.prod(d for d in shape if d != -1)
        if -1 in shape:
            if total % known:
                raise ShapeError(f"reshape: cannot reshape {x} to {shape}")
            shape[shape.index(-1)] = total // known
        elif known != total:
            raise ShapeError(f"reshape: cannot reshape {x} ({total} elements) to {shape} ({known} elements)")
        return TensorType((BATCH, *shape), x.dtype)
