"""Kernel templates shared by many ops: elementwise maps and per-row reductions.

An elementwise op gives an expression over `a` (input 0), `b` (input 1) and
named scalars; the template renders the loop around it. The fusion pass can
compose such expressions into one loop.
"""

from __future__ import annotations

from ..backend.cpu.kernel import OUT, CpuKernel, In

INPUT_NAMES = tuple("abcdefgh")


def elementwise(name: str, expr: str, inputs: int = 1, **scalars: float) -> CpuKernel:
    """out[i] = expr, over flat buffers of one shape. `name` must be unique per expression."""
    params = [f"x{i}" for i in range(inputs)] + ["out"] + list(scalars)
    loads = "\n".join(f"        {INPUT_NAMES[i]} = f{i}[i]" for i in range(inputs))
    flats = "\n".join(f"    f{i} = x{i}.reshape(-1)" for i in range(inputs))
    source = f"""
@njit(parallel=True, cache=True)
def {name}({", ".join(params)}):
{flats}
    o = out.reshape(-1)
    for i in prange(o.size):
{loads}
        o[i] = {expr}
"""
    return CpuKernel(source, name, (*(In(i) for i in range(inputs)), OUT, *scalars.values()))


def fill_kernel(value: float) -> CpuKernel:
    source = """
@njit(cache=True)
def fill(out, value):
    out.reshape(-1)[:] = value
"""
    return CpuKernel(source, "fill", (OUT, float(value)))
