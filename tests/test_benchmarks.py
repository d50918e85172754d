"""The benchmark scripts: their timing and parsing pieces, and (slow) a smallest run of each on lenet."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_interleaved_medians_runs_each_contender_in_rotating_order():
    models = load_script("models")
    calls = []
    runs = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    medians = models.interleaved_medians(runs, repeats=3, warmup=1)
    assert set(medians) == {"a", "b", "c"}
    assert calls == ["a", "b", "c", "a", "b", "c", "b", "c", "a", "c", "a", "b"]


def test_row_line_fills_the_header_columns():
    models = load_script("models")
    row = models.row_line("lenet", "training step", 64, {
        "fused": 0.010, "unfused": 0.020, "torch": 0.015, "compile": 1.5, "kernels": {"unfused": 36, "fused": 26},
    })
    assert len(row) == len(models.header_line())
    assert row.split()[-7:] == ["10.00", "20.00", "15.00", "1.50x", "2.00x", "36->26", "1.50"]


def test_memory_case_parsing_and_status_fields():
    memory = load_script("memory")
    assert memory.parse_case("lenet:64", 32) == ("lenet", 64)
    assert memory.parse_case("resnet18_cifar", 32) == ("resnet18_cifar", 32)
    assert memory.proc_status_kb("VmHWM") >= memory.proc_status_kb("VmRSS") > 0


def run_script(*args: str) -> str:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
def test_models_benchmark_on_lenet():
    out = run_script("benchmarks/models.py", "--only", "lenet", "--repeats", "1")
    rows = [line for line in out.splitlines() if line.startswith("lenet")]
    assert len(rows) == 3
    training = rows[-1].split()
    assert training[1:3] == ["training", "step"]
    assert re.fullmatch(r"\d+->\d+", training[-2])
    assert all(float(cell) > 0 for cell in training[4:7])  # fused, unfused and torch ms


@pytest.mark.slow
def test_memory_benchmark_on_lenet():
    out = run_script("benchmarks/memory.py", "lenet:8")
    rows = [line.split() for line in out.splitlines() if line.startswith("lenet")]
    assert [r[2] for r in rows[:2]] == ["cnnc", "torch"]
    for r in rows[:2]:
        assert 0 <= float(r[3]) <= float(r[4])  # the steps' peak is part of the process's peak
    planned, unplanned = float(rows[2][2]), float(rows[2][3])
    assert 0 < planned <= unplanned


def test_peers_table_names_the_best_peer_of_the_target_and_the_verdict():
    peers = load_script("peers")
    work = peers.Workload("lenet", "inference", 1, ("onnxruntime", "inductor"), 1.0)
    rows = [(work, {"ms": {"cnnc": 0.05, "eager": 0.04, "onnxruntime": 0.1, "inductor": 0.2},
                    "compile": {"cnnc": 1.0, "eager": 0.0}})]
    lines = peers.table(rows, ["cnnc", "eager", "onnxruntime", "inductor"])
    row = next(line for line in lines if line.startswith("lenet inference b1"))
    # eager is faster, but the target compares against onnxruntime and Inductor only
    assert "ORT (met)" in row and " 0.50 " in row
    assert peers.applying(peers.Workload("lenet", "training", 64, ("eager",), 0.7), list(peers.CONTENDERS)) == [
        "cnnc", "eager", "eager_cl", "inductor"]


@pytest.mark.slow
def test_peers_benchmark_on_lenet_at_batch_1():
    out = run_script("benchmarks/peers.py", "--only", "lenet", "--batch", "1", "--repeats", "1", "--peers", "eager,onnxruntime")
    row = next(line for line in out.splitlines() if line.startswith("lenet inference b1"))
    assert float(row.split()[3]) > 0  # cnnc's milliseconds


@pytest.mark.slow
def test_kernels_benchmark_finds_each_pass_of_a_winograd_layer():
    kernels = load_script("kernels")
    found = kernels.cnnc_kernels(("t", 16, 16, 16, 3, 1, 1), batch=4, winograd=True)
    assert {step: entry for step, (entry, _, _) in found.items()} == {
        "forward": "winograd_forward", "input grad": "winograd_forward", "weight grad": "winograd_grad_weight"}
    found = kernels.cnnc_kernels(("t", 16, 16, 16, 3, 1, 1), batch=4, winograd=False)
    assert found["forward"][0] == "conv_forward" and found["input grad"][0] == "conv_grad_input"
