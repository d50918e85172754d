"""Losses: each reduces a prediction and a target to a scalar (the batch mean)."""

from __future__ import annotations

from ..backend.cpu.kernel import OUT, CpuKernel, In, Value
from ..backend.cuda.kernel import CudaKernel
from .base import Attr, Fusion, IndexRange, Op, ShapeError, TensorType, expect_float, integer, optional, register
from .templates import indented

SCALAR = TensorType((), "float32")
NO_LABEL = -(2**62)  # stands for "no ignored label" in kernels

# The pointwise losses per element i of the flat prediction a and target b (kind 0: mse,
# 1: bce with logits), written once for both targets: the term the loss averages, and the
# gradient g[i] with respect to input `wrt` (0: a, 1: b) given scale = dy / size.
POINTWISE_TERM = """
if kind == 0:  # mse
    d = a[i] - b[i]
    term = d * d
else:  # bce with logits: max(x, 0) - x t + log(1 + exp(-|x|))
    x = a[i]
    term = max(x, 0.0) - x * b[i] + math.log1p(math.exp(-abs(x)))
"""

POINTWISE_GRAD = """
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


def _with_pointwise(source: str) -> str:
    """The source with the POINTWISE_TERM and POINTWISE_GRAD lines replaced by their code (8 spaces in)."""
    for name, code in (("POINTWISE_TERM", POINTWISE_TERM), ("POINTWISE_GRAD", POINTWISE_GRAD)):
        source = source.replace(" " * 8 + name + "\n", indented(code, 8))
    return source


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
        label = t[r]
        if label == ignore:
            if want_grad:
                g[r, :] = 0.0
            continue
        if label < 0 or label >= c:  # never index with a bad label: NaN, never a wrong number
            losses[r] = np.nan
            if want_grad:
                g[r, :] = np.nan
            continue
        m, s = _max_and_sum_exp(x, r, c)
        if want_loss:
            losses[r] = math.log(s) + m - x[r, label]
        if want_grad:
            for j in range(c):
                g[r, j] = math.exp(x[r, j] - m) / s * scale
            g[r, label] -= scale
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
        POINTWISE_TERM
        total[i] = term
    out[0] = total.sum() / a.size


@njit(parallel=True, cache=True)
def pointwise_loss_grad(p, t, dy, dx, kind, wrt):
    a = p.reshape(-1)
    b = t.reshape(-1)
    g = dx.reshape(-1)
    scale = dy[0] / a.size
    for i in prange(a.size):
        POINTWISE_GRAD
"""
LOSS_SOURCE = _with_pointwise(LOSS_SOURCE)


