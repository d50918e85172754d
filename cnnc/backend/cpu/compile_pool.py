"""Compiling many kernels at once: worker processes fill the kernel cache, then each kernel loads from it.

Numba compiles one function at a time per process, at about a second for a parallel
kernel, and a model's first run compiles dozens. When an executor needs several kernels
that are not yet in the disk cache, they are handed, largest first, to worker processes
(one per core, started once per process and kept), each compiling one kernel at a time
into the same cache folder; the executor then loads each from the cache. A worker runs
this module (`python -m cnnc.backend.cpu.compile_pool`), never the user's script, and
writes through the same guarded cache as the main process (cnnc.backend.cache). Any
failure only means the main process compiles that kernel itself.

CNNC_COMPILE_WORKERS sets the number of workers (0: compile everything in the process).
"""

from __future__ import annotations

import atexit
import collections
import os
import pickle
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .. import cache

MIN_JOBS = 3  # fewer uncached kernels than this compile in the process: a worker takes a second to start
PATIENCE = 900  # seconds a batch of jobs may take before the workers are stopped and the process compiles the rest
_CACHE_SETTINGS = ("CNNC_CACHE_DIR", "XDG_CACHE_HOME", "HOME")  # what the cache folder is found from (cache.configured)


@dataclass(frozen=True)
class Job:
    """One compiled function to make: its modules (name, text) in import order, the entry, its types."""

    texts: tuple[tuple[str, str], ...]
    entry: str
    signature: tuple

    @property
    def size(self) -> int:
        return sum(len(text) for _, text in self.texts)


def wanted_workers() -> int:
    configured = os.environ.get("CNNC_COMPILE_WORKERS")
    if configured is not None:
        return max(0, int(configured)) if configured.strip().isdigit() else 0
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class _Worker:
    """A worker process and the pipe to it: a job in (length-prefixed pickle), one status byte out."""

    def __init__(self):
        package_root = str(Path(__file__).resolve().parents[3])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")]))
        self.process = subprocess.Popen([sys.executable, "-m", "cnnc.backend.cpu.compile_pool"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        self.alive = True

    def run(self, job: Job, folder: Path) -> bool:
        """Whether the worker compiled the job into `folder` (False also when it has died)."""
        try:
            where = {name: os.environ.get(name) for name in _CACHE_SETTINGS}
            data = pickle.dumps((where, str(folder), job.texts, job.entry, job.signature))
            self.process.stdin.write(struct.pack("<Q", len(data)) + data)
            self.process.stdin.flush()
            status = self.process.stdout.read(1)
        except (OSError, ValueError):
            status = b""
        if not status:
            self.alive = False
        return status == b"1"

    def close(self) -> None:
        try:
            self.process.stdin.close()
            self.process.wait(timeout=5)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            self.process.kill()


_workers: list[_Worker] = []
_lock = threading.Lock()
_busy = threading.Lock()  # one batch at a time: each worker's pipe carries one conversation


def _pool(count: int) -> list[_Worker]:
    with _lock:
        _workers[:] = [w for w in _workers if w.alive and w.process.poll() is None]
        while len(_workers) < count:
            try:
                _workers.append(_Worker())
            except OSError:
                break
        return _workers[:count]


@atexit.register
def _close() -> None:
    for worker in _workers:
        worker.close()


def precompile(jobs: list[Job]) -> None:
    """Compile these jobs in worker processes, into the kernel cache, where there are enough of them."""
    workers = min(len(jobs), wanted_workers())
    if len(jobs) < MIN_JOBS or workers < 2:
        return
    folder = cache.folder()
    queue = collections.deque(sorted(jobs, key=lambda j: -j.size))  # the largest first, so that none ends alone
    taken = threading.Lock()

    def feed(worker: _Worker) -> None:
        while worker.alive:
            with taken:
                if not queue:
                    return
                job = queue.popleft()
            worker.run(job, folder)

    with _busy:
        pool = _pool(workers)
        threads = [threading.Thread(target=feed, args=(w,), daemon=True) for w in pool]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + PATIENCE
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in threads):  # a worker that hangs: stop them all, compile here
            for worker in pool:
                worker.alive = False
                worker.process.kill()
            for thread in threads:
                thread.join()


def _serve() -> None:
    """A worker's loop: compile each job it is sent, answer 1 (done) or 0 (the main process will)."""
    from .. import modules

    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # nothing printed may reach the reply pipe
    jobs = sys.stdin.buffer
    while True:
        header = jobs.read(8)
        if len(header) < 8:
            return
        where, folder, texts, entry, signature = pickle.loads(jobs.read(struct.unpack("<Q", header)[0]))
        for name, value in where.items():  # the main process's settings now, which a test may have changed
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        status = b"0"
        try:
            if cache.folder() == Path(folder):  # the same folder the main process loads from (never a temporary one)
                module = None
                for name, text in texts:
                    module = modules.import_text(name, text)
                getattr(module, entry).compile(signature)
                status = b"1"
        except Exception:  # noqa: BLE001 - the main process compiles it and reports any error
            pass
        replies.write(status)
        replies.flush()


if __name__ == "__main__":
    _serve()
