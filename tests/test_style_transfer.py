"""lib/style_transfer.cnn against the PyTorch neural style tutorial (Gatys et al.), restated here.

The reference is torchvision's VGG-19 `features` up to conv5_1's ReLU (written out: torchvision does
not import beside this torch), the tutorial's Normalization, gram_matrix, ContentLoss and StyleLoss
at the paper's layers. At the paper's width the names and counts are torchvision's; at a small image
size the targets, every loss and the gradient with respect to the image equal PyTorch's.
"""

import numpy as np
import pytest

import cnnc

torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional

CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512]  # VGG-19 to conv5_1
LAYERS = {"relu1_1": 1, "relu2_1": 6, "relu3_1": 11, "relu4_1": 20, "relu4_2": 22, "relu5_1": 29}


def vgg19_features(pool: str = "max") -> nn.Sequential:
    layers, channels = [], 3
    for v in CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2))
        else:
            layers += [nn.Conv2d(channels, v, 3, padding=1), nn.ReLU()]
            channels = v
    return nn.Sequential(*layers)


def gram_matrix(x):
    """The tutorial's gram_matrix (batch 1)."""
    a, b, c, d = x.size()
    features = x.view(a * b, c * d)
    return torch.mm(features, features.t()).div(a * b * c * d)


def run_reference(features, image):
    mean = torch.tensor([0.485, 0.456, 0.406]).view(-1, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(-1, 1, 1)
    x, found = (image - mean) / std, {}
    for k, layer in enumerate(features):
        x = layer(x)
        for name, index in LAYERS.items():
            if index == k:
                found[name] = x
    return found


def test_the_papers_network_has_torchvisions_names_and_count():
    graph = cnnc.load("style_transfer")
    reference = vgg19_features()
    assert graph.param_shapes == {f"features.{k}": tuple(v.shape) for k, v in reference.state_dict().items()}
    assert graph.parameter_count() == sum(p.numel() for p in reference.parameters()) == 12_944_960


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_targets_losses_and_the_image_gradient_equal_the_tutorials(pool):
    size = 32
    net = cnnc.compile("style_transfer", size=size, pool=pool, seed=1)
    features = vgg19_features(pool)
    features.load_state_dict({k.removeprefix("features."): torch.tensor(v) for k, v in net.state_dict().items()})
    rng = np.random.default_rng(0)
    content, style, image = (rng.uniform(size=(1, 3, size, size)).astype(np.float32) for _ in range(3))

    names = ["gram1_1", "gram2_1", "gram3_1", "gram4_1", "gram5_1"]
    target = net(content, outputs="relu4_2")  # only the features: the loss's inputs are not needed
    grams = net(style, outputs=names)
    with torch.no_grad():
        want_target = run_reference(features, torch.tensor(content))["relu4_2"]
        want_grams = [gram_matrix(run_reference(features, torch.tensor(style))[n.replace("gram", "relu")]) for n in names]
    np.testing.assert_allclose(target, want_target.numpy(), rtol=1e-4, atol=1e-6)
    for name, want in zip(names, want_grams):
        np.testing.assert_allclose(grams[name][0], want.numpy(), rtol=1e-4, atol=1e-7, err_msg=name)

    feeds = {"image": image, "content": target, **{f"style{k + 1}": grams[n] for k, n in enumerate(names)}}
    loss, grads = net.grad(feeds, loss=None, output="loss", params=False, inputs=["image"])
    assert list(grads) == ["image"]
    timage = torch.tensor(image, requires_grad=True)
    found = run_reference(features, timage)
    content_loss = F.mse_loss(found["relu4_2"], want_target)
    style_loss = sum(F.mse_loss(gram_matrix(found[n.replace("gram", "relu")]), g) for n, g in zip(names, want_grams))
    total = content_loss + 1e6 * style_loss
    total.backward()
    assert abs(loss - total.item()) <= 1e-4 * total.item()
    outs = net(**feeds, outputs=["content_loss", "style_loss"])
    assert abs(outs["content_loss"] - content_loss.item()) <= 1e-4 * content_loss.item()
    assert abs(outs["style_loss"] - style_loss.item()) <= 1e-4 * style_loss.item()
    np.testing.assert_allclose(grads["image"], timage.grad.numpy(), rtol=2e-4, atol=1e-9 + 1e-4 * np.abs(timage.grad.numpy()).max())