# The same losses on the GPU. Cross-entropy runs one block per row (a row: one
# example's, or one pixel's, class scores), reducing its max and sum of
# exponentials as shared-memory trees; the per-row losses and the labelled count
# are then reduced by one block each. Pointwise losses sum per block, then once
# more over the blocks. All sums are float64, like the CPU's.
LOSS_CUDA_SOURCE = """
LOSS_PARTS = 1024  # blocks of the first reduction pass of a pointwise loss


@cuda.jit(device=True)
def _tree_sum(sm, t, width):
    # sm[0] = sum(sm[:width]), width a power of two; every thread of the block calls it after a sync.
    step = width // 2
    while step > 0:
        if t < step:
            sm[t] += sm[t + step]
        cuda.syncthreads()
        step //= 2


@cuda.jit(device=True)
def _tree_max(sm, t, width):
    step = width // 2
    while step > 0:
        if t < step:
            sm[t] = max(sm[t], sm[t + step])
        cuda.syncthreads()
        step //= 2


@cuda.jit(cache=True)
def _labelled(t, ignore, count):
    sm = cuda.shared.array(THREADS, int64)
    tid = cuda.threadIdx.x
    width = cuda.blockDim.x
    k = 0
    for r in range(tid, t.size, width):
        if t[r] != ignore:
            k += 1
    sm[tid] = k
    cuda.syncthreads()
    _tree_sum(sm, tid, width)
    if tid == 0:
        count[0] = sm[0]


@cuda.jit(cache=True)
def _ce_rows(x, t, dy, count, losses, g, C, rows, ignore, want_loss, want_grad):
    sm = cuda.shared.array(THREADS, float64)
    tid = cuda.threadIdx.x
    width = cuda.blockDim.x
    n = count[0]
    scale = dy[0] / n if n else 0.0
    for r in range(cuda.blockIdx.x, rows, cuda.gridDim.x):
        base = r * C
        label = t[r]
        if label == ignore:  # the same for every thread of the block
            if tid == 0:
                losses[r] = 0.0
            if want_grad:
                for j in range(tid, C, width):
                    g[base + j] = 0.0
            continue
        if label < 0 or label >= C:  # never index with a bad label: NaN, never a wrong number
            if tid == 0:
                losses[r] = math.nan
            if want_grad:
                for j in range(tid, C, width):
                    g[base + j] = math.nan
            continue
        m = -math.inf
        for j in range(tid, C, width):
            m = max(m, float64(x[base + j]))
        sm[tid] = m
        cuda.syncthreads()
        _tree_max(sm, tid, width)
        m = sm[0]
        cuda.syncthreads()
        s = 0.0
        for j in range(tid, C, width):
            s += math.exp(x[base + j] - m)
        sm[tid] = s
        cuda.syncthreads()
        _tree_sum(sm, tid, width)
        s = sm[0]
        cuda.syncthreads()  # sm is refilled by the next row
        if want_loss and tid == 0:
            losses[r] = math.log(s) + m - x[base + label]
        if want_grad:
            for j in range(tid, C, width):
                v = math.exp(x[base + j] - m) / s * scale
                g[base + j] = v - scale if j == label else v


@cuda.jit(device=True)
def _block_sum(values, sm):
    # The sum of all values, by one block (sm: a shared float64 array of blockDim.x); every thread gets it.
    tid = cuda.threadIdx.x
    width = cuda.blockDim.x
    s = 0.0
    for r in range(tid, values.size, width):
        s += values[r]
    sm[tid] = s
    cuda.syncthreads()
    _tree_sum(sm, tid, width)
    return sm[0]


@cuda.jit(cache=True)
def _ce_mean(losses, count, out):
    sm = cuda.shared.array(THREADS, float64)
    total = _block_sum(losses, sm)
    if cuda.threadIdx.x == 0:
        out[0] = total / count[0] if count[0] else math.nan


def _width(n):
    # A power of two from a warp to a full block: threads for n items, one or more each.
    width = 32
    while width < n and width < THREADS:
        width *= 2
    return width


def cross_entropy_with_grad(logits, labels, dy, out, dx, ignore, want_loss, want_grad):
    C = logits.shape[logits.ndim - 1]  # (the simulator's shapes take no negative index)
    rows = logits.size // C
    x = logits.reshape(logits.size)
    t = labels.reshape(labels.size)
    g = dx.reshape(dx.size)
    count = cuda.device_array(1, np.int64)
    _labelled[1, _width(rows)](t, ignore, count)
    losses = cuda.device_array(rows, np.float64)
    _ce_rows[grid(rows), _width(C)](x, t, dy.reshape(dy.size), count, losses, g, C, rows, ignore,
                                                   want_loss, want_grad)
    if want_loss:
        _ce_mean[1, _width(rows)](losses, count, out.reshape(out.size))


def cross_entropy(logits, labels, out, ignore):
    cross_entropy_with_grad(logits, labels, out, out, logits, ignore, True, False)


def cross_entropy_grad(logits, labels, dy, dx, ignore):
    cross_entropy_with_grad(logits, labels, dy, dy, dx, ignore, False, True)


@cuda.jit(cache=True)
def _pointwise_parts(a, b, parts, kind, n):
    sm = cuda.shared.array(THREADS, float64)
    tid = cuda.threadIdx.x
    s = 0.0
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        POINTWISE_TERM
        s += term
    sm[tid] = s
    cuda.syncthreads()
    _tree_sum(sm, tid, THREADS)
    if tid == 0:
        parts[cuda.blockIdx.x] = sm[0]


@cuda.jit(cache=True)
def _pointwise_mean(parts, out, n):
    sm = cuda.shared.array(THREADS, float64)
    total = _block_sum(parts, sm)
    if cuda.threadIdx.x == 0:
        out[0] = total / n


def pointwise_loss(p, t, out, kind):
    n = p.size
    chunks = min(blocks(n), LOSS_PARTS)
    parts = cuda.device_array(chunks, np.float64)
    _pointwise_parts[chunks, THREADS](p.reshape(n), t.reshape(n), parts, kind, n)
    _pointwise_mean[1, _width(chunks)](parts, out.reshape(out.size), n)


@cuda.jit(cache=True)
def _pointwise_grad(a, b, dy, g, kind, wrt, n):
    scale = dy[0] / n
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        POINTWISE_GRAD


def pointwise_loss_grad(p, t, dy, dx, kind, wrt):
    n = p.size
    _pointwise_grad[blocks(n), THREADS](p.reshape(n), t.reshape(n), dy.reshape(dy.size), dx.reshape(n), kind, wrt, n)
"""
LOSS_CUDA_SOURCE = _with_pointwise(LOSS_CUDA_SOURCE)


