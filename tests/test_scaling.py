"""Long programs: checking and compiling grow linearly with the number of layers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import cnnc
from cnnc import CnncError
from cnnc.backend.cpu.kernel import module_text
from cnnc.backend.lowering import CPU, lower_group
from cnnc.passes.fuse import MAX_CHAIN
from cnnc.passes.pipeline import optimize


def chain(layers: list[str], input_shape: str = "[4]") -> str:
    """A network applying `layers` one after another, 100 to a line."""
    lines = [" -> ".join(layers[k : k + 100]) for k in range(0, len(layers), 100)]
    return "network chain {\n    input x: " + input_shape + "\n    " + "\n        -> ".join(lines) + "\n    output y\n}\n"


def test_a_chain_of_20000_layers_checks_within_seconds(tmp_path):
    # About 5 s on two cores; the quadratic passes this guards against took 47 s or more.
    path = tmp_path / "chain.cnn"
    path.write_text(chain(["relu"] * 20_000))
    done = subprocess.run([sys.executable, "-m", "cnnc", "check", str(path)], capture_output=True, text=True, timeout=40)
    assert done.returncode == 0, done.stderr
    assert "relu_19999" in done.stdout


def test_the_layer_limit_counts_layers_not_inputs():
    layers = "repeat 1000 { repeat 100 relu }"
    graph = cnnc.load(f"network chain {{\n    input x: [4]\n    {layers}\n    output y\n}}\n")
    assert len(graph) == 100_001  # the input and 100,000 layers
    with pytest.raises(CnncError, match="more than 100,000 layers") as info:
        cnnc.load(f"network chain {{\n    input x: [4]\n    {layers} -> relu\n    output y\n}}\n")
    assert info.value.loc.column == len("    " + layers + " -> ") + 1  # refused at the layer past the limit


def test_a_long_elementwise_chain_is_split_into_equal_kernels_of_the_same_source():
    ops = ["relu", "tanh", "sigmoid", "leaky_relu"] * 75  # 300 layers
    schedule = optimize(cnnc.load(chain(ops)), training=False)
    graph = schedule.graph
    sizes = [len(g.nodes) for g in schedule.groups]
    assert max(sizes) == MAX_CHAIN and sum(sizes) == len(ops)
    # MAX_CHAIN is a multiple of the pattern's length, so every full group computes the same ops.
    sources = {module_text(lower_group(graph, g, CPU).kernel) for g in schedule.groups if len(g.nodes) == MAX_CHAIN}
    assert len(sources) == 1


def test_a_long_fused_chain_computes_the_right_result():
    ops = ["relu", "tanh", "sigmoid"] * 100
    model = cnnc.compile(chain(ops))
    x = np.linspace(-3, 3, 8, dtype=np.float32).reshape(2, 4)
    expected = x.astype(np.float64)
    for op in ops:
        expected = {"relu": lambda v: np.maximum(v, 0), "tanh": np.tanh, "sigmoid": lambda v: 1 / (1 + np.exp(-v))}[op](expected)
    np.testing.assert_allclose(model(x), expected, rtol=1e-5, atol=1e-6)


def test_a_long_chain_of_residual_blocks_fuses_in_linear_time():
    # Every `add` asks whether fusing it raises the planned peak; the question looks at the
    # stretch of the schedule the fusion changes, not at the whole graph.
    program = "block res {\n    in -> relu -> add(in)\n}\nnetwork chain {\n    input x: [4]\n    repeat 3000 res\n    output y\n}\n"
    schedule = optimize(cnnc.load(program), training=False)
    assert max(len(g.nodes) for g in schedule.groups) == MAX_CHAIN
    assert len(schedule.groups) == -(-6000 // MAX_CHAIN)
