"""Losses: each reduces a prediction and a target to a scalar (the batch mean)."""

from __future__ import annotations

from ..backend.cpu.kernel import OUT, CpuKernel, In, Value
from .base import Attr, Fusion, Op, ShapeError, TensorType, expect_float, integer, optional, register

SCALAR = TensorType((), "float32")
NO_LABEL = -(2**62)  # stands for "no ignored label" in kernels

LOSS_SOURCE = """
@njit(cache=True)
def _max_and_sum_exp(x, r, c):
    m = -np.inf
    for j in range(c):
        m = max(m, x[r, j])
    s = 0.0
    for j in range(c):
        s += math.exp(x[r, j] - m)
    return m, s


@njit(cache=True)
def _labelled(t, ignore):
    count = 0
    for r in range(t.size):
        if t[r] != ignore:
            count += 1
    return count


@njit(parallel=True, cache=True)
def cross_entropy_with_grad(logits, labels, dy, out, dx, ignore, want_loss, want_grad):
    # The loss and (scaled by dy) its gradient in one pass: each row's softmax is computed once.
    c = logits.shape[-1]
    rows = logits.size // c
    x = logits.reshape(rows, c)
    g = dx.reshape(rows, c)
    t = labels.reshape(-1)
    count = _labelled(t, ignore)
    scale = dy[0] / count if count else 0.0
    losses = np.zeros(rows)
    for r in prange(rows):
        if t[r] == ignore:
            if want_grad:
                g[r, :] = 0.0
            continue
        m, s = _max_and_sum_exp(x, r, c)
        if want_loss:
            losses[r] = math.log(s) + m - x[r, t[r]]
        if want_grad:
            for j in range(c):
                g[r, j] = math.exp(x[r, j] - m) / s * scale
            g[r, t[r]] -= scale
    if want_loss:
        out[0] = losses.sum() / count if count else np.nan


@njit(cache=True)
def cross_entropy(logits, labels, out, ignore):
    cross_entropy_with_grad(logits, labels, out, out, logits, ignore, True, False)


@njit(cache=True)
def cross_entropy_grad(logits, labels, dy, dx, ignore):
    cross_entropy_with_grad(logits, labels, dy, dy, dx, ignore, False, True)


@njit(parallel=True, cache=True)
def pointwise_loss(p, t, out, kind):
    a = p.reshape(-1)
    b = t.reshape(-1)
    total = np.zeros(a.size)
    for i in prange(a.size):
        if kind == 0:  # mse
            d = a[i] - b[i]
            total[i] = d * d
        else:  # bce with logits: max(x, 0) - x t + log(1 + exp(-|x|))
            x = a[i]
            total[i] = max(x, 0.0) - x * b[i] + math.log1p(math.exp(-abs(x)))
    out[0] = total.sum() / a.size


@njit(parallel=True, cache=True)
def pointwise_loss_grad(p, t, dy, dx, kind, wrt):
    a = p.reshape(-1)
    b = t.reshape(-1)
    g = dx.reshape(-1)
    scale = dy[0] / a.size
    for i in prange(a.size):
        if kind == 0:
            d = 2.0 * (a[i] - b[i]) * scale
            g[i] = d if wrt == 0 else -d
        else:
            x = a[i]
            if wrt == 0:
                s = 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
                g[i] = (s - b[i]) * scale
            else:
                g[i] = -x * scale
"""


