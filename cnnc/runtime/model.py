"""A compiled model: parameters in one arena, an executor per batch size, gradients and training.

    net = cnnc.compile("lib/lenet.cnn")
    logits = net(x)["logits"]                       # NCHW float32 in, numpy out
    loss, grads = net.grad(x, labels)               # d(loss)/d(every parameter)
    trainer = net.trainer(optimizer=cnnc.optim.SGD(lr=0.05, momentum=0.9))
    trainer.step(x, labels)
"""

from __future__ import annotations

import functools
import math
import numbers
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .. import budget
from ..errors import CnncError
from ..graph import Graph, ParamSpec, TensorType
from ..passes.schedule import Schedule
from . import weights
from .init import initialize
from .losses import LOSSES, seeded_graph, select_outputs, training_graph

# Executors (each holding its batch size's buffers) kept per model, the least recently used dropped
# first: a server or a loader with a ragged last batch must not grow without bound.
MAX_EXECUTORS = 8


def serialized(method):
    """Run the method under the model's lock: one compiled model shares its buffers, its mode and its
    arenas between calls, so calls from several threads take turns (each gets correct results)."""

    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return locked


def _check_parameter_memory(specs: list[ParamSpec], itemsize: int) -> None:
    """Parameters, their gradients and buffers must fit before a byte is allocated."""
    per_layer: dict[str, int] = {}
    total = 0
    for s in specs:
        size = s.size * itemsize * (2 if s.trains else 1)
        total += size
        layer = s.name.rpartition(".")[0] or s.name
        per_layer[layer] = per_layer.get(layer, 0) + s.size
    if not per_layer:
        return
    layer = max(per_layer, key=per_layer.get)
    budget.require(
        total,
        "the parameters (with their gradients) and buffers",
        f"layer {layer} with {per_layer[layer]:,} parameters ({budget.show_bytes(per_layer[layer] * itemsize)})",
        "Use a smaller model.",
    )


