"""lib/colorization.cnn against richzhang/colorization's ECCVGenerator (colorizers/eccv16.py), restated
here, and cnnc.vision.color against the formulas it implements.

At the paper's size the names, shapes and count are the reference's; at a small size the logits, the
decoded ab, the class-rebalanced soft cross-entropy, every gradient and an SGD step equal PyTorch's,
with `model_out` (the bin centres) frozen.
"""

import numpy as np
import pytest

import cnnc
from cnnc.vision.color import ab_bins, annealed_mean, lab_to_rgb, rebalancing_weights, rgb_to_lab, soft_encode

torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional


class ECCVGenerator(nn.Module):
    """eccv16.py's generator with the widths as a parameter (64 in the paper) and the bin count."""

    def __init__(self, width=64, bins=313):
        super().__init__()
        w = [width, width * 2, width * 4, width * 8]

        def convs(cin, cout, count, last_stride=1, dilation=1):
            layers = []
            for k in range(count):
                stride = last_stride if k == count - 1 else 1
                layers += [nn.Conv2d(cin if k == 0 else cout, cout, 3, stride=stride, padding=dilation, dilation=dilation), nn.ReLU(True)]
            return layers

        self.model1 = nn.Sequential(*convs(1, w[0], 2, 2), nn.BatchNorm2d(w[0]))
        self.model2 = nn.Sequential(*convs(w[0], w[1], 2, 2), nn.BatchNorm2d(w[1]))
        self.model3 = nn.Sequential(*convs(w[1], w[2], 3, 2), nn.BatchNorm2d(w[2]))
        self.model4 = nn.Sequential(*convs(w[2], w[3], 3), nn.BatchNorm2d(w[3]))
        self.model5 = nn.Sequential(*convs(w[3], w[3], 3, dilation=2), nn.BatchNorm2d(w[3]))
        self.model6 = nn.Sequential(*convs(w[3], w[3], 3, dilation=2), nn.BatchNorm2d(w[3]))
        self.model7 = nn.Sequential(*convs(w[3], w[3], 3), nn.BatchNorm2d(w[3]))
        self.model8 = nn.Sequential(nn.ConvTranspose2d(w[3], w[2], 4, stride=2, padding=1), nn.ReLU(True),
                                    *convs(w[2], w[2], 2), nn.Conv2d(w[2], bins, 1))
        self.model_out = nn.Conv2d(bins, 2, 1, bias=False)

    def forward(self, lightness, temperature=1.0):
        h = (lightness - 50) / 100
        for k in range(1, 9):
            h = getattr(self, f"model{k}")(h)
        ab = F.interpolate(self.model_out(F.softmax(h / temperature, dim=1)), scale_factor=4, mode="bilinear") * 110
        return h, ab


def test_the_papers_size_has_the_references_names_and_count():
    graph = cnnc.load("colorization")
    reference = ECCVGenerator()
    assert graph.param_shapes == {k: tuple(v.shape) for k, v in reference.state_dict().items() if "num_batches" not in k}
    assert graph.parameter_count() == sum(p.numel() for p in reference.parameters()) == 32_236_011


