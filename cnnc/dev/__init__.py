"""Tools for working on cnnc's kernels: `python -m cnnc.dev FAMILY --shape ...` (see cnnc.dev.harness)."""
