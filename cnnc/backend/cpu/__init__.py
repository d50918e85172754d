"""The CPU backend: generated Numba kernels, cached on disk, run by a planned executor."""
