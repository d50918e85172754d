"""Device memory for the CUDA target: the executor's device, and the model's arenas on the GPU."""

from __future__ import annotations

import numpy as np

from ..lowering import CUDA
from .kernel import load


class CudaDevice:
    """Buffers in GPU memory, kernels from numba-cuda (see cnnc.backend.executor.Device)."""

    name = "cuda"
    target = CUDA
    slots = 1  # its kernels divide work by blocks and threads, not by slots of a pool

    def __init__(self):
        from numba import cuda

        self.cuda = cuda

    def empty(self, shape, dtype):
        return self.cuda.device_array(shape, dtype)

    def constant(self, array: np.ndarray):
        return self.cuda.to_device(array)

    def load(self, kernel, float_dtype):
        return load(kernel, float_dtype)

    def fused(self, chain, hole, operands, float_dtype):
        return operands  # the chain itself is compiled into the kernel's source

    def prepare(self, prepared) -> None:
        pass  # kernels compile on their first launch (from the disk cache after the first process)

    def upload(self, host: np.ndarray, buffer) -> None:
        buffer.copy_to_device(host)

    def download(self, buffer) -> np.ndarray:
        return buffer.copy_to_host()


class DeviceArenas:
    """Device copies of a model's flat arenas (parameters, gradients, buffers) and a view per name.

    The host arenas stay the API's view: `pull` copies the device's values into
    them, `push` copies them to the device. One transfer each, of the whole arena.
    """

    def __init__(self, host: dict[str, np.ndarray], specs: dict[str, list]):
        from numba import cuda

        self.arenas = {key: cuda.to_device(array) for key, array in host.items()}
        self.views: dict[str, dict] = {}
        for key, group in specs.items():
            views, offset = {}, 0
            for spec in group:
                views[spec.name] = self.arenas[key][offset : offset + spec.size].reshape(spec.shape)
                offset += spec.size
            self.views[key] = views

    def push(self, host: dict[str, np.ndarray]) -> None:
        for key, array in host.items():
            self.arenas[key].copy_to_device(array)

    def pull(self, host: dict[str, np.ndarray]) -> None:
        for key, array in host.items():
            self.arenas[key].copy_to_host(array)

    def snapshot(self, key: str):
        """A device copy of one arena, for `restore`."""
        from numba import cuda

        copy = cuda.device_array_like(self.arenas[key])
        copy.copy_to_device(self.arenas[key])
        return copy

    def restore(self, key: str, copy) -> None:
        self.arenas[key].copy_to_device(copy)
