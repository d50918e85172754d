"""The CUDA target against the CPU target on the same weights and inputs (in Numba's CUDA simulator).

    check(PROGRAM, batch=2)             # forward in eval and train mode, loss and every gradient

The simulator runs each GPU thread as a Python thread (thousands a second), so
programs must be tiny: a few channels, images of a few pixels.
"""

from __future__ import annotations

import numpy as np

import cnnc

TOLERANCE = 1e-4


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-6)) if b.size else 0.0


def random_inputs(net, batch: int, rng) -> dict[str, np.ndarray]:
    feeds = {}
    for name, t in net.graph.input_types().items():
        shape = (batch, *t.sample_shape)
        if t.dtype.startswith("float"):
            feeds[name] = rng.standard_normal(shape).astype(np.float32)
        else:
            feeds[name] = rng.integers(0, 2, shape)
    return feeds


def pair(source, seed: int = 0, fuse: bool = False, **hyper):
    cpu = cnnc.compile(source, seed=seed, fuse=fuse, **hyper)
    gpu = cnnc.compile(source, target="cuda", seed=seed, fuse=fuse, **hyper)
    return cpu, gpu


def check(source, batch: int = 2, seed: int = 0, fuse: bool = False, modes=("eval", "train"), grads: bool = True,
          tolerance: float = TOLERANCE, **hyper) -> None:
    """Outputs, loss, gradients and batchnorm statistics of the cuda target equal the cpu target's."""
    cpu, gpu = pair(source, seed, fuse, **hyper)
    rng = np.random.default_rng(seed)
    feeds = random_inputs(cpu, batch, rng)
    outputs = cpu.graph.output_types()
    scalar = [name for name, t in outputs.items() if t.rank == 0]
    for mode in modes:
        getattr(cpu, mode)()
        getattr(gpu, mode)()
        want, got = cpu(**feeds), gpu(**feeds)
        if not isinstance(want, dict):
            want, got = {"out": want}, {"out": got}
        for key in want:
            assert rel(got[key], want[key]) < tolerance, (mode, key, rel(got[key], want[key]))
        if not grads:
            continue
        floats = [n for n, ti in cpu.graph.input_types().items() if ti.dtype.startswith("float")]
        if scalar:
            lw, gw = cpu.grad(feeds, loss=None, inputs=floats)
            lg, gg = gpu.grad(feeds, loss=None, inputs=floats)
        else:
            logits = "logits" if "logits" in outputs else next(iter(outputs))
            t = outputs[logits]
            classes = t.shape[1]
            labels = rng.integers(0, classes, (batch, *t.shape[2:]))
            lw, gw = cpu.grad(feeds, labels, inputs=floats)
            lg, gg = gpu.grad(feeds, labels, inputs=floats)
        assert abs(lg - lw) <= tolerance * max(abs(lw), 1e-6), (mode, lg, lw)
        for key in gw:
            assert rel(gg[key], gw[key]) < tolerance, (mode, key, rel(gg[key], gw[key]))
        for key in cpu.buffers:
            assert rel(gpu.buffers[key], cpu.buffers[key]) < tolerance, (mode, key)
