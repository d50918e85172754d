"""lib/fcn8s.cnn against wkentaro/pytorch-fcn's FCN8s, FCN16s and FCN32s (torchfcn/models), restated here.

At the paper's size (the Caffe geometry: conv1_1 padded by 100, 7x7 fc6, crops at 5, 9, 31) the
parameter names, shapes and counts are the reference's; at the small size (widths / 8, sizes kept,
no crops) the logits, the per-pixel loss with an ignored label, every gradient and an SGD step
equal PyTorch's. The transposed convolutions start as get_upsampling_weight makes them.
"""

import numpy as np
import pytest

import cnnc
from test_initializers import get_upsampling_weight

torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional


class FCN(nn.Module):
    """FCN8s / FCN16s / FCN32s of torchfcn, with the widths and the geometry as parameters (pad100 = the original)."""

    def __init__(self, n_class=21, stride=8, width=64, fc=4096, pad100=True):
        super().__init__()
        self.stride, self.pad100 = stride, pad100
        widths = [width, width * 2, width * 4, width * 8, width * 8]
        channels = 3
        for block, (w, count) in enumerate(zip(widths, [2, 2, 3, 3, 3]), start=1):
            for k in range(1, count + 1):
                pad = 100 if (block, k) == (1, 1) and pad100 else 1
                setattr(self, f"conv{block}_{k}", nn.Conv2d(channels, w, 3, padding=pad))
                channels = w
        self.fc6 = nn.Conv2d(channels, fc, 7 if pad100 else 3, padding=0 if pad100 else 1)
        self.fc7 = nn.Conv2d(fc, fc, 1)
        self.score_fr = nn.Conv2d(fc, n_class, 1)
        up = 0 if pad100 else 1
        if stride == 32:
            self.upscore = nn.ConvTranspose2d(n_class, n_class, 64, stride=32, padding=16 * up, bias=False)
        else:
            self.score_pool4 = nn.Conv2d(width * 8, n_class, 1)
            self.upscore2 = nn.ConvTranspose2d(n_class, n_class, 4, stride=2, padding=up, bias=False)
            if stride == 16:
                self.upscore16 = nn.ConvTranspose2d(n_class, n_class, 32, stride=16, padding=8 * up, bias=False)
            else:
                self.score_pool3 = nn.Conv2d(width * 4, n_class, 1)
                self.upscore_pool4 = nn.ConvTranspose2d(n_class, n_class, 4, stride=2, padding=up, bias=False)
                self.upscore8 = nn.ConvTranspose2d(n_class, n_class, 16, stride=8, padding=4 * up, bias=False)
        self.drop = nn.Dropout2d()

    def forward(self, x, drop=True):
        crop = (lambda t, k, like: t[:, :, k : k + like.size(2), k : k + like.size(3)]) if self.pad100 else (lambda t, k, like: t)
        h, pools = x, {}
        for block, count in enumerate([2, 2, 3, 3, 3], start=1):
            for k in range(1, count + 1):
                h = F.relu(getattr(self, f"conv{block}_{k}")(h))
            h = F.max_pool2d(h, 2, stride=2, ceil_mode=True)
            pools[block] = h
        h = F.relu(self.fc6(h))
        h = self.drop(h) if drop else h
        h = F.relu(self.fc7(h))
        h = self.drop(h) if drop else h
        h = self.score_fr(h)
        if self.stride == 32:
            return crop(self.upscore(h), 19, x)
        upscore2 = self.upscore2(h)
        h = upscore2 + crop(self.score_pool4(pools[4]), 5, upscore2)
        if self.stride == 16:
            return crop(self.upscore16(h), 27, x)
        upscore_pool4 = self.upscore_pool4(h)
        h = upscore_pool4 + crop(self.score_pool3(pools[3]), 9, upscore_pool4)
        return crop(self.upscore8(h), 31, x)


def shapes(module) -> dict:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("stride", [8, 16, 32])
def test_the_papers_size_has_the_references_names_and_count(stride):
    graph = cnnc.load("fcn8s", stride=stride)
    reference = FCN(stride=stride)
    assert graph.param_shapes == shapes(reference)
    assert graph.parameter_count() == sum(p.numel() for p in reference.parameters())
    assert graph.output_types()["logits"].sample_shape == (21, 500, 500)


def test_the_transposed_convs_start_bilinear():
    net = cnnc.compile("fcn8s", classes=4, size=64, width=8, fc=16, pad100=False)
    for name, kernel in (("upscore2", 4), ("upscore_pool4", 4), ("upscore8", 16)):
        np.testing.assert_array_equal(net.params[f"{name}.weight"], get_upsampling_weight(4, 4, kernel).astype(np.float32))


@pytest.mark.parametrize("stride, pad100, size", [(8, False, 64), (16, False, 64), (32, False, 64), (8, True, 36)])
def test_logits_loss_gradients_and_a_step_equal_pytorchs(stride, pad100, size):
    hyper = {"classes": 3, "stride": stride, "size": size, "width": 2, "fc": 8, "pad100": pad100, "drop": 0.0}
    net = cnnc.compile("fcn8s", seed=stride, **hyper).train()
    reference = FCN(3, stride, 2, 8, pad100)
    reference.load_state_dict({k: torch.tensor(v) for k, v in net.state_dict().items()})
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, size, size)).astype(np.float32)
    labels = rng.integers(0, 3, (2, size, size))
    labels[:, :4] = 255  # not labelled
    feeds = {"image": x, "labels": labels}
    logits = net(x, outputs="logits")  # the labels are not needed for the logits
    tx = torch.tensor(x)
    expected = reference(tx, drop=False)
    np.testing.assert_allclose(logits, expected.detach().numpy(), rtol=1e-4, atol=1e-5)
    loss, grads = net.grad(feeds, loss=None, output="loss")
    tloss = F.cross_entropy(expected, torch.tensor(labels), ignore_index=255)
    tloss.backward()
    assert abs(loss - tloss.item()) < 1e-5 * max(1, tloss.item())
    for name, p in reference.named_parameters():
        scale = max(np.abs(p.grad.numpy()).max(), 1e-8)
        np.testing.assert_allclose(grads[name] / scale, p.grad.numpy() / scale, atol=1e-4, err_msg=name)
    net.trainer(loss=None, output="loss", optimizer=cnnc.optim.SGD(lr=0.1, momentum=0.9)).step(feeds, None)
    torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9).step()
    for name, value in reference.state_dict().items():
        np.testing.assert_allclose(net.state_dict()[name], value.numpy(), rtol=1e-4, atol=1e-6, err_msg=name)
