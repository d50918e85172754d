"""The fully connected layer: y = x W^T + b over the last axis, as PyTorch's Linear; and the bias gradient."""

from __future__ import annotations

from ..kernels import EPILOGUE, OUT, In, Kernel, Out, Param, Value
from ..layout import is_channels_last
from .base import Attr, Fusion, Op, ShapeError, TensorType, boolean, expect_float, param, positive_int, register

# The kernels: cnnc/kernels/cpu/dense.py and cnnc/kernels/cuda/dense.py (bias_grad among them).
# The GEMM's rows are the batch times every axis between it and the last; the CUDA launchers
# take any rank. An image [C, H, W] is stored channels-last, [N, H, W, C]: its last logical axis is
# not the last stored one, so dense over it is a GEMM per row of pixels, units x W times W x C, with
# the bias along the units (added by the kernel) and the epilogue's channels the image's (the last
# stored axis, as for every other epilogue).


def _cpu_entry(entry: str, x: TensorType) -> tuple[str, bool]:
    """The CPU entry for operands of x's rank, and whether it takes them flat: [N, features] keeps
    the 2-D entries; every other rank takes the `_rows` entries on flat views (one compile serves all)."""
    return (entry, False) if x.rank == 2 else (f"{entry}_rows", True)


@register
class Dense(Op):
    """Fully connected layer over the last axis of [features], [T, features], [C, H, W] (the width),
    [A, B, C, features]...; weight [units, features]."""

    name = "dense"
    fusion = Fusion.OUT_ELEMWISE_FUSABLE
    attrs = (Attr("units", positive_int), Attr("bias", boolean, True))

    def infer(self, a, x):
        expect_float(self.name, x)
        if x.rank < 2 or not x.batched:
            raise ShapeError(f"dense expects [features] or [..., features] input, got {x}")
        return TensorType((*x.shape[:-1], a.units), x.dtype, x.image)

    def params(self, a, x):
        fan_in = x.shape[-1]
        specs = [param("weight", (a.units, fan_in), "fan_in_uniform", fan_in)]
        if a.bias:
            specs.append(param("bias", (a.units,), "fan_in_uniform", fan_in))
        return specs

    def macs(self, a, out, x):
        return out.sample_elements() * x.shape[-1]  # every output element sums `features` products

    def bias_in_epilogue(self, a, x):
        return a.bias and not is_channels_last(x)  # over an image, the bias lies along the units

    def cpu(self, a, out, x, epilogue=None):
        # The epilogue holds the bias (the lowering adds it to the chain) and what the fusion pass adds;
        # its channel is the last physical axis, the units.
        if is_channels_last(x):
            return _image_kernel(a, epilogue)
        entry, flat = _cpu_entry("dense", x)
        return Kernel("dense", entry, (In(0, flat), Param("weight"), Out(flat), EPILOGUE), epilogue=epilogue)

    def cuda(self, a, out, x, epilogue=None):
        if is_channels_last(x):
            return _image_kernel(a, epilogue)
        return Kernel("dense", "dense", (In(0), Param("weight"), OUT, EPILOGUE), epilogue=epilogue)

    def grad(self, g, dy):
        x = g.type_of(g.node.inputs[0])
        if g.needs_input_grad(0):
            weight = {"weight": g.node.params["weight"]}
            g.input_grad(0, g.apply("dense_grad_input", [dy], weight, features=x.shape[-1]))
        if g.needs_param_grad("weight"):
            g.param_grad("weight", g.apply("dense_grad_weight", [g.node.inputs[0], dy]))
        if g.node.attrs["bias"] and g.needs_param_grad("bias"):
            g.param_grad("bias", g.apply("bias_grad", [dy], last_axis=is_channels_last(x)))


def _image_kernel(a, epilogue) -> Kernel:
    """dense over the width of an image (the same entries on both targets)."""
    if a.bias:
        return Kernel("dense", "dense_image_bias", (In(0), Param("weight"), Param("bias"), OUT, EPILOGUE), epilogue=epilogue)
    return Kernel("dense", "dense_image", (In(0), Param("weight"), OUT, EPILOGUE), epilogue=epilogue)


