"""`cnnc demo`: every demo end to end in its quick mode, the list, and clear errors."""

import subprocess
import sys

import numpy as np
import pytest

from cnnc import demos


@pytest.mark.slow
@pytest.mark.parametrize("name", demos.DEMOS)
def test_every_demo_runs_end_to_end_in_its_quick_mode(name, tmp_path):
    result = demos.run(name, tmp_path, quick=True, say=lambda text: None)
    assert len(result.losses) >= 3 and all(np.isfinite(result.losses))
    assert result.losses[-1] < result.losses[0]  # a few steps already learn something
    assert result.metrics and all(np.isfinite(m.value) for m in result.metrics)
    assert result.pictures
    for picture in result.pictures:
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def cnnc_command(*args):
    return subprocess.run([sys.executable, "-m", "cnnc", *args], capture_output=True, text=True)


def test_the_list_names_every_demo_with_its_paper():
    done = cnnc_command("demo", "--list")
    assert done.returncode == 0
    for name, title, paper, shows in demos.describe():
        assert name in done.stdout and paper in done.stdout and shows in done.stdout
    assert set(demos.DEMOS) == {"fcn", "dcgan", "style_transfer", "did_mdn", "colorization"}


def test_an_unknown_demo_is_a_clear_error():
    done = cnnc_command("demo", "dcgna")
    assert done.returncode != 0 and "unknown demo 'dcgna'" in done.stderr and "did you mean 'dcgan'" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_metric_says_whether_it_met_its_target():
    assert str(demos.Metric("mean IoU", 0.5, 0.45)) == "mean IoU: 0.5 (target >= 0.45: met)"
    assert str(demos.Metric("time", 130.0, 120.0, at_most=True, unit=" s")) == "time: 130 s (target <= 120 s: missed)"
