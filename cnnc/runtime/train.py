"""The training loop behind `cnnc train`: epochs of shuffled batches, held-out accuracy after each."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import CnncError
from .data import Dataset, batches
from .losses import default_output


@dataclass
class EpochResult:
    epoch: int
    loss: float
    accuracy: float
    seconds: float


@dataclass
class History:
    epochs: list[EpochResult] = field(default_factory=list)


def accuracy(model, x: np.ndarray, y: np.ndarray, batch: int = 256, output: str | None = None) -> float:
    """Top-1 accuracy in evaluation mode (the model's mode is restored)."""
    was_training = model.training
    model.eval()
    correct = 0
    try:
        for xb, yb in batches(x, y, batch):
            out = model(xb)
            if isinstance(out, dict):
                out = out[output or default_output(out)]
            correct += int((out.argmax(axis=1) == yb).sum())
    finally:
        if was_training:
            model.train()
    return correct / max(len(x), 1)


class Progress:
    """One line per epoch; on a terminal, a bar that fills while the epoch runs."""

    def __init__(self, total: int, stream=None, enabled: bool = True):
        self.total, self.stream = total, stream or sys.stderr
        self.live = enabled and self.stream.isatty()

    def update(self, done: int, loss: float, epoch: int, epochs: int) -> None:
        if not self.live:
            return
        width = 30
        filled = int(width * done / max(self.total, 1))
        bar = "#" * filled + "." * (width - filled)
        self.stream.write(f"\repoch {epoch}/{epochs} [{bar}] {done}/{self.total} loss {loss:.4f}")
        self.stream.flush()

    def finish(self) -> None:
        if self.live:
            self.stream.write("\r" + " " * 79 + "\r")


def cosine_lr(base: float, epoch: int, epochs: int) -> float:
    """The learning rate of an epoch (1-based) under cosine decay from `base` towards 0."""
    return base * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / epochs))


def _checked_step(trainer, x, y, epoch: int, step: int) -> float:
    """One training step; a diverged one stops the training with a CnncError saying where."""
    try:
        loss = float(trainer.step(x, y))
    except CnncError as e:
        raise CnncError(f"epoch {epoch}: {e.message}") from None
    if not math.isfinite(loss):  # cheap, and catches a trainer that does not check for itself
        raise CnncError(f"epoch {epoch}: training diverged at step {step}: the loss is {loss}; "
                        "a smaller learning rate may help")
    return loss


def _check_parameters(model, epoch: int) -> None:
    """Steps on the GPU check only their loss: an update there can still make parameters non-finite.
    (Reading through `model.params` would mark the device's copy stale and upload it again.)"""
    name = model._nonfinite_parameter()
    if name is not None:
        raise CnncError(f"epoch {epoch}: training diverged: parameter '{name}' holds NaN or infinity; "
                        "a smaller learning rate may help")


def check_batches(data: Dataset, batch: int, limit_batches: int | None = None) -> None:
    """Refuse a training that would take no step (and so save the weights it started with)."""
    if batch < 1:
        raise CnncError(f"the batch size must be at least 1, not {batch}")
    if limit_batches is not None and limit_batches < 1:
        raise CnncError(f"the limit of batches per epoch must be at least 1, not {limit_batches}")
    if len(data.train_x) < batch:  # the last, smaller batch is dropped: not one step would run
        raise CnncError(f"data set {data.name} has {len(data.train_x):,} training examples, fewer than one batch "
                        f"of {batch:,}; use a smaller batch")


def fit(model, data: Dataset, trainer, epochs: int, batch: int, seed: int = 0, limit_batches: int | None = None,
        report=print, progress: bool = True, schedule: str = "cosine") -> History:
    """Train for `epochs`, shuffling with `seed`; reports loss and held-out accuracy per epoch.

    `schedule="cosine"` decays the optimizer's learning rate each epoch; "constant" keeps it.
    """
    check_batches(data, batch, limit_batches)
    if epochs < 1:
        raise CnncError(f"the number of epochs must be at least 1, not {epochs}")
    rng = np.random.default_rng(seed)
    history = History()
    steps = len(data.train_x) // batch
    if limit_batches is not None:
        steps = min(steps, limit_batches)
    base_lr = trainer.optimizer.lr
    for epoch in range(1, epochs + 1):
        if schedule == "cosine":
            trainer.optimizer.lr = cosine_lr(base_lr, epoch, epochs)
        start = time.perf_counter()
        bar = Progress(steps, enabled=progress)
        losses = []
        try:
            for i, (xb, yb) in enumerate(batches(data.train_x, data.train_y, batch, shuffle=True, rng=rng)):
                if i >= steps:  # the last, smaller batch is dropped: every step has the same shape
                    break
                losses.append(_checked_step(trainer, xb, yb, epoch, i + 1))
                bar.update(i + 1, float(np.mean(losses)), epoch, epochs)
        finally:
            bar.finish()  # an error message starts on a clean line
        _check_parameters(model, epoch)
        test_x, test_y = data.test_x, data.test_y
        if limit_batches is not None:
            test_x, test_y = test_x[: limit_batches * batch], test_y[: limit_batches * batch]
        acc = accuracy(model, test_x, test_y, batch=max(batch, 64))
        result = EpochResult(epoch, float(np.mean(losses)) if losses else float("nan"), acc, time.perf_counter() - start)
        history.epochs.append(result)
        report(f"epoch {epoch:3d}  loss {result.loss:.4f}  held-out accuracy {acc * 100:6.2f}%  ({result.seconds:.1f} s)")
    return history