def _arena(specs, dtype) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One contiguous array holding every tensor, and a named view of each."""
    total = sum(s.size for s in specs)
    arena = np.zeros(total, dtype)
    views, offset = {}, 0
    for s in specs:
        views[s.name] = arena[offset : offset + s.size].reshape(s.shape)
        offset += s.size
    return arena, views


class Model:
    """A network compiled for a target. Created by `cnnc.compile`."""

    def __init__(self, graph: Graph, target: str = "cpu", dtype: str = "float32", seed: int = 0, fuse: bool = True):
        from ..backend.executor import RuntimeState

        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**63:
            raise CnncError(f"seed must be an integer from 0 to 2^63 - 1, got {seed!r}")
        seed = int(seed)
        if target not in ("cpu", "cuda"):
            raise CnncError(f"unknown target '{target}'; the targets are 'cpu' and 'cuda'")
        if target == "cuda":
            from ..backend.cuda import require

            require()
        if dtype not in ("float32", "float64"):
            raise CnncError(f"dtype must be float32 or float64, got {dtype}")
        self.graph = graph
        self.fuse = fuse  # False: every node its own kernel (to compare against)
        self.target = target
        self.dtype = np.dtype(dtype)
        # Parameters that train have a gradient and an optimizer's state beside them; the rest (frozen
        # parameters, buffers, constants) share a second arena.
        param_specs = [s for s in graph.params.values() if s.trains]
        buffer_specs = [s for s in graph.params.values() if not s.trains]
        _check_parameter_memory(list(graph.params.values()), self.dtype.itemsize)
        self._lock = threading.RLock()
        self._param_arena, self._params = _arena(param_specs, self.dtype)
        self._grad_arena, self._grads = _arena(param_specs, self.dtype)
        self._buffer_arena, self._buffers = _arena(buffer_specs, self.dtype)
        rng = np.random.default_rng(seed)
        for spec in graph.params.values():
            initialize(spec, (self._params if spec.trains else self._buffers)[spec.name], rng)
        # On the cuda target the arenas live on the device; the host arenas are the API's copy.
        self._device = None
        if target == "cuda":
            from ..backend.cuda.device import DeviceArenas

            self._device = DeviceArenas(self._host_arenas(), {"params": param_specs, "grads": param_specs, "buffers": buffer_specs})
        self._host_stale = False  # the device holds newer values than the host arenas
        self._device_stale = False  # the host arenas may hold newer values than the device
        self._state = RuntimeState(seed=seed)
        self._batchnorms = [  # (node, values per channel in one example)
            (node, node.type.sample_elements() // node.type.shape[1]) for node in graph.nodes() if node.op.batch_statistics
        ]
        self._executors: OrderedDict[tuple, Any] = OrderedDict()  # least recently used first
        self._graphs: dict[tuple, tuple[Graph, dict]] = {}

    # -- where the values live ---------------------------------------------------
    def _host_arenas(self) -> dict[str, np.ndarray]:
        return {"params": self._param_arena, "grads": self._grad_arena, "buffers": self._buffer_arena}

    def _pull(self) -> None:
        """Bring the host arenas up to date with the device (cuda target)."""
        if self._device is not None and self._host_stale:
            self._device.pull(self._host_arenas())
            self._host_stale = False

    def _push(self) -> None:
        """Bring the device up to date with the host arenas before a run (cuda target)."""
        if self._device is not None and self._device_stale:
            self._device.push(self._host_arenas())
            self._device_stale = False

    def _values(self, kinds: tuple[str, ...]) -> dict[str, np.ndarray]:
        """The arrays of the parameters and buffers of these kinds, in definition order, for the API to read
        and write (on the cuda target, copied from the device; writes reach the device before the next run)."""
        self._pull()
        self._device_stale = self._device is not None
        return {name: self._value(name) for name, spec in self.graph.params.items() if spec.kind in kinds}

    def _value(self, name: str) -> np.ndarray:
        """The host array of one parameter, buffer or constant (the caller pulls and marks the device stale)."""
        return self._params[name] if name in self._params else self._buffers[name]

    @property
    def params(self) -> dict[str, np.ndarray]:
        """Every parameter by name, frozen ones too, as numpy arrays (on the cuda target, copied from the
        device; writes into them reach the device before the next run)."""
        return self._values(("param", "frozen"))

    @property
    def trainable(self) -> list[str]:
        """The names of the parameters that train (not `frozen=true`)."""
        return list(self._params)

    @property
    def buffers(self) -> dict[str, np.ndarray]:
        """Every buffer (batchnorm's running statistics) by name, as numpy arrays (see `params`)."""
        return self._values(("buffer",))

    def _run(self, ex) -> None:
        self._push()
        self._state.step += 1
        for grad in ex.unreached_grads:
            grad[...] = 0
        ex.run()
        self._host_stale = self._device is not None

    # -- modes ------------------------------------------------------------
    @property
    def training(self) -> bool:
        return bool(self._state.training[0])

    @serialized
    def train(self) -> Model:
        """Training mode: batchnorm uses batch statistics and updates its running averages; dropout drops."""
        self._state.training[0] = 1
        return self

    @serialized
    def eval(self) -> Model:
        """Evaluation mode: batchnorm uses its running averages; dropout is the identity."""
        self._state.training[0] = 0
        return self

    # -- inputs -------------------------------------------------------------
    def _check_inputs(self, args: tuple, kwargs: dict, graph: Graph | None = None) -> tuple[int, dict[str, np.ndarray]]:
        """The checked arrays of the network's inputs that `graph` (default: the whole network) reads;
        inputs given but not read (they feed only outputs not asked for) are ignored."""
        names = list(self.graph.inputs)
        needed = [n for n in (graph or self.graph).inputs if n in self.graph.inputs]  # not a seed or a target
        if len(args) > len(names):
            raise CnncError(f"the network takes {len(names)} input(s) ({', '.join(names)}), got {len(args)}")
        given = dict(zip(names, args))
        for key, value in kwargs.items():
            if key not in names:
                from ..errors import closest

                raise CnncError(f"the network has no input '{key}'{closest(key, names)}; its inputs are {', '.join(names)}")
            given[key] = value
        missing = [n for n in needed if n not in given]
        if missing:
            raise CnncError(f"missing input(s): {', '.join(missing)}")
        return self._check_arrays(given, {n: self.graph.input_types()[n] for n in needed})

    def _check_arrays(self, given: dict, types: dict[str, TensorType]) -> tuple[int, dict[str, np.ndarray]]:
        batch = None
        feeds = {}
        for name, t in types.items():
            x = given[name]
            x = _as_array(name, x)
            expected = "[N" + "".join(f", {d}" for d in t.sample_shape) + "]"
            if x.ndim != t.rank or tuple(x.shape[1:]) != t.sample_shape:
                raise CnncError(f"input '{name}' has shape {list(x.shape)}; the network expects {expected}")
            if batch is None:
                batch = x.shape[0]
            elif x.shape[0] != batch:
                raise CnncError(f"input '{name}' has batch size {x.shape[0]}, other inputs {batch}")
            if t.dtype.startswith("float"):
                if x.dtype != self.dtype:
                    raise CnncError(
                        f"input '{name}' has dtype {x.dtype}; the model takes {self.dtype} "
                        f"(convert with x.astype(np.{self.dtype}))"
                    )
                if not np.isfinite(x).all():
                    where = tuple(int(i) for i in np.argwhere(~np.isfinite(x))[0])
                    raise CnncError(f"input '{name}' holds NaN or infinity (first at index {list(where)})")
            elif x.dtype.kind not in "iu":
                raise CnncError(f"input '{name}' must hold integers (labels), got dtype {x.dtype}")
            feeds[name] = x
        if not batch:
            raise CnncError("the batch is empty")
        return batch, feeds

    # -- running --------------------------------------------------------------
    def _check_batch_statistics(self, batch: int) -> None:
        """Batch statistics need two or more values per channel (PyTorch refuses one, too)."""
        if not self.training:
            return
        for node, per_example in self._batchnorms:
            if batch * per_example < 2:
                raise CnncError(
                    f"batchnorm {node.name} needs more than one value per channel in training mode; "
                    f"a batch of {batch} gives one (use a larger batch, or net.eval())"
                )

    def _nonfinite_parameter(self) -> str | None:
        """The first parameter or buffer holding NaN or infinity, or None."""
        self._pull()
        for name, array in {**self._params, **self._buffers}.items():
            if not np.isfinite(array).all():
                return name
        return None

    def _nonfinite_gradient(self, names: tuple[str, ...] | None = None) -> str | None:
        """The first parameter (of `names`, default all that train) whose gradient holds NaN or infinity,
        or None (one parallel pass over the gradient arena when all are finite)."""
        views = self._grads if names is None else {name: self._grads[name] for name in names}
        return self._first_nonfinite(self._grad_arena, views)

    def _first_nonfinite(self, arena: np.ndarray, views: dict[str, np.ndarray]) -> str | None:
        from .optim import all_finite

        if self._device is not None:
            return None  # reading the arenas back from the GPU every step would cost more than it saves
        if all_finite(arena):
            return None
        return next((name for name, v in views.items() if not np.isfinite(v).all()), None)

    def _first_nonfinite_layer(self, kind: tuple, batch: int, feeds: dict[str, np.ndarray]) -> str | None:
        """Rerun a run with every value in its own buffer and name the first, in schedule order, that
        holds NaN or infinity (as `layer NAME (file:line:col)`). CPU only; the model's state is untouched."""
        from ..backend.executor import Executor

        if self._device is not None:
            return None
        schedule = self.scheduled(kind, self.training)
        values = {**self._params, **{name: b.copy() for name, b in self._buffers.items()}}  # batchnorm updates a copy
        ex = Executor(schedule, batch, values, self._state, self.dtype, reuse=False)
        for name, value in feeds.items():
            ex.feed(name, value)
        ex.run()
        for group in schedule.groups:
            for name in group.nodes:
                buffer = ex.buffers.get(name)
                if buffer is not None and buffer.dtype.kind == "f" and not np.isfinite(buffer).all():
                    # A fused kernel keeps its inner values in registers: the culprit may be any member.
                    others = [n for n in group.nodes if n != name]
                    joint = f", computed in one kernel with {', '.join(others)}" if others else ""
                    return _describe_node(schedule.graph[name]) + joint
        return None

    def _executor(self, kind: tuple, batch: int):
        from ..backend.executor import Executor

        self._check_batch_statistics(batch)
        kind = (*kind, self.training)  # each mode has its own specialized graph
        key = (*kind, batch)
        ex = self._executors.get(key)
        if ex is not None:
            self._executors.move_to_end(key)
        else:
            schedule = self.scheduled(kind[:-1], kind[-1])
            if self._device is None:
                params, grads, device = {**self._params, **self._buffers}, self._grads, None
            else:
                from ..backend.cuda.device import CudaDevice

                views = self._device.views
                params, grads, device = {**views["params"], **views["buffers"]}, views["grads"], CudaDevice()
            grad_buffers = {node: grads[name] for name, node in schedule.graph.grads.items()}
            while len(self._executors) >= MAX_EXECUTORS:  # drop the buffers of the least recently used
                self._executors.popitem(last=False)
            ex = Executor(schedule, batch, params, self._state, self.dtype, grad_buffers, device)
            # Parameters asked for that the differentiated value does not depend on: their gradient is zero,
            # written before each run (the arena may hold another run's gradient).
            chosen = kind[-2] if kind[0] != "infer" else ()
            ex.unreached_grads = [grads[name] for name in self._params
                                  if name not in schedule.graph.grads and (chosen is None or name in chosen)]
            self._executors[key] = ex
        return ex

    def _graph_for(self, kind: tuple) -> tuple[Graph, dict]:
        """The graph of a kind of run (not yet optimized):
        ("infer", outputs or None), ("grad", loss, output, inputs, params), ("own", output, inputs, params),
        ("vjp", seeded outputs, inputs, params); `params` None for every parameter that trains."""
        if kind not in self._graphs:
            what, *rest = kind
            if what == "infer":
                (outputs,) = rest
                self._graphs[kind] = (self.graph if outputs is None else select_outputs(self.graph, outputs), {})
            elif what == "own":
                output, wrt, params = rest
                self._graphs[kind] = (training_graph(self.graph, None, output, wrt, params)[0], {})
            elif what == "vjp":
                outputs, wrt, params = rest
                graph, seeds = seeded_graph(self.graph, outputs, wrt, params)
                self._graphs[kind] = (graph, {"seeds": seeds})
            else:
                loss, output, wrt, params = rest
                graph, target, loss_node = training_graph(self.graph, loss, output, wrt, params)
                self._graphs[kind] = (graph, {"target": target, "loss": loss_node})
        return self._graphs[kind]

    def scheduled(self, kind: tuple, training: bool) -> Schedule:
        """The schedule of a kind of run in one mode (cached)."""
        from ..passes.pipeline import optimize

        key = ("scheduled", *kind, training)
        if key not in self._graphs:
            self._graphs[key] = (optimize(self._graph_for(kind)[0], training, self.fuse), {})
        return self._graphs[key][0]

    @serialized
    def __call__(self, *args, outputs: str | list[str] | None = None, update_stats: bool = True, **kwargs):
        """Run the network: NCHW arrays in (positionally or by input name), numpy out.

        Returns an array, or a dict of arrays when the network has several outputs. `outputs` names the
        outputs to compute (a name: that array; a list: a dict of them): only what they need runs, and
        inputs that feed only other outputs may be left out. `update_stats=False` leaves batchnorm's
        running statistics as they were (a forward in training mode that changes no state).
        """
        selected = self._output_names(outputs)
        kind = ("infer", selected)
        graph, _ = self._graph_for(kind)
        batch, feeds = self._check_inputs(args, kwargs, graph)
        ex = self._executor(kind, batch)
        for name, x in feeds.items():
            ex.feed(name, x)
        with self._statistics_kept(not update_stats):
            self._run(ex)
        outs = {name: ex.fetch(node) for name, node in ex.graph.outputs.items()}  # the optimized graph's nodes
        if isinstance(outputs, str):
            return outs[outputs]
        if outputs is None and len(outs) == 1:
            return next(iter(outs.values()))
        return outs

    def _output_names(self, outputs) -> tuple[str, ...] | None:
        """The outputs a call asks for (None: all of them), checked."""
        if outputs is None:
            return None
        names = (outputs,) if isinstance(outputs, str) else tuple(outputs)
        if not names:
            raise CnncError("outputs= names no output; leave it out to compute them all")
        for name in names:
            if name not in self.graph.outputs:
                from ..errors import closest

                raise CnncError(f"the network has no output {name!r}{closest(str(name), self.graph.outputs)}; "
                                f"its outputs are {', '.join(self.graph.outputs)}")
        return tuple(dict.fromkeys(names))

    @contextmanager
    def _statistics_kept(self, keep: bool) -> Iterator[None]:
        """Run the body, then put the buffers (batchnorm's running statistics) back as they were."""
        if not keep or not self._batchnorms or not self.training:
            yield
            return
        if self._device is None:
            saved = self._buffer_arena.copy()
            try:
                yield
            finally:
                self._buffer_arena[...] = saved
        else:
            self._push()
            saved = self._device.snapshot("buffers")
            try:
                yield
            finally:
                self._device.restore("buffers", saved)

    def _feeds(self, x, target, kind: tuple) -> tuple[int, dict[str, np.ndarray]]:
        """The checked arrays of a run with an attached loss (`kind`): the inputs and the target."""
        inputs = x if isinstance(x, dict) else {next(iter(self.graph.inputs)): x}
        batch, feeds = self._check_inputs((), inputs)
        graph, info = self._graph_for(kind)
        name = info["target"]
        tbatch, tfeed = self._check_arrays({name: target}, {name: graph.input_types()[name]})
        if tbatch != batch:
            raise CnncError(f"the target has batch size {tbatch}, the input {batch}")
        return batch, {**feeds, **tfeed}

    def _backward(self, x, target, loss: str | None, output: str | None, wrt: tuple[str, ...], params: tuple[str, ...] | None = None):
        if loss is None:
            return self._backward_own_loss(x, output, wrt, params)
        if loss not in LOSSES:
            from ..errors import closest

            raise CnncError(f"unknown loss '{loss}'{closest(loss, LOSSES)}; the losses are {', '.join(LOSSES)}")
        kind = ("grad", loss, output, tuple(wrt), params)
        batch, feeds = self._feeds(x, target, kind)
        ex = self._executor(kind, batch)
        for name, value in feeds.items():
            ex.feed(name, value)
        self._run(ex)
        graph, info = self._graph_for(kind)
        return ex, graph, float(ex.device.download(ex.buffers[info["loss"]])[0])

    def _backward_own_loss(self, x, output: str | None, wrt: tuple[str, ...], params: tuple[str, ...] | None):
        """Differentiate a scalar output that the network computes itself (e.g. `output loss = mse(y, t)`)."""
        scalars = [name for name, t in self.graph.output_types().items() if t.rank == 0]
        if output is None:
            if len(scalars) != 1:
                raise CnncError(f"loss=None needs exactly one scalar output, the network has {len(scalars)}; name one with output=")
            output = scalars[0]
        elif output not in scalars:
            raise CnncError(f"output '{output}' is not a scalar, so it cannot be differentiated as a loss")
        kind = ("own", output, tuple(wrt), params)
        graph, _ = self._graph_for(kind)
        batch, feeds = self._check_inputs((), self._input_dict(x), graph)
        ex = self._executor(kind, batch)
        for name, value in feeds.items():
            ex.feed(name, value)
        self._run(ex)
        return ex, graph, float(ex.device.download(ex.buffers[ex.graph.outputs[output]])[0])

    def _input_dict(self, x) -> dict:
        """`x` as {input name: array}: a dict as it is, an array as the network's first input."""
        return x if isinstance(x, dict) else {next(iter(self.graph.inputs)): x}

    @serialized
    def grad(self, x, target=None, loss: str | None = "cross_entropy", inputs: bool | list[str] = False, output: str | None = None,
             params: bool | list[str] = True):
        """The loss and its gradients: (loss, {parameter name: gradient, input name: gradient, ...}).

        `x` is an array (a network with one input) or a dict of input arrays.
        `loss` is applied to `output` (default: `logits`, else the first output)
        against `target`; with `loss=None` the network's own scalar output is the
        loss. `inputs=True` (or a list of input names) adds the inputs' gradients.
        `params`: the parameters whose gradients are computed: True (every one that
        trains), False (none: e.g. only an input's gradient) or a list of names.
        """
        wrt = self._gradient_inputs(inputs)
        chosen = self._chosen_params(params)
        ex, graph, value = self._backward(x, target, loss, output, wrt, chosen)
        return value, self._collect_grads(ex, wrt, chosen)

    @serialized
    def vjp(self, x, seeds: Mapping[str, Any], inputs: bool | list[str] = False, params: bool | list[str] = True) -> dict[str, np.ndarray]:
        """A seeded backward: the gradients of the parameters (and inputs) when the gradients of some
        outputs are given, {output name: array shaped like it} (a vector-Jacobian product, summed over
        the seeded outputs). With another network's input gradient as the seed, one network's backward
        drives another's (a GAN's generator step). `inputs` and `params` as in `grad`.
        """
        if not isinstance(seeds, Mapping) or not seeds:
            raise CnncError("seeds must map one or more output names to their gradients, e.g. {'image': dimage}")
        outputs = self._output_names(list(seeds))
        wrt = self._gradient_inputs(inputs)
        chosen = self._chosen_params(params)
        kind = ("vjp", outputs, wrt, chosen)
        graph, info = self._graph_for(kind)
        batch, feeds = self._check_inputs((), self._input_dict(x), graph)
        types = graph.input_types()
        seed_batch, seed_feeds = self._check_arrays(
            {info["seeds"][name]: seeds[name] for name in outputs}, {info["seeds"][name]: types[info["seeds"][name]] for name in outputs})
        if seed_batch != batch:
            raise CnncError(f"the seeds have batch size {seed_batch}, the inputs {batch}")
        ex = self._executor(kind, batch)
        for name, value in {**feeds, **seed_feeds}.items():
            ex.feed(name, value)
        self._run(ex)
        return self._collect_grads(ex, wrt, chosen)

    def _collect_grads(self, ex, wrt: tuple[str, ...], chosen: tuple[str, ...] | None) -> dict[str, np.ndarray]:
        self._pull()
        grads = {name: self._grads[name].copy() for name in (self._params if chosen is None else chosen)}
        for name in wrt:
            grads[name] = ex.fetch(ex.graph.input_grads[name])
        return grads

    def _chosen_params(self, params) -> tuple[str, ...] | None:
        """The parameters `params=` asks gradients for: None for every one that trains, else their names."""
        if params is True or params is None:
            return None
        if params is False:
            return ()
        names = (params,) if isinstance(params, str) else tuple(params)
        for name in names:
            if name in self._params:
                continue
            spec = self.graph.params.get(name)
            if spec is not None:
                raise CnncError(f"{name} does not train (it is a {'frozen parameter' if spec.kind == 'frozen' else spec.kind}), so it has no gradient")
            from ..errors import closest

            raise CnncError(f"the network has no parameter {name!r}{closest(str(name), self._params)}")
        return tuple(name for name in self._params if name in names)  # definition order, once each

    def _gradient_inputs(self, inputs) -> tuple[str, ...]:
        """The input names `grad(..., inputs=)` asks for: True for all, a name, or a list of names."""
        if inputs is True:
            return tuple(self.graph.inputs)
        names = (inputs,) if isinstance(inputs, str) else tuple(inputs or ())
        for name in names:
            if name not in self.graph.inputs:
                from ..errors import closest

                raise CnncError(f"the network has no input {name!r}{closest(str(name), self.graph.inputs)}; "
                                f"its inputs are {', '.join(self.graph.inputs)}")
        return names

    def trainer(self, loss: str | None = "cross_entropy", optimizer=None, output: str | None = None, params: bool | list[str] = True) -> Trainer:
        """Training steps with `optimizer` (default SGD) on `params` (default: every parameter that trains;
        or a list of names: the others keep their values)."""
        from .optim import SGD, Optimizer

        if optimizer is not None and not isinstance(optimizer, Optimizer):
            raise CnncError(f"optimizer must be a cnnc.optim optimizer such as cnnc.optim.Adam(), got {optimizer!r}")
        chosen = self._chosen_params(params)
        if chosen == ():
            raise CnncError("a trainer needs parameters to train: params=True or a list of names")
        return Trainer(self, loss, optimizer or SGD(), output, chosen)

    def _segments(self, names: tuple[str, ...] | None) -> list[tuple[int, int]]:
        """The ranges of the parameter arena the parameters `names` (None: all) occupy, adjacent ones merged."""
        ranges, offset = [], 0
        for name, view in self._params.items():
            if names is None or name in names:
                if ranges and ranges[-1][1] == offset:
                    ranges[-1] = (ranges[-1][0], offset + view.size)
                else:
                    ranges.append((offset, offset + view.size))
            offset += view.size
        return ranges

    # -- parameters -------------------------------------------------------------
    @serialized
    def state_dict(self) -> dict[str, np.ndarray]:
        """Every parameter and buffer by name, in definition order (copies)."""
        self._pull()
        return {name: self._value(name).copy() for name in self.graph.saved_params}

    @serialized
    def load_params(self, mapping: Mapping[str, Any], strict: bool = True) -> None:
        """Copy parameters and buffers in by name (a PyTorch state dict works as it is)."""
        weights.assign(self, mapping, strict)

    def save(self, path: str | Path) -> None:
        """Write every parameter and buffer to an .npz file, atomically."""
        weights.save(self.state_dict(), path)

    def load(self, path: str | Path) -> None:
        """Read parameters and buffers written by `save` (every name and shape is checked)."""
        self.load_params(weights.load(path, self.graph.saved_params), strict=True)

    def __repr__(self) -> str:
        return f"<cnnc.Model {self.graph.name} on {self.target}: {self.graph.parameter_count():,} parameters>"


class Trainer:
    """Runs training steps: forward, loss, backward and an optimizer update."""

    def __init__(self, model: Model, loss: str | None, optimizer, output: str | None = None, params: tuple[str, ...] | None = None):
        self.model = model
        self.loss = loss
        self.output = output
        self.optimizer = optimizer
        self.params = params  # the names it trains (None: all that train)
        self.steps = 0  # steps run by this trainer, for messages
        segments = model._segments(params)
        if model._device is None:
            optimizer.bind(model._param_arena, model._grad_arena, segments)
        else:  # parameters, gradients and the optimizer's state stay on the device
            optimizer.bind(model._device.arenas["params"], model._device.arenas["grads"], segments)

    @property
    def _kind(self) -> tuple:
        if self.loss is None:
            return ("own", self.output, (), self.params)
        return ("grad", self.loss, self.output, (), self.params)

    def compile(self, batch: int) -> None:
        """Build (or load from the kernel cache) everything a step at this batch size runs."""
        self.model._executor(self._kind, batch)

    def update(self, *grads: Mapping[str, Any]) -> None:
        """One optimizer step from given gradients ({parameter name: array}, as `grad` and `vjp` return;
        several are summed: gradient accumulation). Every parameter the trainer trains needs one."""
        model = self.model
        names = self.params if self.params is not None else tuple(model._params)
        if not grads:
            raise CnncError("update needs one or more gradient dicts")
        with model._lock:
            model._pull()
            total = {}
            for name in names:
                parts = [g[name] for g in grads if name in g]
                if not parts:
                    raise CnncError(f"no gradient given for parameter {name} (the trainer trains it)")
                expected = model._grads[name].shape
                for part in parts:
                    if np.shape(part) != expected:
                        raise CnncError(f"the gradient of {name} has shape {list(np.shape(part))}; the parameter is {list(expected)}")
                total[name] = np.sum(parts, axis=0) if len(parts) > 1 else np.asarray(parts[0])
                if not np.isfinite(total[name]).all():
                    raise CnncError(f"update {self.steps + 1}: the gradient of {name} holds NaN or infinity; the parameters are unchanged")
            for name, value in total.items():
                model._grads[name][...] = value
            self.steps += 1
            model._device_stale = model._device is not None
            model._push()
            self._update_parameters(None)

    def _update_parameters(self, loss: float | None) -> None:
        model = self.model
        self.optimizer.step()
        model._host_stale = model._device is not None
        broken = model._first_nonfinite(model._param_arena, model._params)
        if broken is not None:  # finite gradients, yet the update overflowed (a far too large step)
            was = f" (the loss was {loss:.6g})" if loss is not None else ""
            raise CnncError(
                f"training diverged at step {self.steps}: the update made parameter {broken} NaN or infinite{was}; "
                "the parameters are no longer usable: reload saved weights and use a smaller learning rate"
            )

    def step(self, x, y) -> float:
        """One update on the batch (x, y); returns the loss before the update.

        A loss or gradient that is NaN or infinite raises a CnncError saying where it first
        appeared, and the parameters are left as they were before the step.
        """
        model = self.model
        with model._lock:
            was_training = model.training
            model.train()
            try:
                _, _, value = model._backward(x, y, self.loss, self.output, (), self.params)
                self.steps += 1
                self._check_finite(value, x, y)
            finally:
                if not was_training:
                    model.eval()
            model._push()  # the optimizer reads the device's parameters
            self._update_parameters(value)
            return value

    def _check_finite(self, loss: float, x, y) -> None:
        model = self.model
        if math.isfinite(loss):
            bad = model._nonfinite_gradient(self.params)
            if bad is None:
                return
            where = f"the gradient of {bad} holds NaN or infinity (the loss was {loss:.6g})"
        else:
            where = f"the loss is {loss}"
            parameter = model._nonfinite_parameter()
            if parameter is not None:
                where += f"; parameter {parameter} already held NaN or infinity"
            else:
                kind = self._kind
                batch, feeds = model._feeds(x, y, kind) if self.loss is not None else model._check_inputs((), model._input_dict(x))
                layer = model._first_nonfinite_layer(kind, batch, feeds)
                if layer is not None:
                    where += f"; the first value to hold NaN or infinity was computed by {layer}"
        raise CnncError(
            f"training diverged at step {self.steps}: {where}. This step did not change the parameters; "
            "a smaller learning rate may help"
        )


def _as_array(name: str, x) -> np.ndarray:
    """An input as a NumPy array (a torch tensor is converted where NumPy has its dtype)."""
    if hasattr(x, "detach"):  # a torch tensor
        try:
            x = x.detach().cpu().numpy()
        except (TypeError, RuntimeError, NotImplementedError) as e:
            raise CnncError(
                f"input '{name}' is a torch tensor that NumPy cannot hold ({x.dtype}, {x.layout}, on {x.device}): "
                f"{str(e).splitlines()[0]}; convert it, e.g. with x.float().cpu()"
            ) from None
    try:
        return np.asarray(x)
    except (ValueError, TypeError) as e:  # ragged nested lists
        raise CnncError(f"input '{name}' is not an array: {e}") from None


def _describe_node(node) -> str:
    """`layer conv1 (model.cnn:3:5)`; a backward node (named `FORWARD.gradK:OP`) by its forward layer."""
    forward, mark, _ = node.name.partition(".grad")
    what = f"the gradient of layer {forward}" if mark and ":" in node.name else f"layer {node.name}"
    return f"{what} ({node.loc})" if node.loc else what


def compile(
    source, target: str = "cpu", network: str | None = None, dtype: str = "float32", seed: int = 0, fuse: bool = True,
    **hyperparameters,
) -> Model:
    """Compile a network (a path, a library name, program text, or a Graph) into a Model.

    `fuse=False` runs every node as its own kernel, to compare against the optimized graph.
    """
    from ..frontend import load

    if network is not None and not isinstance(network, str):
        raise CnncError(f"network must be the name of a network (a string), got {network!r}")
    graph = source if isinstance(source, Graph) else load(source, network=network, **hyperparameters)
    return Model(graph, target=target, dtype=dtype, seed=seed, fuse=fuse)
