"""Neural style transfer: scikit-learn's photo of a Chinese temple in the style of its photo of a flower.

lib/style_transfer.cnn gives the targets (relu4_2 of the content photo, the Gram matrices of the style
photo) and, differentiated with respect to its image input only, the gradient of
content + 1e6 · style loss. SciPy's L-BFGS-B optimises the pixels within [0, 1] (the bounds
replace the tutorial's clamping), starting from the content photo as the tutorial does.

No pretrained VGG-19 can be had offline: the network's weights are random (He-normal, seeded).
Gram matrices of random convolutional features still describe a texture (Ustyuzhaninov et al.
2017), so the style moves into the picture, but more crudely than with ImageNet weights.

Two numbers say how it went: how many times smaller the style loss became (target 100x), and the
content loss at the end as a fraction of the style photo's own, the content loss of an image that
kept nothing of the content (target below 1: the result is nearer the content than that). The
content loss starts at 0, the content photo's own, so "within 2x of its start" cannot be asked.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import cnnc

from ..runtime.data import resize
from ..runtime.pictures import side_by_side, to_pixels, write_png
from . import Metric, Result

TITLE = "neural style transfer"
PAPER = "Gatys, Ecker and Bethge: Image Style Transfer Using Convolutional Neural Networks (CVPR 2016)"
SHOWS = "a photo repainted with the textures of another, optimised through the input gradient of a VGG-19"

SIZE = 64
BUDGET = 50.0  # seconds of optimisation; compiling (warm cache) and the targets take the rest of 60 s
GRAMS = ["gram1_1", "gram2_1", "gram3_1", "gram4_1", "gram5_1"]


def photo(index: int) -> np.ndarray:
    """One of scikit-learn's two sample photos (0: china, 1: flower), its centre square at SIZE, [1, 3, SIZE, SIZE] in [0, 1]."""
    from sklearn.datasets import load_sample_images

    image = load_sample_images().images[index].astype(np.float32) / 255.0
    h, w, _ = image.shape
    side = min(h, w)
    square = image[(h - side) // 2 : (h + side) // 2, (w - side) // 2 : (w + side) // 2]
    return np.clip(resize(square.transpose(2, 0, 1)[None], SIZE, SIZE), 0.0, 1.0).astype(np.float32)


def he_normal(net: cnnc.Model, seed: int) -> None:
    """Random weights that keep the features' scale through 16 layers: N(0, 2 / fan_in), biases 0."""
    rng = np.random.default_rng(seed)
    state = net.state_dict()
    for name, value in state.items():
        if name.endswith("weight"):
            state[name] = rng.normal(0.0, np.sqrt(2.0 / np.prod(value.shape[1:])), value.shape).astype(np.float32)
        else:
            state[name] = np.zeros_like(value)
    net.load_params(state)


def run(out: Path, quick: bool, seed: int, say) -> Result:
    from scipy.optimize import minimize

    start = time.perf_counter()
    net = cnnc.compile("style_transfer", size=SIZE, seed=seed)
    he_normal(net, seed)
    content, style = photo(0), photo(1)
    target = net(content, outputs="relu4_2")
    grams = net(style, outputs=GRAMS)
    fixed = {"content": target, **{f"style{k + 1}": grams[name] for k, name in enumerate(GRAMS)}}
    losses, evaluations = [], 0

    def parts(image: np.ndarray) -> tuple[float, float]:
        out = net(image=image, **fixed, outputs=["content_loss", "style_loss"])
        return float(out["content_loss"]), float(out["style_loss"])

    def loss_and_gradient(flat: np.ndarray) -> tuple[float, np.ndarray]:
        nonlocal evaluations
        evaluations += 1
        image = flat.reshape(content.shape).astype(np.float32)
        value, grads = net.grad({"image": image, **fixed}, loss=None, output="loss", params=False, inputs=["image"])
        losses.append(value)
        return value, grads["image"].astype(np.float64).ravel()

    began = time.perf_counter()

    def out_of_time(_) -> None:
        if time.perf_counter() - began > BUDGET:
            raise StopIteration

    _, style_before = parts(content)
    content_of_style, _ = parts(style)
    say(f"optimising a {SIZE}x{SIZE} image with L-BFGS-B {'for 3 iterations' if quick else f'for up to {BUDGET:.0f} s'}")
    result = minimize(loss_and_gradient, content.astype(np.float64).ravel(), jac=True, method="L-BFGS-B", bounds=[(0.0, 1.0)] * content.size,
                      callback=out_of_time, options={"maxiter": 3 if quick else 1000})
    image = result.x.reshape(content.shape).astype(np.float32)
    content_after, style_after = parts(image)
    say(f"{evaluations} evaluations in {time.perf_counter() - began:.1f} s; style loss {style_before:.4g} -> {style_after:.4g}, "
        f"content loss 0 -> {content_after:.4g} (the style photo's: {content_of_style:.4g})")

    pixels = to_pixels(np.concatenate([content, style, image]))
    picture = side_by_side(*(p.repeat(4, 0).repeat(4, 1) for p in pixels), gap=12)
    pictures = [write_png(out / "style_transfer.png", picture)]
    metrics = [Metric("style loss reduction", style_before / max(style_after, 1e-30), 100.0, unit="x"),
               Metric("content loss / the style photo's", content_after / content_of_style, 1.0, at_most=True),
               Metric("time", time.perf_counter() - start, 60.0, at_most=True, unit=" s")]
    return Result(metrics, pictures, losses, time.perf_counter() - start)
