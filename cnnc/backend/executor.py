"""Runs a graph at one batch size on a device: buffers allocated once, then a flat list of kernel calls.

Building an Executor lowers every group of the schedule (cnnc.backend.lowering),
compiles or loads each kernel through the device, and binds each call's
arguments to preallocated buffers, so that `run` is a loop of calls with no
allocation and no per-op decisions. A device (cnnc.backend.cpu.device,
cnnc.backend.cuda.device) says where buffers live and how kernels are made.
"""

from __future__ import annotations

import dataclasses
import math
import os
import zlib
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .. import budget
from ..errors import CnncError
from ..graph import TensorType
from ..kernels import Epilogue, Fused, In, Kernel, NodeParam, Out, Pack, Param, Rng, Scratch, Slots, Training, Value
from ..layout import physical_shape, to_logical, to_physical
from ..ops.base import IndexRange
from ..passes.schedule import Schedule
from .lowering import Target, lower_group


@dataclass
class RuntimeState:
    """What kernels share across calls: the mode flag and the random-number counter."""

    seed: int = 0
    training: np.ndarray = field(default_factory=lambda: np.ones(1, dtype=np.int64))
    step: int = 0

    def rng_array(self, key: str) -> np.ndarray:
        return np.array([self.seed, 0, zlib.crc32(key.encode())], dtype=np.uint64)


class Device(Protocol):
    """Where an executor's buffers live and how its kernels are made."""

    name: str
    target: Target  # how groups are lowered for it
    slots: int  # thread slots of its parallel loops (cnnc.kernels.Slots)

    def empty(self, shape, dtype): ...  # an uninitialized buffer
    def constant(self, array: np.ndarray): ...  # a buffer holding this host array
    def load(self, kernel: Kernel, float_dtype: np.dtype): ...  # the callable entry of a kernel
    def fused(self, chain, hole: str, operands: tuple, float_dtype: np.dtype): ...  # the argument a chain is passed as
    def prepare(self, prepared: list) -> None: ...  # compile every (kernel, fn, args) now, if the device can
    def upload(self, host: np.ndarray, buffer) -> None: ...
    def download(self, buffer) -> np.ndarray: ...


def _flat_specs(args, epilogue=None):
    for arg in args:
        if isinstance(arg, Pack):
            yield from _flat_specs(arg.items, epilogue)
        elif isinstance(arg, Epilogue) and epilogue is not None:
            yield from _flat_specs(epilogue.operands)
        elif isinstance(arg, Fused):
            yield from _flat_specs(arg.operands.items)
        else:
            yield arg


def buffer_dtype(t: TensorType, float_dtype: np.dtype) -> np.dtype:
    return float_dtype if t.dtype.startswith("float") else np.dtype(t.dtype)


def index_checks(schedule: Schedule) -> dict[str, list[tuple[IndexRange, str]]]:
    """Input name -> the ranges its values must lie in, from every node that indexes memory with it
    (directly or through a view). Kernels also refuse bad indices, but can only answer NaN."""
    graph = schedule.graph
    alias = schedule.views()
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


