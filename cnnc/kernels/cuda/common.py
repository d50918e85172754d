"""What every CUDA kernel file may share: launch sizes, and index arithmetic."""

import os

from numba import cuda

SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
# The simulator runs each GPU thread as a Python thread, and starting one costs far more
# than a loop iteration: there, launches use a few small blocks and the kernels' grid-stride
# loops do the rest. On a GPU, 256 threads a block and as many blocks as the work needs.
THREADS = 32 if SIMULATED else 256
MAX_BLOCKS = 2 if SIMULATED else 65535


def grid(n):
    """Blocks along a grid-stride axis of n block-sized pieces of work."""
    return max(1, min(n, MAX_BLOCKS))


def blocks(n, threads=THREADS):
    """Blocks of a 1-D launch covering n items (kernels loop with a grid stride beyond that)."""
    return grid((n + threads - 1) // threads)


@cuda.jit(device=True)
def unflatten(i, d1, d2, d3):
    """The four indices (k0, k1, k2, k3) of flat index i into a contiguous [d0, d1, d2, d3] array."""
    k3 = i % d3
    t = i // d3
    k2 = t % d2
    t //= d2
    return t // d1, t % d1, k2, k3
