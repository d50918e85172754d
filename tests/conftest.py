import os

# CUDA tests run in Numba's CUDA simulator unless a GPU run asks otherwise; the variable
# is read when numba is first imported, so it is set before anything imports it.
os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
# The suite runs in two worker processes (pytest -n 2) on two cores: OpenMP threads that spin
# while waiting would take the cores from the other worker (DESIGN: small steps 1.4-35x slower).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "lib"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # for torch_reference


@pytest.fixture
def lib():
    return LIB
