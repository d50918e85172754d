"""PReLU's weight gradient: dy * x summed per channel over the rows (pixels across the batch) where x <= 0."""

import numpy as np
from numba import njit, prange

# Rows are split into this many fixed shares, summed in parallel and then in order, so the
# result does not depend on the number of threads.
SHARES = 16


@njit(parallel=True, cache=True)
def prelu_grad_weight(x, dy, dw):
    C = dw.size
    rows = x.size // C
    partial = np.zeros((SHARES, C), np.float64)
    for s in prange(SHARES):
        for r in range(s * rows // SHARES, (s + 1) * rows // SHARES):
            base = r * C
            for c in range(C):
                v = x[base + c]
                if v <= 0:
                    partial[s, c] += dy[base + c] * v
    for c in range(C):
        total = 0.0
        for s in range(SHARES):
            total += partial[s, c]
        dw[c] = total
