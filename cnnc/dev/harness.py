"""Run one op family's kernels on chosen shapes: check them against NumPy, time them, print GFLOP/s.

    python -m cnnc.dev conv --shape 32,64,32,32 --channels 64 --kernel 3 --pad 1
    python -m cnnc.dev dense --shape 64,800 --units 500 --backward
    python -m cnnc.dev pool --shape 32,64,32,32 --kernel 2 --mode avg
    python -m cnnc.dev batchnorm --shape 32,64,16,16 --training
    python -m cnnc.dev chain --shape 32,64,16,16 --ops relu,sigmoid,tanh

Each family builds a one-op network (a chain of ops for `chain`), compiles it as
cnnc would (fused, the kernel cache on), checks its output in float64 against a
NumPy reference written here, then times every kernel of the schedule on its own
(the median of --repeats calls after a warm-up) and prints its time, its GFLOP/s
and the machine's measured peak (a float32 GEMM through NumPy's BLAS) beside it.
`--backward` times the kernels of a training step (mse loss against a random
target) instead, and checks its input gradient by a float64 central difference.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# -- NumPy references (float64) --------------------------------------------------------------------


def conv_reference(x, w, b, stride: int, pad: int, groups: int):
    n, c, h, wd = x.shape
    k, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
    og = k // groups
    out = np.concatenate([
        np.einsum("nchwij,kcij->nkhw", windows[:, g * cg:(g + 1) * cg], w[g * og:(g + 1) * og]) for g in range(groups)
    ], axis=1)
    return out + b.reshape(1, -1, 1, 1)


def pool_reference(x, kernel: int, stride: int, mode: str):
    windows = np.lib.stride_tricks.sliding_window_view(x, (kernel, kernel), axis=(2, 3))[:, :, ::stride, ::stride]
    return windows.max(axis=(4, 5)) if mode == "max" else windows.mean(axis=(4, 5))


def batchnorm_reference(x, weight, bias, mean, var, eps: float, training: bool):
    if training:
        mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    shape = (1, -1, 1, 1)
    return (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * weight.reshape(shape) + bias.reshape(shape)


ELEMENTWISE = {
    "relu": lambda v: np.maximum(v, 0.0),
    "sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v)),
    "tanh": np.tanh,
    "leaky_relu": lambda v: np.where(v > 0, v, 0.01 * v),
}


# -- the families ------------------------------------------------------------------------------------


@dataclass
class Case:
    program: str  # a .cnn network of one op (or one chain)
    reference: Callable[[dict, dict], np.ndarray]  # (inputs, state dict) -> the expected output, float64
    training: bool = False  # the mode the forward runs in


def _dims(args, count: int) -> tuple[int, ...]:
    dims = tuple(int(d) for d in args.shape.split(","))
    if len(dims) != count:
        raise SystemExit(f"--shape needs {count} numbers (batch first), got {args.shape}")
    return dims


def conv_case(args) -> Case:
    n, c, h, w = _dims(args, 4)
    program = (f"network conv_case {{\n    input x: [{c}, {h}, {w}]\n    output y = conv({args.channels}, kernel={args.kernel}, "
               f"stride={args.stride}, pad={args.pad}, groups={args.groups})\n}}\n")
    return Case(program, lambda x, p: conv_reference(x["x"], p["conv.weight"], p["conv.bias"], args.stride, args.pad, args.groups))


def dense_case(args) -> Case:
    n, f = _dims(args, 2)
    program = f"network dense_case {{\n    input x: [{f}]\n    output y = dense({args.units})\n}}\n"
    return Case(program, lambda x, p: x["x"] @ p["dense.weight"].T + p["dense.bias"])


def pool_case(args) -> Case:
    n, c, h, w = _dims(args, 4)
    stride = args.stride if args.stride != 1 or args.kernel == 1 else args.kernel
    op = "maxpool" if args.mode == "max" else "avgpool"
    program = f"network pool_case {{\n    input x: [{c}, {h}, {w}]\n    output y = {op}({args.kernel}, stride={stride})\n}}\n"
    return Case(program, lambda x, p: pool_reference(x["x"], args.kernel, stride, args.mode))


def batchnorm_case(args) -> Case:
    n, c, h, w = _dims(args, 4)
    program = f"network batchnorm_case {{\n    input x: [{c}, {h}, {w}]\n    output y = batchnorm\n}}\n"

    def reference(x, p):
        return batchnorm_reference(x["x"], p["batchnorm.weight"], p["batchnorm.bias"], p["batchnorm.running_mean"],
                                   p["batchnorm.running_var"], 1e-5, args.training)

    return Case(program, reference, training=args.training)


def chain_case(args) -> Case:
    dims = tuple(int(d) for d in args.shape.split(","))
    ops = args.ops.split(",")
    unknown = [op for op in ops if op not in ELEMENTWISE]
    if unknown:
        raise SystemExit(f"--ops takes {', '.join(ELEMENTWISE)}; not {', '.join(unknown)}")
    program = f"network chain_case {{\n    input x: [{', '.join(map(str, dims[1:]))}]\n    output y = {' -> '.join(ops)}\n}}\n"

    def reference(x, p):
        v = x["x"]
        for op in ops:
            v = ELEMENTWISE[op](v)
        return v

    return Case(program, reference)


FAMILIES = {"conv": conv_case, "dense": dense_case, "pool": pool_case, "batchnorm": batchnorm_case, "chain": chain_case}


# -- measuring -----------------------------------------------------------------------------------------


def measured_peak() -> float:
    """GFLOP/s of a float32 1024^3 GEMM through NumPy's BLAS (best of five): this machine's practical peak."""
    a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    a @ a
    best = math.inf
    for _ in range(5):
        start = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - start)
    return 2 * 1024**3 / best / 1e9


def median_seconds(fn, args, repeats: int) -> float:
    fn(*args)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def relative_error(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max(initial=0.0) / max(np.abs(b).max(initial=0.0), 1e-12))


def run(args) -> int:
    import cnnc
    from cnnc.backend.executor import Executor, RuntimeState
    from cnnc.passes.pipeline import optimize
    from cnnc.runtime.losses import training_graph

    case = FAMILIES[args.family](args)
    batch = int(args.shape.split(",")[0])
    net = cnnc.compile(case.program, seed=args.seed)
    (net.train() if case.training or args.backward else net.eval())
    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((batch, *net.graph.input_types()["x"].sample_shape)).astype(np.float32)
    state = net.state_dict()

    out = net(x)
    target = rng.standard_normal(np.shape(out)).astype(np.float32)
    expected = case.reference({"x": x.astype(np.float64)}, {k: v.astype(np.float64) for k, v in state.items()})
    error = relative_error(out, expected)
    print(f"{args.family}: {case.program.splitlines()[2].strip()}  input {list(x.shape)}")
    print(f"forward against NumPy (float64): max relative error {error:.2e}")
    if args.backward:
        _check_backward(case.program, args.seed, net.training, x, target, state)
        graph, target_name, _ = training_graph(net.graph, "mse")
    else:
        graph, target_name = net.graph, None
    schedule = optimize(graph, training=args.backward or case.training)
    ex = Executor(schedule, batch, {k: np.array(v) for k, v in state.items()}, RuntimeState())
    ex.feed("x", x)
    if target_name is not None:
        ex.feed(target_name, target)
    work = _work_by_group(schedule, batch)
    peak = measured_peak()
    rows = []
    for name, fn, fn_args in ex.steps:
        rows.append((name, median_seconds(fn, fn_args, args.repeats), *work.get(name, (0, 0))))
    rows.append(("total", sum(r[1] for r in rows), sum(r[2] for r in rows), sum(r[3] for r in rows)))
    print(f"\n{'kernel':<44} {'time':>10} {'GFLOP/s':>9} {'of peak':>8} {'GB/s':>7}")
    for name, seconds, flops, nbytes in rows:
        rate = flops / seconds / 1e9
        print(f"{name[:44]:<44} {seconds * 1e3:>8.3f}ms {rate:>9.2f} {100 * rate / peak:>7.1f}% {nbytes / seconds / 1e9:>7.2f}")
    print(f"\nmachine peak: {peak:.1f} GFLOP/s (float32 1024^3 GEMM through NumPy's BLAS)")
    return 0 if error < args.tolerance else 1


def _work_by_group(schedule, batch: int) -> dict[str, tuple[int, int]]:
    """Group name -> (floating-point operations, bytes read and written once each) at this batch size."""
    graph = schedule.graph
    out = {}
    for group in schedule.groups:
        flops = 0
        members = set(group.nodes)
        moved = {i for name in group.nodes for i in graph[name].inputs if i not in members} | set(group.outputs)
        for name in group.nodes:
            node = graph[name]
            flops += node.op.flops(node.attrs, node.type, *(graph[i].type for i in node.inputs))
        nbytes = sum(graph[v].type.sample_bytes() * (batch if graph[v].type.batched else 1) for v in moved)
        out[group.name] = (flops * batch, nbytes)
    return out


def _check_backward(program: str, seed: int, training: bool, x, target, state) -> None:
    """The input gradient of the mse loss against a float64 central difference along it."""
    import cnnc

    net = cnnc.compile(program, seed=seed, dtype="float64")
    net.load_params(state)
    (net.train() if training else net.eval())
    x64, t64 = x.astype(np.float64), target.astype(np.float64)
    _, grads = net.grad(x64, t64, loss="mse", inputs=True)
    g = grads["x"]
    eps = 1e-4 / max(float(np.abs(g).max()), 1e-12)
    up, _ = net.grad(x64 + eps * g, t64, loss="mse")
    down, _ = net.grad(x64 - eps * g, t64, loss="mse")
    numeric, analytic = (up - down) / (2 * eps), float((g * g).sum())  # d/dt loss(x + t g) at 0 is |g|^2
    print(f"backward: the loss's derivative along its input gradient, central difference {numeric:.6g}, "
          f"from the gradient {analytic:.6g} (relative error {abs(numeric - analytic) / max(abs(analytic), 1e-30):.2e})")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cnnc.dev", description="Check and time one op family's kernels.")
    parser.add_argument("family", choices=sorted(FAMILIES))
    parser.add_argument("--shape", required=True, help="the input shape, batch first: N,C,H,W (N,F for dense)")
    parser.add_argument("--channels", type=int, default=64, help="conv: output channels")
    parser.add_argument("--kernel", type=int, default=3, help="conv, pool: window size")
    parser.add_argument("--stride", type=int, default=1, help="conv, pool: stride (pool: default the window)")
    parser.add_argument("--pad", type=int, default=0, help="conv: padding")
    parser.add_argument("--groups", type=int, default=1, help="conv: groups")
    parser.add_argument("--units", type=int, default=500, help="dense: output features")
    parser.add_argument("--mode", choices=("max", "avg"), default="max", help="pool: max or average")
    parser.add_argument("--training", action="store_true", help="batchnorm: batch statistics (training mode)")
    parser.add_argument("--ops", default="relu,sigmoid,tanh", help="chain: elementwise ops, comma-separated")
    parser.add_argument("--backward", action="store_true", help="time a training step's kernels (mse loss) instead")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per kernel (median)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest relative error accepted (exit 1 above)")
    parser.add_argument("--seed", type=int, default=0)
    return parser
