"""The fully connected layer: y = x W^T + b, as PyTorch's Linear; and the bias gradient."""

from __future__ import annotations

from ..backend.cpu.kernel import OUT, CpuKernel, In, Param
from .base import Attr, Fusion, Op, ShapeError, TensorType, boolean, expect_float, param, positive_int, register
from ..graph import BATCH

DENSE_SOURCE = """
@njit(cache=True)
def dense(x, weight, bias, out, has_bias):
    np.dot(x, weight.T, out)
    if has_bias:
        for i in range(out.shape[0]):
            out[i] += bias


@njit(cache=True)
def dense_grad_input(dy, weight, dx):
    np.dot(dy, weight, dx)


@njit(cache=True)
def dense_grad_weight(x, dy, dw):
    np.dot(dy.T, x, dw)
"""


@register
class Dense(Op):
    """Fully connected layer over [features]; weight [units, features]."""

    name = "dense"
    fusion = Fusion.OUT_ELEMWISE_FUSABLE
    attrs = (Attr("units", positive_int, doc="output features"), Attr("bias", boolean, True))

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

    def cpu(self, a, out, x):
        bias = Param("bias") if a.bias else Param("weight")  # unused without a bias
        return CpuKernel(DENSE_SOURCE, "dense", (In(0), Param("weight"), bias, OUT, a.bias))

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
    attrs = (Attr("features", int),)

    def infer(self, a, dy):
        return TensorType((BATCH, a.features), dy.dtype)

    def cpu(self, a, out, dy):
        return CpuKernel(DENSE_SOURCE, "dense_grad_input", (In(0), Param("weight"), OUT))


@register
class DenseGradWeight(Op):
    """dW = dy^T x."""

    name = "dense_grad_weight"
    inputs = 2
    internal = True

    def infer(self, a, x, dy):
        return TensorType((dy.shape[1], x.shape[1]), dy.dtype)

    def cpu(self, a, out, x, dy):
        return CpuKernel(DENSE_SOURCE, "dense_grad_weight", (In(0), In(1), OUT))


# Serial on purpose: a memory-bound pass that costs little next to the GEMMs around it,
# while a parallel version costs seconds more of cold compile.
BIAS_GRAD_SOURCE = """
@njit(cache=True)
def bias_grad(dy, db):
    c = dy.shape[-1]
    rows = dy.size // c
    flat = dy.reshape(rows, c)
    acc = np.zeros(c, np.float64)
    for r in range(rows):
        for j in range(c):
            acc[j] += flat[r, j]
    for j in range(c):
        db[j] = acc[j]
"""


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
        return CpuKernel(BIAS_GRAD_SOURCE, "bias_grad", (In(0), OUT))
