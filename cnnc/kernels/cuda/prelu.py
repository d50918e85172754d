"""PReLU's weight gradient: dy * x summed per channel over the rows (pixels across the batch) where x <= 0.

A block sums LANES channels (threadIdx.x: consecutive channels, coalesced loads) over the
rows, each of its ROWS thread rows taking every ROWS-th row; a shared-memory tree then adds
the thread rows. Sums are in float64, as on the CPU.
"""

from numba import cuda, float64

from .common import blocks

LANES = 32
ROWS = 8


@cuda.jit(cache=True)
def _prelu_grad_weight(x, dy, dw, rows, C):
    s = cuda.shared.array((ROWS, LANES), float64)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    for c0 in range(cuda.blockIdx.x * LANES, C, cuda.gridDim.x * LANES):
        c = c0 + tx
        acc = 0.0
        if c < C:
            for r in range(ty, rows, ROWS):
                v = x[r * C + c]
                if v <= 0:
                    acc += dy[r * C + c] * v
        s[ty, tx] = acc
        cuda.syncthreads()
        step = ROWS // 2
        while step > 0:
            if ty < step:
                s[ty, tx] += s[ty + step, tx]
            cuda.syncthreads()
            step //= 2
        if ty == 0 and c < C:
            dw[c] = s[0, tx]
        cuda.syncthreads()  # s is reused by the next channels


def prelu_grad_weight(x, dy, dw):
    C = dw.size
    _prelu_grad_weight[blocks(C, LANES), (LANES, ROWS)](x, dy, dw, x.size // C, C)
