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


# A loop over `count` items in parallel, per target: the kernel's decorator and its loop header.
PARALLEL_LOOPS = {
    "cpu": ("@njit(parallel=True, cache=True)", "for {index} in prange({count}):"),
    "cuda": ("@cuda.jit(cache=True)", "for {index} in range(cuda.grid(1), {count}, cuda.gridsize(1)):"),
}


def indented(code: str, spaces: int) -> str:
    """A snippet written at column 0, indented to sit inside generated code."""
    return "".join(" " * spaces + line + "\n" for line in code.strip().splitlines())


def parallel_kernel(target: str, name: str, params: str, body: str, index: str, count: str, setup: str = "") -> str:
    """`def name(params)`: `setup`, then `body` for every `index` below `count`, in the target's parallel loop."""
    decorator, loop = PARALLEL_LOOPS[target]
    return (f"{decorator}\ndef {name}({params}):\n{indented(setup, 4) if setup.strip() else ''}"
            f"    {loop.format(index=index, count=count)}\n{indented(body, 8)}")
