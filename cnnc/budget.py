"""Refuse allocations the machine cannot hold, before making them.

Every size cnnc allocates is known in advance (parameter shapes, the memory plan of a
batch size), so a model too large for the machine is a clear error naming the figure
and the largest part, not a MemoryError or an out-of-memory kill halfway through.
"""

from __future__ import annotations

import os
import resource

from .errors import CnncError

# Tests and users can lower the budget (in bytes) to see what a smaller machine would refuse.
LIMIT_VARIABLE = "CNNC_MEMORY_LIMIT"


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_available() -> int | None:
    """What the cgroup (v2) still allows this process, where one sets a limit."""
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as f:
            limit = f.read().strip()
        if limit == "max":
            return None
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as f:
            return int(limit) - int(f.read().strip())
    except (OSError, ValueError):
        return None


def _address_space_left() -> int | None:
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return None if soft == resource.RLIM_INFINITY else soft


def available_bytes() -> int:
    """The memory this process can still allocate: the smallest of what the machine, its cgroup,
    the address-space limit and CNNC_MEMORY_LIMIT allow."""
    figures = [_meminfo_available(), _cgroup_available(), _address_space_left()]
    override = os.environ.get(LIMIT_VARIABLE)
    if override:
        try:
            figures.append(int(float(override)))
        except ValueError:
            raise CnncError(f"{LIMIT_VARIABLE} must be a number of bytes, got '{override}'") from None
    known = [f for f in figures if f is not None]
    return max(min(known), 0) if known else 2**62


def show_bytes(n: int) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n} bytes"


def require(needed: int, what: str, largest: str, advice: str) -> None:
    """Raise a CnncError unless `needed` bytes fit in what is available.

    `what` says what needs them ("the parameters"), `largest` names the biggest part, `advice` what to do.
    """
    available = available_bytes()
    if needed > available:
        raise CnncError(
            f"not enough memory for {what}: {show_bytes(needed)} needed, {show_bytes(available)} available; "
            f"the largest is {largest}. {advice}"
        )
