"""Kernels: what an op picks to compute it, and the kernel files that hold their source.

An op's `cpu()` / `cuda()` returns a `Kernel`: an entry function of a kernel
file (`cnnc/kernels/<target>/<family>.py`, real Python that linters and editors
read) and the arguments to call it with, as specs that the executor resolves to
buffers (In, Out, Param, ...) or as plain numbers. A backend assembles the
module (cnnc.kernels.source: only the definitions the entry needs, the holes
filled), caches it on disk and compiles it. Nothing here imports Numba.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# -- argument specs: what the executor passes for each kernel argument ------


@dataclass(frozen=True)
class In:
    """The buffer of input `index` (`flat`: as a 1-D view, so one compile serves every rank)."""

    index: int
    flat: bool = False


@dataclass(frozen=True)
class Out:
    """The node's output buffer (`flat`: as a 1-D view)."""

    flat: bool = False


@dataclass(frozen=True)
class Param:
    """A parameter or buffer of the node, by its local name (`weight`, `running_mean`)."""

    name: str


@dataclass(frozen=True)
class Training:
    """A one-element int64 array: 1 in training mode, 0 in evaluation mode."""


@dataclass(frozen=True)
class Rng:
    """A uint64 array [seed, step, node id] for counter-based random numbers (dropout)."""


@dataclass(frozen=True)
class Scratch:
    """A work buffer of this shape, shared by all kernels (they run one at a time).

    Every Scratch argument starts at the same memory: a kernel takes one and splits it itself.
    "float32" means the model's float type (float64 in a float64 model); other dtypes are literal.
    `per_slot` elements more for each thread slot (SLOTS) make a flat buffer of
    shape[0] + per_slot * slots elements.
    """

    shape: tuple[int, ...]
    dtype: str = "float32"
    per_slot: int = 0


@dataclass(frozen=True)
class Slots:
    """The number of thread slots of the device's parallel loops (on the CPU, Numba's thread pool:
    get_thread_id() is below it), for kernels that give each thread its own part of the scratch."""


@dataclass(frozen=True)
class Value:
    """The buffer of any node of the graph, by name (fused kernels read and write several)."""

    node: str
    flat: bool = True


@dataclass(frozen=True)
class NodeParam:
    """A parameter or buffer of a named node, by its local name."""

    node: str
    name: str


@dataclass(frozen=True)
class Pack:
    """A tuple of resolved specs, passed as one argument (a fused epilogue's operands)."""

    items: tuple[Any, ...]


@dataclass(frozen=True)
class Epilogue:
    """The operands of the kernel's epilogue (the fused chain the lowering renders as `_epilogue`), as one tuple."""


@dataclass(frozen=True)
class Fused:
    """A fused chain (cnnc.backend.chain.Chain, or None: no chain) with its operands as specs naming their
    nodes, passed as one argument to the kernel's hole `hole` (`_epilogue` or `_post`): on the CPU as the
    chain's compiled callback and a table of the operands' addresses, on CUDA as the operands (the chain
    is then part of the kernel's source)."""

    chain: Any
    operands: Pack
    hole: str = "_epilogue"


OUT = Out()
FLAT_OUT = Out(flat=True)
TRAINING = Training()
RNG = Rng()
SLOTS = Slots()
EPILOGUE = Epilogue()


@dataclass(frozen=True)
class Kernel:
    """An entry of a kernel file and how to call it.

    family:   the kernel file, `cnnc/kernels/<target>/<family>.py` (the target is the backend's).
    entry:    the function the executor calls, once per run.
    args:     specs above, or numbers passed as they are.
    epilogue: the elementwise chain (cnnc.backend.chain.Chain) the kernel runs on what it writes,
              for kernels that read the hole `_epilogue`; None runs none.
    post:     the chain of a fused batchnorm's normalizing pass (the hole `_post`).
    bind:     (hole, definition) pairs: which function of the files fills a hole of this entry.
    extra:    more (family, entries) pairs the module must hold (what a bound hole calls).
    stage:    a kernel whose entry fills the hole `_stage` (what a fused batchnorm normalizes is
              computed first by it), with its own epilogue and holes.
    """

    family: str
    entry: str
    args: tuple[Any, ...] = ()
    epilogue: Any = None
    post: Any = None
    bind: tuple[tuple[str, str], ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()
    stage: Kernel | None = None
