"""Convolutions: conv (cross-correlation, as every framework computes it) and conv_transpose."""

from __future__ import annotations

import os
from typing import Any

from ..graph import BATCH
from ..kernels import EPILOGUE, OUT, SLOTS, In, Kernel, Param, Scratch
from .base import (
    Attr,
    AttrError,
    Attrs,
    Fusion,
    Op,
    ShapeError,
    TensorType,
    boolean,
    expect_float,
    expect_rank,
    int_list,
    nonnegative_pair,
    param,
    positive_int,
    positive_pair,
    register,
    window_out,
)


def padding(value: Any) -> Any:
    """An integer, a pair [h, w], or "same" / "valid"."""
    if value in ("same", "valid"):
        return value
    if isinstance(value, str):
        raise AttrError(f'expected an integer, a pair, "same" or "valid", got "{value}"')
    return nonnegative_pair(value)


def conv_pads(a: Attrs) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) padding. "same" puts the odd pixel at the end, as PyTorch does."""
    if a.pad == "valid":
        return (0, 0, 0, 0)
    if a.pad == "same":
        th = a.dilation[0] * (a.kernel[0] - 1)
        tw = a.dilation[1] * (a.kernel[1] - 1)
        return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    return (a.pad[0], a.pad[0], a.pad[1], a.pad[1])


def _check_groups(name: str, cin: int, cout: int, groups: int) -> None:
    if cin % groups or cout % groups:
        raise ShapeError(f"{name}: groups={groups} must divide both the input channels ({cin}) and the output channels ({cout})")


# -- kernels ------------------------------------------------------------------
#
# The kernels live in cnnc/kernels/cpu/conv.py and cnnc/kernels/cuda/conv.py. Every 4-D
# buffer is NHWC; weights keep PyTorch's layout [out, in/groups, kh, kw]. One family serves
# conv, conv_transpose and their gradients:
#   conv_forward      also conv_transpose's input gradient
#   conv_grad_input   also conv_transpose's forward
#   conv_grad_weight  also conv_transpose's weight gradient (operands swapped)
#   direct_*          the same for groups of very few channels (depthwise)


def _tile(k: int) -> int:
    """Rows (pixels) per GEMM tile for k columns.

    Larger tiles measured faster up to about 512 rows for 64..256 channels, and a GEMM
    of 128 rows ran a quarter slower than one of 256 at 512 channels; past about 1M
    elements (4 MB in float32) per tile, larger ones only grow each thread's scratch.
    The kernels shrink tiles when the batch is small, so that every thread gets work.
    """
    return min(512, max(256, (1 << 20) // max(k, 1)))


def _geometry(stride, pads, dilation, groups) -> tuple[int, ...]:
    return (stride[0], stride[1], pads[0], pads[1], dilation[0], dilation[1], groups)


DIRECT_TILE = 64  # pixels per prange iteration in the direct kernels
# Output pixels (across the batch) up to which a conv reads its weight as stored, with the work
# split over output channels (few_rows_forward): rearranging the weight for the tiled GEMMs would
# cost as much as the product itself (ResNet-18's last convs at batch 1: 3.1 ms -> 0.6 ms).
FEW_ROWS = 128
# Multiply-adds up to which such a conv runs on one thread (serial_forward): a parallel region
# costs microseconds to start, as long as the conv takes to compute.
SERIAL_MACS = 1 << 20


# A stride-1 conv with at most PLANAR_MAX_TAPS taps (input channels x kernel) and PLANAR_MAX_OUT output
# channels runs tap by tap over zero-padded input planes (planar_forward): LeNet's first conv (1 -> 6,
# 5x5) at batch 64 measured 0.42 ms against im2col + GEMM's 0.85 ms, whose GEMM is 6 columns wide.
# With 16 output channels (3 -> 16, 3x3) im2col + GEMM was already faster. Its weight gradient
# (planar_grad_weight) is one GEMM per image over the shifted planes: 0.85 -> 0.46 ms for LeNet's.
PLANAR_MAX_TAPS = 32
PLANAR_MAX_OUT = 8


def _planar(cin: int, cout: int, kernel, stride, dilation, groups: int) -> bool:
    return (groups == 1 and tuple(stride) == (1, 1) and tuple(dilation) == (1, 1) and tuple(kernel) != (1, 1)
            and cout <= PLANAR_MAX_OUT and cin * kernel[0] * kernel[1] <= PLANAR_MAX_TAPS)


# An input gradient into at most SCATTER_MAX_CHANNELS channels from at least twice as many (LeNet's
# second conv, a conv_transpose that outputs an image) scatters: each output pixel's product with the
# weight (a GEMM as wide as the taps) is added into the input pixels it reaches (scatter_grad_input).
# Gathering instead makes a GEMM as narrow as the channels: LeNet's conv2 (6 <- 16, 5x5, batch 64)
# measured 1.77 ms gathered against 0.67 ms scattered.
SCATTER_MAX_CHANNELS = 8
SCATTER_ELEMENTS = 1 << 15  # the products of a run of output pixels, per thread slot


def _direct(cg: int, og: int) -> bool:
    """Groups this narrow (depthwise: 1 x 1) go to the direct kernels: a GEMM of a few columns wastes its tile."""
    return cg * og <= 4


# Winograd F(4x4, 3x3) (cnnc/kernels/cpu/winograd.py) computes 3x3 stride-1 convs with a quarter
# of the multiplications, and measured 1.3-2.5x faster than im2col + GEMM where it has enough 4x4
# output tiles to share its weight transform (36 x cin x cout values per call) and enough channels
# for its GEMMs: below 64 tiles per call, or 16 channels, im2col + GEMM was as fast or faster.
# Its kernels take seconds more to compile than im2col's (once per float type), so it is only
# chosen for convs of WINOGRAD_MIN_MACS multiply-adds per call or more (ResNet-18 at batch 32: 1.2G
# each), where that is soon repaid.
# CNNC_WINOGRAD=0 turns it off (its float32 error is about 1e-5 relative, a few times im2col's);
# CNNC_WINOGRAD=1 chooses it for every conv it can run with tiles enough, whatever the size.
WINOGRAD_MIN_TILES = 64
WINOGRAD_MIN_MACS = 1 << 27
WINOGRAD_MIN_CHANNELS = 16
WINOGRAD_CHUNK = 32  # tiles per prange iteration (32-64 measured alike)
WINOGRAD_GRAD_CHUNK = 64  # tiles per GEMM of the weight gradient (its inner dimension)
WINOGRAD_WEIGHT_BLOCK = 8192  # weights gathered per weight-transform GEMM


def _winograd(cin: int, cout: int, kernel, stride, dilation, groups: int, pads, out_hw, batch) -> bool:
    """Whether the conv computed (`cin` -> `cout` channels, top/left `pads`, output `out_hw`) runs as Winograd."""
    switch = os.environ.get("CNNC_WINOGRAD")
    if switch == "0" or out_hw is None:
        return False
    if tuple(kernel) != (3, 3) or tuple(stride) != (1, 1) or tuple(dilation) != (1, 1) or groups != 1:
        return False
    if min(cin, cout) < WINOGRAD_MIN_CHANNELS or min(pads) < 0:
        return False
    if switch != "1" and (batch or 1) * out_hw[0] * out_hw[1] * cin * cout * 9 < WINOGRAD_MIN_MACS:
        return False
    return (batch or 1) * -(-out_hw[0] // 4) * -(-out_hw[1] // 4) >= WINOGRAD_MIN_TILES


def winograd_kernel(cin: int, cout: int, pads, flip: bool, epilogue) -> Kernel:
    """winograd_forward: the 3x3 stride-1 conv of input 0 (`cin` channels) into `cout` channels with
    `weight` as conv holds it, or (`flip`) as the input gradient's conv reads it."""
    block = max(1, min(cin, WINOGRAD_WEIGHT_BLOCK // cout))
    per = max(36 * WINOGRAD_CHUNK * (cin + cout) + 76 * max(cin, cout), 9 * block * cout)
    args = (In(0), Param("weight"), OUT, Scratch((36 * cin * cout,), per_slot=per), EPILOGUE, pads[0], pads[1], flip,
            WINOGRAD_CHUNK, block, per, SLOTS)
    return Kernel("winograd", "winograd_forward", args, epilogue=epilogue)


def forward_kernel(cin: int, cout: int, kernel, stride, pads, dilation, groups: int, epilogue,
                   out_hw=None, batch=None) -> Kernel:
    """conv_forward from input 0 (`cin` channels) with `weight` into `cout` channels: conv,
    and conv_transpose's input gradient. `epilogue` (a Chain or None) runs on each tile;
    `out_hw` and `batch` (where known) choose Winograd for 3x3 stride-1 convs with work enough."""
    if _winograd(cin, cout, kernel, stride, dilation, groups, pads, out_hw, batch):
        return winograd_kernel(cin, cout, pads, False, epilogue)
    cg, og = cin // groups, cout // groups
    k = kernel[0] * kernel[1] * cg
    rows = batch * out_hw[0] * out_hw[1] if batch and out_hw is not None else None
    if groups == 1 and rows is not None and rows <= FEW_ROWS:  # the scratch holds the im2col of every row
        geometry = (*stride, *pads, *dilation)
        if rows * k * cout <= SERIAL_MACS:
            return Kernel("conv", "serial_forward", (In(0), Param("weight"), OUT, Scratch((rows * k,)), EPILOGUE, *geometry),
                          epilogue=epilogue)
        args = (In(0), Param("weight"), OUT, Scratch((rows * k,)), EPILOGUE, *geometry, SLOTS)
        return Kernel("conv", "few_rows_forward", args, epilogue=epilogue)
    if _planar(cin, cout, kernel, stride, dilation, groups) and out_hw is not None:
        oh, ow = out_hw
        span, plane = oh * (ow + kernel[1] - 1), (oh + kernel[0] - 1) * (ow + kernel[1] - 1) + kernel[1]
        per = cout * span + cin * plane  # a slot's sums and padded planes
        return Kernel("conv", "planar_forward", (In(0), Param("weight"), OUT, Scratch((0,), per_slot=per), EPILOGUE,
                                                 pads[0], pads[1], per), epilogue=epilogue)
    tile = _tile(k)
    if _direct(cg, og):
        entry, scratch, tile = "direct_forward", Scratch((cout * k,)), DIRECT_TILE
    else:  # the weight matrix, then a tile of im2col per thread slot
        entry, scratch = "conv_forward", Scratch((cout * k,), per_slot=tile * k)
    args = (In(0), Param("weight"), OUT, scratch, EPILOGUE, *_geometry(stride, pads, dilation, groups), tile, SLOTS)
    return Kernel("conv", entry, args, epilogue=epilogue)


def grad_input_kernel(cin: int, cout: int, kernel, stride, pads, dilation, groups: int, epilogue,
                      out_hw=None, batch=None) -> Kernel:
    """conv_grad_input from input 0 (dy, `cout` channels) with `weight` into `cin` channels:
    conv's input gradient, and conv_transpose's forward. At stride 1 with a 3x3 kernel that is
    the conv of dy padded by 2 - pad with the weight flipped: Winograd, where it pays."""
    flipped_pads = (2 - pads[0], 2 - pads[1])
    if _winograd(cout, cin, kernel, stride, dilation, groups, flipped_pads, out_hw, batch):
        return winograd_kernel(cout, cin, flipped_pads, True, epilogue)
    cg, og = cin // groups, cout // groups
    kmax = kernel[0] * kernel[1] * og
    tile = _tile(kmax)
    wsize = cout * kernel[0] * kernel[1] * cg
    if groups == 1 and cin <= SCATTER_MAX_CHANNELS and cout >= 2 * cin and not _direct(cg, og):
        k = cin * kernel[0] * kernel[1]
        rt = max(1, SCATTER_ELEMENTS // k)  # output pixels per GEMM
        per = rt * k
        args = (In(0), Param("weight"), OUT, Scratch((0,), per_slot=per), EPILOGUE, *_geometry(stride, pads, dilation, 1)[:6],
                rt, per)
        return Kernel("conv", "scatter_grad_input", args, epilogue=epilogue)
    if _direct(cg, og):
        entry, scratch, tile = "direct_grad_input", Scratch((wsize,)), DIRECT_TILE
    else:  # the phases' weight matrices, then gathered rows and their product per thread slot
        entry, scratch = "conv_grad_input", Scratch((wsize,), per_slot=tile * (kmax + cg))
    args = (In(0), Param("weight"), OUT, scratch, EPILOGUE, *_geometry(stride, pads, dilation, groups), tile, SLOTS)
    return Kernel("conv", entry, args, epilogue=epilogue)


def grad_weight_kernel(cin: int, cout: int, kernel, stride, pads, dilation, groups: int, out_hw=None,
                       batch=None) -> Kernel:
    """conv_grad_weight from inputs (x with `cin` channels, dy with `cout`) into [cout, cin/groups, kh, kw];
    `out_hw` (dy's height and width) and `batch` (where known) choose Winograd where it pays."""
    if _winograd(cin, cout, kernel, stride, dilation, groups, pads, out_hw, batch):
        block = max(1, min(cin, WINOGRAD_WEIGHT_BLOCK // cout))
        chunk = WINOGRAD_GRAD_CHUNK
        per = 36 * cin * cout + 36 * chunk * (cin + cout) + 76 * max(cin, cout)
        # per slot: its sum of dU [36, cin, cout] and a chunk's transforms; then the blocks' results
        scratch = Scratch((9 * (cin + block) * cout,), per_slot=per)
        args = (In(0), In(1), OUT, scratch, pads[0], pads[1], chunk, block, per, SLOTS)
        return Kernel("winograd", "winograd_grad_weight", args)
    if _planar(cin, cout, kernel, stride, dilation, groups) and out_hw is not None:
        oh, ow = out_hw
        wp = ow + kernel[1] - 1
        span, taps = oh * wp, cin * kernel[0] * kernel[1]
        # per slot: its sum, the padded planes, the shifted planes as rows, dy over the padded width
        per = cout * taps + cin * ((oh + kernel[0] - 1) * wp + kernel[1]) + taps * span + cout * span
        return Kernel("conv", "planar_grad_weight", (In(0), In(1), OUT, Scratch((0,), per_slot=per), pads[0], pads[1],
                                                     per, SLOTS))
    cg, og = cin // groups, cout // groups
    k = kernel[0] * kernel[1] * cg
    tile = _tile(k)
    if _direct(cg, og):  # a partial weight gradient per thread slot
        entry, scratch = "direct_grad_weight", Scratch((0,), per_slot=cout * k)
    else:  # a partial weight gradient and a tile of im2col per thread slot
        entry, scratch = "conv_grad_weight", Scratch((0,), per_slot=groups * k * og + tile * k)
    return Kernel("conv", entry, (In(0), In(1), OUT, scratch, *_geometry(stride, pads, dilation, groups), tile, SLOTS))


# On CUDA the forward conv and its input gradient are one implicit-GEMM kernel, whose gather
# and weight index each entry binds (see cnnc/kernels/cuda/conv.py).
_CUDA_BIND = {
    "conv_forward": (("_gather", "_forward_gather"), ("_weight_index", "_forward_weight")),
    "conv_grad_input": (("_gather", "_grad_input_gather"), ("_weight_index", "_grad_input_weight")),
}


def cuda_forward_kernel(cin: int, cout: int, kernel, stride, pads, dilation, groups: int, epilogue) -> Kernel:
    """The CUDA conv_forward (see forward_kernel): conv, and conv_transpose's input gradient."""
    entry = "direct_forward" if _direct(cin // groups, cout // groups) else "conv_forward"
    args = (In(0), Param("weight"), OUT, EPILOGUE, *_geometry(stride, pads, dilation, groups))
    return Kernel("conv", entry, args, epilogue=epilogue, bind=_CUDA_BIND.get(entry, ()))


def cuda_grad_input_kernel(cin: int, cout: int, kernel, stride, pads, dilation, groups: int, epilogue) -> Kernel:
    """The CUDA conv_grad_input (see grad_input_kernel): conv's input gradient, conv_transpose's forward."""
    entry = "direct_grad_input" if _direct(cin // groups, cout // groups) else "conv_grad_input"
    args = (In(0), Param("weight"), OUT, EPILOGUE, *_geometry(stride, pads, dilation, groups))
    return Kernel("conv", entry, args, epilogue=epilogue, bind=_CUDA_BIND.get(entry, ()))


def cuda_grad_weight_kernel(stride, pads, dilation, groups: int) -> Kernel:
    """The CUDA conv_grad_weight from inputs (x, dy) into [cout, cin/groups, kh, kw]."""
    return Kernel("conv", "conv_grad_weight", (In(0), In(1), OUT, *_geometry(stride, pads, dilation, groups)))


@register
class Conv(Op):
    """2-D convolution over [channels, height, width]; weight [out, in/groups, kh, kw]."""

    name = "conv"
    batch_aware = True
    fusion = Fusion.OUT_ELEMWISE_FUSABLE
    attrs = (
        Attr("channels", positive_int),
        Attr("kernel", positive_pair),
        Attr("stride", positive_pair, 1),
        Attr("pad", padding, 0),  # n, [ph, pw], "same" or "valid"
        Attr("dilation", positive_pair, 1),
        Attr("groups", positive_int, 1),
        Attr("bias", boolean, True),
    )

    def infer(self, a, x):
        expect_rank(self.name, x, 4)
        expect_float(self.name, x)
        _, cin, h, w = x.shape
        _check_groups(self.name, cin, a.channels, a.groups)
        if a.pad == "same" and a.stride != (1, 1):
            raise ShapeError('conv: pad="same" needs stride 1')
        pt, pb, pl, pr = conv_pads(a)
        oh = window_out(h, a.kernel[0], a.stride[0], pt, pb, a.dilation[0])
        ow = window_out(w, a.kernel[1], a.stride[1], pl, pr, a.dilation[1])
        if oh < 1 or ow < 1:
            raise ShapeError(
                f"conv: kernel {list(a.kernel)} (dilation {list(a.dilation)}) does not fit "
                f"the padded input {x}"
            )
        return TensorType((BATCH, a.channels, oh, ow), x.dtype)

    def params(self, a, x):
        cin = x.shape[1]
        fan_in = cin // a.groups * a.kernel[0] * a.kernel[1]
        specs = [param("weight", (a.channels, cin // a.groups, *a.kernel), "fan_in_uniform", fan_in)]
        if a.bias:
            specs.append(param("bias", (a.channels,), "fan_in_uniform", fan_in))
        return specs

    def macs(self, a, out, x):
        return out.sample_elements() * (x.shape[1] // a.groups) * a.kernel[0] * a.kernel[1]

    def cpu(self, a, out, x, epilogue=None, batch=None):
        pt, _, pl, _ = conv_pads(a)
        return forward_kernel(x.shape[1], a.channels, a.kernel, a.stride, (pt, pl), a.dilation, a.groups, epilogue,
                              out.shape[2:], batch)

    def cuda(self, a, out, x, epilogue=None, batch=None):
        pt, _, pl, _ = conv_pads(a)
        return cuda_forward_kernel(x.shape[1], a.channels, a.kernel, a.stride, (pt, pl), a.dilation, a.groups, epilogue)

    def grad(self, g, dy):
        a = g.node.attrs
        x = g.node.inputs[0]
        pt, _, pl, _ = conv_pads(a)
        geometry = {"stride": a.stride, "pads": (pt, pl), "dilation": a.dilation, "groups": a.groups}
        if g.needs_input_grad(0):  # usually not: the first conv's input is the image
            weight = {"weight": g.node.params["weight"]}
            shape = g.type_of(x).sample_shape
            g.input_grad(0, g.apply("conv_grad_input", [dy], weight, shape=shape, kernel=a.kernel, **geometry))
        if g.needs_param_grad("weight"):
            g.param_grad("weight", g.apply("conv_grad_weight", [x, dy], kernel=a.kernel, **geometry))
        if a.bias and g.needs_param_grad("bias"):
            g.param_grad("bias", g.apply("bias_grad", [dy]))


@register
class ConvTranspose(Op):
    """Transposed convolution (the gradient of conv w.r.t. its input); weight [in, out/groups, kh, kw]."""

    name = "conv_transpose"
    batch_aware = True
    fusion = Fusion.OUT_ELEMWISE_FUSABLE
    attrs = (
        Attr("channels", positive_int),
        Attr("kernel", positive_pair),
        Attr("stride", positive_pair, 1),
        Attr("pad", nonnegative_pair, 0),
        Attr("output_pad", nonnegative_pair, 0),
        Attr("dilation", positive_pair, 1),
        Attr("groups", positive_int, 1),
        Attr("bias", boolean, True),
    )

    def infer(self, a, x):
        expect_rank(self.name, x, 4)
        expect_float(self.name, x)
        _, cin, h, w = x.shape
        _check_groups(self.name, cin, a.channels, a.groups)
        for i, axis in enumerate(("height", "width")):
            if a.output_pad[i] >= max(a.stride[i], a.dilation[i]):
                raise ShapeError(
                    f"conv_transpose: output_pad {a.output_pad[i]} along the {axis} must be smaller "
                    f"than the stride or the dilation"
                )
        oh, ow = (
            (size - 1) * a.stride[i] - 2 * a.pad[i] + a.dilation[i] * (a.kernel[i] - 1) + a.output_pad[i] + 1
            for i, size in enumerate((h, w))
        )
        if oh < 1 or ow < 1:
            raise ShapeError(f"conv_transpose: padding {list(a.pad)} leaves no output for input {x}")
        return TensorType((BATCH, a.channels, oh, ow), x.dtype)

    def params(self, a, x):
        cin = x.shape[1]
        # PyTorch computes the fan-in of a transposed weight from its dim 1.
        fan_in = a.channels // a.groups * a.kernel[0] * a.kernel[1]
        specs = [param("weight", (cin, a.channels // a.groups, *a.kernel), "fan_in_uniform", fan_in)]
        if a.bias:
            specs.append(param("bias", (a.channels,), "fan_in_uniform", fan_in))
        return specs

    def macs(self, a, out, x):
        return x.sample_elements() * (a.channels // a.groups) * a.kernel[0] * a.kernel[1]

    def cpu(self, a, out, x, epilogue=None, batch=None):
        # The forward of conv_transpose is the input gradient of the conv it transposes.
        return grad_input_kernel(a.channels, x.shape[1], a.kernel, a.stride, a.pad, a.dilation, a.groups, epilogue,
                                 out.shape[2:], batch)

    def cuda(self, a, out, x, epilogue=None, batch=None):
        return cuda_grad_input_kernel(a.channels, x.shape[1], a.kernel, a.stride, a.pad, a.dilation, a.groups, epilogue)

    def grad(self, g, dy):
        a = g.node.attrs
        x = g.node.inputs[0]
        geometry = {"stride": a.stride, "pads": tuple(a.pad), "dilation": a.dilation, "groups": a.groups}
        if g.needs_input_grad(0):
            weight = {"weight": g.node.params["weight"]}
            shape = g.type_of(x).sample_shape
            g.input_grad(0, g.apply("conv_transpose_grad_input", [dy], weight, shape=shape, kernel=a.kernel, **geometry))
        if g.needs_param_grad("weight"):
            # The weight gradient of the transposed conv: conv's, with x and dy swapped.
            g.param_grad("weight", g.apply("conv_grad_weight", [dy, x], kernel=a.kernel, **geometry))
        if a.bias and g.needs_param_grad("bias"):
            g.param_grad("bias", g.apply("bias_grad", [dy]))


# -- gradient ops -------------------------------------------------------------

_GEOMETRY = (
    Attr("kernel", positive_pair),
    Attr("stride", positive_pair),
    Attr("pads", nonnegative_pair),
    Attr("dilation", positive_pair),
    Attr("groups", positive_int),
)


class _InputGrad(Op):
    """An input gradient whose shape is given explicitly: [channels, height, width]."""

    internal = True
    fusion = Fusion.OUT_ELEMWISE_FUSABLE
    attrs = (Attr("shape", int_list), *_GEOMETRY)

    def infer(self, a, dy):
        return TensorType((BATCH, *a.shape), dy.dtype)


@register
class ConvGradInput(_InputGrad):
    """dx of conv from dy: gather the covering output pixels, GEMM with the weight."""

    name = "conv_grad_input"
    batch_aware = True

    def macs(self, a, out, dy):
        return dy.sample_elements() * (out.shape[1] // a.groups) * a.kernel[0] * a.kernel[1]

    def cpu(self, a, out, dy, epilogue=None, batch=None):
        return grad_input_kernel(out.shape[1], dy.shape[1], a.kernel, a.stride, a.pads, a.dilation, a.groups, epilogue,
                                 out.shape[2:], batch)

    def cuda(self, a, out, dy, epilogue=None, batch=None):
        return cuda_grad_input_kernel(out.shape[1], dy.shape[1], a.kernel, a.stride, a.pads, a.dilation, a.groups, epilogue)


@register
class ConvTransposeGradInput(_InputGrad):
    """dx of conv_transpose from dy: a conv of dy with the same weight."""

    name = "conv_transpose_grad_input"
    batch_aware = True

    def macs(self, a, out, dy):
        return out.sample_elements() * (dy.shape[1] // a.groups) * a.kernel[0] * a.kernel[1]

    def cpu(self, a, out, dy, epilogue=None, batch=None):
        return forward_kernel(dy.shape[1], out.shape[1], a.kernel, a.stride, a.pads, a.dilation, a.groups, epilogue,
                              out.shape[2:], batch)

    def cuda(self, a, out, dy, epilogue=None, batch=None):
        return cuda_forward_kernel(dy.shape[1], out.shape[1], a.kernel, a.stride, a.pads, a.dilation, a.groups, epilogue)


@register
class ConvGradWeight(Op):
    """dW of conv from (x, dy), in PyTorch's layout [out, in/groups, kh, kw].

    With (dy, x) it is the weight gradient of conv_transpose: [in, out/groups, kh, kw].
    """

    name = "conv_grad_weight"
    batch_aware = True
    inputs = 2
    internal = True
    attrs = _GEOMETRY

    def infer(self, a, x, dy):
        return TensorType((dy.shape[1], x.shape[1] // a.groups, *a.kernel), dy.dtype)

    def macs(self, a, out, x, dy):
        return dy.sample_elements() * (x.shape[1] // a.groups) * a.kernel[0] * a.kernel[1]

    def cpu(self, a, out, x, dy, batch=None):
        return grad_weight_kernel(x.shape[1], dy.shape[1], a.kernel, a.stride, a.pads, a.dilation, a.groups,
                                  dy.shape[2:], batch)

    def cuda(self, a, out, x, dy, batch=None):
        return cuda_grad_weight_kernel(a.stride, a.pads, a.dilation, a.groups)