class Executor:
    """The kernels of a schedule (cnnc.passes.schedule.Schedule) at one batch size, with their buffers."""

    def __init__(
        self,
        schedule: Schedule,
        batch: int,
        params: dict[str, np.ndarray],
        state: RuntimeState,
        float_dtype=np.float32,
        outputs: dict[str, np.ndarray] | None = None,
        device=None,
        reuse: bool | None = None,
    ):
        """`outputs` maps node names to arrays to write into (e.g. gradients into the gradient arena);
        `device` is where buffers live and kernels run (the CPU by default);
        `reuse=False` keeps every value in its own buffer (to find where a value went wrong)."""
        if device is None:
            from .cpu.device import CpuDevice

            device = CpuDevice()
        self.device = device
        self.schedule = schedule
        self.graph = graph = schedule.graph
        self.batch = batch
        self.state = state
        self.float_dtype = np.dtype(float_dtype)
        outputs = outputs or {}
        groups = schedule.groups
        # CNNC_NO_REUSE=1 keeps every value in its own buffer, to tell a planning bug from a kernel bug.
        if reuse is None:
            reuse = os.environ.get("CNNC_NO_REUSE") != "1"
        self.plan = schedule.plan(batch, self.float_dtype.itemsize, exclude=set(outputs), reuse=reuse)
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
            if node.op.constant:
                buffer = np.empty(physical_shape(node.type, batch), buffer_dtype(node.type, self.float_dtype))
                buffer[...] = node.attrs["value"]
                self.buffers[node.name] = device.constant(buffer)
        for name, src in schedule.views().items():
            self.buffers[name] = self.buffers[src].reshape(physical_shape(graph[name].type, batch))
        self.index_checks = index_checks(schedule)
        self._rng: dict[str, np.ndarray] = {}
        target = dataclasses.replace(device.target, batch=batch)  # kernels may be chosen by the batch
        lowered = [lower_group(graph, g, target) for g in groups if g.kind != "view"]
        scratch_bytes = 0
        for low in lowered:
            for arg in _flat_specs(low.kernel.args, low.kernel.epilogue):
                if isinstance(arg, Scratch):
                    scratch_bytes = max(scratch_bytes, self._scratch_size(arg) * self._scratch_dtype(arg).itemsize)
        self._scratch = device.empty(max(scratch_bytes, 8) // 8 + 1, np.float64)
        self.steps = []
        self._operands: list[tuple] = []  # every fused chain's operands (see _fused)
        prepared = []
        for low in lowered:
            fn = device.load(low.kernel, self.float_dtype)
            epilogue = low.kernel.epilogue
            args = tuple(self._resolve(arg, low.owner, low.out, params, epilogue) for arg in low.kernel.args)
            prepared.append((low.kernel, fn, args))
            self.steps.append((low.group.name, fn, args))
        device.prepare(prepared)

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

    def _scratch_size(self, arg: Scratch) -> int:
        return math.prod(arg.shape) + arg.per_slot * self.device.slots

    def _scratch_dtype(self, arg: Scratch) -> np.dtype:
        # "float32", the default, stands for the model's float type; other dtypes are taken as they are.
        return self.float_dtype if arg.dtype == "float32" else np.dtype(arg.dtype)

    def _resolve(self, arg, owner: str, out: str, params, epilogue=None):
        node = self.graph[owner]
        if isinstance(arg, In):
            buffer = self.buffers[node.inputs[arg.index]]
            return buffer.reshape(buffer.size) if arg.flat else buffer
        if isinstance(arg, Out):
            buffer = self.buffers[out]
            return buffer.reshape(buffer.size) if arg.flat else buffer
        if isinstance(arg, Value):
            buffer = self.buffers[arg.node]
            return buffer.reshape(buffer.size) if arg.flat else buffer
        if isinstance(arg, (Param, NodeParam)):
            holder = self.graph[arg.node] if isinstance(arg, NodeParam) else node
            full = holder.params.get(arg.name)
            if full is None:
                raise KeyError(f"{holder.name} has no parameter {arg.name}")
            return params[full]
        if isinstance(arg, Pack):
            return tuple(self._resolve(a, owner, out, params, epilogue) for a in arg.items)
        if isinstance(arg, Epilogue):
            operands = tuple(self._resolve(a, owner, out, params) for a in (epilogue.operands if epilogue else ()))
            return self._fused(epilogue, "_epilogue", operands)
        if isinstance(arg, Fused):
            return self._fused(arg.chain, arg.hole, tuple(self._resolve(a, owner, out, params) for a in arg.operands.items))
        if isinstance(arg, Training):
            return self.state.training
        if isinstance(arg, Rng):
            key = node.attrs.get("rng_key", node.name)
            if key not in self._rng:
                self._rng[key] = self.state.rng_array(key)
            return self._rng[key]
        if isinstance(arg, Scratch):
            dtype = self._scratch_dtype(arg)
            size = self._scratch_size(arg)
            shape = (size,) if arg.per_slot else arg.shape
            return self._scratch.view(dtype)[:size].reshape(shape)
        if isinstance(arg, Slots):
            return self.device.slots
        return arg  # a number, passed as it is

    def _fused(self, chain, hole: str, operands: tuple):
        # On the CPU a chain's operands are passed by address: the executor keeps the arrays alive.
        self._operands.append(operands)
        return self.device.fused(chain, hole, operands, self.float_dtype)

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