def _kernel(target: str, entry: str, args: tuple):
    """The CPU or CUDA kernel of a loss entry (both sources define the same entries)."""
    if target == "cuda":
        return CudaKernel(LOSS_CUDA_SOURCE, entry, args)
    return CpuKernel(LOSS_SOURCE, entry, args)


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

    def index_inputs(self, a, logits, labels, *rest):
        return {1: _label_range(a, logits)}

    def cpu(self, a, out, logits, labels):
        return _kernel("cpu", "cross_entropy", (In(0), In(1), OUT, _ignore(a)))

    def cuda(self, a, out, logits, labels):
        return _kernel("cuda", "cross_entropy", (In(0), In(1), OUT, _ignore(a)))

    def grad(self, g, dy):
        g.input_grad(0, g.apply("cross_entropy_grad", [g.node.inputs[0], g.node.inputs[1], dy], ignore=g.node.attrs["ignore"]))


def cross_entropy_with_grad_kernel(loss, grad, target: str = "cpu"):
    """cross_entropy and cross_entropy_grad (nodes) of the same logits and labels as one kernel
    (a CpuKernel, or a CudaKernel for target "cuda")."""
    return _kernel(
        target,
        "cross_entropy_with_grad",
        (In(0), In(1), Value(grad.inputs[2], flat=False), Value(loss.name, flat=False), Value(grad.name, flat=False),
         _ignore(loss.attrs), True, True),
    )


def _label_range(a, logits) -> IndexRange:
    classes = logits.shape[1]
    return IndexRange(0, classes, () if a.ignore is None else (a.ignore,))


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

    def index_inputs(self, a, logits, labels, dy):
        return {1: _label_range(a, logits)}

    def cpu(self, a, out, logits, labels, dy):
        return _kernel("cpu", "cross_entropy_grad", (In(0), In(1), In(2), OUT, _ignore(a)))

    def cuda(self, a, out, logits, labels, dy):
        return _kernel("cuda", "cross_entropy_grad", (In(0), In(1), In(2), OUT, _ignore(a)))


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
        return _kernel("cpu", "pointwise_loss", (In(0), In(1), OUT, self.kind))

    def cuda(self, a, out, pred, target):
        return _kernel("cuda", "pointwise_loss", (In(0), In(1), OUT, self.kind))

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
        return _kernel("cpu", "pointwise_loss_grad", (In(0), In(1), In(2), OUT, a.kind, a.wrt))

    def cuda(self, a, out, pred, target, dy):
        return _kernel("cuda", "pointwise_loss_grad", (In(0), In(1), In(2), OUT, a.kind, a.wrt))


@register
class Mse(_PointwiseLoss):
    """Mean squared error (the L2 loss)."""

    name = "mse"


@register
class BceWithLogits(_PointwiseLoss):
    """Binary cross-entropy on logits, computed stably: mean(max(x,0) - x*t + log(1 + exp(-|x|)))."""

    name = "bce_with_logits"
    kind = 1
