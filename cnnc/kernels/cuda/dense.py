"""The fully connected layer (y = x W^T, then the epilogue: the bias and what the fusion pass adds),
its input and weight gradients, and the bias gradient of any layer: one tiled GEMM, and a block
reduction over the rows."""

from numba import cuda, float64

from .common import THREADS, blocks, grid
from .holes import DTYPE, _epilogue

# One tiled GEMM serves the three dense kernels: o[m, n] = sum_k a[m, k] b[k, n], with each
# operand given by its two strides (a transpose is a swap of strides). A block computes a
# GEMM_TILE x GEMM_TILE tile of o (threadIdx.x walks n, so stores are coalesced), staging
# K in chunks through shared memory; each operand tile is loaded with threadIdx.x along
# whichever of its axes is contiguous, so loads are coalesced too (a K shorter than a tile
# takes a thread per output instead). Shared arrays need their element type when compiled:
# DTYPE, the model's float type (a module is assembled per float type).
GEMM_TILE = 16
GEMM_PADDED = 17  # a shared row one longer than the tile: column walks hit distinct banks


@cuda.jit(cache=True)
def _dense_gemm_tiled(a, sam, sak, b, sbk, sbn, o, e, M, N, K):
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
def _dense_small_k(a, sam, sak, b, sbk, sbn, o, e, M, N, K):
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


def _tiles(n):
    """Blocks along an axis of n outputs, a tile each (a grid stride beyond that)."""
    return grid((n + GEMM_TILE - 1) // GEMM_TILE)


def _dense_gemm(a, sam, sak, b, sbk, sbn, o, e, M, N, K):
    args = (a.reshape(a.size), sam, sak, b.reshape(b.size), sbk, sbn, o.reshape(o.size), e, M, N, K)
    if K < GEMM_TILE:
        _dense_small_k[blocks(M * N), THREADS](*args)
        return
    _dense_gemm_tiled[(_tiles(M), _tiles(N)), (GEMM_TILE, GEMM_TILE)](*args)


# Launchers. x and dy may have any rank: the GEMM's rows are every axis but the last.
def dense(x, weight, out, e):
    # out = x . weight^T: b[k, n] = weight[n, k]
    N, K = weight.shape
    _dense_gemm(x, K, 1, weight, 1, K, out, e, x.size // K, N, K)


def dense_grad_input(dy, weight, dx, e):
    # dx = dy . weight
    K, N = weight.shape
    _dense_gemm(dy, K, 1, weight, N, 1, dx, e, dy.size // K, N, K)


def dense_grad_weight(x, dy, dw, e):
    # dw = dy^T . x: a[m, k] = dy[k, m]
    U, F = dw.shape
    _dense_gemm(dy, 1, U, x, F, 1, dw, e, U, F, x.size // F)


def dense_grad_params(x, dy, dw, db, e):
    dense_grad_weight(x, dy, dw, e)
    bias_grad(dy, db)


# A block sums BIAS_LANES channels (threadIdx.x: consecutive channels, coalesced loads) over
# the rows, each of its BIAS_ROWS thread rows taking every BIAS_ROWS-th row; a shared-memory
# tree then adds the thread rows. Sums are in float64, as on the CPU.
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
    # Channels are the last physical axis for both [N, C] and NHWC buffers.
    C = dy.shape[len(dy.shape) - 1]  # the simulator's shapes take no negative index
    _bias_grad[blocks(C, BIAS_LANES), (BIAS_LANES, BIAS_ROWS)](dy.reshape(dy.size), db, dy.size // C, C)
