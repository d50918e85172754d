"""Kernel templates shared by many ops: elementwise maps and per-row reductions.

An elementwise op gives an expression over `a` (input 0), `b` (input 1) and
named scalars; the template renders the loop around it. The fusion pass can
compose such expressions into one loop.
"""

from __future__ import annotations

from ..backend.cpu.kernel import FLAT_OUT, CpuKernel, In

INPUT_NAMES = tuple("abcdefgh")


def elementwise(name: str, expr: str, inputs: int = 1, **scalars: float) -> CpuKernel:
    """out[i] = expr, over flat buffers of one shape. `name` must be unique per expression."""
    params = [f"x{i}" for i in range(inputs)] + ["out"] + list(scalars)
    loads = "\n".join(f"        {INPUT_NAMES[i]} = x{i}[i]" for i in range(inputs))
    source = f"""
@njit(parallel=True, cache=True)
def {name}({", ".join(params)}):
    for i in prange(out.size):
{loads}
        out[i] = {expr}
"""
    # Flat views: one compile per dtype serves tensors of every rank.
    return CpuKernel(source, name, (*(In(i, flat=True) for i in range(inputs)), FLAT_OUT, *scalars.values()))


def fill_kernel(value: float) -> CpuKernel:
    source = """
@njit(cache=True)
def fill(out, value):
    out[:] = value
"""
    return CpuKernel(source, "fill", (FLAT_OUT, float(value)))
