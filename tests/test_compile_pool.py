"""Compile workers: kernels not yet cached compile in other processes, and nothing depends on them working."""

import subprocess
import sys

import numpy as np
import pytest

import cnnc
from cnnc.backend.cpu import compile_pool

PROGRAM = "network n {\n input x: [2, 8, 8]\n output y = conv(4, kernel=3) -> relu -> maxpool(2) -> flatten -> dense(3)\n}\n"
X = np.random.default_rng(0).standard_normal((2, 2, 8, 8)).astype(np.float32)


def compiled_in(cache, monkeypatch, workers: str):
    """The program's output at seed 1, its kernels compiled from an empty cache with these workers."""
    monkeypatch.setenv("CNNC_CACHE_DIR", str(cache))
    monkeypatch.setenv("CNNC_COMPILE_WORKERS", workers)
    net = cnnc.compile(PROGRAM, seed=1)
    return net, net(X)


def test_workers_compile_into_the_cache_the_process_loads_from(tmp_path, monkeypatch):
    monkeypatch.setattr(compile_pool, "_workers", [])
    net, y = compiled_in(tmp_path / "pooled", monkeypatch, "2")
    ex = next(iter(net._executors.values()))
    assert len({fn.py_func.__name__ for _, fn, _ in ex.steps}) >= compile_pool.MIN_JOBS
    assert all(sum(fn.stats.cache_misses.values()) == 0 for _, fn, _ in ex.steps)  # the workers compiled them all
    assert len(compile_pool._workers) == 2 and all(w.alive for w in compile_pool._workers)
    _, alone = compiled_in(tmp_path / "alone", monkeypatch, "0")
    np.testing.assert_array_equal(y, alone)


@pytest.mark.slow
def test_workers_that_die_leave_the_process_to_compile(tmp_path, monkeypatch):
    def dying(self):
        self.process = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE)
        self.alive = True

    monkeypatch.setattr(compile_pool, "_workers", [])
    monkeypatch.setattr(compile_pool._Worker, "__init__", dying)
    net, y = compiled_in(tmp_path / "dying", monkeypatch, "2")
    ex = next(iter(net._executors.values()))
    assert all(sum(fn.stats.cache_misses.values()) > 0 for _, fn, _ in ex.steps)  # compiled here
    _, alone = compiled_in(tmp_path / "alone", monkeypatch, "0")
    np.testing.assert_array_equal(y, alone)


def test_the_number_of_workers_is_configurable(monkeypatch):
    monkeypatch.setenv("CNNC_COMPILE_WORKERS", "0")
    assert compile_pool.wanted_workers() == 0
    monkeypatch.setenv("CNNC_COMPILE_WORKERS", "three")
    assert compile_pool.wanted_workers() == 0  # not a number: no workers
    monkeypatch.delenv("CNNC_COMPILE_WORKERS")
    assert compile_pool.wanted_workers() >= 1
