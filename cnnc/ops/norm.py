"""Normalization and regularization: batchnorm, dropout, dropout2d and constant per-channel normalization.

They read the run-time mode flag (TRAINING) rather than baking the mode into
the kernel, so one compiled model serves train() and eval(). Backward ops
recompute what they need (batch statistics, dropout masks) from the forward
inputs instead of keeping state between kernels.
"""

from __future__ import annotations

from ..kernels import FLAT_OUT, RNG, TRAINING, In, Kernel, NodeParam, Param, Value
from ..layout import is_channels_last
from .base import (
    REGISTRY,
    Attr,
    AttrError,
    Expr,
    Fusion,
    Op,
    ShapeError,
    TensorType,
    boolean,
    expect_float,
    number,
    param,
    positive_number,
    probability,
    register,
)


def _kernel(entry: str, args: tuple) -> Kernel:
    """One of the batchnorm entries (cnnc/kernels/{cpu,cuda}/norm.py define the same ones)."""
    return Kernel("norm", entry, args)


def _channels(x: TensorType) -> int:
    return x.shape[1]


@register
class BatchNorm(Op):
    """Batch normalization over the channel axis of [C] or [C, H, W] inputs.

    Training mode normalizes with the batch statistics and updates the running
    averages (momentum as PyTorch: new = (1 - m) * old + m * batch, unbiased
    variance); eval mode normalizes with the running averages.
    """

    name = "batchnorm"
    # In training its statistics reduce over the batch (they fuse into the producer's epilogue);
    # in eval mode it is specialized to batchnorm_inference, an elementwise op.
    fusion = Fusion.REDUCTION
    batch_statistics = True
    attrs = (
        Attr("eps", positive_number, 1e-5),
        Attr("momentum", positive_number, 0.1),
        Attr("affine", boolean, True),
    )

    def infer(self, a, x):
        expect_float(self.name, x)
        if x.rank not in (2, 4) or not x.batched:
            raise ShapeError(f"batchnorm expects [channels] or [channels, height, width] input, got {x}")
        return x

    def params(self, a, x):
        c = x.shape[1]
        specs = []
        if a.affine:
            specs += [param("weight", (c,), "ones"), param("bias", (c,), "zeros")]
        specs += [
            param("running_mean", (c,), "zeros", kind="buffer"),
            param("running_var", (c,), "ones", kind="buffer"),
        ]
        return specs

    def flops(self, a, out, x):
        return 2 * out.sample_elements()

    def specialized(self, training):
        return self if training else REGISTRY["batchnorm_inference"]

    def cpu(self, a, out, x):
        # Without affine the weight and bias slots get an unused stand-in.
        weight, bias = _affine_params(a)
        return _kernel(
            "batchnorm",
            (In(0, flat=True), weight, bias, Param("running_mean"), Param("running_var"), TRAINING, FLAT_OUT,
             _channels(x), a.eps, a.momentum, a.affine),
        )

    cuda = cpu  # the same entry in cnnc/kernels/cuda/norm.py

    def grad(self, g, dy):
        x = g.node.inputs[0]
        p = g.node.params
        stats = {"running_mean": p["running_mean"], "running_var": p["running_var"]}
        if g.needs_input_grad(0):
            params = dict(stats, weight=p["weight"]) if g.node.attrs["affine"] else stats
            g.input_grad(0, g.apply("batchnorm_grad_input", [x, dy], params, eps=g.node.attrs["eps"], affine=g.node.attrs["affine"]))
        if g.node.attrs["affine"]:
            if g.needs_param_grad("weight"):
                g.param_grad("weight", g.apply("batchnorm_grad_weight", [x, dy], stats, eps=g.node.attrs["eps"]))
            if g.needs_param_grad("bias"):
                g.param_grad("bias", g.apply("bias_grad", [dy]))


class _BatchNormGrads(Op):
    """What batchnorm's input and weight gradients share: one kernel computes them with the bias
    gradient of the same layer, reading x and dy once (batchnorm_grads_kernel)."""

    def siblings(self, graph, node, taken):
        x, dy = node.inputs
        members = [m.name for m in graph.consumers(dy)
                   if isinstance(m.op, _BatchNormGrads) and m.inputs == [x, dy] and m.forward == node.forward]
        members += [m.name for m in graph.consumers(dy) if m.op.name == "bias_grad" and m.forward == node.forward]
        return ("batchnorm_grad", f"{node.forward}.grad", members) if len(members) > 1 else None

    def siblings_kernel(self, graph, members, target):
        return batchnorm_grads_kernel(graph, members, target)


