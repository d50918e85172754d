import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "lib"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # for torch_reference


@pytest.fixture
def lib():
    return LIB
