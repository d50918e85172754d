"""The fully connected layer: y = x W^T + b, as PyTorch's Linear; and the bias gradient."""

from __future__ import annotations

from ..backend.chain import bias_chain
from ..backend.cpu.fused import hosting
from ..backend.cpu.kernel import OUT, CpuKernel, In, Param, Value
from ..backend.cuda.fused import hosting as cuda_hosting
from ..backend.cuda.kernel import CudaKernel
from .conv import typed
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


# One tiled GEMM serves the three dense kernels: o[m, n] = sum_k a[m, k] b[k, n], with each
# operand given by its two strides (a transpose is a swap of strides). A block computes a
# GEMM_TILE x GEMM_TILE tile of o (threadIdx.x walks n, so stores are coalesced), staging
# K in chunks through shared memory; each operand tile is loaded with threadIdx.x along
# whichever of its axes is contiguous, so loads are coalesced too (a K shorter than a tile
# takes a thread per output instead). Shared arrays need their
# element type when compiled: the kernel exists per float dtype (DTYPE, see conv.typed).
DENSE_CUDA_KERNELS = """
@cuda.jit(cache=True)
def _dense_gemm_DTYPE(a, sam, sak, b, sbk, sbn, o, e, M, N, K):
    ta = cuda.shared.array((GEMM_TILE, GEMM_PADDED), DTYPE)  # ta[m, k]
    tb = cuda.shared.array((GEMM_TILE, GEMM_PADDED), DTYPE)  # tb[k, n]
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    for n0 in range(cuda.blockIdx.y * GEMM_TILE, N, cuda.gridDim.y * GEMM_TILE):
        for m0 in range(cuda.blockIdx.x * GEMM_TILE, M, cuda.gridDim.x * GEMM_TILE):
            acc = DTYPE(0)
            for k0 in range(0, K, GEMM_TILE):
                v = DTYPE(0)
                if sak == 1:
                    if m0 + ty < M and k0 + tx < K:
                        v = a[(m0 + ty) * sam + k0 + tx]
                    ta[ty, tx] = v
                else:
                    if m0 + tx < M and k0 + ty < K:
                        v = a[(m0 + tx) * sam + (k0 + ty) * sak]
                    ta[tx, ty] = v
                v = DTYPE(0)
                if sbn == 1:
                    if k0 + ty < K and n0 + tx < N:
                        v = b[(k0 + ty) * sbk + n0 + tx]
                    tb[ty, tx] = v
                else:
                    if k0 + tx < K and n0 + ty < N:
                        v = b[(k0 + tx) * sbk + (n0 + ty) * sbn]
                    tb[tx, ty] = v
                cuda.syncthreads()
                for kk in range(GEMM_TILE):
                    acc += ta[ty, kk] * tb[kk, tx]
                cuda.syncthreads()
            if m0 + ty < M and n0 + tx < N:
                _epilogue(o, (m0 + ty) * N + n0 + tx, n0 + tx, acc, e)


@cuda.jit(cache=True)
def _dense_small_k_DTYPE(a, sam, sak, b, sbk, sbn, o, e, M, N, K):
    # K shorter than a tile (a weight gradient at a small batch): staging through shared memory
    # would mostly move zeros, so a thread per output sums its few products from global memory
    # (consecutive threads take consecutive n: the stores coalesce).
    for i in range(cuda.grid(1), M * N, cuda.gridsize(1)):
        m = i // N
        n = i - m * N
        acc = DTYPE(0)
        for k in range(K):
            acc += a[m * sam + k * sak] * b[k * sbk + n * sbn]
        _epilogue(o, i, n, acc, e)
"""