@register
class DenseGradInput(Op):
    """dx = dy W."""

    name = "dense_grad_input"
    internal = True
    fusion = Fusion.OUT_ELEMWISE_FUSABLE
    attrs = (Attr("features", int),)

    def infer(self, a, dy):
        return TensorType((*dy.shape[:-1], a.features), dy.dtype, dy.image)

    def cpu(self, a, out, dy, epilogue=None):
        if is_channels_last(dy):
            return self.cuda(a, out, dy, epilogue)
        entry, flat = _cpu_entry("dense_grad_input", dy)
        return Kernel("dense", entry, (In(0, flat), Param("weight"), Out(flat), EPILOGUE), epilogue=epilogue)

    def cuda(self, a, out, dy, epilogue=None):
        entry = "dense_grad_input_image" if is_channels_last(dy) else "dense_grad_input"
        return Kernel("dense", entry, (In(0), Param("weight"), OUT, EPILOGUE), epilogue=epilogue)


@register
class DenseGradWeight(Op):
    """dW = dy^T x."""

    name = "dense_grad_weight"
    inputs = 2
    internal = True

    def siblings(self, graph, node, taken):
        # The bias gradient of the same layer sums the same dy: one kernel reads dy once for both.
        dy = node.inputs[1]
        if is_channels_last(graph[dy].type):
            return None  # over an image the bias sums other axes than the weight's GEMM
        bias = [m.name for m in graph.consumers(dy)
                if m.op.name == "bias_grad" and m.forward == node.forward and m.name not in taken]
        return ("dense_grad", f"{node.forward}.grad_params", [node.name, bias[0]]) if bias else None

    def siblings_kernel(self, graph, members, target):
        weight_grad, bias_grad = (graph[m] for m in members)
        return dense_grad_params_kernel(weight_grad, bias_grad, graph[weight_grad.inputs[0]].type, target=target)

    def infer(self, a, x, dy):
        return TensorType((dy.shape[-1], x.shape[-1]), dy.dtype)

    def cpu(self, a, out, x, dy):
        if is_channels_last(x):
            return Kernel("dense", "dense_grad_weight_image", (In(0), In(1), OUT))
        entry, flat = _cpu_entry("dense_grad_weight", x)
        return Kernel("dense", entry, (In(0, flat), In(1, flat), OUT))

    def cuda(self, a, out, x, dy):
        if is_channels_last(x):
            return Kernel("dense", "dense_grad_weight_image", (In(0), In(1), OUT))
        # The CUDA GEMM stores through the epilogue (here none: `o[i] = acc`).
        return Kernel("dense", "dense_grad_weight", (In(0), In(1), OUT, EPILOGUE))


def dense_grad_params_kernel(weight_grad, bias_grad, x: TensorType, target: str = "cpu") -> Kernel:
    """dense_grad_weight and bias_grad (nodes) of the same dy, of the layer input type x, as one kernel
    (on the CPU) or one launcher."""
    db = Value(bias_grad.name, flat=False)
    if target == "cuda":
        return Kernel("dense", "dense_grad_params", (In(0), In(1), OUT, db, EPILOGUE))
    entry, flat = _cpu_entry("dense_grad_params", x)
    return Kernel("dense", entry, (In(0, flat), In(1, flat), OUT, db))


@register
class BiasGrad(Op):
    """The gradient of a per-channel bias: dy summed over every axis but the channels (`last_axis`:
    the image's last logical axis, the width, for dense over an image)."""

    name = "bias_grad"
    internal = True
    fusion = Fusion.REDUCTION
    attrs = (Attr("last_axis", boolean, False),)

    def infer(self, a, dy):
        # The channels are the last physical axis: axis 1 of an image (stored channels-last), else the last.
        return TensorType((dy.shape[1] if is_channels_last(dy) and not a.last_axis else dy.shape[-1],), dy.dtype)

    def cpu(self, a, out, dy):
        if a.last_axis and is_channels_last(dy):
            return Kernel("dense", "bias_grad_image", (In(0), OUT))
        # Channels are the last physical axis for [N, C], [N, ..., units] and NHWC buffers.
        return Kernel("dense", "bias_grad", (In(0), OUT))

    cuda = cpu  # the same entry in cnnc/kernels/cuda/dense.py
