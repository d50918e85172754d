"""`cnnc demo`: the list, and clear errors. Each demo's quick run is tested beside its model's tests."""

import subprocess
import sys

from cnnc import demos


def cnnc_command(*args):
    return subprocess.run([sys.executable, "-m", "cnnc", *args], capture_output=True, text=True)


def test_the_list_names_every_demo_with_its_paper():
    done = cnnc_command("demo", "--list")
    assert done.returncode == 0
    for name, title, paper, shows in demos.describe():
        assert name in done.stdout and paper in done.stdout and shows in done.stdout
    assert set(demos.DEMOS) == {"fcn", "dcgan", "style_transfer", "colorization"}


def test_an_unknown_demo_is_a_clear_error():
    done = cnnc_command("demo", "dcgna")
    assert done.returncode != 0 and "unknown demo 'dcgna'" in done.stderr and "did you mean 'dcgan'" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_metric_says_whether_it_met_its_target():
    assert str(demos.Metric("mean IoU", 0.5, 0.45)) == "mean IoU: 0.5 (target >= 0.45: met)"
    assert str(demos.Metric("time", 130.0, 120.0, at_most=True, unit=" s")) == "time: 130 s (target <= 120 s: missed)"
