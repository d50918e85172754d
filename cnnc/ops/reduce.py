"""Reductions and their adjoints: sum, mean, expand, and the Gram matrix of features.

sum and mean with `axis=none` reduce everything, the batch included, to a scalar (a loss
written in the network: `output loss = mean(y * y)`); with axes they reduce those axes of
each example. Their kernels work on physical buffers: an op describes the reduction as
strided loops over the buffers, `(size, stride)` pairs in elements for the axes it keeps
(in the output's physical order) and for the axes it sums, so that the channels-last
layout of images (cnnc/layout.py), on either side, is only other strides. The same
description, read the other way, broadcasts a value back (their gradients, and expand).
The kernels: cnnc/kernels/cpu/reduce.py and cnnc/kernels/cuda/reduce.py, which define the
same entries, over the strided loops of cnnc/kernels/shared/reduce.py.
"""

from __future__ import annotations

import math

from ..graph import BATCH
from ..kernels import FLAT_OUT, In, Kernel, Pack
from ..layout import is_channels_last, physical_axis, physical_shape
from .base import Attr, AttrError, Fusion, Op, ShapeError, TensorType, boolean, expect_float, int_list, integer, optional, register


def reduction_axes(value):
    """`none`, an axis, or a non-empty list of distinct axes; the batch axis 0 is refused."""
    if value is None:
        return None
    axes = tuple(integer(v) for v in value) if isinstance(value, (list, tuple)) else (integer(value),)
    if not axes:
        raise AttrError("expected an axis or a non-empty list of axes (axis=none reduces everything)")
    if 0 in axes:
        raise AttrError("axis 0 is the batch; reduce within one example, or everything, the batch included, with axis=none")
    if len(set(axes)) < len(axes):
        raise AttrError(f"axes {list(axes)} name an axis twice")
    return axes


def normalized_axes(op: str, axis: tuple[int, ...], x: TensorType) -> tuple[int, ...]:
    """The axes as non-negative positions of `x`, sorted; raises ShapeError for the batch, a repeat or out of range."""
    shown = axis[0] if len(axis) == 1 else list(axis)
    out = []
    for k in axis:
        if not -x.rank <= k < x.rank:
            raise ShapeError(f"{op}: axis {shown} is out of range for {x}")
        out.append(k % x.rank)
    if 0 in out:
        raise ShapeError(f"{op}: axis {shown} is the batch axis of {x}; reduce within one example, or everything with axis=none")
    if len(set(out)) < len(out):
        raise ShapeError(f"{op}: axes {shown} name one axis of {x} twice")
    return tuple(sorted(out))


# -- strided loops over physical buffers ---------------------------------------------------


def _strides(t: TensorType) -> list[int]:
    """The physical stride (in elements) of each logical axis of t."""
    shape = physical_shape(t, 1)
    steps, step = [0] * len(shape), 1
    for p in range(len(shape) - 1, -1, -1):
        steps[p] = step
        step *= shape[p]
    return [steps[physical_axis(t, i)] for i in range(t.rank)]


def _physical_order(t: TensorType) -> list[int]:
    """The logical axes of one example (all but the batch) in the order they lie in memory."""
    return sorted(range(1, t.rank), key=lambda i: physical_axis(t, i))


# Loops a nest has at least: shorter nests start with loops of size 1, so that the kernels, compiled per
# length of their tuples, compile once for every reduction and broadcast of up to this many merged axes.
NEST = 4


