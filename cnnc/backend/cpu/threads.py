"""One thread pool: Numba's prange runs the threads, so BLAS called inside a kernel runs on one.

Numba's np.dot calls SciPy's BLAS. Letting it spawn its own threads inside a
prange region oversubscribes the cores, and handing off between Numba's pool
and OpenBLAS's costs a scheduler timeslice per call. NumPy's own BLAS (a
separate library) is left alone, so user code keeps its threads.
"""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def single_threaded_blas() -> None:
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return
    import scipy.linalg.cython_blas  # noqa: F401  (loads the library Numba calls)

    controller = ThreadpoolController()
    for pool in controller.lib_controllers:
        if pool.user_api == "blas" and "scipy" in pool.filepath and "numpy" not in pool.filepath:
            pool.set_num_threads(1)
