"""Convolutions: conv (cross-correlation, as every framework computes it) and conv_transpose."""

from __future__ import annotations

from typing import Any

from ..backend.cpu.kernel import OUT, CpuKernel, In, Param, Scratch
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
    nonnegative_pair,
    param,
    positive_int,
    positive_pair,
    register,
    window_out,
)
from ..graph import BATCH


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


@register
class Conv(Op):
    """2-D convolution over [channels, height, width]; weight [out, in/groups, kh, kw]."""

    name = "conv"
    fusion = Fusion.OUT_ELEMWISE_FUSABLE
    attrs = (
        Attr("channels", positive_int, doc="output channels"),
        Attr("kernel", positive_pair, doc="kernel size, n or [kh, kw]"),
        Attr("stride", positive_pair, 1),
        Attr("pad", padding, 0, doc='n, [ph, pw], "same" or "valid"'),
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
        specs = [param("weight", (a.channels, cin // a.groups, *a.kernel), "kaiming_uniform", fan_in)]
        if a.bias:
            specs.append(param("bias", (a.channels,), "fan_in_uniform", fan_in))
        return specs

    def macs(self, a, out, x):
        return out.sample_elements() * (x.shape[1] // a.groups) * a.kernel[0] * a.kernel[1]

    pads = staticmethod(conv_pads)


@register
class ConvTranspose(Op):
    """Transposed convolution (the gradient of conv w.r.t. its input); weight [in, out/groups, kh, kw]."""

    name = "conv_transpose"
    fusion = Fusion.OUT_ELEMWISE_FUSABLE
    attrs = (
        Attr("channels", positive_int, doc="output channels"),
        Attr("kernel", positive_pair),
        Attr("stride", positive_pair, 1),
        Attr("pad", nonnegative_pair, 0),
        Attr("output_pad", nonnegative_pair, 0, doc="extra rows/columns at the end of the output"),
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
        specs = [param("weight", (cin, a.channels // a.groups, *a.kernel), "kaiming_uniform", fan_in)]
        if a.bias:
            specs.append(param("bias", (a.channels,), "fan_in_uniform", fan_in))
        return specs

    def macs(self, a, out, x):
        return x.sample_elements() * (a.channels // a.groups) * a.kernel[0] * a.kernel[1]
