"""Normalization and regularization: batchnorm and dropout.

Both read the run-time mode flag (TRAINING) rather than baking the mode into
the kernel, so one compiled model serves train() and eval(). Backward ops
recompute what they need (batch statistics, dropout masks) from the forward
inputs instead of keeping state between kernels.
"""

from __future__ import annotations

from ..backend.cpu.kernel import FLAT_OUT, RNG, TRAINING, CpuKernel, In, NodeParam, Param, Value
from ..backend.cuda.kernel import CudaKernel
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


# The same statistics on the GPU. Partial sums (float64) come from 2-D blocks of
# BN_TILE_C channels by BN_TILE_R rows, so neighbouring threads read neighbouring
# channels (coalesced); each block reduces its rows as a shared-memory tree and
# writes one partial per channel, and a second kernel (one thread per channel)
# adds the chunks' partials and derives the per-channel constants.
BATCHNORM_CUDA_SOURCE = """
BN_TILE_C = 32
BN_TILE_R = 8
BN_SUMS = 4


def _bn_chunks(rows):
    # Row chunks of the partial sums: enough blocks to fill a GPU, each thread summing many rows.
    return max(1, min(256, rows // 512))


@cuda.jit(cache=True)
def _bn_partial_sums(x, dy, shift, part, C, rows, per_chunk, with_dy):
    # part[chunk, :, c] = sums over the chunk's rows of (x - s), (x - s)^2, dy, dy * (x - s).
    sm = cuda.shared.array((BN_SUMS, BN_TILE_R, BN_TILE_C), float64)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    c = cuda.blockIdx.x * cuda.blockDim.x + tx
    chunk = cuda.blockIdx.y
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    s4 = 0.0
    if c < C:
        sh = float64(shift[c])
        lo = chunk * per_chunk
        hi = min(rows, lo + per_chunk)
        for r in range(lo + ty, hi, BN_TILE_R):
            d = float64(x[r * C + c]) - sh
            s1 += d
            s2 += d * d
            if with_dy:
                g = float64(dy[r * C + c])
                s3 += g
                s4 += g * d
    sm[0, ty, tx] = s1
    sm[1, ty, tx] = s2
    sm[2, ty, tx] = s3
    sm[3, ty, tx] = s4
    cuda.syncthreads()
    step = BN_TILE_R // 2
    while step > 0:
        if ty < step:
            for k in range(BN_SUMS):
                sm[k, ty, tx] += sm[k, ty + step, tx]
        cuda.syncthreads()
        step //= 2
    if ty == 0 and c < C:
        for k in range(BN_SUMS):
            part[chunk, k, c] = sm[k, 0, tx]


def _bn_partials(x, dy, shift, C, with_dy):
    rows = x.size // C
    chunks = _bn_chunks(rows)
    per_chunk = (rows + chunks - 1) // chunks
    part = cuda.device_array((chunks, BN_SUMS, C), np.float64)
    tile = min(C, BN_TILE_C)  # fewer channels than a tile: no idle columns
    launch = ((C + tile - 1) // tile, chunks)
    _bn_partial_sums[launch, (tile, BN_TILE_R)](x, dy, shift, part, C, rows, per_chunk, with_dy)
    return part, chunks, rows


@cuda.jit(cache=True)
def _bn_constants(part, chunks, x, weight, bias, running_mean, running_var, m, s, b, C, rows, eps, momentum,
                  affine, train):
    for c in range(cuda.grid(1), C, cuda.gridsize(1)):
        if train:
            s1 = 0.0
            s2 = 0.0
            for t in range(chunks):
                s1 += part[t, 0, c]
                s2 += part[t, 1, c]
            d = s1 / rows
            mean = float64(x[c]) + d
            var = max(s2 / rows - d * d, 0.0)
            # The running variance is unbiased (one row per channel keeps the biased one, zero).
            unbias = rows / (rows - 1.0) if rows > 1 else 1.0
            running_mean[c] = (1.0 - momentum) * running_mean[c] + momentum * mean
            running_var[c] = (1.0 - momentum) * running_var[c] + momentum * var * unbias
        else:
            mean = float64(running_mean[c])
            var = float64(running_var[c])
        w = float64(weight[c]) if affine else 1.0
        m[c] = mean
        s[c] = w / math.sqrt(var + eps)
        b[c] = bias[c] if affine else 0.0


def batch_constants(x, weight, bias, running_mean, running_var, training, C, eps, momentum, affine):
    # Per-channel (m, s, b) in x's dtype with y = (x - m) * s + b: the batch statistics in
    # training (updating the running ones), the running statistics in eval mode.
    train = int(training[0]) != 0
    if train:
        part, chunks, rows = _bn_partials(x, x, x[:C], C, False)
    else:
        part, chunks, rows = cuda.device_array((1, BN_SUMS, C), np.float64), 0, x.size // C
    m = cuda.device_array(C, x.dtype)
    s = cuda.device_array(C, x.dtype)
    b = cuda.device_array(C, x.dtype)
    _bn_constants[blocks(C, 32), 32](part, chunks, x, weight, bias, running_mean, running_var, m, s, b, C, rows,
                                      eps, momentum, affine, train)
    return m, s, b


@cuda.jit(cache=True)
def _bn_apply(o, x, m, s, b, C, n):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        c = i % C
        o[i] = (x[i] - m[c]) * s[c] + b[c]


def batchnorm(x, weight, bias, running_mean, running_var, training, out, C, eps, momentum, affine):
    m, s, b = batch_constants(x, weight, bias, running_mean, running_var, training, C, eps, momentum, affine)
    _bn_apply[blocks(out.size), THREADS](out, x, m, s, b, C, out.size)


@cuda.jit(cache=True)
def _bn_grad_constants(part, chunks, shift, weight, running_var, dw, db, m, a, k, b, C, rows, eps, affine, train,
                       want_dw, want_db):
    # As the CPU's batchnorm_grads: dx = dy * a + (x - m) * k + b per channel.
    for c in range(cuda.grid(1), C, cuda.gridsize(1)):
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        s4 = 0.0
        for t in range(chunks):
            s1 += part[t, 0, c]
            s2 += part[t, 1, c]
            s3 += part[t, 2, c]
            s4 += part[t, 3, c]
        d = 0.0
        var = float64(running_var[c])
        if train:
            d = s1 / rows
            var = max(s2 / rows - d * d, 0.0)
        inv = 1.0 / math.sqrt(var + eps)
        if want_dw:
            dw[c] = (s4 - d * s3) * inv
        if want_db:
            db[c] = s3
        w = float64(weight[c]) if affine else 1.0
        m[c] = float64(shift[c]) + d
        a[c] = w * inv
        if train:
            dy_mean = s3 / rows
            dyxc_mean = s4 / rows - d * dy_mean
            k[c] = -w * inv * inv * inv * dyxc_mean
            b[c] = -w * inv * dy_mean
        else:
            k[c] = 0.0
            b[c] = 0.0


@cuda.jit(cache=True)
def _bn_grad_input(x, dy, dx, m, a, k, b, C, n):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        c = i % C
        dx[i] = dy[i] * a[c] + (x[i] - m[c]) * k[c] + b[c]


def batchnorm_grads(x, dy, weight, running_mean, running_var, training, dx, dw, db, C, eps, affine, want_dx, want_dw,
                    want_db):
    # The wanted gradients from one reduction pass: the sums, the per-channel constants, then dx.
    train = int(training[0]) != 0
    shift = x[:C] if train else running_mean
    part, chunks, rows = _bn_partials(x, dy, shift, C, True)
    m = cuda.device_array(C, dy.dtype)
    a = cuda.device_array(C, dy.dtype)
    k = cuda.device_array(C, dy.dtype)
    b = cuda.device_array(C, dy.dtype)
    _bn_grad_constants[blocks(C, 32), 32](part, chunks, shift, weight, running_var, dw, db, m, a, k, b, C, rows, eps,
                                           affine, train, want_dw, want_db)
    if want_dx:
        _bn_grad_input[blocks(dy.size), THREADS](x, dy, dx, m, a, k, b, C, dy.size)


def batchnorm_grad_input(x, dy, weight, running_mean, running_var, training, dx, C, eps, affine):
    batchnorm_grads(x, dy, weight, running_mean, running_var, training, dx, running_var, running_var, C, eps, affine,
                    True, False, False)


def batchnorm_grad_weight(x, dy, running_mean, running_var, training, dw, C, eps):
    batchnorm_grads(x, dy, running_var, running_mean, running_var, training, dy, dw, dw, C, eps, False,
                    False, True, False)
"""


