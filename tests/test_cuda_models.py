"""Library models' whole steps on the CUDA target (Numba's simulator) against the CPU's.

DCGAN at its smallest (16x16, two filters, batch 2) exercises what the other CUDA tests do one op
at a time, on the device: transposed convs, batchnorm in training mode with `update_stats=False`,
a discriminator's input gradient seeding the generator's `vjp`, and Adam steps from given
gradients (`Trainer.update`) on arenas that stay on the device.
"""

import numpy as np
import pytest

import cnnc
from cudacheck import rel

pytestmark = pytest.mark.slow  # simulated kernels are slow: CI runs this, the quick subset does not

TOLERANCE = 1e-4


def gan_step(target: str) -> dict:
    g = cnnc.compile("dcgan", network="generator", target=target, nz=4, ngf=2, nc=1, size=16, seed=1).train()
    d = cnnc.compile("dcgan", network="discriminator", target=target, ndf=2, nc=1, size=16, seed=2).train()
    rng = np.random.default_rng(0)
    real = np.tanh(rng.standard_normal((2, 1, 16, 16))).astype(np.float32)
    z = rng.standard_normal((2, 4, 1, 1)).astype(np.float32)
    ones, zeros = np.ones((2, 1), np.float32), np.zeros((2, 1), np.float32)
    fake = g(z, update_stats=False)
    loss_real, grads_real = d.grad(real, ones, loss="bce_with_logits")
    loss_fake, grads_fake = d.grad(fake, zeros, loss="bce_with_logits")
    d.trainer(optimizer=cnnc.optim.Adam(lr=2e-4, betas=(0.5, 0.999))).update(grads_real, grads_fake)
    loss_g, seed = d.grad(fake, ones, loss="bce_with_logits", params=False, inputs=["image"])
    grads_g = g.vjp(z, {"image": seed["image"]})
    g.trainer(optimizer=cnnc.optim.Adam(lr=2e-4, betas=(0.5, 0.999))).update(grads_g)
    return {"fake": fake, "losses": np.array([loss_real, loss_fake, loss_g]), "seed": seed["image"],
            **{f"g.{k}": v for k, v in grads_g.items()}, **{f"g.{k}": v for k, v in g.state_dict().items()},
            **{f"d.{k}": v for k, v in d.state_dict().items()}}


def test_a_dcgan_step_on_the_cuda_target_equals_the_cpus():
    cpu, gpu = gan_step("cpu"), gan_step("cuda")
    assert cpu.keys() == gpu.keys()
    for name in cpu:
        assert rel(gpu[name], cpu[name]) < TOLERANCE, (name, rel(gpu[name], cpu[name]))


def colorization_step(target: str) -> dict:
    """The colorization generator at its smallest: both outputs, its own loss's gradients (soft targets,
    per-pixel weights, a frozen parameter) and the parameters after one SGD step from them."""
    rng = np.random.default_rng(0)
    feeds = {"lightness": rng.uniform(0, 100, (2, 1, 16, 16)).astype(np.float32),
             "target": rng.dirichlet(np.ones(5), (2, 4, 4)).transpose(0, 3, 1, 2).astype(np.float32),
             "weight": rng.uniform(0.5, 2.0, (2, 4, 4)).astype(np.float32)}
    net = cnnc.compile("colorization", target=target, size=16, width=2, bins=5, seed=1).train()
    out = net(**feeds, outputs=["logits", "ab"], update_stats=False)
    loss, grads = net.grad(feeds, loss=None, output="loss")
    net.trainer(loss=None, output="loss", optimizer=cnnc.optim.SGD(lr=0.1, momentum=0.9)).update(grads)
    return {**out, "loss": np.array(loss), **{f"grad.{k}": v for k, v in grads.items()}, **net.state_dict()}


def test_a_colorization_step_on_the_cuda_target_equals_the_cpus():
    cpu, gpu = colorization_step("cpu"), colorization_step("cuda")
    assert cpu.keys() == gpu.keys()
    for name in cpu:
        # The biases of convs that a batchnorm follows get gradients of rounding noise (1e-9): compared absolutely.
        assert rel(gpu[name], cpu[name]) < TOLERANCE or np.abs(gpu[name] - cpu[name]).max() < 1e-7, (name, rel(gpu[name], cpu[name]))
