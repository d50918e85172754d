"""BLAS ?gemm for the CPU kernels, called on flat arrays with offsets and leading dimensions.

It goes through Numba's own helper (the one np.dot calls), resolved by name, so that the
kernels stay cacheable. Unlike np.dot it takes leading dimensions and beta: GEMMs read and
write channel slices of NHWC rows in place and accumulate without a temporary.
"""

import numpy as np
from numba import njit, types

_xxgemm = types.ExternalFunction("numba_xxgemm", types.intc(
    types.int8, types.int8, types.int8, types.intp, types.intp, types.intp,
    types.intp, types.intp, types.intp, types.intp, types.intp, types.intp, types.intp, types.intp))


@njit(cache=True)
def _gemm(at, m, n, k, a, ao, lda, b, bo, ldb, c, co, ldc, one_zero, accumulate):
    # Row-major c[m, n] (= or +=) op(a)[m, k] . b[k, n], every matrix given as a flat array,
    # an offset and a row stride; op(a) is a [m, k], or with `at` the transpose of a [k, m].
    # `one_zero` is [1, 0] in the arrays' dtype (alpha and beta are passed by pointer).
    _gemm_ab(at, False, m, n, k, a, ao, lda, b, bo, ldb, c, co, ldc, one_zero, accumulate)


@njit(cache=True)
def _gemm_ab(at, bt, m, n, k, a, ao, lda, b, bo, ldb, c, co, ldc, one_zero, accumulate):
    # _gemm with op(b) too: b [k, n], or with `bt` the transpose of b [n, k] (a weight as it is stored).
    s = a.itemsize
    kind = np.int8(115) if s == 4 else np.int8(100)  # 's' or 'd'
    consts = np.intp(one_zero.ctypes.data)
    # Column-major BLAS sees each row-major matrix transposed: c^T = op(b)^T . op(a)^T.
    _xxgemm(kind, np.int8(84) if bt else np.int8(78), np.int8(84) if at else np.int8(78), n, m, k, consts,
            np.intp(b.ctypes.data) + bo * s, ldb, np.intp(a.ctypes.data) + ao * s, lda,
            consts + (0 if accumulate else s), np.intp(c.ctypes.data) + co * s, ldc)


@njit(cache=True)
def _one_zero(like):
    # [1, 0] for alpha and beta. Allocating here, not in a parallel kernel, keeps Numba
    # from turning the allocation into a parallel region of its own.
    v = np.zeros(2, like.dtype)
    v[0] = 1.0
    return v