@register
class CrossEntropy(Op):
    """Softmax cross-entropy of logits [C] or [C, H, W] against integer labels [] or [H, W].

    The mean over every labelled element; elements whose label equals `ignore` do not count.
    """

    name = "cross_entropy"
    inputs = 2
    fusion = Fusion.REDUCTION
    attrs = (Attr("ignore", optional(integer), None, doc="a label value to leave out"),)

    def infer(self, a, logits, labels):
        expect_float(self.name, logits)
        if logits.rank < 2 or not logits.batched:
            raise ShapeError(f"cross_entropy expects logits [classes, ...], got {logits}")
        expected = (logits.shape[0], *logits.shape[2:])
        if labels.shape != expected:
            want = TensorType(expected, "int64")
            raise ShapeError(f"cross_entropy: labels {labels} do not match logits {logits}: expected labels {want}")
        if labels.dtype not in ("int64", "int32"):
            raise ShapeError(f"cross_entropy expects integer labels, got {labels.dtype}")
        return SCALAR

    def flops(self, a, out, logits, labels):
        return 4 * logits.sample_elements()

    def cpu(self, a, out, logits, labels):
        return CpuKernel(LOSS_SOURCE, "cross_entropy", (In(0), In(1), OUT, _ignore(a)))

    def grad(self, g, dy):
        g.input_grad(0, g.apply("cross_entropy_grad", [g.node.inputs[0], g.node.inputs[1], dy], ignore=g.node.attrs["ignore"]))


def cross_entropy_with_grad_kernel(loss, grad) -> CpuKernel:
    """cross_entropy and cross_entropy_grad (nodes) of the same logits and labels as one kernel."""
    return CpuKernel(
        LOSS_SOURCE,
        "cross_entropy_with_grad",
        (In(0), In(1), Value(grad.inputs[2], flat=False), Value(loss.name, flat=False), Value(grad.name, flat=False),
         _ignore(loss.attrs), True, True),
    )


def _ignore(a) -> int:
    return NO_LABEL if a.ignore is None else a.ignore


@register
class CrossEntropyGrad(Op):
    """d(cross_entropy)/d(logits) = (softmax(logits) - onehot(labels)) * dy / count."""

    name = "cross_entropy_grad"
    inputs = 3
    internal = True
    attrs = (Attr("ignore", optional(integer), None),)

    def infer(self, a, logits, labels, dy):
        return logits

    def cpu(self, a, out, logits, labels, dy):
        return CpuKernel(LOSS_SOURCE, "cross_entropy_grad", (In(0), In(1), In(2), OUT, _ignore(a)))


class _PointwiseLoss(Op):
    inputs = 2
    fusion = Fusion.REDUCTION

    def infer(self, a, pred, target):
        expect_float(self.name, pred)
        expect_float(self.name, target)
        if pred.shape != target.shape:
            raise ShapeError(f"{self.name}: prediction {pred} and target {target} differ")
        return SCALAR

    def flops(self, a, out, pred, target):
        return 3 * pred.sample_elements()

    kind = 0

    def cpu(self, a, out, pred, target):
        return CpuKernel(LOSS_SOURCE, "pointwise_loss", (In(0), In(1), OUT, self.kind))

    def grad(self, g, dy):
        for wrt in (0, 1):
            if g.needs_input_grad(wrt):
                g.input_grad(wrt, g.apply("pointwise_loss_grad", [*g.node.inputs, dy], kind=self.kind, wrt=wrt))


@register
class PointwiseLossGrad(Op):
    """The gradient of mse (kind 0) or bce_with_logits (kind 1) with respect to input `wrt`."""

    name = "pointwise_loss_grad"
    inputs = 3
    internal = True
    attrs = (Attr("kind", int), Attr("wrt", int))

    def infer(self, a, pred, target, dy):
        return (pred, target)[a.wrt]

    def cpu(self, a, out, pred, target, dy):
        return CpuKernel(LOSS_SOURCE, "pointwise_loss_grad", (In(0), In(1), In(2), OUT, a.kind, a.wrt))


@register
class Mse(_PointwiseLoss):
    """Mean squared error (the L2 loss)."""

    name = "mse"


@register
class BceWithLogits(_PointwiseLoss):
    """Binary cross-entropy on logits, computed stably: mean(max(x,0) - x*t + log(1 + exp(-|x|)))."""

    name = "bce_with_logits"
    kind = 1
