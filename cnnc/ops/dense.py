"""The fully connected layer: y = x W^T + b over the last axis, as PyTorch's Linear; and the bias gradient."""

from __future__ import annotations

from ..kernels import EPILOGUE, OUT, In, Kernel, Out, Param, Value
from ..layout import is_channels_last
from .base import Attr, Fusion, Op, ShapeError, TensorType, boolean, expect_float, param, positive_int, register

# The kernels: cnnc/kernels/cpu/dense.py and cnnc/kernels/cuda/dense.py (bias_grad among them).
# The GEMM's rows are the batch times every axis between it and the last; the CUDA launchers
# take any rank.


def _cpu_entry(entry: str, x: TensorType) -> tuple[str, bool]:
    """The CPU entry for operands of x's rank, and whether it takes them flat: [N, features] keeps
    the 2-D entries; every other rank takes the `_rows` entries on flat views (one compile serves all)."""
    return (entry, False) if x.rank == 2 else (f"{entry}_rows", True)


@register
class Dense(Op):
    """Fully connected layer over the last axis of [features], [T, features], [A, B, C, features]...;
    weight [units, features]. Not over an image [C, H, W], whose last logical axis is not its last
    physical one (images are stored channels-last)."""

    name = "dense"
    fusion = Fusion.OUT_ELEMWISE_FUSABLE
    attrs = (Attr("units", positive_int), Attr("bias", boolean, True))

    def infer(self, a, x):
        expect_float(self.name, x)
        if x.rank < 2 or not x.batched:
            raise ShapeError(f"dense expects [features] or [..., features] input, got {x}")
        if is_channels_last(x):
            _, c, h, w = x.shape
            raise ShapeError(f"dense expects [features] or [..., features] input, got the image {x} (stored channels-last); "
                             f"add flatten before it, or apply it to the last axis as "
                             f"reshape([{c * h}, {w}]) -> dense({a.units}) -> reshape([{c}, {h}, {a.units}])")
        return TensorType((*x.shape[:-1], a.units), x.dtype, x.image)

    def params(self, a, x):
        fan_in = x.shape[-1]
        specs = [param("weight", (a.units, fan_in), "fan_in_uniform", fan_in)]
        if a.bias:
            specs.append(param("bias", (a.units,), "fan_in_uniform", fan_in))
        return specs

    def macs(self, a, out, x):
        return out.sample_elements() * x.shape[-1]  # every output element sums `features` products

    def cpu(self, a, out, x, epilogue=None):
        # The epilogue holds the bias (the lowering adds it to the chain) and what the fusion pass adds;
        # its channel is the last physical axis, the units.
        entry, flat = _cpu_entry("dense", x)
        return Kernel("dense", entry, (In(0, flat), Param("weight"), Out(flat), EPILOGUE), epilogue=epilogue)

    def cuda(self, a, out, x, epilogue=None):
        return Kernel("dense", "dense", (In(0), Param("weight"), OUT, EPILOGUE), epilogue=epilogue)

    def grad(self, g, dy):
        if g.needs_input_grad(0):
            weight = {"weight": g.node.params["weight"]}
            g.input_grad(0, g.apply("dense_grad_input", [dy], weight, features=g.type_of(g.node.inputs[0]).shape[-1]))
        if g.needs_param_grad("weight"):
            g.param_grad("weight", g.apply("dense_grad_weight", [g.node.inputs[0], dy]))
        if g.node.attrs["bias"] and g.needs_param_grad("bias"):
            g.param_grad("bias", g.apply("bias_grad", [dy]))


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
        entry, flat = _cpu_entry("dense_grad_input", dy)
        return Kernel("dense", entry, (In(0, flat), Param("weight"), Out(flat), EPILOGUE), epilogue=epilogue)

    def cuda(self, a, out, dy, epilogue=None):
        return Kernel("dense", "dense_grad_input", (In(0), Param("weight"), OUT, EPILOGUE), epilogue=epilogue)


@register
class DenseGradWeight(Op):
    """dW = dy^T x."""

    name = "dense_grad_weight"
    inputs = 2
    internal = True

    def siblings(self, graph, node, taken):
        # The bias gradient of the same layer sums the same dy: one kernel reads dy once for both.
        dy = node.inputs[1]
        bias = [m.name for m in graph.consumers(dy)
                if m.op.name == "bias_grad" and m.forward == node.forward and m.name not in taken]
        return ("dense_grad", f"{node.forward}.grad_params", [node.name, bias[0]]) if bias else None

    def siblings_kernel(self, graph, members, target):
        weight_grad, bias_grad = (graph[m] for m in members)
        return dense_grad_params_kernel(weight_grad, bias_grad, graph[weight_grad.inputs[0]].type, target=target)

    def infer(self, a, x, dy):
        return TensorType((dy.shape[-1], x.shape[-1]), dy.dtype)

    def cpu(self, a, out, x, dy):
        entry, flat = _cpu_entry("dense_grad_weight", x)
        return Kernel("dense", entry, (In(0, flat), In(1, flat), OUT))

    def cuda(self, a, out, x, dy):
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
    """The gradient of a per-channel bias: dy summed over every axis but the channels."""

    name = "bias_grad"
    internal = True
    fusion = Fusion.REDUCTION

    def infer(self, a, dy):
        # The channels are the last physical axis: axis 1 of an image (stored channels-last), else the last.
        return TensorType((dy.shape[1] if is_channels_last(dy) else dy.shape[-1],), dy.dtype)

    def cpu(self, a, out, dy):
        # Channels are the last physical axis for [N, C], [N, ..., units] and NHWC buffers.
        return Kernel("dense", "bias_grad", (In(0), OUT))

    cuda = cpu  # the same entry in cnnc/kernels/cuda/dense.py
