"""The CUDA target: the same scheduled graph and memory plan, rendered as numba-cuda kernels.

Kernels run on an NVIDIA GPU through numba-cuda (`pip install 'cnnc[cuda]'`), or
in Numba's CUDA simulator on the CPU (`NUMBA_ENABLE_CUDASIM=1`, set before
Python starts: it runs each GPU thread as a Python thread, so only tiny models).
"""

from __future__ import annotations

import os

from ...errors import CnncError


def simulated() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def require() -> None:
    """Raise a CnncError saying how to get a CUDA target when there is none."""
    if simulated():
        return
    try:
        from numba import cuda
    except Exception as e:  # numba-cuda missing or broken
        raise CnncError(
            f"target 'cuda' needs numba-cuda ({e}); install it with pip install 'cnnc[cuda]', "
            "or set NUMBA_ENABLE_CUDASIM=1 to run Numba's CUDA simulator on the CPU (tiny models only)"
        ) from None
    if not cuda.is_available():
        raise CnncError(
            "target 'cuda' needs an NVIDIA GPU with its driver, and none is available here; "
            "set NUMBA_ENABLE_CUDASIM=1 before starting Python to run Numba's CUDA simulator "
            "on the CPU instead (tiny models only), or use target 'cpu'"
        )
