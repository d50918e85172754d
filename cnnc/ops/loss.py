"""Losses: each reduces a prediction and a target (and optionally a weight per element) to a scalar,
the mean (the default) or the sum of its elements' terms."""

from __future__ import annotations

import math

from ..kernels import FLAT_OUT, OUT, In, Kernel, Value
from ..layout import is_channels_last, physical_axis, physical_shape
from .base import (
    Attr,
    AttrError,
    Fusion,
    IndexRange,
    Op,
    ShapeError,
    TensorType,
    expect_float,
    integer,
    number,
    one_of,
    optional,
    register,
)

SCALAR = TensorType((), "float32")
NO_LABEL = -(2**62)  # stands for "no ignored label" in kernels
REDUCTIONS = ("mean", "sum")

# The kernels: cnnc/kernels/cpu/loss.py and cnnc/kernels/cuda/loss.py, which define the same
# entries; numerics written once for both in cnnc/kernels/shared/loss.py.


def _weight_of(op: str, rest: tuple) -> TensorType | None:
    """The optional third input of a loss (its weight); more inputs are refused."""
    if len(rest) > 1:
        raise ShapeError(f"{op} takes 2 or 3 inputs (a prediction, a target and an optional weight), got {2 + len(rest)}")
    if rest and not _soft(rest[0]):
        raise ShapeError(f"{op} expects a floating-point weight, got {rest[0]}")
    return rest[0] if rest else None


def _same_layout(op: str, what: str, x: TensorType, like: TensorType, name: str) -> None:
    # Kernels read both at the same offsets; only a rank-4 value declared not to be an image differs.
    if is_channels_last(x) != is_channels_last(like):
        raise ShapeError(f"{op}: {what} {x} and {name} {like} are stored differently (one is an image, the other not)")


def _optional_weight(xs: tuple) -> In | None:
    """The kernel argument of the weight: its flat buffer, or None (kernels then weigh every element 1)."""
    return In(2, flat=True) if len(xs) == 3 else None


def class_axis(value):
    value = integer(value)
    if value == 0:
        raise AttrError("axis 0 is the batch; the classes lie within one example")
    return value


def _physical_order(t: TensorType) -> list[int]:
    """The logical axes of one example in the order the buffer stores them."""
    return sorted(range(1, t.rank), key=lambda d: physical_axis(t, d))


def _row_swap(logits: TensorType, axis: int, other: TensorType) -> int:
    """How a tensor shaped like the logits without the class axis (labels, weights) orders the rows.

    Rows are the logits' lines along the class axis, in the logits' physical order. Within one
    example, the rows' order and `other`'s are the same axes, rotated: row (i, j) of each example
    is `other`'s element (j, i). Returns the number of values of i (1: the same order), e.g. an
    image's logits [C, H, W] with classes along H store rows (W, C) and labels [C, W] hold (C, W).
    """
    rows = [d - (d > axis) for d in _physical_order(logits) if d != axis]
    theirs = _physical_order(other)
    for k in range(len(rows) or 1):
        if theirs == rows[k:] + rows[:k]:
            return math.prod(other.shape[d] for d in rows[:k])
    raise ShapeError(f"cross_entropy: {other} cannot be read along logits {logits}")


