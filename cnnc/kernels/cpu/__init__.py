"""CPU kernel files: Numba (`@njit`) source, one file per op family. Read as text, never imported (see cnnc.kernels.source)."""
