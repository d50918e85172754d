"""Memory planning: every activation gets an offset in one arena, reused once it is dead.

The schedule is a list of kernels (fused groups, or single nodes), each reading
some values and writing others. A value lives from the kernel that writes it to
the last kernel that reads it (graph outputs and gradients to the end). Walking
the schedule in order, each kernel's outputs are placed first-fit into the free
space of the arena (the arena grows when nothing fits), then the values it read
for the last time are freed; a kernel that may write in place (an elementwise
loop) takes over the block of an input it reads for the last time. Like TVM's
graph planner, but by offsets rather than by size classes, so freed blocks split
and merge. The planned peak is known before anything runs.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from ..graph import Graph
from .schedule import is_elementwise, kept, materialized, views

ALIGN = 64  # bytes: a cache line


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass
class Kernel:
    """One scheduled kernel as the planner sees it."""

    name: str
    reads: list[str]
    writes: list[str]
    in_place: tuple[str, str] | None = None  # (output, input) that may share a buffer


@dataclass
class MemoryPlan:
    offsets: dict[str, int]  # value -> byte offset in the arena
    sizes: dict[str, int]  # value -> bytes
    arena_bytes: int  # the planned peak
    unplanned_bytes: int  # every value in its own buffer
    shared: dict[str, str] = field(default_factory=dict)  # output -> input whose block it took over


class _Arena:
    """Free space as sorted, merged (offset, size) blocks; the end grows on demand."""

    def __init__(self):
        self.free: list[tuple[int, int]] = []
        self.end = 0

    def allocate(self, size: int) -> int:
        for k, (offset, room) in enumerate(self.free):
            if room >= size:
                if room == size:
                    del self.free[k]
                else:
                    self.free[k] = (offset + size, room - size)
                return offset
        if self.free and self.free[-1][0] + self.free[-1][1] == self.end:
            offset, room = self.free.pop()  # extend the last free block
            self.end = offset + size
            return offset
        offset = self.end
        self.end += size
        return offset

    def release(self, offset: int, size: int) -> None:
        k = bisect.bisect(self.free, (offset, size))
        self.free.insert(k, (offset, size))
        # Merge with the neighbours.
        if k + 1 < len(self.free) and offset + size == self.free[k + 1][0]:
            self.free[k] = (offset, size + self.free[k + 1][1])
            del self.free[k + 1]
        if k > 0 and self.free[k - 1][0] + self.free[k - 1][1] == offset:
            self.free[k - 1] = (self.free[k - 1][0], self.free[k - 1][1] + self.free[k][1])
            del self.free[k]


def plan_memory(kernels: list[Kernel], sizes: dict[str, int], inputs: list[str], keep: set[str], reuse: bool = True) -> MemoryPlan:
    """Offsets for every value in `sizes`.

    inputs: values present before the first kernel (fed by the caller).
    keep:   values that must survive the last kernel (outputs, gradients read by the caller).
    reuse:  False gives every value its own block (to debug a kernel that reads a dead value).
    """
    if not reuse:
        keep = set(sizes)
    last_use: dict[str, int] = {}
    for step, kernel in enumerate(kernels):
        for name in kernel.reads:
            last_use[name] = step
    end = len(kernels)
    for name in keep:
        last_use[name] = end
    arena = _Arena()
    offsets: dict[str, int] = {}
    shared: dict[str, str] = {}
    taken_over: set[str] = set()  # shared.values(), for constant-time lookups
    padded = {name: _aligned(size) for name, size in sizes.items()}
    for name in inputs:
        if name in sizes:
            offsets[name] = arena.allocate(padded[name])
    for step, kernel in enumerate(kernels):
        target, src = kernel.in_place or (None, None)
        for name in kernel.writes:
            if name in sizes and name not in offsets and name != target:
                offsets[name] = arena.allocate(padded[name])
        dying = [n for n in dict.fromkeys(kernel.reads) if last_use.get(n) == step and n in offsets]
        if target in sizes and target not in offsets:
            # An elementwise pass may write over an input it reads for the last time.
            if src in dying and padded[src] == padded[target] and src not in taken_over:
                offsets[target] = offsets[src]
                shared[target] = src
                taken_over.add(src)
                dying.remove(src)
            else:
                offsets[target] = arena.allocate(padded[target])
        for name in dying:
            arena.release(offsets[name], padded[name])
        # A value written and never read dies at once (it still needed room while written).
        for name in kernel.writes:
            if name in offsets and name not in last_use and name not in taken_over:
                arena.release(offsets[name], padded[name])
    return MemoryPlan(offsets, dict(sizes), arena.end, sum(padded.values()), shared)


def value_bytes(graph: Graph, name: str, batch: int, float_itemsize: int) -> int:
    t = graph[name].type
    itemsize = float_itemsize if t.dtype.startswith("float") else t.itemsize
    n = 1
    for d in t.concrete(batch):
        n *= d
    return max(n, 1) * itemsize


def kernels(schedule, kept_values: set[str] | None = None) -> list[Kernel]:
    """The planner's view of a schedule: what each kernel reads and writes (views read their source).

    `kept_values`: `kept(graph)`, when the caller has it.
    """
    graph, groups = schedule.graph, schedule.groups
    alias = views(graph, groups)
    kept_values = kept(graph) if kept_values is None else kept_values
    out = []
    for group in groups:
        if group.kind == "view":
            continue
        members = set(group.nodes)
        outputs = group.outputs or materialized(graph, group, kept_values)
        reads = [alias.get(i, i) for name in group.nodes for i in graph[name].inputs if i not in members]
        if group.kind == "batchnorm":
            reads += [graph[group.tail].inputs[0]]
        in_place = None
        if group.kind in ("elementwise", "single") and is_elementwise(graph, group.end):
            first = graph[group.nodes[0]].inputs
            if first and first[0] not in members and graph[first[0]].op.computed:
                in_place = (group.end, first[0])
        elif group.kind == "batchnorm":  # the normalizing pass reads x[i], then writes o[i]
            in_place = (group.end, graph[group.tail].inputs[0])
        out.append(Kernel(group.name, reads, outputs, in_place))
    return out


def plan_schedule(schedule, batch: int, float_itemsize: int, exclude: set[str] = frozenset(), reuse: bool = True) -> MemoryPlan:
    """The memory plan of a schedule at one batch size (values in `exclude` live elsewhere, e.g. the gradient arena)."""
    graph = schedule.graph
    ks = kernels(schedule)
    sizes = {}
    for k in ks:
        for name in k.writes:
            if name not in exclude:
                sizes[name] = value_bytes(graph, name, batch, float_itemsize)
    inputs = [n for n in graph.inputs.values()]
    for name in inputs:
        sizes[name] = value_bytes(graph, name, batch, float_itemsize)
    alias = schedule.views()
    keep = {alias.get(n, n) for n in set(graph.outputs.values()) | set(graph.input_grads.values())}
    return plan_memory(ks, sizes, inputs, keep, reuse)