@register
class CrossEntropy(Op):
    """Softmax cross-entropy along the class axis `axis` of the logits (1: the channels).

    The target is integer labels shaped like the logits without the class axis (logits [C] or
    [C, H, W] with labels [] or [H, W]; logits [T, V] with axis=-1 and labels [T]), or float
    probabilities shaped like the logits (each element's term is -sum_c t_c log_softmax(x)_c).
    An optional third input, a float weight shaped like the labels, multiplies each element's
    term. "mean" divides the (weighted) sum by the number of labelled elements: those whose
    label is not `ignore`, every element for probabilities; "sum" does not divide. As PyTorch's
    (F.cross_entropy(x, y, reduction="none", ignore_index=...) * w).sum() / count with the class
    axis moved to 1.
    """

    name = "cross_entropy"
    inputs = Op.VARIADIC  # logits, target, optional weight: infer refuses more
    fusion = Fusion.REDUCTION
    attrs = (
        Attr("ignore", optional(integer), None),
        Attr("axis", class_axis, 1),
        Attr("reduction", one_of(*REDUCTIONS), "mean"),
    )

    def siblings(self, graph, node, taken):
        # The loss and its logits' gradient (seeded with a constant, as a training step's is) in one pass.
        grads = [m.name for m in graph.consumers(node.inputs[0]) if m.op.name == "cross_entropy_grad" and m.attrs["wrt"] == 0
                 and m.inputs[:-1] == node.inputs and graph[m.inputs[-1]].op.constant and m.name not in taken]
        return ("cross_entropy", node.name, [node.name, grads[0]]) if grads else None

    def siblings_kernel(self, graph, members, target):
        loss, grad = (graph[m] for m in members)
        return cross_entropy_with_grad_kernel(graph, loss, grad)

    def infer(self, a, logits, target, *rest):
        weight = _weight_of(self.name, rest)
        expect_float(self.name, logits)
        if logits.rank < 2 or not logits.batched:
            raise ShapeError(f"cross_entropy expects logits [classes, ...], got {logits}")
        if not -logits.rank <= a.axis < logits.rank:
            raise ShapeError(f"cross_entropy: axis {a.axis} is out of range for logits {logits}")
        axis = a.axis % logits.rank
        per_element = logits.shape[:axis] + logits.shape[axis + 1 :]
        labels = TensorType(per_element, "int64")
        if _soft(target):
            if target.shape != logits.shape:
                raise ShapeError(f"cross_entropy: target {target} does not match logits {logits}: "
                                 f"expected probabilities {TensorType(logits.shape, target.dtype)} or labels {labels}")
            if a.ignore is not None:
                raise ShapeError("cross_entropy: ignore applies to integer labels, not to probabilities (a float target)")
            _same_layout(self.name, "target", target, logits, "logits")
        else:
            if target.shape != per_element:
                raise ShapeError(f"cross_entropy: labels {target} do not match logits {logits}: expected labels {labels}")
            if target.dtype not in ("int64", "int32"):
                raise ShapeError(f"cross_entropy expects integer labels, got {target.dtype}")
        if weight is not None and weight.shape != per_element:
            what = "target" if _soft(target) else "labels"
            raise ShapeError(f"cross_entropy: weight {weight} does not match {what} {target}: "
                             f"expected weight {TensorType(per_element, weight.dtype)}, one per element")
        return SCALAR

    def flops(self, a, out, logits, *rest):
        return 4 * logits.sample_elements()

    def index_inputs(self, a, logits, target, *rest):
        return {} if _soft(target) else {1: _label_range(a, logits)}

    def cpu(self, a, out, *xs):
        return Kernel("loss", "cross_entropy", (In(0, flat=True), In(1, flat=True), _optional_weight(xs), OUT, *_form(a, *xs)))

    cuda = cpu  # the same entry in cnnc/kernels/cuda/loss.py

    def grad(self, g, dy):
        # Integer labels have no gradient; a float target and a weight do, as PyTorch gives them.
        for wrt, x in enumerate(g.node.inputs):
            if g.needs_input_grad(wrt) and _soft(g.type_of(x)):
                g.input_grad(wrt, g.apply("cross_entropy_grad", [*g.node.inputs, dy], wrt=wrt, **g.node.attrs))


def _soft(target: TensorType) -> bool:
    """Whether a cross-entropy target (or any input) holds floats: probabilities, not labels."""
    return target.dtype.startswith("float")


def _form(a, logits: TensorType, target: TensorType, weight: TensorType | None = None) -> tuple:
    """The cross-entropy kernels' arguments after the buffers (all flat): ignore, the logits as rows
    of C classes `inner` apart, the rows of one example, the labels' and the weight's row orders
    (see _row_swap), whether the target is probabilities and whether the sum is divided by the count."""
    axis = a.axis % logits.rank
    shape = physical_shape(logits, 1)
    position = physical_axis(logits, axis)
    classes = shape[position]
    inner = math.prod(shape[position + 1 :])
    label_swap = 1 if _soft(target) else _row_swap(logits, axis, target)
    weight_swap = 1 if weight is None else _row_swap(logits, axis, weight)
    per = logits.sample_elements() // classes
    return (_ignore(a), classes, inner, per, label_swap, weight_swap, _soft(target), a.reduction == "mean")


def cross_entropy_with_grad_kernel(graph, loss, grad) -> Kernel:
    """cross_entropy and its logits' cross_entropy_grad (nodes) of the same inputs as one kernel
    (the same entry on both targets)."""
    xs = [graph[i].type for i in loss.inputs]
    return Kernel(
        "loss",
        "cross_entropy_with_grad",
        (In(0, flat=True), In(1, flat=True), _optional_weight(xs), Value(grad.inputs[-1]), Value(loss.name), Value(grad.name),
         *_form(loss.attrs, *xs), True, 0),
    )


def _label_range(a, logits) -> IndexRange:
    classes = logits.shape[a.axis % logits.rank]
    return IndexRange(0, classes, () if a.ignore is None else (a.ignore,))


