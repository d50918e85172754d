"""The fully connected layer: y = x W^T + b, as PyTorch's Linear; and the bias gradient."""

from __future__ import annotations

from ..graph import BATCH
from ..kernels import EPILOGUE, OUT, In, Kernel, Param, Value
from .base import Attr, Fusion, Op, ShapeError, TensorType, boolean, expect_float, param, positive_int, register

# The kernels: cnnc/kernels/cpu/dense.py and cnnc/kernels/cuda/dense.py (bias_grad among them).


@register
class Dense(Op):
    """Fully connected layer over [features]; weight [units, features]."""

    name = "dense"
    fusion = Fusion.OUT_ELEMWISE_FUSABLE
    attrs = (Attr("units", positive_int), Attr("bias", boolean, True))

    def infer(self, a, x):
        expect_float(self.name, x)
        if x.rank != 2 or not x.batched:
            hint = "; add flatten before it" if x.rank > 2 else ""
            raise ShapeError(f"dense expects [features] input, got {x}{hint}")
        return TensorType((BATCH, a.units), x.dtype)

    def params(self, a, x):
        fan_in = x.shape[1]
        specs = [param("weight", (a.units, fan_in), "kaiming_uniform", fan_in)]
        if a.bias:
            specs.append(param("bias", (a.units,), "fan_in_uniform", fan_in))
        return specs

    def macs(self, a, out, x):
        return x.shape[1] * a.units

    def cpu(self, a, out, x, epilogue=None):
        # The epilogue holds the bias (the lowering adds it to the chain) and what the fusion pass adds.
        return Kernel("dense", "dense", (In(0), Param("weight"), OUT, EPILOGUE), epilogue=epilogue)

    cuda = cpu  # the same entry in cnnc/kernels/cuda/dense.py

    def grad(self, g, dy):
        if g.needs_input_grad(0):
            weight = {"weight": g.node.params["weight"]}
            g.input_grad(0, g.apply("dense_grad_input", [dy], weight, features=g.type_of(g.node.inputs[0]).shape[1]))
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
        return TensorType((BATCH, a.features), dy.dtype)

    def cpu(self, a, out, dy, epilogue=None):
        return Kernel("dense", "dense_grad_input", (In(0), Param("weight"), OUT, EPILOGUE), epilogue=epilogue)

    cuda = cpu  # the same entry in cnnc/kernels/cuda/dense.py


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
        return dense_grad_params_kernel(*(graph[m] for m in members), target=target)

    def infer(self, a, x, dy):
        return TensorType((dy.shape[1], x.shape[1]), dy.dtype)

    def cpu(self, a, out, x, dy):
        return Kernel("dense", "dense_grad_weight", (In(0), In(1), OUT))

    def cuda(self, a, out, x, dy):
        # The CUDA GEMM stores through the epilogue (here none: `o[i] = acc`).
        return Kernel("dense", "dense_grad_weight", (In(0), In(1), OUT, EPILOGUE))


def dense_grad_params_kernel(weight_grad, bias_grad, target: str = "cpu") -> Kernel:
    """dense_grad_weight and bias_grad (nodes) of the same dy as one kernel (on the CPU) or one launcher."""
    db = Value(bias_grad.name, flat=False)
    if target == "cuda":
        return Kernel("dense", "dense_grad_params", (In(0), In(1), OUT, db, EPILOGUE))
    return Kernel("dense", "dense_grad_params", (In(0), In(1), OUT, db))


@register
class BiasGrad(Op):
    """The gradient of a per-channel bias: dy summed over every axis but the channels."""

    name = "bias_grad"
    internal = True
    fusion = Fusion.REDUCTION

    def infer(self, a, dy):
        return TensorType((dy.shape[1],), dy.dtype)

    def cpu(self, a, out, dy):
        # Channels are the last physical axis for both [N, C] and NHWC buffers.
        return Kernel("dense", "bias_grad", (In(0), OUT))

    cuda = cpu  # the same entry in cnnc/kernels/cuda/dense.py
