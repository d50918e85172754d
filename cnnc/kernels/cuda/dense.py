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
def _dense_small_k(a, sab, sam, sak, b, sbb, sbk, sbn, bias, o, e, B, M, N, K):
    # K shorter than a tile (a weight gradient at a small batch): staging through shared memory
    # would mostly move zeros, so a thread per output sums its few products from global memory
    # (consecutive threads take consecutive n: the stores coalesce). It also runs B GEMMs at once,
    # the z-th reading its operands from z * sab and z * sbb and writing the z-th M x N block of o,
    # with a bias per row m where `bias` holds one (dense over the rows of pixels of an image).
    for i in range(cuda.grid(1), B * M * N, cuda.gridsize(1)):
        z = i // (M * N)
        m = (i - z * M * N) // N
        n = i - z * M * N - m * N
        acc = DTYPE(0)
        for k in range(K):
            acc += a[z * sab + m * sam + k * sak] * b[z * sbb + k * sbk + n * sbn]
        if bias.size > 0:
            acc += bias[m]
        _epilogue(o, i, n, acc, e)


def _tiles(n):
    """Blocks along an axis of n outputs, a tile each (a grid stride beyond that)."""
    return grid((n + GEMM_TILE - 1) // GEMM_TILE)


def _dense_gemm(a, sam, sak, b, sbk, sbn, o, e, M, N, K):
    a, b, o = a.reshape(a.size), b.reshape(b.size), o.reshape(o.size)
    if K < GEMM_TILE:
        _dense_small_k[blocks(M * N), THREADS](a, 0, sam, sak, b, 0, sbk, sbn, o[:0], o, e, 1, M, N, K)
        return
    _dense_gemm_tiled[(_tiles(M), _tiles(N)), (GEMM_TILE, GEMM_TILE)](a, sam, sak, b, sbk, sbn, o, e, M, N, K)


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


# Over an image [N, H, W, C] (stored channels-last) the last logical axis is W: a GEMM per row of
# pixels, units x W times W x C, the output [N, H, units, C] channels-last too, the bias along the
# units and the epilogue's channel the image's (see cnnc/ops/dense.py). A thread per output.
def _dense_image(x, weight, bias, out, e):
    n, h, w, c = x.shape
    units = weight.shape[0]
    _dense_small_k[blocks(out.size), THREADS](weight.reshape(weight.size), 0, w, 1, x.reshape(x.size), w * c, c, 1,
                                              bias, out.reshape(out.size), e, n * h, units, c, w)


def dense_image(x, weight, out, e):
    _dense_image(x, weight, weight.reshape(weight.size)[:0], out, e)


def dense_image_bias(x, weight, bias, out, e):
    _dense_image(x, weight, bias, out, e)


def dense_grad_input_image(dy, weight, dx, e):
    # dx[r] = weight^T . dy[r]: a[m, k] = weight[k, m]
    n, h, units, c = dy.shape
    w = weight.shape[1]
    _dense_small_k[blocks(dx.size), THREADS](weight.reshape(weight.size), 0, 1, w, dy.reshape(dy.size), units * c, c, 1,
                                             weight.reshape(weight.size)[:0], dx.reshape(dx.size), e, n * h, w, c, units)


@cuda.jit(cache=True)
def _dense_grad_weight_image(x, dy, dw, R, U, W, C):
    # dw[u, w] = the sum over rows of pixels r and channels c of dy[r, u, c] x[r, w, c]; a thread per weight.
    for i in range(cuda.grid(1), U * W, cuda.gridsize(1)):
        u = i // W
        w = i - u * W
        acc = DTYPE(0)
        for r in range(R):
            for c in range(C):
                acc += dy[(r * U + u) * C + c] * x[(r * W + w) * C + c]
        dw[i] = acc


def dense_grad_weight_image(x, dy, dw):
    n, h, w, c = x.shape
    units = dw.shape[0]
    _dense_grad_weight_image[blocks(dw.size), THREADS](x.reshape(x.size), dy.reshape(dy.size), dw.reshape(dw.size),
                                                       n * h, units, w, c)


@cuda.jit(cache=True)
def _bias_grad_image(dy, db, R, U, C):
    # The bias of dense over an image lies along the units of [N, H, units, C]; a thread per unit, in float64.
    for u in range(cuda.grid(1), U, cuda.gridsize(1)):
        acc = 0.0
        for r in range(R):
            for c in range(C):
                acc += dy[(r * U + u) * C + c]
        db[u] = acc


def bias_grad_image(dy, db):
    units, c = db.size, dy.shape[3]
    _bias_grad_image[blocks(units), THREADS](dy.reshape(dy.size), db, dy.size // (units * c), units, c)


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
