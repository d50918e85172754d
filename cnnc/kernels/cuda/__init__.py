"""CUDA kernel files: numba-cuda source (`@cuda.jit` kernels and their host launchers), one file per op family.
Read as text, never imported (see cnnc.kernels.source)."""
