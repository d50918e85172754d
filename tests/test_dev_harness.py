"""The kernel harness (python -m cnnc.dev) runs every family it offers: it checks, times and reports."""

import re
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow  # each family compiles its kernels in a process of its own

CASES = {
    "conv": ["--shape", "2,3,6,6", "--channels", "4", "--kernel", "3", "--pad", "1"],
    "conv-depthwise": ["--shape", "2,4,6,6", "--channels", "4", "--kernel", "3", "--groups", "4", "--backward"],
    "dense": ["--shape", "3,10", "--units", "5", "--backward"],
    "pool": ["--shape", "2,3,6,6", "--kernel", "2", "--mode", "avg"],
    "batchnorm": ["--shape", "4,3,4,4", "--training", "--backward"],
    "chain": ["--shape", "2,3,4,4", "--ops", "relu,sigmoid,tanh", "--backward"],
}


@pytest.mark.parametrize("case", CASES)
def test_the_harness_checks_and_times_a_family(case):
    family = case.split("-")[0]
    done = subprocess.run([sys.executable, "-X", "faulthandler", "-m", "cnnc.dev", family, *CASES[case], "--repeats", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    error = float(re.search(r"max relative error (\S+)", done.stdout).group(1))
    assert error < 1e-4
    if "--backward" in CASES[case]:
        gradient = float(re.search(r"relative error (\S+)\)", done.stdout).group(1))
        assert gradient < 1e-5
    assert re.search(r"^total\s+\d+\.\d+ms\s+\d+\.\d+", done.stdout, re.M)
    assert "machine peak:" in done.stdout


def test_the_harness_fails_when_the_kernel_is_wrong():
    # A tolerance no float32 result meets: the exit status reports the mismatch.
    done = subprocess.run([sys.executable, "-m", "cnnc.dev", "dense", "--shape", "3,10", "--units", "5", "--repeats", "1",
                           "--tolerance", "0"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1
