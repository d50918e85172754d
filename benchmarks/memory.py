"""Peak memory of a training step: cnnc against PyTorch, each measured in a fresh process.

    python benchmarks/memory.py [lenet:64 resnet18_cifar] [--batch 32]

Each model is `name` or `name:batch` (default: resnet18_cifar at --batch 32).

Method, the same for both frameworks. For every (model, framework) this script
starts a fresh Python process running itself, which:

1. imports the framework and builds the model with its parameters: for cnnc
   `cnnc.compile` and `trainer.compile(batch)`, so every kernel is loaded from
   the disk cache before measuring (a cold compile is not counted); for PyTorch
   the model from tests/torch_reference.py and its optimizer. Both train with
   SGD (momentum 0.9) and cross-entropy; PyTorch runs on 2 threads, cnnc as it is;
2. makes the inputs (a random batch and labels);
3. resets the kernel's peak-RSS counter by writing "5" to /proc/self/clear_refs
   and reads VmRSS from /proc/self/status as the baseline;
4. runs 3 training steps and reads VmHWM (the peak resident set size).

The step peak is VmHWM minus the baseline: the memory the steps added
(activations, gradients, optimizer state, workspaces). The activation arena of
cnnc is allocated with np.empty in step 1, and the gradient and momentum arrays
with np.zeros; the operating system maps such large blocks lazily, so they are
not resident until a step touches them and count in the step peak just as
PyTorch's lazily allocated tensors do. Anything either framework initializes on
its first step (thread pools, the optimizer's kernel, allocator caches) counts
too. VmHWM itself, the whole process's peak, is printed for reference; it
includes what imports and kernel loading left resident (more after a cold
compile than with a warm kernel cache).

If /proc/self/clear_refs cannot be written, VmHWM is the peak since the process
started (imports and compiles included), and the output says so.

Below the table: cnnc's planned activation arena and the unplanned figure
(every activation of the unoptimized step in its own buffer) from
`cnnc.explain`, and the bytes of the parameters.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEPS = 3
FRAMEWORKS = ("cnnc", "torch")
MB = 2**20


# -- in the measured process -----------------------------------------------------------


def proc_status_kb(field: str) -> int:
    """A memory line of /proc/self/status (VmRSS, VmHWM) in kB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak() -> bool:
    """Start VmHWM afresh from the current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def random_batch(batch: int, shape: tuple[int, ...]):
    """The same images and labels in every process."""
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.standard_normal((batch, *shape)).astype(np.float32), rng.integers(0, 10, batch)


def cnnc_step(name: str, batch: int, shape: tuple[int, ...]):
    import cnnc

    net = cnnc.compile(name)
    trainer = net.trainer(optimizer=cnnc.optim.SGD(lr=0.01, momentum=0.9))
    trainer.compile(batch)
    x, y = random_batch(batch, shape)
    return lambda: trainer.step(x, y)


def torch_step(name: str, batch: int, shape: tuple[int, ...]):
    import torch

    sys.path.insert(0, str(ROOT / "tests"))  # the independent PyTorch models
    import torch_reference

    torch.set_num_threads(2)
    model = torch_reference.MODELS[name](num_classes=10)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = (torch.tensor(a) for a in random_batch(batch, shape))

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def measure(framework: str, name: str, batch: int, shape: tuple[int, ...]) -> dict:
    """Run STEPS training steps in this process and report its peak memory as set out above."""
    step = (cnnc_step if framework == "cnnc" else torch_step)(name, batch, shape)
    reset = reset_peak()
    baseline_kb = proc_status_kb("VmRSS")
    for _ in range(STEPS):
        step()
    hwm_kb = proc_status_kb("VmHWM")
    return {"baseline_kb": baseline_kb, "hwm_kb": hwm_kb, "reset": reset}


# -- in the parent process -------------------------------------------------------------


def measure_fresh(framework: str, name: str, batch: int, shape: tuple[int, ...]) -> dict:
    dims = "x".join(map(str, shape))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", framework, name, str(batch), dims]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"measuring {framework} {name} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cnnc_figures(graph, batch: int) -> dict:
    """cnnc's own account of the step's memory: planned and unplanned activations, parameter bytes."""
    from cnnc.explain import explain

    peak = explain(graph, training=True, batch=batch)["peak_bytes"]
    param_bytes = 4 * sum(s.size for s in graph.params.values() if s.kind == "param")  # float32
    return {**peak, "params": param_bytes}


def sample_shape(graph) -> tuple[int, ...]:
    (image,) = graph.input_types().values()
    return tuple(image.sample_shape)


def parse_case(text: str, default_batch: int) -> tuple[str, int]:
    name, _, batch = text.partition(":")
    return name, int(batch) if batch else default_batch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["resnet18_cifar"], help="name or name:batch")
    parser.add_argument("--batch", type=int, default=32, help="batch of models given without one")
    # framework, model, batch, sample shape (1x28x28): measure in this process
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        framework, name, batch, dims = args.child
        shape = tuple(int(d) for d in dims.split("x"))
        print(json.dumps(measure(framework, name, int(batch), shape)))
        return 0

    import torch

    import cnnc

    cases = [parse_case(m, args.batch) for m in args.models]
    print(f"peak memory of {STEPS} training steps (SGD, momentum 0.9), each framework in a fresh process; "
          f"torch {torch.__version__} on 2 threads")
    header = f"{'model':<16}{'batch':>6}  {'framework':<10}{'step peak MB':>14}{'VmHWM MB':>12}"
    print(header)
    print("-" * len(header))
    notes, figures = [], {}
    for name, batch in cases:
        graph = cnnc.load(name)
        for framework in FRAMEWORKS:
            r = measure_fresh(framework, name, batch, sample_shape(graph))
            step_mb = (r["hwm_kb"] - r["baseline_kb"]) / 1024
            mark = "" if r["reset"] else " *"
            if not r["reset"]:
                notes.append("* /proc/self/clear_refs could not be written: VmHWM is the peak since the process started")
            print(f"{name:<16}{batch:>6}  {framework:<10}{step_mb:>14.1f}{r['hwm_kb'] / 1024:>12.1f}{mark}")
            sys.stdout.flush()
        figures[(name, batch)] = cnnc_figures(graph, batch)
    for note in dict.fromkeys(notes):
        print(note)
    print()
    print(f"{'model':<16}{'batch':>6}{'cnnc planned MB':>17}{'unplanned MB':>14}{'parameters MB':>15}")
    for (name, batch), f in figures.items():
        print(f"{name:<16}{batch:>6}{f['planned'] / MB:>17.1f}{f['unplanned'] / MB:>14.1f}{f['params'] / MB:>15.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
