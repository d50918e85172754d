"""Every CUDA kernel compiles for a GPU: numba-cuda and NVVM, no GPU needed (see ptxcheck.py).

The simulator runs kernels as Python and so cannot catch code that numba-cuda
cannot compile; this compiles every kernel that the library's models and the
CUDA tests' programs launch, for the argument types they launch it with.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("numba_cuda") is None,
                       reason="needs numba-cuda with the CUDA toolkit: pip install 'cnnc[cuda13]'"),
]


def test_every_kernel_compiles_to_ptx():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    script = Path(__file__).resolve().parent / "ptxcheck.py"
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=1800)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "distinct kernels compile for compute capability 8.0" in done.stdout
