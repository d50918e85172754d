"""The CPU device: buffers in host memory, kernels compiled by Numba."""

from __future__ import annotations

import numba
import numpy as np

from ..lowering import CPU
from . import callback, kernel
from .threads import single_threaded_blas


class CpuDevice:
    """Host memory and Numba CPU kernels (see cnnc.backend.executor.Device)."""

    name = "cpu"
    target = CPU

    def __init__(self):
        single_threaded_blas()
        self.slots = max(1, int(numba.config.NUMBA_NUM_THREADS))  # get_thread_id() is below the pool's size

    def empty(self, shape, dtype):
        return np.empty(shape, dtype)

    def constant(self, array: np.ndarray):
        return array

    def load(self, k, float_dtype):
        return kernel.load(k)

    def fused(self, chain, hole, operands, float_dtype):
        # The callback stays alive in kernel.load_chain's registry; the executor keeps the operands alive.
        compiled = kernel.load_chain(chain, hole, [a.dtype for a in operands], float_dtype)
        return callback.table(compiled, operands)

    def prepare(self, prepared) -> None:
        # Compile now (or load the machine code from Numba's cache), not on the first run.
        kernel.prepare(prepared)

    def upload(self, host: np.ndarray, buffer) -> None:
        np.copyto(buffer, host)

    def download(self, buffer) -> np.ndarray:
        return buffer