@register
class BatchNormGradInput(_BatchNormGrads):
    """d(loss)/dx of batchnorm from x and dy: through the batch statistics in training, a scale in eval."""

    name = "batchnorm_grad_input"
    inputs = 2
    internal = True
    fusion = Fusion.REDUCTION
    attrs = (Attr("eps", float), Attr("affine", bool))

    def infer(self, a, x, dy):
        return x

    def cpu(self, a, out, x, dy):
        weight = Param("weight") if a.affine else Param("running_var")
        return _kernel(
            "batchnorm_grad_input",
            (In(0, flat=True), In(1, flat=True), weight, Param("running_mean"), Param("running_var"), TRAINING,
             FLAT_OUT, _channels(x), a.eps, a.affine),
        )

    cuda = cpu  # the same entry in cnnc/kernels/cuda/norm.py


@register
class BatchNormGradWeight(_BatchNormGrads):
    """d(loss)/d(weight) of batchnorm: sum(dy * x_hat) per channel."""

    name = "batchnorm_grad_weight"
    inputs = 2
    internal = True
    fusion = Fusion.REDUCTION
    attrs = (Attr("eps", float),)

    def infer(self, a, x, dy):
        return TensorType((x.shape[1],), x.dtype)

    def cpu(self, a, out, x, dy):
        return _kernel(
            "batchnorm_grad_weight",
            (In(0, flat=True), In(1, flat=True), Param("running_mean"), Param("running_var"), TRAINING, FLAT_OUT,
             _channels(x), a.eps),
        )

    cuda = cpu  # the same entry in cnnc/kernels/cuda/norm.py


def _affine_params(a) -> tuple:
    """(weight, bias) slots; without affine, unused stand-ins keep one compiled signature."""
    return (Param("weight"), Param("bias")) if a.affine else (Param("running_var"), Param("running_mean"))


@register
class BatchNormInference(Op):
    """Batchnorm in eval mode: a per-channel affine map of the running statistics.

    The eval-mode specialization of `batchnorm` (same parameters, same name), an
    elementwise expression, so it fuses into the producing conv's epilogue.
    """

    name = "batchnorm_inference"
    internal = True
    fusion = Fusion.ELEMENTWISE
    attrs = BatchNorm.attrs

    def infer(self, a, x):
        return x

    def params(self, a, x):
        return BatchNorm().params(a, x)

    def expression(self, a, out, x):
        # The same arithmetic as the batchnorm kernel in eval mode: the scale per channel, in
        # float64, rounded to the buffer's dtype; then (x - mean) * scale + bias per element.
        scale = "P_weight / math.sqrt(P_running_var + eps)" if a.affine else "1.0 / math.sqrt(P_running_var + eps)"
        shift = " + P_bias" if a.affine else ""
        params = ("running_mean", "running_var", "weight", "bias") if a.affine else ("running_mean", "running_var")
        return Expr(f"(a - P_running_mean) * H_scale{shift}", (("eps", a.eps),), params, (("scale", scale),))

    def cpu(self, a, out, x):
        return BatchNorm().cpu(a, out, x)  # reads the mode flag, which is 0 in eval mode

    def cuda(self, a, out, x):
        return BatchNorm().cuda(a, out, x)


def batchnorm_grads_kernel(graph, members, target: str = "cpu"):
    """batchnorm_grad_input, batchnorm_grad_weight and bias_grad (nodes) of one layer as one kernel
    (the same entry on both targets: `target` is unused)."""
    by_op = {graph[m].op.name: graph[m] for m in members}
    first = by_op.get("batchnorm_grad_input") or by_op["batchnorm_grad_weight"]
    x, dy = first.inputs
    a = first.attrs
    affine = a.get("affine", True)
    # Missing outputs get a stand-in (never written): the input x for dx, running_var for the vectors.
    dx = Value(by_op["batchnorm_grad_input"].name) if "batchnorm_grad_input" in by_op else Value(x)
    dw = Value(by_op["batchnorm_grad_weight"].name) if "batchnorm_grad_weight" in by_op else NodeParam(first.name, "running_var")
    db = Value(by_op["bias_grad"].name) if "bias_grad" in by_op else NodeParam(first.name, "running_var")
    weight = NodeParam(first.name, "weight") if affine and "weight" in first.params else NodeParam(first.name, "running_var")
    return _kernel(
        "batchnorm_grads",
        (Value(x), Value(dy), weight, NodeParam(first.name, "running_mean"), NodeParam(first.name, "running_var"),
         TRAINING, dx, dw, db, graph[x].type.shape[1], a["eps"], affine,
         "batchnorm_grad_input" in by_op, "batchnorm_grad_weight" in by_op, "bias_grad" in by_op),
    )


