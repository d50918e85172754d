"""The `cnnc` command: check, its JSON, its errors, and a non-editable install."""

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from cnnc.cli import main, parse_setting
from cnnc.resources import lib_dir

ROOT = Path(__file__).resolve().parent.parent


def test_check_prints_the_table_and_totals(capsys):
    assert main(["check", str(lib_dir() / "lenet.cnn")]) == 0
    out = capsys.readouterr().out
    for column in ("layer", "op", "output shape", "params", "FLOPs", "activations"):
        assert column in out
    assert any(line.split()[:3] == ["conv1", "conv", "[6,"] for line in out.splitlines() if line.strip())
    assert "parameters:              61,706" in out
    assert "multiply-accumulates:" in out and "activation memory:" in out


def test_check_a_library_model_by_name(capsys):
    assert main(["check", "resnet18"]) == 0
    assert "11,689,512" in capsys.readouterr().out


def test_check_json(capsys):
    assert main(["check", str(lib_dir() / "resnet18.cnn"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["network"] == "resnet18"
    assert data["totals"]["params"] == 11_689_512
    assert data["layers"][1] == {
        "layer": "conv1", "op": "conv", "shape": [64, 112, 112], "dtype": "float32", "params": 9408,
        "macs": 118_013_952, "flops": 236_027_904, "activation_bytes": 64 * 112 * 112 * 4,
    }  # fmt: skip
    assert data["outputs"] == {"logits": [1000]}


def test_check_set_hyperparameters(capsys):
    assert main(["check", str(lib_dir() / "lenet.cnn"), "--set", "classes=3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["outputs"]["logits"] == [3]


def test_check_shows_the_planned_peak_memory(capsys):
    assert main(["check", "resnet18_cifar", "--batch", "32"]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith("planned peak activation memory at batch 32: inference ")
    assert "training step" in line
    assert main(["check", "resnet18_cifar", "--batch", "32", "--json"]) == 0
    peak = json.loads(capsys.readouterr().out)["planned_peak_bytes"]
    assert peak["batch"] == 32 and 0 < peak["inference"] < peak["training_step"]


def test_explain_json_reports_kernels_memory_groups_and_refusals(capsys):
    assert main(["explain", "resnet18_cifar", "--training", "--batch", "32", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kernels"]["unfused"] >= 2 * report["kernels"]["fused"]
    assert report["peak_bytes"]["planned"] <= 0.6 * report["peak_bytes"]["unplanned"]
    assert {"name", "kind", "nodes", "outputs"} <= set(report["groups"][0])
    assert report["mode"] == "training step" and report["batch"] == 32
    assert main(["explain", "resnet18_cifar", "--json", "--no-fuse"]) == 0
    unfused = json.loads(capsys.readouterr().out)
    assert unfused["kernels"]["fused"] == unfused["kernels"]["unfused"] and unfused["groups"] == []


def test_explain_text_names_groups_and_refusals(capsys, tmp_path):
    model = tmp_path / "m.cnn"
    model.write_text(
        "network m {\n    input x: [4, 8, 8]\n    a = conv(4, kernel=3, pad=1) -> relu\n"
        "    p = a -> maxpool(3, stride=1, pad=1)\n    output y = a + p\n}\n"
    )
    assert main(["explain", str(model)]) == 0
    out = capsys.readouterr().out
    assert "kernels: 4 unfused -> 3 fused" in out
    assert "epilogue" in out and "conv + relu" in out
    assert "refused fusions (1):" in out and "cycle" in out


def test_graph_writes_dot_with_fused_clusters(tmp_path, capsys):
    out = tmp_path / "g.dot"
    assert main(["graph", "resnet18_cifar", "-o", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("digraph") and "cluster_" in text and "epilogue: layer1.0.conv2" in text
    assert main(["graph", "lenet", "--stage", "training", "-o", str(out)]) == 0
    assert "conv_grad_weight" in out.read_text()
    assert main(["graph", "lenet", "--stage", "parsed", "-o", str(out)]) == 0
    assert "cluster_" not in out.read_text()


def test_graph_with_an_unknown_suffix_is_a_clear_error(tmp_path, capsys):
    assert main(["graph", "lenet", "-o", str(tmp_path / "g.jpeg")]) == 2
    assert ".svg" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text, value",
    [("n=3", 3), ("x=0.5", 0.5), ("b=true", True), ("s=bilinear", "bilinear"), ('s="a b"', "a b"), ("l=[1, 2]", [1, 2])],
)
def test_parse_setting(text, value):
    assert parse_setting(text)[1] == value


def test_errors_exit_2_with_the_location_and_no_traceback(tmp_path):
    bad = tmp_path / "bad.cnn"
    bad.write_text("network n {\n    input x: [3, 8, 8]\n    conv(4, kernel=3) -> rleu\n}\n")
    result = subprocess.run([sys.executable, "-m", "cnnc", "check", str(bad)], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"{bad}:3:26: unknown layer or function 'rleu'; did you mean 'relu'?")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["check", "nowhere.cnn"], "no such file: nowhere.cnn"),
        (["check", "lenet", "--set", "classes"], "--set expects NAME=VALUE"),
        (["check", "lenet", "--set", "depth=3"], "no hyperparameter 'depth'"),
        (["check", "lenet", "--set", "classes=0"], "dense: units: expected an integer >= 1, got 0"),
        (["check", "lenet", "--network", "vgg"], "no network 'vgg'"),
    ],
)
def test_bad_invocations_exit_2(args, message, capsys):
    assert main(args) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_non_editable_install_checks_every_library_file(tmp_path):
    """pip install . (not editable) ships the grammar and lib/ inside the package."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    bindir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check", str(ROOT)],
        check=True,
        cwd=tmp_path,
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CNNC_PATH")}
    where = subprocess.run(
        [python, "-c", "import cnnc, cnnc.resources as r; print(cnnc.__file__); print(r.lib_dir())"],
        capture_output=True, text=True, check=True, cwd=tmp_path, env=env,
    ).stdout.split()  # fmt: skip
    assert all(str(env_dir) in line for line in where), where
    for cnn in sorted(lib_dir().glob("*.cnn")):
        if "network" not in cnn.read_text():
            continue
        result = subprocess.run([bindir / "cnnc", "check", str(cnn)], capture_output=True, text=True, cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
    # A user's file imports the installed library's blocks.
    (tmp_path / "mine.cnn").write_text("import resnet_blocks\nnetwork m {\n    input x: [8, 4, 4]\n    basic(8)\n}\n")
    result = subprocess.run([bindir / "cnnc", "check", "mine.cnn"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    result = subprocess.run([bindir / "cnnc", "check", "resnet50"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert "25,557,032" in result.stdout


@pytest.mark.slow
def test_train_then_run(tmp_path, capsys):
    weights = tmp_path / "lenet.npz"
    args = ["train", "lenet", "--dataset", "digits", "--epochs", "2", "--batch", "16", "--limit-batches", "5", "--out", str(weights)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "training lenet (61,706 parameters) on digits" in out
    assert "epoch   1  loss" in out and "epoch   2  loss" in out and "held-out accuracy" in out
    assert weights.exists()
    import numpy as np

    from cnnc.runtime.data import digits

    np.save(tmp_path / "x.npy", digits().test_x[:2])
    assert main(["run", "lenet", "--weights", str(weights), "--input", str(tmp_path / "x.npy"), "--top", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("example 0: class ")


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "resnet18_cifar", "--dataset", "digits", "--epochs", "1"], "data set digits gives images [1, 32, 32]; the network expects [3, 32, 32]"),
        (["train", "lenet", "--dataset", "mnist:/nowhere"], "no such folder /nowhere"),
        (["train", "lenet", "--epochs", "0"], "--epochs must be at least 1, got 0"),
        (["run", "lenet", "--weights", "/nowhere.npz", "--input", "x.npy"], "no such weights file"),
    ],
)
def test_train_and_run_errors(args, message, capsys):
    assert main(args) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("target, marker", [("cpu", "@njit"), ("cuda", "@cuda.jit")])
def test_emit_prints_each_target_s_kernel_source(capsys, target, marker):
    assert main(["emit", "lenet", "--target", target]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# lenet: 9 kernel calls")
    first_conv = "planar_forward" if target == "cpu" else "conv_forward"  # on the CPU: few taps, few outputs
    assert f"# conv1 + relu -> {first_conv}" in out  # relu runs in the conv's epilogue
    assert marker in out
    compile(out, "emitted", "exec")  # the modules, concatenated, are Python