def _ignore(a) -> int:
    return NO_LABEL if a.ignore is None else a.ignore


@register
class CrossEntropyGrad(Op):
    """The gradient of cross_entropy with respect to its input `wrt` (0: the logits, 1: probabilities,
    2: the weight), from the forward inputs and dy (the last input)."""

    name = "cross_entropy_grad"
    inputs = Op.VARIADIC
    internal = True
    attrs = (*CrossEntropy.attrs, Attr("wrt", int, 0))

    def infer(self, a, *xs):
        return xs[a.wrt]

    def index_inputs(self, a, logits, target, *rest):
        return {} if _soft(target) else {1: _label_range(a, logits)}

    def cpu(self, a, out, *xs):
        forward = xs[:-1]
        args = (In(0, flat=True), In(1, flat=True), _optional_weight(forward), In(len(forward)), FLAT_OUT, *_form(a, *forward), a.wrt)
        return Kernel("loss", "cross_entropy_grad", args)

    cuda = cpu  # the same entry in cnnc/kernels/cuda/loss.py


class _PointwiseLoss(Op):
    """A loss of a prediction and a target of one shape, element by element: the mean (or the sum)
    of term_i, or of w_i * term_i with a weight w (a third input of the same shape)."""

    inputs = Op.VARIADIC  # prediction, target, optional weight: infer refuses more
    fusion = Fusion.REDUCTION
    attrs = (Attr("reduction", one_of(*REDUCTIONS), "mean"),)
    kind = 0

    def infer(self, a, pred, target, *rest):
        weight = _weight_of(self.name, rest)
        expect_float(self.name, pred)
        expect_float(self.name, target)
        if pred.shape != target.shape:
            raise ShapeError(f"{self.name}: prediction {pred} and target {target} differ")
        _same_layout(self.name, "target", target, pred, "prediction")
        if weight is not None:
            if weight.shape != pred.shape:
                raise ShapeError(f"{self.name}: weight {weight} and prediction {pred} differ")
            _same_layout(self.name, "weight", weight, pred, "prediction")
        return SCALAR

    def flops(self, a, out, pred, *rest):
        return 3 * pred.sample_elements()

    def cpu(self, a, out, *xs):
        args = (In(0, flat=True), In(1, flat=True), _optional_weight(xs), OUT, *_pointwise_form(self.kind, a))
        return Kernel("loss", "pointwise_loss", args)

    cuda = cpu  # the same entry in cnnc/kernels/cuda/loss.py

    def grad(self, g, dy):
        for wrt in range(len(g.node.inputs)):
            if g.needs_input_grad(wrt):
                g.input_grad(wrt, g.apply("pointwise_loss_grad", [*g.node.inputs, dy], kind=self.kind, wrt=wrt, **g.node.attrs))


def _pointwise_form(kind: int, a) -> tuple:
    """The pointwise kernels' arguments after the buffers: the loss, whether the sum is divided by
    the size, and bce's weight of the positive class."""
    return (kind, a.reduction == "mean", a.get("pos_weight", 1.0))


@register
class PointwiseLossGrad(Op):
    """The gradient of mse (kind 0) or bce_with_logits (kind 1) with respect to input `wrt`
    (0: the prediction, 1: the target, 2: the weight), from the forward inputs and dy (the last input)."""

    name = "pointwise_loss_grad"
    inputs = Op.VARIADIC
    internal = True
    attrs = (Attr("kind", int), Attr("wrt", int), *_PointwiseLoss.attrs, Attr("pos_weight", number, 1.0))

    def infer(self, a, *xs):
        return xs[a.wrt]

    def cpu(self, a, out, *xs):
        forward = xs[:-1]
        args = (In(0, flat=True), In(1, flat=True), _optional_weight(forward), In(len(forward)), FLAT_OUT,
                *_pointwise_form(a.kind, a), a.wrt)
        return Kernel("loss", "pointwise_loss_grad", args)

    cuda = cpu  # the same entry in cnnc/kernels/cuda/loss.py


@register
class Mse(_PointwiseLoss):
    """Squared error (the L2 loss): (p - t)^2 per element."""

    name = "mse"


@register
class BceWithLogits(_PointwiseLoss):
    """Binary cross-entropy on logits, computed stably: max(x, 0) - x t + log(1 + exp(-|x|)) per element,
    plus (pos_weight - 1) t log(1 + exp(-x)) (PyTorch's pos_weight, one value for every element)."""

    name = "bce_with_logits"
    kind = 1
    attrs = (*_PointwiseLoss.attrs, Attr("pos_weight", number, 1.0))
