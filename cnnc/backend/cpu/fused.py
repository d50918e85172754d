"""CPU rendering of fused groups: a `Chain` as a Numba function over a range of elements.

Every kernel that can host an epilogue (conv, dense, their input gradients, the
global-pool gradient) calls `_epilogue(o, lo, hi, C, e)` on each run of output
elements it has just written, while they are in cache: `o` is its output (flat),
[lo, hi) a run of whole rows of C channels and `e` the chain's operands. The
module of such a kernel is the op's source plus the epilogue rendered here; a
different epilogue is a different module.
"""

from __future__ import annotations

from ..chain import Chain
from .kernel import CpuKernel, Pack

# Elements per prange iteration of a standalone elementwise loop (whole rows).
BLOCK = 1 << 14


def epilogue_source(chain: Chain | None, name: str = "_epilogue", extra: str = "") -> str:
    """`name(o, lo, hi, C, e{extra})` applying the chain to o[lo:hi]."""
    head = f"@njit(cache=True)\ndef {name}(o, lo, hi, C, e{extra}):\n"
    if chain is None or not chain.lines:
        return head + "    return\n"
    loads = "".join(f"    E{k} = e[{k}]\n" for k in range(len(chain.operands)))
    if chain.per_channel:
        loop = "    for p in range(lo, hi, C):\n        for c in range(C):\n            i = p + c\n"
        indent = " " * 12
    else:
        loop = "    for i in range(lo, hi):\n"
        indent = " " * 8
    hoisted = "".join(
        f"    {array} = np.empty(C, o.dtype)\n    for c in range(C):\n        {array}[c] = {code}\n"
        for array, code in chain.hoisted
    )
    body = "".join(f"{indent}{line}\n" for line in chain.lines)
    return head + loads + hoisted + loop + body


# A standalone loop: the chain over every element of `o`, in blocks of whole rows.
LOOP_SOURCE = """
@njit(parallel=True, cache=True)
def fused_loop(o, e, C, block):
    n = o.size
    for b in prange((n + block - 1) // block):
        lo = b * block
        _epilogue(o, lo, min(n, lo + block), C, e)
"""


def loop_block(channels: int) -> int:
    return max(1, BLOCK // channels) * channels


def hosting(source: str, entry: str, epilogue: Chain | None, head: tuple, tail: tuple) -> CpuKernel:
    """A kernel whose source calls `_epilogue`: its arguments are head, the chain's operands, then tail."""
    return CpuKernel(
        source + "\n\n" + epilogue_source(epilogue),
        entry,
        (*head, epilogue.pack() if epilogue else Pack(()), *tail),
    )
