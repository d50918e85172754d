"""The fully connected layer: y = x W^T + b, as PyTorch's Linear; and the bias gradient."""

from __future__ import annotations

from ..backend.chain import bias_chain
from ..backend.cpu.fused import hosting
from ..backend.cpu.kernel import OUT, CpuKernel, In, Param, Value
from .base import Attr, Fusion, Op, ShapeError, TensorType, boolean, expect_float, param, positive_int, register
from ..graph import BATCH

# dense and dense_grad_input end with the epilogue (the bias, and what the fusion pass adds).
DENSE_SOURCE = """
@njit(cache=True)
def dense(x, weight, out, e):
    np.dot(x, weight.T, out)
    _epilogue(out.reshape(out.size), 0, out.size, out.shape[1], e)


@njit(cache=True)
def dense_grad_input(dy, weight, dx, e):
    np.dot(dy, weight, dx)
    _epilogue(dx.reshape(dx.size), 0, dx.size, dx.shape[1], e)


@njit(cache=True)
def dense_grad_weight(x, dy, dw):
    np.dot(dy.T, x, dw)


@njit(cache=True)
def dense_grad_params(x, dy, dw, db):
    # The weight and bias gradients of one layer in one kernel: dy is read once more, while cached.
    np.dot(dy.T, x, dw)
    acc = np.zeros(dy.shape[1], np.float64)
    for r in range(dy.shape[0]):
        for j in range(dy.shape[1]):
            acc[j] += dy[r, j]
    for j in range(dy.shape[1]):
        db[j] = acc[j]
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

    def cpu(self, a, out, x, epilogue=None):
        epilogue = epilogue or (bias_chain() if a.bias else None)
        return hosting(DENSE_SOURCE, "dense", epilogue, (In(0), Param("weight"), OUT), ())

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
        return hosting(DENSE_SOURCE, "dense_grad_input", epilogue, (In(0), Param("weight"), OUT), ())


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


def dense_grad_params_kernel(weight_grad, bias_grad) -> CpuKernel:
    """dense_grad_weight and bias_grad (nodes) of the same dy as one kernel."""
    return CpuKernel(DENSE_SOURCE, "dense_grad_params", (In(0), In(1), OUT, Value(bias_grad.name, flat=False)))


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
