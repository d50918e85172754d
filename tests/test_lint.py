"""ruff (configured in pyproject.toml) finds nothing in the package, the kernel files, the tests and the benchmarks."""

import shutil
import subprocess
import sys

from conftest import ROOT


def test_ruff_is_clean():
    command = [shutil.which("ruff")] if shutil.which("ruff") else [sys.executable, "-m", "ruff"]
    done = subprocess.run([*command, "check", "cnnc", "tests", "benchmarks"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
