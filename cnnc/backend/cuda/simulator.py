"""Running kernels in Numba's CUDA simulator quickly and without races.

The simulator runs every GPU thread of a block as a Python thread. Two of its
habits matter to us:

- Its block manager polls the threads while holding the GIL, and a thread
  waiting at a barrier gets the GIL back only when the manager's switch
  interval ends (5 ms by default): a shorter interval during a launch makes
  barriers an order of magnitude faster.
- `cuda.shared.array` looks up the block's array for a source line and creates
  it when missing, in two steps; with threads switching often, two threads can
  both create one and the block's threads then share different arrays. A lock
  makes the lookup one step (and a frame's line is a cheaper key than the
  traceback the simulator extracts).
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable

SWITCH_INTERVAL = 5e-5  # seconds
_installed = False


def launching(launcher: Callable) -> Callable:
    """The launcher, run with the short switch interval (and the simulator made race-free)."""
    _install_shared_array_lock()

    @functools.wraps(launcher)
    def launch(*args):
        before = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL)
        try:
            return launcher(*args)
        finally:
            sys.setswitchinterval(before)

    return launch


def _install_shared_array_lock() -> None:
    global _installed
    if _installed:
        return
    import numpy as np
    from numba.cuda.simulator.kernelapi import FakeCUDAShared

    static_array = FakeCUDAShared.array
    lock = threading.Lock()

    def array(self, shape, dtype):
        if shape == 0:  # dynamic shared memory: one buffer, nothing to create
            return static_array(self, shape, dtype)
        frame = sys._getframe(1)
        where = (frame.f_code.co_filename, frame.f_lineno)
        with lock:
            found = self._allocations.get(where)
            if found is None:
                found = self._allocations[where] = np.empty(shape, _numpy_dtype(dtype))
        return found

    FakeCUDAShared.array = array
    _installed = True


def _numpy_dtype(dtype):
    from numba import types
    from numba.np import numpy_support

    return numpy_support.as_dtype(dtype) if isinstance(dtype, types.Type) else dtype
