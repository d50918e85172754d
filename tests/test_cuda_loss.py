"""CUDA kernels of the losses against the CPU's (CUDA simulator): cross_entropy along any class axis,
on labels (with an ignored value) or probabilities, with a weight per element, as a mean or a sum;
bce_with_logits and mse with weights, sums and pos_weight. Every gradient (logits, probabilities,
weights, predictions, targets), unfused and fused (the loss and its gradient as one kernel).

Shapes are tiny: the simulator runs each GPU thread as a Python thread.
"""

import pytest

from cudacheck import check

# Simulated GPU kernels are slow: these run in CI, not in the quick subset.
pytestmark = pytest.mark.slow

# Programs whose own scalar output is the loss; cudacheck feeds labels 0 and 1.
LOSSES = {
    "tokens": """network n {
        input x: [3, 4]
        input t: int64[3]
        input w: [3]
        output loss = cross_entropy(x, t, w, axis=-1, ignore=1)
    }""",
    "image_height_probabilities": """network n {
        input x: [3, 2, 4]
        input t: [3, 2, 4]
        input w: [3, 4]
        output loss = cross_entropy(x, t, w, axis=2, reduction="sum")
    }""",
    "pixels_of_a_conv": """network n {
        input image: [2, 3, 3]
        input t: int64[3, 3]
        logits = image -> conv(3, kernel=1)
        output loss = cross_entropy(logits, t, reduction="sum")
    }""",
    "bce_weighted": """network n {
        input a: [5]
        input b: [5]
        input w: [5]
        output loss = bce_with_logits(a, b, w, pos_weight=2.5, reduction="sum")
    }""",
    "mse_weighted": """network n {
        input a: [2, 2, 2]
        input b: [2, 2, 2]
        input w: [2, 2, 2]
        output loss = mse(a, b, w)
    }""",
}


@pytest.mark.parametrize("name", LOSSES)
def test_loss_and_every_gradient_unfused_and_fused(name):
    check(LOSSES[name], modes=("train",))
    check(LOSSES[name], fuse=True, modes=("train",))