def _target_kernel(target: str, entry: str, args: tuple):
    """The CPU or CUDA kernel of one of the batchnorm entries (both sources define the same entries)."""
    if target == "cuda":
        return CudaKernel(BATCHNORM_CUDA_SOURCE, entry, args)
    return CpuKernel(BATCHNORM_SOURCE, entry, args)


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
        return self._kernel("cpu", a, x)

    def cuda(self, a, out, x):
        return self._kernel("cuda", a, x)

    def _kernel(self, target, a, x):
        # Without affine the weight and bias slots get an unused stand-in.
        weight, bias = _affine_params(a)
        return _target_kernel(
            target,
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
        return self._kernel("cpu", a, x)

    def cuda(self, a, out, x, dy):
        return self._kernel("cuda", a, x)

    def _kernel(self, target, a, x):
        weight = Param("weight") if a.affine else Param("running_var")
        return _target_kernel(
            target,
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
        return self._kernel("cpu", a, x)

    def cuda(self, a, out, x, dy):
        return self._kernel("cuda", a, x)

    def _kernel(self, target, a, x):
        return _target_kernel(
            target,
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

    def cuda(self, a, out, x):
        return BatchNorm().cuda(a, out, x)


def batchnorm_grads_kernel(graph, members, target: str = "cpu"):
    """batchnorm_grad_input, batchnorm_grad_weight and bias_grad (nodes) of one layer as one kernel
    (a CpuKernel, or a CudaKernel for target "cuda")."""
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
    return _target_kernel(
        target,
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


# The same mask on the GPU: each thread hashes its own element indices. The launcher
# reads the host RNG array and mode flag and passes them on as scalars.
DROPOUT_CUDA_SOURCE = """
@cuda.jit(device=True)
def _mix64(z):
    z = (z ^ (z >> uint64(30))) * uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> uint64(27))) * uint64(0x94D049BB133111EB)
    return z ^ (z >> uint64(31))


@cuda.jit(cache=True)
def _dropout(x, out, seed, step, key, threshold, scale, n):
    golden = uint64(0x9E3779B97F4A7C15)
    base = _mix64(_mix64(_mix64(seed + golden) ^ step) ^ key)
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        h = _mix64(base + uint64(i + 1) * golden)
        if (h >> uint64(11)) < threshold:
            out[i] = 0.0
        else:
            out[i] = float64(x[i]) * scale


@cuda.jit(cache=True)
def _dropout_copy(x, out, n):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        out[i] = x[i]


def dropout(x, rng, training, out, p):
    n = out.size
    if int(training[0]) == 0 or p == 0.0:
        _dropout_copy[blocks(n), THREADS](x, out, n)
        return
    threshold = np.uint64(int(p * 9007199254740992.0))  # p * 2^53, truncated as the CPU does
    seed, step, key = (np.uint64(v) for v in rng[:3])
    _dropout[blocks(n), THREADS](x, out, seed, step, key, threshold, 1.0 / (1.0 - p), n)
"""


def _dropout_kernel(a, target: str = "cpu"):
    args = (In(0, flat=True), RNG, TRAINING, FLAT_OUT, a.p)
    if target == "cuda":
        return CudaKernel(DROPOUT_CUDA_SOURCE, "dropout", args)
    return CpuKernel(DROPOUT_SOURCE, "dropout", args)


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

    def cuda(self, a, out, x):
        return _dropout_kernel(a, "cuda")

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

    def cuda(self, a, out, dy):
        return _dropout_kernel(a, "cuda")