def loops(dims: list[tuple[int, int]]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(sizes, strides) of nested loops, outermost first, over (size, stride) axes: axes of size 1
    dropped, neighbours that walk memory as one axis merged, loops of size 1 put first up to NEST."""
    merged: list[tuple[int, int]] = []
    for size, stride in dims:
        if size == 1:
            continue
        if merged and merged[-1][1] == size * stride:
            merged[-1] = (merged[-1][0] * size, stride)
        else:
            merged.append((size, stride))
    merged = [(1, 0)] * (NEST - len(merged)) + merged
    return tuple(d for d, _ in merged), tuple(s for _, s in merged)


def reduction_loops(x: TensorType, axes: tuple[int, ...], out: TensorType, keepdims: bool) -> tuple:
    """Kernel arguments for an axis reduction: the input's elements per example, the kept axes
    (in the output's physical order) and the summed axes (in the input's), each as sizes and strides."""
    xs = _strides(x)
    source = list(range(x.rank)) if keepdims else [0, *(i for i in range(1, x.rank) if i not in axes)]
    kept = loops([(out.shape[j], xs[source[j]]) for j in _physical_order(out)])
    summed = loops(sorted(((x.shape[i], xs[i]) for i in axes), key=lambda d: -d[1]))
    return (x.sample_elements(), Pack(kept[0]), Pack(kept[1]), Pack(summed[0]), Pack(summed[1]))


def broadcast_loops(src: TensorType, out: TensorType, source: list[int | None]) -> tuple:
    """Kernel arguments for a broadcast: out's and src's elements per example (0 for a scalar src)
    and out's axes (in its physical order) as sizes and strides into src. `source[j]`: the axis of
    src that out's axis j reads, None where it reads one element throughout."""
    ss = _strides(src) if src.rank else []
    dims = [(out.shape[j], 0 if source[j] is None or src.shape[source[j]] == 1 else ss[source[j]]) for j in _physical_order(out)]
    sizes, strides = loops(dims)
    return (out.sample_elements(), src.sample_elements() if src.batched else 0, Pack(sizes), Pack(strides))


# -- sum and mean ----------------------------------------------------------------------------


class _Reduction(Op):
    fusion = Fusion.REDUCTION
    attrs = (Attr("axis", reduction_axes, None), Attr("keepdims", boolean, False))
    mean = False

    def infer(self, a, x):
        expect_float(self.name, x)
        if not x.batched:
            raise ShapeError(f"{self.name} expects a batched input, got a scalar {x}")
        if a.axis is None:
            if a.keepdims:
                raise ShapeError(f"{self.name}: keepdims needs an axis: with axis=none {x} and the batch reduce to a scalar")
            return TensorType((), x.dtype)
        axes = normalized_axes(self.name, tuple(a.axis), x)
        if a.keepdims:
            shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
        else:
            shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
        # The input's `image` flag carries over: an image whose channels sum to one is still an image (a conv
        # may read it), and a rank-5 value reduced to rank 4 becomes one; the kernels write whichever layout
        # the output's type has.
        return TensorType(shape, x.dtype, x.image)

    def flops(self, a, out, x):
        return x.sample_elements() + (out.sample_elements() if self.mean else 0)

    def passes_input(self, a, training, out, x):
        return out == x  # a reduction over axes of size 1, kept

    def scale(self, axes: tuple[int, ...], x: TensorType) -> float:
        """What each output's sum is multiplied by: 1, or for mean 1 / the number of elements it sums."""
        return 1.0 / math.prod(x.shape[i] for i in axes) if self.mean else 1.0

    def cpu(self, a, out, x):
        if a.axis is None:
            return Kernel("reduce", "reduce_all", (In(0, flat=True), FLAT_OUT, self.mean))
        axes = normalized_axes(self.name, tuple(a.axis), x)
        return Kernel("reduce", "reduce_axes", (In(0, flat=True), FLAT_OUT, *reduction_loops(x, axes, out, a.keepdims), self.scale(axes, x)))

    cuda = cpu  # the same entries in cnnc/kernels/cuda/reduce.py

    def grad(self, g, dy):
        a, x = g.node.attrs, g.type_of(g.node.inputs[0])
        if a.axis is None:  # a mean over everything divides by the batch size too, known when it runs
            axes, scale, whole = None, 1.0, self.mean
        else:
            axes = normalized_axes(self.name, tuple(a.axis), x)
            scale, whole = self.scale(axes, x), False
        g.input_grad(0, g.apply("reduce_grad", [dy], axis=axes, keepdims=a.keepdims, shape=x.shape, image=x.image,
                                scale=scale, whole=whole))


@register
class Sum(_Reduction):
    """The sum over `axis` (an axis or a list) of each example, or of everything (the batch too) with axis=none."""

    name = "sum"


@register
class Mean(_Reduction):
    """The mean over `axis` (an axis or a list) of each example, or of everything (the batch too) with axis=none."""

    name = "mean"
    mean = True

    def fold(self, a, values):
        return values[0]  # the mean of a constant


@register
class ReduceGrad(Op):
    """The gradient of sum and mean: dy broadcast back over the reduced axes to the input's type, times
    `scale` (1 / the count of a mean over axes); `whole`: divided by every element, the batch's included
    (a mean over everything)."""

    name = "reduce_grad"
    internal = True
    fusion = Fusion.BROADCAST
    attrs = (Attr("axis", optional(tuple)), Attr("keepdims", bool), Attr("shape", tuple), Attr("image", bool), Attr("scale", float),
             Attr("whole", bool))

    def infer(self, a, dy):
        return TensorType(tuple(a.shape), dy.dtype, a.image)

    def passes_input(self, a, training, out, dy):
        return out == dy and a.scale == 1.0 and not a.whole

    def fold(self, a, values):
        return None if a.whole else values[0] * a.scale

    def cpu(self, a, out, dy):
        if a.axis is None:
            source = [None] * out.rank
        else:
            kept = [i for i in range(out.rank) if i not in a.axis]
            source = [None if i in a.axis else i if a.keepdims else kept.index(i) for i in range(out.rank)]
        return Kernel("reduce", "broadcast_axes", (In(0, flat=True), FLAT_OUT, *broadcast_loops(dy, out, source), a.scale, a.whole))

    cuda = cpu  # the same entry in cnnc/kernels/cuda/reduce.py


# -- expand ----------------------------------------------------------------------------------


def expand_sizes(value):
    sizes = int_list(value)
    if not sizes or any(d == 0 or d < -1 for d in sizes):
        raise AttrError(f"expected a non-empty list of sizes >= 1 or -1 (keep the size), got {list(sizes)}")
    return sizes


@register
class Expand(Op):
    """Axes of size 1 of each example broadcast to `shape` (-1 keeps an axis's size), as PyTorch's expand."""

    name = "expand"
    fusion = Fusion.BROADCAST
    attrs = (Attr("shape", expand_sizes),)

    def infer(self, a, x):
        expect_float(self.name, x)
        if not x.batched:
            raise ShapeError(f"expand expects a batched input, got a scalar {x}")
        if len(a.shape) != x.rank - 1:
            raise ShapeError(f"expand: shape {list(a.shape)} has {len(a.shape)} axes, {x} has {x.rank - 1}")
        dims = []
        for i, (size, want) in enumerate(zip(x.sample_shape, a.shape), 1):
            if want in (-1, size) or size == 1:
                dims.append(size if want == -1 else want)
            else:
                raise ShapeError(f"expand: cannot expand {x} to {list(a.shape)}: axis {i} has size {size}, not 1")
        return TensorType((BATCH, *dims), x.dtype, x.image)

    def flops(self, a, out, x):
        return 0

    def passes_input(self, a, training, out, x):
        return out == x

    def fold(self, a, values):
        return values[0]

    def cpu(self, a, out, x):
        return Kernel("reduce", "broadcast_axes", (In(0, flat=True), FLAT_OUT, *broadcast_loops(x, out, list(range(out.rank))), 1.0, False))

    cuda = cpu  # the same entry in cnnc/kernels/cuda/reduce.py

    def grad(self, g, dy):
        x, out = g.type_of(g.node.inputs[0]), g.node.type
        axes = tuple(i for i in range(1, x.rank) if x.shape[i] != out.shape[i])
        g.input_grad(0, g.apply("sum", [dy], axis=axes, keepdims=True) if axes else dy)


# -- the Gram matrix ---------------------------------------------------------------------------


def _features(x: TensorType) -> tuple[int, int, bool, float]:
    """(C, L, channels_last, 1 / (C * L)): features [C, H, W] or [C, L] as a C x L matrix F. A channels-last
    buffer holds F^T, L rows of C; another holds F itself."""
    c, length = x.shape[1], math.prod(x.shape[2:])
    return c, length, is_channels_last(x), 1.0 / (c * length)


@register
class Gram(Op):
    """The Gram matrix of features [C, H, W] (or [C, L]) per example: G = F F^T / (C * H * W), F = x.view(C, H * W).

    Per example this is the normalization of the PyTorch neural style tutorial's gram_matrix, which
    divides by batch * C * H * W: at batch 1 the two are equal.
    """

    name = "gram"
    fusion = Fusion.REDUCTION

    def infer(self, a, x):
        expect_float(self.name, x)
        if x.rank not in (3, 4) or not x.batched:
            raise ShapeError(f"gram expects [channels, height, width] or [channels, length] input, got {x}")
        return TensorType((BATCH, x.shape[1], x.shape[1]), x.dtype)

    def macs(self, a, out, x):
        return x.shape[1] * x.sample_elements()

    def cpu(self, a, out, x):
        return Kernel("reduce", "gram", (In(0, flat=True), FLAT_OUT, *_features(x)))

    cuda = cpu  # the same entry in cnnc/kernels/cuda/reduce.py

    def grad(self, g, dy):
        g.input_grad(0, g.apply("gram_grad", [dy, g.node.inputs[0]]))


@register
class GramGrad(Op):
    """dF = (dG + dG^T) F / (C * L), from dG and the features."""

    name = "gram_grad"
    inputs = 2
    internal = True
    fusion = Fusion.REDUCTION

    def infer(self, a, dy, x):
        return x

    def macs(self, a, out, dy, x):
        return x.shape[1] * x.sample_elements()

    def cpu(self, a, out, dy, x):
        return Kernel("reduce", "gram_grad", (In(0, flat=True), In(1, flat=True), FLAT_OUT, *_features(x)))

    cuda = cpu  # the same entry in cnnc/kernels/cuda/reduce.py
