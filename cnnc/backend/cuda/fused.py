"""CUDA rendering of fused groups: a `Chain` as a device function applied per element.

Every kernel that can host an epilogue (conv, dense, their input gradients, the
global-pool gradient) computes each output element's value `acc` and calls
`_epilogue(o, i, c, acc, e)` to store it: `o` is its output (flat), `i` the
element's flat index, `c` its channel and `e` the chain's operands. Without a
chain that is `o[i] = acc`. The chain's lines are the same as on the CPU
(cnnc.backend.chain); here they start from `acc` instead of `o[i]`, and
per-channel terms are computed per thread rather than into arrays.
"""

from __future__ import annotations

from ..chain import Chain
from .kernel import CudaKernel
from ..cpu.kernel import Pack


def epilogue_source(chain: Chain | None, name: str = "_epilogue") -> str:
    """`name(o, i, c, acc, e)`: the chain on one element, or `o[i] = acc` without one."""
    head = f"@cuda.jit(device=True)\ndef {name}(o, i, c, acc, e):\n"
    if chain is None:
        return head + "    o[i] = acc\n"
    if not chain.lines:
        return head + "    return\n"
    loads = "".join(f"    E{k} = e[{k}]\n" for k in range(len(chain.operands)))
    hoisted = "".join(f"    {array} = {code}\n" for array, code in chain.hoisted)
    lines = chain.lines
    for array, _ in chain.hoisted:
        lines = [line.replace(f"{array}[c]", array) for line in lines]
    return head + loads + hoisted + "".join(f"    {line}\n" for line in lines)


# A standalone loop: the chain over every element of `o`, with a grid stride.
LOOP_SOURCE = """
@cuda.jit(cache=True)
def _loop(o, e, C, n):
    start = cuda.grid(1)
    for i in range(start, n, cuda.gridsize(1)):
        _epilogue(o, i, i % C, 0.0, e)


def fused_loop(o, e, C):
    _loop[blocks(o.size), THREADS](o, e, C, o.size)
"""


def hosting(source: str, entry: str, epilogue: Chain | None, head: tuple, tail: tuple) -> CudaKernel:
    """A kernel whose source calls `_epilogue`: its arguments are head, the chain's operands, then tail."""
    return CudaKernel(
        source + "\n\n" + epilogue_source(epilogue),
        entry,
        (*head, epilogue.pack() if epilogue else Pack(()), *tail),
    )
