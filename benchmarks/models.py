"""Whole-model benchmark: cnnc against PyTorch, measured in the same run.

    python benchmarks/models.py [--repeats 10] [--cold] [--only lenet]

For each case it prints cnnc's median time, PyTorch's median time (both on 2
threads, same weights and inputs), their ratio (>1: cnnc is faster), and
cnnc's compile time (compile plus the first call: kernels from the on-disk
cache, or compiled from scratch with --cold).
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


def median_time(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_case(name: str, mode: str, batch: int, repeats: int):
    import numpy as np
    import torch

    import cnnc
    import torch_reference

    start = time.perf_counter()
    net = cnnc.compile(name)
    shape = net.graph.input_types()["image"].sample_shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *shape)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    model = torch_reference.MODELS[name](num_classes=10)
    net.load_params(model.state_dict())
    tx, ty = torch.tensor(x), torch.tensor(y)
    if mode == "inference":
        net.eval()
        model.eval()
        run_cnnc = lambda: net(x)  # noqa: E731
        run_cnnc()
        compile_s = time.perf_counter() - start

        def run_torch():
            with torch.no_grad():
                model(tx)

    else:
        trainer = net.trainer(optimizer=cnnc.optim.SGD(lr=0.01, momentum=0.9))
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        run_cnnc = lambda: trainer.step(x, y)  # noqa: E731
        run_cnnc()
        compile_s = time.perf_counter() - start

        def run_torch():
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(tx), ty).backward()
            opt.step()

    t_cnnc = median_time(run_cnnc, repeats)
    t_torch = median_time(run_torch, repeats)
    return t_cnnc, t_torch, compile_s


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--cold", action="store_true", help="compile every kernel from scratch (an empty kernel cache)")
    parser.add_argument("--only", help="run only the cases of this model")
    args = parser.parse_args(argv)
    if args.cold:
        os.environ["CNNC_CACHE_DIR"] = tempfile.mkdtemp(prefix="cnnc-cold-")
    import torch

    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; medians of {args.repeats} runs")
    header = f"{'model':<16}{'case':<16}{'batch':>6}{'cnnc ms':>11}{'torch ms':>11}{'torch/cnnc':>12}{'compile s':>11}"
    print(header)
    print("-" * len(header))
    for name, mode, batch in CASES:
        if args.only and name != args.only:
            continue
        t_cnnc, t_torch, compile_s = bench_case(name, mode, batch, args.repeats)
        print(f"{name:<16}{mode:<16}{batch:>6}{t_cnnc * 1e3:>11.2f}{t_torch * 1e3:>11.2f}{t_torch / t_cnnc:>11.2f}x{compile_s:>11.2f}")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
