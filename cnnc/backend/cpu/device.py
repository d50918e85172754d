"""The CPU device: buffers in host memory, kernels compiled by Numba."""

from __future__ import annotations

import numba
import numpy as np

from ..lowering import CPU
from . import kernel
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

    def prepare(self, fn, args) -> None:
        # Compile now (or load the machine code from Numba's cache), not on the first run.
        fn.compile(tuple(numba.typeof(arg) for arg in args))

    def upload(self, host: np.ndarray, buffer) -> None:
        np.copyto(buffer, host)

    def download(self, buffer) -> np.ndarray:
        return buffer