@pytest.mark.slow  # a whole model, compiled cold in tens of seconds
def test_a_small_generator_computes_and_trains_as_the_reference():
    bins = ab_bins()
    hyper = {"size": 32, "width": 4, "bins": len(bins), "temperature": 1.0}
    net = cnnc.compile("colorization", seed=3, **hyper).train()
    net.load_params({"model_out.weight": (bins.T / 110)[:, :, None, None]}, strict=False)
    reference = ECCVGenerator(4, len(bins))
    reference.load_state_dict({k: torch.tensor(v) for k, v in net.state_dict().items()}, strict=False)
    reference.model_out.weight.requires_grad_(False)
    rng = np.random.default_rng(0)
    lightness = rng.uniform(0, 100, (2, 1, 32, 32)).astype(np.float32)
    target = soft_encode(rng.uniform(-60, 60, (2, 2, 8, 8)), bins)
    weight = rng.uniform(0.2, 3.0, (2, 8, 8)).astype(np.float32)
    feeds = {"lightness": lightness, "target": target, "weight": weight}

    out = net(lightness, outputs=["logits", "ab"], update_stats=False)
    logits, ab = reference(torch.tensor(lightness))
    np.testing.assert_allclose(out["logits"], logits.detach().numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["ab"], ab.detach().numpy(), rtol=1e-4, atol=1e-3)
    loss, grads = net.grad(feeds, loss=None, output="loss")
    assert "model_out.weight" not in grads  # frozen
    tloss = (F.cross_entropy(logits, torch.tensor(target), reduction="none") * torch.tensor(weight)).mean()
    tloss.backward()
    assert abs(loss - tloss.item()) < 1e-5 * tloss.item()
    for name, p in reference.named_parameters():
        if p.requires_grad:
            scale = max(np.abs(p.grad.numpy()).max(), 1e-8)
            np.testing.assert_allclose(grads[name] / scale, p.grad.numpy() / scale, atol=2e-4, err_msg=name)
    # One SGD step from the gradients (a second forward here would move the statistics twice; Adam's
    # first step divides by |g| and so magnifies the float32 noise of the near-zero gradients).
    net.trainer(optimizer=cnnc.optim.SGD(lr=0.1, momentum=0.9)).update(grads)
    torch.optim.SGD([p for p in reference.parameters() if p.requires_grad], lr=0.1, momentum=0.9).step()
    for name, value in reference.state_dict().items():
        if "num_batches" not in name:
            np.testing.assert_allclose(net.state_dict()[name], value.numpy(), rtol=1e-4, atol=1e-6, err_msg=name)


def test_the_annealed_mean_in_the_network_equals_the_host_decoding():
    bins = ab_bins()
    net = cnnc.compile("colorization", size=16, width=2, bins=len(bins), seed=1).eval()
    net.load_params({"model_out.weight": (bins.T / 110)[:, :, None, None]}, strict=False)
    lightness = np.random.default_rng(1).uniform(0, 100, (1, 1, 16, 16)).astype(np.float32)
    out = net(lightness, outputs=["logits", "ab"])
    p = np.exp(out["logits"] - out["logits"].max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    host = annealed_mean(p, bins, 0.38)
    small = torch.tensor(host, dtype=torch.float32)
    expected = F.interpolate(small, scale_factor=4, mode="bilinear").numpy()
    np.testing.assert_allclose(out["ab"], expected, rtol=1e-3, atol=1e-2)


def test_lab_matches_the_cie_formulas_at_known_colours():
    rgb = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 1.0], [0, 0, 0]])[:, :, None, None]
    lab = rgb_to_lab(rgb)[:, :, 0, 0]
    expected = [[53.24, 80.09, 67.20], [87.73, -86.18, 83.18], [32.30, 79.19, -107.86], [100, 0, 0], [0, 0, 0]]
    np.testing.assert_allclose(lab, expected, atol=0.02)
    x = np.random.default_rng(0).uniform(size=(3, 3, 4, 5))
    np.testing.assert_allclose(lab_to_rgb(rgb_to_lab(x)), x, atol=1e-9)


def test_bins_soft_encoding_and_rebalancing():
    bins = ab_bins()
    assert len(bins) == 261 and (bins % 10 == 0).all() and [0, 0] in bins.tolist()
    ab = np.array([[[[3.0]], [[-4.0]]]])  # one pixel: a = 3, b = -4
    encoded = soft_encode(ab, bins)
    assert encoded.shape == (1, len(bins), 1, 1) and abs(encoded.sum() - 1) < 1e-6
    assert bins[encoded[0, :, 0, 0].argmax()].tolist() == [0.0, 0.0]  # the nearest bin weighs most
    assert np.count_nonzero(encoded) == 5
    prior = np.array([0.7, 0.2, 0.1, 0.0])
    w = rebalancing_weights(prior)
    assert abs(np.sum(prior * w) - 1) < 1e-12 and w[2] > w[1] > w[0]  # rarer colours weigh more
