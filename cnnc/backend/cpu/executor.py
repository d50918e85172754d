"""Runs a graph at one batch size: buffers allocated once, then a flat list of kernel calls.

Building an Executor compiles (or loads from the cache) every kernel and binds
each call's arguments to preallocated buffers, so that `run` is a loop of
calls with no allocation and no per-op decisions.
"""

from __future__ import annotations

import math
import os
import zlib
from dataclasses import dataclass, field

import numba
import numpy as np

from ...errors import CnncError
from ...graph import Graph, TensorType
from ...ops.base import IndexRange
from .. import budget
from ..layout import physical_shape, to_logical, to_physical
from . import kernel as k
from .threads import single_threaded_blas


@dataclass
class RuntimeState:
    """What kernels share across calls: the mode flag and the random-number counter."""

    seed: int = 0
    training: np.ndarray = field(default_factory=lambda: np.ones(1, dtype=np.int64))
    step: int = 0

    def rng_array(self, key: str) -> np.ndarray:
        return np.array([self.seed, 0, zlib.crc32(key.encode())], dtype=np.uint64)


def _flat_specs(args):
    for arg in args:
        if isinstance(arg, k.Pack):
            yield from _flat_specs(arg.items)
        else:
            yield arg


def buffer_dtype(t: TensorType, float_dtype: np.dtype) -> np.dtype:
    return float_dtype if t.dtype.startswith("float") else np.dtype(t.dtype)


def index_checks(graph: Graph, groups) -> dict[str, list[tuple[IndexRange, str]]]:
    """Input name -> the ranges its values must lie in, from every node that indexes memory with it
    (directly or through a view). Kernels also refuse bad indices, but can only answer NaN."""
    from ...passes.fuse import views

    alias = views(graph, groups)
    inputs = {node: name for name, node in graph.inputs.items()}
    checks: dict[str, list[tuple[IndexRange, str]]] = {}
    for node in graph.nodes():
        ranges = node.op.index_inputs(node.attrs, *(graph[i].type for i in node.inputs))
        for position, allowed in ranges.items():
            source = alias.get(node.inputs[position], node.inputs[position])
            if source in inputs:
                checks.setdefault(inputs[source], []).append((allowed, node.name))
    return checks


def check_indices(name: str, values: np.ndarray, allowed: IndexRange, reader: str) -> None:
    bad = allowed.invalid(values)
    if bad.any():
        where = [int(i) for i in np.argwhere(bad)[0]]
        value = int(values[tuple(where)])
        also = "".join(f", or {v}" for v in allowed.extra)
        raise CnncError(
            f"{allowed.what} {value} is out of range: the network has {allowed.high} {allowed.meaning} "
            f"({allowed.low} to {allowed.high - 1}{also}); input '{name}' holds it at index {where}, read by {reader}"
        )


class CpuDevice:
    """Where an executor's buffers live and how its kernels are made: host memory and Numba CPU kernels."""

    name = "cpu"

    def empty(self, shape, dtype):
        return np.empty(shape, dtype)

    def constant(self, array: np.ndarray):
        return array

    def lower(self, graph: Graph, group):
        from .lower import lower_group

        return lower_group(graph, group)

    def load(self, kernel):
        return k.load(kernel)

    def prepare(self, fn, args) -> None:
        # Compile now (or load the machine code from Numba's cache), not on the first run.
        fn.compile(tuple(numba.typeof(arg) for arg in args))

    def upload(self, host: np.ndarray, buffer) -> None:
        np.copyto(buffer, host)

    def download(self, buffer) -> np.ndarray:
        return buffer


