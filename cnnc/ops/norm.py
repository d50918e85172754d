"""Normalization and regularization: batchnorm and dropout.

Both read the run-time mode flag (TRAINING) rather than baking the mode into
the kernel, so one compiled model serves train() and eval(). Backward ops
recompute what they need (batch statistics, dropout masks) from the forward
inputs instead of keeping state between kernels.
"""

from __future__ import annotations

from ..backend.cpu.kernel import FLAT_OUT, RNG, TRAINING, CpuKernel, In, NodeParam, Param, Value
from .base import Attr, Expr, Fusion, Op, ShapeError, TensorType, boolean, expect_float, param, positive_number, probability, register

# Buffers are [rows, C] with channels last for both [N, C] and NHWC [N, H, W, C],
# so every kernel takes flat views and the channel count: one compile per dtype.
# Statistics accumulate in float64 over a fixed number of row chunks (partial
# sums per chunk), which keeps results independent of the thread count.
BATCHNORM_SOURCE = """
@njit(cache=True)
def _chunks(rows):
    return min(rows, 64)


@njit(cache=True)
def _first_row(xr):
    # The shift for one-pass sums: a value near each channel's mean avoids
    # cancellation in sum((x - s)^2) - sum(x - s)^2 / n.
    c = xr.shape[1]
    shift = np.empty(c, np.float64)
    for j in range(c):
        shift[j] = xr[0, j]
    return shift


@njit(cache=True)
def _sum_x(xr, shift, p, lo, hi):
    # Rows [lo, hi): p[0] += x - s, p[1] += (x - s)^2 per channel.
    c = xr.shape[1]
    s1 = p[0]
    s2 = p[1]
    for r in range(lo, hi):
        for j in range(c):
            d = xr[r, j] - shift[j]
            s1[j] += d
            s2[j] += d * d


@njit(cache=True)
def _sum_xdy(xr, dyr, shift, p, lo, hi):
    # Rows [lo, hi): as _sum_x, and p[2] += dy, p[3] += dy * (x - s).
    c = xr.shape[1]
    s1 = p[0]
    s2 = p[1]
    s3 = p[2]
    s4 = p[3]
    for r in range(lo, hi):
        for j in range(c):
            d = xr[r, j] - shift[j]
            g = np.float64(dyr[r, j])
            s1[j] += d
            s2[j] += d * d
            s3[j] += g
            s4[j] += g * d


@njit(cache=True)
def _total(part):
    # The per-chunk partial sums added up: [chunks, k, c] -> [k, c].
    chunks, k, c = part.shape
    out = np.zeros((k, c), np.float64)
    for t in range(chunks):
        for i in range(k):
            for j in range(c):
                out[i, j] += part[t, i, j]
    return out


@njit(parallel=True, cache=True)
def _batch_constants(x, weight, bias, running_mean, running_var, training, c, eps, momentum, affine):
    # Per-channel (mean, scale, shift) in x's dtype, so that y = (x - mean) * scale + shift:
    # from the batch statistics in training (updating the running averages), else the running ones.
    rows = x.size // c
    xr = x.reshape((rows, c))
    mean = np.empty(c, np.float64)
    var = np.empty(c, np.float64)
    if training[0]:
        shift = _first_row(xr)
        chunks = _chunks(rows)
        part = np.zeros((chunks, 2, c), np.float64)
        for t in prange(chunks):
            _sum_x(xr, shift, part[t], t * rows // chunks, (t + 1) * rows // chunks)
        sums = _total(part)
        # PyTorch's running variance uses the unbiased batch variance (it refuses
        # one value per channel; here that case keeps the biased one, zero).
        unbias = rows / (rows - 1.0) if rows > 1 else 1.0
        for j in range(c):
            d = sums[0, j] / rows
            mean[j] = shift[j] + d
            var[j] = max(sums[1, j] / rows - d * d, 0.0)
            running_mean[j] = (1.0 - momentum) * running_mean[j] + momentum * mean[j]
            running_var[j] = (1.0 - momentum) * running_var[j] + momentum * var[j] * unbias
    else:
        for j in range(c):
            mean[j] = running_mean[j]
            var[j] = running_var[j]
    m = np.empty(c, x.dtype)
    s = np.empty(c, x.dtype)
    b = np.empty(c, x.dtype)
    for j in range(c):
        w = np.float64(weight[j]) if affine else 1.0
        m[j] = mean[j]
        s[j] = w / math.sqrt(var[j] + eps)
        b[j] = bias[j] if affine else 0.0
    return m, s, b


@njit(parallel=True, cache=True)
def batchnorm(x, weight, bias, running_mean, running_var, training, out, c, eps, momentum, affine):
    m, s, b = _batch_constants(x, weight, bias, running_mean, running_var, training, c, eps, momentum, affine)
    rows = x.size // c
    xr = x.reshape((rows, c))
    orr = out.reshape((rows, c))
    for r in prange(rows):
        for j in range(c):
            orr[r, j] = (xr[r, j] - m[j]) * s[j] + b[j]


@njit(parallel=True, cache=True)
def batchnorm_grads(x, dy, weight, running_mean, running_var, training, dx, dw, db, c, eps, affine, want_dx, want_dw, want_db):
    # The input, weight and bias gradients (those wanted) from one pass of sums. In training, with
    # inv = 1 / sqrt(var + eps): dx = w * inv * (dy - mean(dy) - (x - mean) * inv^2 * mean(dy * (x - mean)));
    # in eval mode the statistics are constants and dx = dy * w * inv.
    rows = dy.size // c
    xr = x.reshape((rows, c))
    dyr = dy.reshape((rows, c))
    train = training[0] != 0
    if train:
        shift = _first_row(xr)
    else:
        shift = np.empty(c, np.float64)
        for j in range(c):
            shift[j] = running_mean[j]
    chunks = _chunks(rows)
    part = np.zeros((chunks, 4, c), np.float64)
    for t in prange(chunks):
        _sum_xdy(xr, dyr, shift, part[t], t * rows // chunks, (t + 1) * rows // chunks)
    sums = _total(part)
    m = np.empty(c, dx.dtype)
    a = np.empty(c, dx.dtype)
    k = np.empty(c, dx.dtype)
    b = np.empty(c, dx.dtype)
    for j in range(c):
        d = 0.0
        var = np.float64(running_var[j])
        if train:
            d = sums[0, j] / rows
            var = max(sums[1, j] / rows - d * d, 0.0)
        inv = 1.0 / math.sqrt(var + eps)
        if want_dw:
            dw[j] = (sums[3, j] - d * sums[2, j]) * inv
        if want_db:
            db[j] = sums[2, j]
        w = np.float64(weight[j]) if affine else 1.0
        m[j] = shift[j] + d
        a[j] = w * inv
        if train:
            dy_mean = sums[2, j] / rows
            dyxc_mean = sums[3, j] / rows - d * dy_mean
            k[j] = -w * inv * inv * inv * dyxc_mean
            b[j] = -w * inv * dy_mean
        else:
            k[j] = 0.0
            b[j] = 0.0
    if want_dx:
        dxr = dx.reshape((rows, c))
        for r in prange(rows):
            for j in range(c):
                dxr[r, j] = dyr[r, j] * a[j] + (xr[r, j] - m[j]) * k[j] + b[j]


@njit(cache=True)
def batchnorm_grad_input(x, dy, weight, running_mean, running_var, training, dx, c, eps, affine):
    unused = np.empty(c, dx.dtype)
    batchnorm_grads(x, dy, weight, running_mean, running_var, training, dx, unused, unused, c, eps, affine,
                    True, False, False)


@njit(cache=True)
def batchnorm_grad_weight(x, dy, running_mean, running_var, training, dw, c, eps):
    # dw = sum(dy * x_hat), x_hat from the batch statistics (training) or the running ones (eval).
    batchnorm_grads(x, dy, running_var, running_mean, running_var, training, dy, dw, dw, c, eps, False,
                    False, True, False)
"""


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
    attrs = (
        Attr("eps", positive_number, 1e-5),
        Attr("momentum", positive_number, 0.1),
        Attr("affine", boolean, True, doc="learn a scale (weight) and shift (bias)"),
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

    def cpu(self, a, out, x):
        # Without affine the weight and bias slots get an unused stand-in.
        weight = Param("weight") if a.affine else Param("running_var")
        bias = Param("bias") if a.affine else Param("running_mean")
        return CpuKernel(
            BATCHNORM_SOURCE,
            "batchnorm",
            (In(0, flat=True), weight, bias, Param("running_mean"), Param("running_var"), TRAINING, FLAT_OUT,
             _channels(x), a.eps, a.momentum, a.affine),
        )

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


@register
class BatchNormGradInput(Op):
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
        return CpuKernel(
            BATCHNORM_SOURCE,
            "batchnorm_grad_input",
            (In(0, flat=True), In(1, flat=True), weight, Param("running_mean"), Param("running_var"), TRAINING,
             FLAT_OUT, _channels(x), a.eps, a.affine),
        )


@register
class BatchNormGradWeight(Op):
    """d(loss)/d(weight) of batchnorm: sum(dy * x_hat) per channel."""

    name = "batchnorm_grad_weight"
    inputs = 2
    internal = True
    fusion = Fusion.REDUCTION
    attrs = (Attr("eps", float),)

    def infer(self, a, x, dy):
        return TensorType((x.shape[1],), x.dtype)

    def cpu(self, a, out, x, dy):
        return CpuKernel(
            BATCHNORM_SOURCE,
            "batchnorm_grad_weight",
            (In(0, flat=True), In(1, flat=True), Param("running_mean"), Param("running_var"), TRAINING, FLAT_OUT,
             _channels(x), a.eps),
        )


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


def batchnorm_grads_kernel(graph, members) -> CpuKernel:
    """batchnorm_grad_input, batchnorm_grad_weight and bias_grad (nodes) of one layer as one kernel."""
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
    return CpuKernel(
        BATCHNORM_SOURCE,
        "batchnorm_grads",
        (Value(x), Value(dy), weight, NodeParam(first.name, "running_mean"), NodeParam(first.name, "running_var"),
         TRAINING, dx, dw, db, graph[x].type.shape[1], a["eps"], affine,
         "batchnorm_grad_input" in by_op, "batchnorm_grad_weight" in by_op, "bias_grad" in by_op),
    )


# The mask is a pure function of (seed, step, key, element index): splitmix64's
# finalizer over a counter, so the gradient recomputes the forward's mask
# exactly (it reads the RNG array of the forward node's key) and a seeded run
# is reproducible. An element is dropped when its top 53 bits, as a uniform in
# [0, 1), fall below p.
DROPOUT_SOURCE = """
@njit(cache=True)
def _mix64(z):
    z = (z ^ (z >> uint64(30))) * uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> uint64(27))) * uint64(0x94D049BB133111EB)
    return z ^ (z >> uint64(31))


@njit(parallel=True, cache=True)
def dropout(x, rng, training, out, p):
    n = out.size
    if training[0] == 0 or p == 0.0:
        for i in prange(n):
            out[i] = x[i]
        return
    golden = uint64(0x9E3779B97F4A7C15)
    base = _mix64(_mix64(_mix64(rng[0] + golden) ^ rng[1]) ^ rng[2])
    threshold = uint64(p * 9007199254740992.0)  # p * 2^53
    scale = 1.0 / (1.0 - p)
    for i in prange(n):
        h = _mix64(base + uint64(i + 1) * golden)
        if (h >> uint64(11)) < threshold:
            out[i] = 0.0
        else:
            out[i] = x[i] * scale
"""


def _dropout_kernel(a) -> CpuKernel:
    return CpuKernel(DROPOUT_SOURCE, "dropout", (In(0, flat=True), RNG, TRAINING, FLAT_OUT, a.p))


@register
class Dropout(Op):
    """Zero each element with probability p in training, scaling the rest by 1/(1-p); identity in eval."""

    name = "dropout"
    fusion = Fusion.ELEMENTWISE
    attrs = (Attr("p", probability, 0.5),)

    def infer(self, a, x):
        expect_float(self.name, x)
        return x

    def cpu(self, a, out, x):
        return _dropout_kernel(a)

    def grad(self, g, dy):
        # The same kernel on dy with the forward node's random stream: the same mask.
        g.input_grad(0, g.apply("dropout_grad", [dy], p=g.node.attrs["p"], rng_key=g.node.name))


@register
class DropoutGrad(Op):
    """dx = dy * mask / (1 - p), the mask recomputed from the forward node's random stream (`rng_key`)."""

    name = "dropout_grad"
    internal = True
    fusion = Fusion.ELEMENTWISE
    attrs = (Attr("p", float), Attr("rng_key", str))

    def infer(self, a, dy):
        return dy

    def cpu(self, a, out, dy):
        return _dropout_kernel(a)
