"""Demos: each trains a library model from scratch on data that exists offline, prints its
metrics against targets and writes pictures.

    cnnc demo --list
    cnnc demo dcgan [--quick] [--out DIR] [--seed N]

A demo module defines TITLE, PAPER, SHOWS and `run(out, quick, seed, say) -> Result`.
`--quick` runs a few steps only (the tests run every demo so): end to end, the loss
falls, the pictures are written; its metrics mean nothing.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

DEMOS = ("fcn", "dcgan", "style_transfer", "did_mdn", "colorization")


@dataclass(frozen=True)
class Metric:
    """One measured number and its target: `value` must be >= `target` (or <= with `at_most`)."""

    name: str
    value: float
    target: float
    at_most: bool = False
    unit: str = ""

    @property
    def met(self) -> bool:
        return self.value <= self.target if self.at_most else self.value >= self.target

    def __str__(self) -> str:
        sign = "<=" if self.at_most else ">="
        return f"{self.name}: {self.value:.3g}{self.unit} (target {sign} {self.target:g}{self.unit}: {'met' if self.met else 'missed'})"


@dataclass
class Result:
    metrics: list[Metric]
    pictures: list[Path]
    losses: list[float] = field(default_factory=list)  # the training losses, first to last
    seconds: float = 0.0


def module(name: str):
    return importlib.import_module(f"{__name__}.{name}")


def describe() -> list[tuple[str, str, str, str]]:
    """(name, title, paper, what it shows) of every demo."""
    out = []
    for name in DEMOS:
        m = module(name)
        out.append((name, m.TITLE, m.PAPER, m.SHOWS))
    return out


def run(name: str, out: str | Path, quick: bool = False, seed: int = 0, say=print) -> Result:
    return module(name).run(Path(out), quick, seed, say)