class Executor:
    """Kernels for a scheduled graph (`graph.groups`, set by the fusion pass or `singles`)."""

    def __init__(
        self,
        graph: Graph,
        batch: int,
        params: dict[str, np.ndarray],
        state: RuntimeState,
        float_dtype=np.float32,
        outputs: dict[str, np.ndarray] | None = None,
        device=None,
        reuse: bool | None = None,
    ):
        """`outputs` maps node names to arrays to write into (e.g. gradients into the gradient arena);
        `device` is where buffers live and kernels run (CpuDevice by default; see cnnc.backend.cuda);
        `reuse=False` keeps every value in its own buffer (to find where a value went wrong)."""
        from ...passes.fuse import plan_groups, singles, views

        self.device = device = device or CpuDevice()
        if device.name == "cpu":
            single_threaded_blas()
        if getattr(graph, "groups", None) is None:
            graph = singles(graph.copy())
        self.graph = graph
        self.batch = batch
        self.state = state
        self.float_dtype = np.dtype(float_dtype)
        outputs = outputs or {}
        groups = graph.groups
        # CNNC_NO_REUSE=1 keeps every value in its own buffer, to tell a planning bug from a kernel bug.
        if reuse is None:
            reuse = os.environ.get("CNNC_NO_REUSE") != "1"
        self.plan = plan_groups(graph, groups, batch, self.float_dtype.itemsize, exclude=set(outputs), reuse=reuse)
        if device.name == "cpu":
            self._check_memory()
        self.arena = device.empty(max(self.plan.arena_bytes, 8), np.uint8)
        self.buffers: dict[str, np.ndarray] = {}
        for name, offset in self.plan.offsets.items():
            self.buffers[name] = self._view(name, offset)
        for name, given in outputs.items():
            node = graph[name]
            shape, dtype = physical_shape(node.type, batch), buffer_dtype(node.type, self.float_dtype)
            assert tuple(given.shape) == shape and given.dtype == dtype, (name, given.shape, shape)
            self.buffers[name] = given
        for node in graph.nodes():  # constants: computed once, here, in buffers of their own
            if node.op.name == "fill":
                buffer = np.empty(physical_shape(node.type, batch), buffer_dtype(node.type, self.float_dtype))
                buffer[...] = node.attrs["value"]
                self.buffers[node.name] = device.constant(buffer)
        for name, src in views(graph, groups).items():
            self.buffers[name] = self.buffers[src].reshape(physical_shape(graph[name].type, batch))
        self.index_checks = index_checks(graph, groups)
        self._rng: dict[str, np.ndarray] = {}
        lowered = [device.lower(graph, g) for g in groups if g.kind != "view"]
        scratch_bytes = 0
        for low in lowered:
            for arg in _flat_specs(low.kernel.args):
                if isinstance(arg, k.Scratch):
                    scratch_bytes = max(scratch_bytes, math.prod(arg.shape) * self._scratch_dtype(arg).itemsize)
        self._scratch = device.empty(max(scratch_bytes, 8) // 8 + 1, np.float64)
        self.steps = []
        for low in lowered:
            fn = device.load(low.kernel)
            args = tuple(self._resolve(arg, low.owner, low.out, params) for arg in low.kernel.args)
            device.prepare(fn, args)
            self.steps.append((low.group.name, fn, args))

    def _check_memory(self) -> None:
        """Refuse a plan larger than the memory left, naming the largest value, before allocating it."""
        sizes = self.plan.sizes
        if not sizes:
            return
        name = max(sizes, key=sizes.get)
        shape = list(self.graph[name].type.concrete(self.batch))
        budget.require(
            self.plan.arena_bytes,
            f"the activations of a batch of {self.batch} (as planned)",
            f"{name} {shape} ({budget.show_bytes(sizes[name])})",
            "Use a smaller batch or smaller inputs.",
        )

    def _view(self, name: str, offset: int) -> np.ndarray:
        node = self.graph[name]
        shape = physical_shape(node.type, self.batch)
        dtype = buffer_dtype(node.type, self.float_dtype)
        count = math.prod(shape)
        return self.arena[offset : offset + count * dtype.itemsize].view(dtype).reshape(shape)

    def _scratch_dtype(self, arg: k.Scratch) -> np.dtype:
        # "float32", the default, stands for the model's float type; other dtypes are taken as they are.
        return self.float_dtype if arg.dtype == "float32" else np.dtype(arg.dtype)

    def _resolve(self, arg, owner: str, out: str, params):
        node = self.graph[owner]
        if isinstance(arg, k.In):
            buffer = self.buffers[node.inputs[arg.index]]
            return buffer.reshape(buffer.size) if arg.flat else buffer
        if isinstance(arg, k.Out):
            buffer = self.buffers[out]
            return buffer.reshape(buffer.size) if arg.flat else buffer
        if isinstance(arg, k.Value):
            buffer = self.buffers[arg.node]
            return buffer.reshape(buffer.size) if arg.flat else buffer
        if isinstance(arg, (k.Param, k.NodeParam)):
            holder = self.graph[arg.node] if isinstance(arg, k.NodeParam) else node
            full = holder.params.get(arg.name)
            if full is None:
                raise KeyError(f"{holder.name} has no parameter {arg.name}")
            return params[full]
        if isinstance(arg, k.Pack):
            return tuple(self._resolve(a, owner, out, params) for a in arg.items)
        if isinstance(arg, k.Training):
            return self.state.training
        if isinstance(arg, k.Rng):
            key = node.attrs.get("rng_key", node.name)
            if key not in self._rng:
                self._rng[key] = self.state.rng_array(key)
            return self._rng[key]
        if isinstance(arg, k.Scratch):
            dtype = self._scratch_dtype(arg)
            size = math.prod(arg.shape)
            return self._scratch.view(dtype)[:size].reshape(arg.shape)
        return arg  # a number, passed as it is

    # -- running --------------------------------------------------------------
    def feed(self, name: str, array: np.ndarray) -> None:
        for allowed, reader in self.index_checks.get(name, ()):
            check_indices(name, array, allowed, reader)
        node = self.graph[self.graph.inputs[name]]
        buffer = self.buffers[node.name]
        if self.device.name == "cpu":
            to_physical(node.type, array, buffer)
        else:  # one transfer: arrange on the host, then copy
            host = np.empty(buffer.shape, buffer.dtype)
            to_physical(node.type, array, host)
            self.device.upload(host, buffer)

    def run(self) -> None:
        for rng in self._rng.values():
            rng[1] = self.state.step
        for _, fn, args in self.steps:
            fn(*args)

    def fetch(self, node_name: str) -> np.ndarray:
        return to_logical(self.graph[node_name].type, self.device.download(self.buffers[node_name]))

    def check_finite(self) -> None:
        """Name the first value that holds NaN or infinity (for debugging a model; values reused later are overwritten)."""
        for name, buffer in self.buffers.items():
            if buffer.dtype.kind == "f" and not np.isfinite(self.device.download(buffer)).all():
                raise CnncError(f"layer {name} produced NaN or infinity")
