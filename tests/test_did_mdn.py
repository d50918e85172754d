"""lib/did_mdn.cnn against hezhangsprinter/DID-MDN's Dense_rain and vgg19ca (models/derain_dense.py),
restated here with the layers their forward passes use.

The names and shapes are the reference's (its streams also declare layers their forward never
uses: conv21 ... conv61, conv_refin, refine3, batchnorm20, batchnorm1; a state dict of the
reference loads with strict=False). At 64x64 the residual, the clean image, the loss, every
gradient and an SGD step equal PyTorch's, and so do the classifier's logits, gradients and step.
"""

import numpy as np
import pytest

import cnnc

torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional


class Bottleneck(nn.Module):
    def __init__(self, cin, growth, kernel):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, growth * 4, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(growth * 4), nn.Conv2d(growth * 4, growth, kernel, padding=kernel // 2, bias=False)

    def forward(self, x):
        return torch.cat([x, self.conv2(F.relu(self.bn2(self.conv1(F.relu(self.bn1(x))))))], 1)


class Transition(nn.Module):
    def __init__(self, cin, cout, resize):
        super().__init__()
        self.bn1, self.conv1, self.resize = nn.BatchNorm2d(cin), nn.ConvTranspose2d(cin, cout, 1, bias=False), resize

    def forward(self, x):
        out = self.conv1(F.relu(self.bn1(x)))
        return {"up": lambda t: F.interpolate(t, scale_factor=2, mode="nearest"), "down": lambda t: F.avg_pool2d(t, 2)}.get(
            self.resize, lambda t: t)(out)


class Stream(nn.Module):
    """Dense_base_down0/1/2's forward."""

    def __init__(self, kernel, growths, widths, resizes, conv11_in):
        super().__init__()
        cin = 3
        skips = {5: widths[1], 6: widths[0]}  # dense_block5 reads x4 + x2, dense_block6 x5 + x1
        for k in range(6):
            cin = widths[k - 1] + skips.get(k + 1, 0) if k else 3
            setattr(self, f"dense_block{k + 1}", Bottleneck(cin, growths[k], kernel))
            setattr(self, f"trans_block{k + 1}", Transition(cin + growths[k], widths[k], resizes[k]))
        self.conv11 = nn.Conv2d(conv11_in, 1, 3, padding=1)

    def forward(self, x):
        x1 = self.trans_block1(self.dense_block1(x))
        x2 = self.trans_block2(self.dense_block2(x1))
        x3 = self.trans_block3(self.dense_block3(x2))
        x4 = torch.cat([self.trans_block4(self.dense_block4(x3)), x2], 1)
        x5 = torch.cat([self.trans_block5(self.dense_block5(x4)), x1], 1)
        x6 = self.trans_block6(self.dense_block6(x5))
        side = F.interpolate(F.leaky_relu(self.conv11(x1), 0.2), size=x6.shape[2:], mode="nearest")
        return torch.cat([x6, side, side, side, side, side, x], 1)


class DenseRain(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv_refin = nn.Conv2d(47, 47, 3, 1, 1)
        for k in range(1, 5):
            setattr(self, f"conv10{k}0", nn.Conv2d(47, 2, 1))
        self.refine3 = nn.Conv2d(55, 3, 3, padding=1)
        self.refineclean1, self.refineclean2 = nn.Conv2d(3, 8, 7, padding=3), nn.Conv2d(8, 3, 3, padding=1)
        down3, down2 = ["down", "down", "down", "up", "up", "up"], ["down", "down", "none", "none", "up", "up"]
        self.dense0 = Stream(3, [5, 8, 4, 4, 8, 8], [4, 12, 12, 12, 4, 4], ["down", "none", "none", "none", "none", "up"], 4)
        self.dense1 = Stream(5, [13, 16, 16, 16, 8, 8], [8, 16, 16, 16, 8, 4], down2, 8)
        self.dense2 = Stream(7, [13, 16, 16, 16, 8, 8], [8, 16, 16, 16, 8, 4], down3, 8)

    def forward(self, x, level):
        label = level.expand(-1, 8, x.shape[2], x.shape[3])
        x9 = F.leaky_relu(self.conv_refin(torch.cat([self.dense0(x), x, self.dense1(x), self.dense2(x), label], 1)), 0.2)
        pyramid = [F.interpolate(F.leaky_relu(getattr(self, f"conv10{k}0")(F.avg_pool2d(x9, p)), 0.2), size=x9.shape[2:], mode="nearest")
                   for k, p in zip(range(1, 5), (32, 16, 8, 4))]
        residual = torch.tanh(self.refine3(torch.cat([*pyramid, x9], 1)))
        clean = torch.tanh(self.refineclean2(F.leaky_relu(self.refineclean1(x - residual), 0.2)))
        return residual, clean


class Vgg19ca(nn.Module):
    def __init__(self, features):
        super().__init__()
        self.feature = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(True))
        self.conv16 = nn.Conv2d(64, 24, 3, padding=1)
        self.dense_classifier, self.dense_classifier1 = nn.Linear(features, 512), nn.Linear(512, 4)

    def forward(self, x):
        out = F.avg_pool2d(F.relu(self.conv16(self.feature(x))), kernel_size=7).flatten(1)
        return self.dense_classifier1(F.relu(self.dense_classifier(out)))


def used_shapes(module) -> dict:
    return {k: tuple(v.shape) for k, v in module.state_dict().items() if "num_batches" not in k}


def test_names_shapes_and_counts_are_the_references():
    derain, classifier = cnnc.load("did_mdn", network="derain"), cnnc.load("did_mdn", network="density_classifier")
    assert derain.param_shapes.keys() == used_shapes(DenseRain()).keys()
    assert derain.param_shapes == used_shapes(DenseRain())
    reference = Vgg19ca(127896)  # 24 x 73 x 73 at 512x512, as the reference's Linear(127896, 512)
    assert classifier.param_shapes == used_shapes(reference)
    assert classifier.parameter_count() == sum(p.numel() for p in reference.parameters())
    assert derain.parameter_count() == sum(p.numel() for p in DenseRain().parameters()) == 365_236


def compare_grads(grads, reference):
    """Every parameter's gradient, to within 2e-4 of the largest gradient (a conv bias before a training-mode
    batchnorm has a gradient of 0 up to rounding on both sides)."""
    largest = max(np.abs(p.grad.numpy()).max() for p in reference.parameters())
    for name, p in reference.named_parameters():
        np.testing.assert_allclose(grads[name], p.grad.numpy(), rtol=1e-3, atol=2e-4 * largest, err_msg=name)


def step_and_compare(net, reference, feeds, torch_loss, lr=0.05):
    loss, grads = net.grad(feeds, loss=None, output="loss")
    tloss = torch_loss()
    tloss.backward()
    assert abs(loss - tloss.item()) <= 1e-4 * max(1.0, tloss.item())
    compare_grads(grads, reference)
    net.trainer(optimizer=cnnc.optim.SGD(lr=lr, momentum=0.9)).update(grads)
    torch.optim.SGD(reference.parameters(), lr=lr, momentum=0.9).step()
    for name, value in used_shapes(reference).items():
        np.testing.assert_allclose(net.state_dict()[name], reference.state_dict()[name].numpy(), rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.slow  # a whole model, compiled cold in tens of seconds
def test_the_derain_network_computes_and_trains_as_the_reference():
    net = cnnc.compile("did_mdn", network="derain", size=64, seed=1).train()
    reference = DenseRain()
    reference.load_state_dict({k: torch.tensor(v) for k, v in net.state_dict().items()}, strict=False)
    rng = np.random.default_rng(0)
    image = np.tanh(rng.standard_normal((2, 3, 64, 64))).astype(np.float32)
    level = np.array([1.0, 2.0], np.float32).reshape(2, 1, 1, 1)
    target = np.tanh(rng.standard_normal((2, 3, 64, 64))).astype(np.float32)
    out = net(image, level, outputs=["residual", "clean"], update_stats=False)
    ti, tl, tt = torch.tensor(image), torch.tensor(level), torch.tensor(target)
    residual, clean = reference(ti, tl)
    np.testing.assert_allclose(out["residual"], residual.detach().numpy(), rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(out["clean"], clean.detach().numpy(), rtol=1e-4, atol=2e-5)
    feeds = {"image": image, "level": level, "target": target}
    # One forward each, so that batchnorm's statistics move once on both sides.
    step_and_compare(net, reference, feeds, lambda: F.mse_loss(residual, ti - tt) + F.mse_loss(clean, tt))


@pytest.mark.slow  # a whole model, compiled cold in tens of seconds
def test_the_density_classifier_computes_and_trains_as_the_reference():
    net = cnnc.compile("did_mdn", network="density_classifier", size=64, seed=2).train()
    reference = Vgg19ca(24 * 9 * 9)
    reference.load_state_dict({k: torch.tensor(v) for k, v in net.state_dict().items()}, strict=False)
    rng = np.random.default_rng(1)
    image = rng.standard_normal((3, 3, 64, 64)).astype(np.float32)
    labels = np.array([0, 3, 1])
    loss, grads = net.grad(image, labels, loss="cross_entropy")
    tloss = F.cross_entropy(reference(torch.tensor(image)), torch.tensor(labels))
    tloss.backward()
    assert abs(loss - tloss.item()) < 1e-5 * max(1.0, tloss.item())
    compare_grads(grads, reference)
