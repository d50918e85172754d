"""lib/dcgan.cnn against pytorch/examples' DCGAN (dcgan/main.py), restated here with its names.

At the paper's size the parameter names, shapes and counts are the example's; at a small size a
whole training iteration (the discriminator on a real and a fake batch, then the generator through
the updated discriminator, Adam on both) leaves every parameter and running statistic where
PyTorch leaves them. The demo runs end to end in its quick mode.
"""

import numpy as np
import pytest

import cnnc

torch = pytest.importorskip("torch")
nn = torch.nn


class Generator(nn.Module):
    """pytorch/examples dcgan/main.py's Generator, with the stage count following the image size."""

    def __init__(self, nz=100, ngf=64, nc=3, size=64):
        super().__init__()
        widths = [ngf * size // 8 // 2**k for k in range({16: 2, 32: 3, 64: 4}[size])]
        layers = [nn.ConvTranspose2d(nz, widths[0], 4, 1, 0, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(True)]
        for cin, cout in zip(widths, widths[1:]):
            layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], nc, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z):
        return self.main(z)


class Discriminator(nn.Module):
    """pytorch/examples dcgan/main.py's Discriminator without its final Sigmoid (the loss is BCE on logits)."""

    def __init__(self, nc=3, ndf=64, size=64):
        super().__init__()
        widths = [ndf * 2**k for k in range({16: 2, 32: 3, 64: 4}[size])]
        layers = [nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
        for cin, cout in zip(widths, widths[1:]):
            layers += [nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True)]
        layers += [nn.Conv2d(widths[-1], 1, 4, 1, 0, bias=False)]
        self.main = nn.Sequential(*layers)

    def forward(self, x):
        return self.main(x).view(-1, 1)


def state_shapes(module) -> dict:
    return {k: tuple(v.shape) for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}


@pytest.mark.parametrize("network, reference, count", [("generator", Generator(), 3_576_704), ("discriminator", Discriminator(), 2_765_568)])
def test_the_papers_size_has_the_examples_names_and_parameter_count(network, reference, count):
    graph = cnnc.load("dcgan", network=network)
    assert graph.parameter_count() == sum(p.numel() for p in reference.parameters()) == count
    assert graph.param_shapes == state_shapes(reference)


def test_the_sizes_are_hyperparameters():
    for size in (16, 32, 64):
        g = cnnc.load("dcgan", network="generator", nz=8, ngf=4, nc=1, size=size)
        d = cnnc.load("dcgan", network="discriminator", ndf=4, nc=1, size=size)
        assert g.output_types()["image"].sample_shape == (1, size, size)
        assert g.param_shapes == state_shapes(Generator(8, 4, 1, size))
        assert d.param_shapes == state_shapes(Discriminator(1, 4, size))


def test_weights_start_as_the_examples_weights_init():
    g = cnnc.compile("dcgan", network="generator", dtype="float64")
    w, bn = g.params["main.3.weight"], g.params["main.4.weight"]
    assert abs(w.std() - 0.02) < 0.001 and abs(w.mean()) < 0.001
    assert abs(bn.std() - 0.02) < 0.005 and abs(bn.mean() - 1) < 0.005 and not g.params["main.4.bias"].any()


@pytest.mark.slow  # a whole model, compiled cold in tens of seconds
def test_one_training_iteration_equals_pytorchs():
    torch.manual_seed(0)
    hyper = {"nz": 8, "nc": 1, "size": 16}
    g = cnnc.compile("dcgan", network="generator", ngf=8, seed=1, **hyper).train()
    d = cnnc.compile("dcgan", network="discriminator", ndf=8, nc=1, size=16, seed=2).train()
    tg, td = Generator(ngf=8, **hyper), Discriminator(1, 8, 16)
    tg.load_state_dict({k: torch.tensor(v) for k, v in g.state_dict().items()}, strict=False)
    td.load_state_dict({k: torch.tensor(v) for k, v in d.state_dict().items()}, strict=False)
    rng = np.random.default_rng(3)
    real = np.tanh(rng.standard_normal((6, 1, 16, 16))).astype(np.float32)
    z = rng.standard_normal((6, 8, 1, 1)).astype(np.float32)
    ones, zeros = np.ones((6, 1), np.float32), np.zeros((6, 1), np.float32)
    adam = {"lr": 2e-4, "betas": (0.5, 0.999)}

    # cnnc, as the demo trains: the generator's forward for the fake batch changes no statistics;
    # its vjp's forward moves them once, as the example's one forward does.
    fake = g(z, update_stats=False)
    _, grads_real = d.grad(real, ones, loss="bce_with_logits")
    loss_fake, grads_fake = d.grad(fake, zeros, loss="bce_with_logits")
    d.trainer(optimizer=cnnc.optim.Adam(**adam)).update(grads_real, grads_fake)
    loss_g, seed = d.grad(fake, ones, loss="bce_with_logits", params=False, inputs=["image"])
    g.trainer(optimizer=cnnc.optim.Adam(**adam)).update(g.vjp(z, {"image": seed["image"]}))

    # pytorch/examples' iteration.
    bce = nn.BCEWithLogitsLoss()
    opt_d, opt_g = torch.optim.Adam(td.parameters(), **adam), torch.optim.Adam(tg.parameters(), **adam)
    td.zero_grad()
    bce(td(torch.tensor(real)), torch.tensor(ones)).backward()
    tfake = tg(torch.tensor(z))
    np.testing.assert_allclose(fake, tfake.detach().numpy(), rtol=1e-4, atol=1e-5)
    err_fake = bce(td(tfake.detach()), torch.tensor(zeros))
    err_fake.backward()
    opt_d.step()
    tg.zero_grad()
    err_g = bce(td(tfake), torch.tensor(ones))
    err_g.backward()
    opt_g.step()
    assert abs(loss_fake - err_fake.item()) < 1e-5 and abs(loss_g - err_g.item()) < 1e-5
    for model, reference in ((g, tg), (d, td)):
        expected = reference.state_dict()
        for name, value in model.state_dict().items():
            np.testing.assert_allclose(value, expected[name].numpy(), rtol=1e-4, atol=2e-6, err_msg=name)