class _Dropout(Op):
    """Zeroes parts of its input with probability p in training, scaling the rest by 1/(1-p); the identity
    in eval. Its gradient is the same kernel on dy with the forward node's random stream (`rng_key`):
    the same parts dropped, recomputed rather than stored."""

    fusion = Fusion.ELEMENTWISE
    random = True
    attrs = (Attr("p", probability, 0.5),)

    @staticmethod
    def kernel(a, x: TensorType) -> Kernel:
        raise NotImplementedError

    def passes_input(self, a, training, out, x):
        return not training or a.p == 0.0  # the identity in eval mode

    def infer(self, a, x):
        expect_float(self.name, x)
        return x

    def cpu(self, a, out, x):
        return self.kernel(a, x)

    def cuda(self, a, out, x):
        return self.kernel(a, x)  # the same entries in cnnc/kernels/cuda/norm.py

    def grad(self, g, dy):
        g.input_grad(0, g.apply(f"{self.name}_grad", [dy], p=g.node.attrs["p"], rng_key=g.node.name))


class _DropoutGrad(_Dropout):
    """dx = dy * mask / (1 - p), the mask recomputed from the forward node's random stream (`rng_key`)."""

    internal = True
    attrs = (Attr("p", float), Attr("rng_key", str))
    grad = Op.grad  # not differentiated again


def _with_grad(cls: type[_Dropout]) -> type[_Dropout]:
    """Register a dropout op and its gradient op (the same kernel) together."""
    register(cls)
    register(type(f"{cls.__name__}Grad", (_DropoutGrad,), {"name": f"{cls.name}_grad", "kernel": staticmethod(cls.kernel)}))
    return cls


@_with_grad
class Dropout(_Dropout):
    """Zero each element with probability p in training, scaling the rest by 1/(1-p); identity in eval."""

    name = "dropout"

    @staticmethod
    def kernel(a, x):
        # The mask is a pure function of (seed, step, key, element index), so the gradient
        # recomputes the forward's mask exactly (see mix64 in cnnc/kernels/shared/norm.py).
        return Kernel("norm", "dropout", (In(0, flat=True), RNG, TRAINING, FLAT_OUT, a.p))


@_with_grad
class Dropout2d(_Dropout):
    """Channel dropout (PyTorch's Dropout2d) of [C, H, W] or [C, L]: zero each channel of each example
    with probability p in training, scaling the rest by 1/(1-p); identity in eval."""

    name = "dropout2d"

    def infer(self, a, x):
        expect_float(self.name, x)
        if x.rank not in (3, 4) or not x.batched:
            raise ShapeError(f"dropout2d expects [channels, height, width] or [channels, length] input, got {x}")
        return x

    @staticmethod
    def kernel(a, x):
        # One draw per (example, channel) of the flat buffer: channels are 1 element apart in an image
        # (stored channels-last) and L apart in [C, L]; the gradient recomputes the same draws.
        channels, per_example = x.shape[1], x.sample_elements()
        stride = 1 if is_channels_last(x) else per_example // channels
        return Kernel("norm", "dropout2d", (In(0, flat=True), RNG, TRAINING, FLAT_OUT, a.p, channels, stride, per_example))


def _per_channel(value) -> tuple[float, ...]:
    """One number for every channel, or a list of one per channel."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise AttrError("expected a number or a list of numbers, got []")
        return tuple(number(v) for v in value)
    return (number(value),)


def _positive_per_channel(value) -> tuple[float, ...]:
    values = _per_channel(value)
    if any(v <= 0 for v in values):
        raise AttrError(f"expected positive numbers, got {list(values)}")
    return values


@register
class Normalize(Op):
    """(x - mean[c]) / std[c] with constants per channel (torchvision's Normalize; the ImageNet statistics
    in front of a VGG). An elementwise expression: it fuses into the loops around it. Its mean and std are
    held as constants of the layer (not saved, not loaded, not trained)."""

    name = "normalize"
    fusion = Fusion.ELEMENTWISE
    attrs = (Attr("mean", _per_channel), Attr("std", _positive_per_channel))

    def infer(self, a, x):
        expect_float(self.name, x)
        if x.rank not in (2, 4) or not x.batched:
            raise ShapeError(f"normalize expects [channels] or [channels, height, width] input, got {x}")
        for what in ("mean", "std"):
            if len(a[what]) not in (1, _channels(x)):
                raise ShapeError(f"normalize: {what} has {len(a[what])} values; {x} has {_channels(x)} channels")
        return x

    def params(self, a, x):
        c = _channels(x)
        return [param(what, (c,), "values", kind="constant", args=a[what] * (c if len(a[what]) == 1 else 1)) for what in ("mean", "std")]

    def expression(self, a, out, x):
        return Expr("(a - P_mean) / P_std", params=("mean", "std"))

    def grad(self, g, dy):
        g.input_grad(0, g.apply("normalize_grad", [dy], {"std": g.node.params["std"]}))


@register
class NormalizeGrad(Op):
    """dx = dy / std[c]."""

    name = "normalize_grad"
    internal = True
    fusion = Fusion.ELEMENTWISE

    def infer(self, a, dy):
        return dy

    def expression(self, a, out, dy):
        return Expr("a / P_std", params=("std",))
