"""Normalization and regularization: batchnorm and dropout.

Both read the run-time mode flag (TRAINING) rather than baking the mode into
the kernel, so one compiled model serves train() and eval(). Backward ops
recompute what they need (batch statistics, dropout masks) from the forward
inputs instead of keeping state between kernels.
"""

from __future__ import annotations

from ..backend.cpu.kernel import FLAT_OUT, RNG, TRAINING, CpuKernel, In, Param
from .base import Attr, Fusion, Op, ShapeError, TensorType, boolean, expect_float, param, positive_number, probability, register

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
def batchnorm(x, weight, bias, running_mean, running_var, training, out, c, eps, momentum, affine):
    rows = x.size // c
    xr = x.reshape((rows, c))
    orr = out.reshape((rows, c))
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
    # y = (x - mean) * scale + bias, with per-channel constants in the buffer's dtype.
    m = np.empty(c, x.dtype)
    s = np.empty(c, x.dtype)
    b = np.empty(c, x.dtype)
    for j in range(c):
        w = np.float64(weight[j]) if affine else 1.0
        m[j] = mean[j]
        s[j] = w / math.sqrt(var[j] + eps)
        b[j] = bias[j] if affine else 0.0
    for r in prange(rows):
        for j in range(c):
            orr[r, j] = (xr[r, j] - m[j]) * s[j] + b[j]


@njit(parallel=True, cache=True)
def batchnorm_grad_input(x, dy, weight, running_mean, running_var, training, dx, c, eps, affine):
    rows = dy.size // c
    xr = x.reshape((rows, c))
    dyr = dy.reshape((rows, c))
    dxr = dx.reshape((rows, c))
    a = np.empty(c, dx.dtype)
    if not training[0]:  # the statistics are constants: dx = dy * w / sqrt(running_var + eps)
        for j in range(c):
            w = np.float64(weight[j]) if affine else 1.0
            a[j] = w / math.sqrt(np.float64(running_var[j]) + eps)
        for r in prange(rows):
            for j in range(c):
                dxr[r, j] = dyr[r, j] * a[j]
        return
    # Through the batch statistics, with inv = 1 / sqrt(var + eps):
    # dx = w * inv * (dy - mean(dy) - (x - mean) * inv^2 * mean(dy * (x - mean)))
    shift = _first_row(xr)
    chunks = _chunks(rows)
    part = np.zeros((chunks, 4, c), np.float64)
    for t in prange(chunks):
        _sum_xdy(xr, dyr, shift, part[t], t * rows // chunks, (t + 1) * rows // chunks)
    sums = _total(part)
    m = np.empty(c, dx.dtype)
    k = np.empty(c, dx.dtype)
    b = np.empty(c, dx.dtype)
    for j in range(c):
        d = sums[0, j] / rows
        inv = 1.0 / math.sqrt(max(sums[1, j] / rows - d * d, 0.0) + eps)
        w = np.float64(weight[j]) if affine else 1.0
        dy_mean = sums[2, j] / rows
        dyxc_mean = sums[3, j] / rows - d * dy_mean  # mean(dy * (x - mean))
        m[j] = shift[j] + d
        a[j] = w * inv
        k[j] = -w * inv * inv * inv * dyxc_mean
        b[j] = -w * inv * dy_mean
    for r in prange(rows):
        for j in range(c):
            dxr[r, j] = dyr[r, j] * a[j] + (xr[r, j] - m[j]) * k[j] + b[j]


@njit(parallel=True, cache=True)
def batchnorm_grad_weight(x, dy, running_mean, running_var, training, dw, c, eps):
    # dw = sum(dy * x_hat), x_hat from the batch statistics (training) or the running ones (eval).
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
    for j in range(c):
        d = 0.0
        var = np.float64(running_var[j])
        if train:
            d = sums[0, j] / rows
            var = max(sums[1, j] / rows - d * d, 0.0)
        dw[j] = (sums[3, j] - d * sums[2, j]) / math.sqrt(var + eps)
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
    fusion = Fusion.OPAQUE  # reduces in training; folds into conv in eval (the fusion pass decides)
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