DENSE_CUDA_LAUNCHERS = """
GEMM_TILE = 16
GEMM_PADDED = 17  # a shared row one longer than the tile: column walks hit distinct banks


def _dense_gemm(a, sam, sak, b, sbk, sbn, o, e, M, N, K):
    args = (a.reshape(a.size), sam, sak, b.reshape(b.size), sbk, sbn, o.reshape(o.size), e, M, N, K)
    if K < GEMM_TILE:
        globals()["_dense_small_k_" + str(o.dtype)][blocks(M * N), THREADS](*args)
        return
    tiles = lambda n: grid((n + GEMM_TILE - 1) // GEMM_TILE)  # noqa: E731
    globals()["_dense_gemm_" + str(o.dtype)][(tiles(M), tiles(N)), (GEMM_TILE, GEMM_TILE)](*args)


def dense(x, weight, out, e):
    # out = x . weight^T: b[k, n] = weight[n, k]
    M, K = x.shape
    _dense_gemm(x, K, 1, weight, 1, K, out, e, M, weight.shape[0], K)


def dense_grad_input(dy, weight, dx, e):
    # dx = dy . weight
    M, K = dy.shape
    N = weight.shape[1]
    _dense_gemm(dy, K, 1, weight, N, 1, dx, e, M, N, K)


def dense_grad_weight(x, dy, dw, e):
    # dw = dy^T . x: a[m, k] = dy[k, m]
    R, F = x.shape
    U = dy.shape[1]
    _dense_gemm(dy, 1, U, x, F, 1, dw, e, U, F, R)


def dense_grad_params(x, dy, dw, db, e):
    dense_grad_weight(x, dy, dw, e)
    bias_grad(dy, db)
"""

DENSE_CUDA_SOURCE = DENSE_CUDA_LAUNCHERS + typed(DENSE_CUDA_KERNELS)


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

    def cuda(self, a, out, x, epilogue=None):
        epilogue = epilogue or (bias_chain("acc") if a.bias else None)
        return cuda_hosting(DENSE_CUDA_SOURCE, "dense", epilogue, (In(0), Param("weight"), OUT), ())

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

    def cuda(self, a, out, dy, epilogue=None):
        return cuda_hosting(DENSE_CUDA_SOURCE, "dense_grad_input", epilogue, (In(0), Param("weight"), OUT), ())


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

    def cuda(self, a, out, x, dy):
        return cuda_hosting(DENSE_CUDA_SOURCE, "dense_grad_weight", None, (In(0), In(1), OUT), ())


def dense_grad_params_kernel(weight_grad, bias_grad, target: str = "cpu") -> CpuKernel | CudaKernel:
    """dense_grad_weight and bias_grad (nodes) of the same dy as one kernel (on the CPU) or one launcher."""
    db = Value(bias_grad.name, flat=False)
    if target == "cuda":
        source = DENSE_CUDA_SOURCE + BIAS_GRAD_CUDA_SOURCE
        return cuda_hosting(source, "dense_grad_params", None, (In(0), In(1), OUT, db), ())
    return CpuKernel(DENSE_SOURCE, "dense_grad_params", (In(0), In(1), OUT, db))


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


# A block sums BIAS_LANES channels (threadIdx.x: consecutive channels, coalesced loads) over
# the rows, each of its BIAS_ROWS thread rows taking every BIAS_ROWS-th row; a shared-memory
# tree then adds the thread rows. Sums are in float64, as on the CPU.
BIAS_GRAD_CUDA_SOURCE = """
BIAS_LANES = 32
BIAS_ROWS = 8


@cuda.jit(cache=True)
def _bias_grad(dy, db, rows, C):
    s = cuda.shared.array((BIAS_ROWS, BIAS_LANES), float64)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    for c0 in range(cuda.blockIdx.x * BIAS_LANES, C, cuda.gridDim.x * BIAS_LANES):
        c = c0 + tx
        acc = 0.0
        if c < C:
            for r in range(ty, rows, BIAS_ROWS):
                acc += dy[r * C + c]
        s[ty, tx] = acc
        cuda.syncthreads()
        step = BIAS_ROWS // 2
        while step > 0:
            if ty < step:
                s[ty, tx] += s[ty + step, tx]
            cuda.syncthreads()
            step //= 2
        if ty == 0 and c < C:
            db[c] = s[0, tx]
        cuda.syncthreads()  # s is reused by the next channels


def bias_grad(dy, db):
    C = dy.shape[len(dy.shape) - 1]  # the simulator's shapes take no negative index
    _bias_grad[blocks(C, BIAS_LANES), (BIAS_LANES, BIAS_ROWS)](dy.reshape(dy.size), db, dy.size // C, C)
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

    def cuda(self, a, out, dy):
        return CudaKernel(BIAS_GRAD_CUDA_SOURCE, "bias_grad", (In(0), OUT))
