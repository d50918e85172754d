"""Whole-model benchmark: cnnc fused and unfused against PyTorch, measured in the same run.

    python benchmarks/models.py [--repeats 10] [--cold] [--only lenet]

For each case it prints the median time of cnnc with operator fusion, of cnnc
with every node as its own kernel (`fuse=False`), and of PyTorch (all on 2
threads, same weights and inputs); the ratio torch/fused (>1: cnnc is faster);
the speed-up fusion gives (unfused/fused); the kernel counts of the step
(unfused -> fused, from `cnnc.explain`); and the fused model's compile time
(compile plus the first call: kernels from the on-disk cache, or compiled from
scratch with --cold).

The machine may be shared and noisy, so each repeat runs the three contenders
once each, in an order that rotates from repeat to repeat, rather than all the
runs of one and then all of the next: a slow spell then hits all three alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the independent PyTorch models

CASES = [
    # (model, mode, batch)
    ("lenet", "inference", 1),
    ("lenet", "inference", 64),
    ("lenet", "training step", 64),
    ("resnet18_cifar", "inference", 1),
    ("resnet18_cifar", "inference", 32),
    ("resnet18_cifar", "training step", 32),
]


def interleaved_medians(runs: dict, repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds of each callable in `runs`, timed in turn within every repeat."""
    names = list(runs)
    for _ in range(warmup):
        for name in names:
            runs[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(repeats):
        shift = i % len(names)  # rotate, so no contender always runs right after the same one
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def cnnc_runner(net, mode: str, x, y):
    """A call running one inference or one training step of a compiled model."""
    import cnnc

    if mode == "inference":
        net.eval()
        return lambda: net(x)
    trainer = net.trainer(optimizer=cnnc.optim.SGD(lr=0.01, momentum=0.9))
    return lambda: trainer.step(x, y)


def torch_runner(model, mode: str, tx, ty):
    import torch

    if mode == "inference":
        model.eval()

        def run():
            with torch.no_grad():
                model(tx)

        return run
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(tx), ty).backward()
        opt.step()

    return step


def bench_case(name: str, mode: str, batch: int, repeats: int) -> dict:
    import numpy as np
    import torch

    import cnnc
    import torch_reference
    from cnnc.explain import explain

    model = torch_reference.MODELS[name](num_classes=10)
    state = model.state_dict()
    start = time.perf_counter()
    fused = cnnc.compile(name)
    shape = fused.graph.input_types()["image"].sample_shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *shape)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    fused.load_params(state)
    run_fused = cnnc_runner(fused, mode, x, y)
    run_fused()
    compile_s = time.perf_counter() - start

    unfused = cnnc.compile(name, fuse=False)
    unfused.load_params(state)
    run_unfused = cnnc_runner(unfused, mode, x, y)
    run_unfused()  # its compile is not timed: it is the baseline, not the product

    tx, ty = torch.tensor(x), torch.tensor(y)
    run_torch = torch_runner(model, mode, tx, ty)
    medians = interleaved_medians({"fused": run_fused, "unfused": run_unfused, "torch": run_torch}, repeats)
    kernels = explain(fused.graph, training=(mode == "training step"), batch=batch)["kernels"]
    return {**medians, "compile": compile_s, "kernels": kernels}


COLUMNS = [  # (title, width)
    ("model", 16), ("case", 15), ("batch", 6), ("fused ms", 10), ("unfused ms", 11), ("torch ms", 10),
    ("torch/fused", 12), ("fusion", 8), ("kernels", 11), ("compile s", 10),
]


def header_line() -> str:
    (first, w0), (second, w1), *rest = COLUMNS
    return f"{first:<{w0}}{second:<{w1}}" + "".join(f"{title:>{w}}" for title, w in rest)


def row_line(name: str, mode: str, batch: int, r: dict) -> str:
    k = r["kernels"]
    cells = [
        f"{batch}",
        f"{r['fused'] * 1e3:.2f}",
        f"{r['unfused'] * 1e3:.2f}",
        f"{r['torch'] * 1e3:.2f}",
        f"{r['torch'] / r['fused']:.2f}x",
        f"{r['unfused'] / r['fused']:.2f}x",
        f"{k['unfused']}->{k['fused']}",
        f"{r['compile']:.2f}",
    ]
    widths = [w for _, w in COLUMNS[2:]]
    return f"{name:<{COLUMNS[0][1]}}{mode:<{COLUMNS[1][1]}}" + "".join(f"{c:>{w}}" for c, w in zip(cells, widths))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--cold", action="store_true", help="compile every kernel from scratch (an empty kernel cache)")
    parser.add_argument("--only", help="run only the cases of this model")
    args = parser.parse_args(argv)
    if args.cold:
        os.environ["CNNC_CACHE_DIR"] = tempfile.mkdtemp(prefix="cnnc-cold-")
    import numba
    import torch

    torch.set_num_threads(2)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; cnnc on {numba.config.NUMBA_NUM_THREADS} "
        f"Numba threads; medians of {args.repeats} interleaved runs"
    )
    print("torch/fused >1: cnnc is faster; fusion: unfused/fused time; kernels: per call, unfused->fused")
    header = header_line()
    print(header)
    print("-" * len(header))
    for name, mode, batch in CASES:
        if args.only and name != args.only:
            continue
        print(row_line(name, mode, batch, bench_case(name, mode, batch, args.repeats)))
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
