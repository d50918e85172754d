"""Every op's shape rule against PyTorch, its shape errors, and its MAC count.

The PyTorch comparisons build a one-layer cnnc program for random hyperparameters
and run the equivalent PyTorch op on a random batch of two. Both must accept or
both must reject; when both accept, the output shapes and the parameter (and
buffer) shapes must agree. Without PyTorch those tests skip; the hand-computed
cases, the error messages and the MAC counts run anyway.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import cnnc
from cnnc import BATCH as N  # the symbolic batch axis, as shapes print it
from cnnc import CnncError
from cnnc.ops import REGISTRY

try:  # optional: only the comparisons need it, and they skip without it
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError:
    torch = F = nn = None

PUBLIC_OPS = sorted(name for name, op in REGISTRY.items() if not op.internal)
BATCH_SIZE = 2
EXAMPLES = 40  # random programs per op; more for the ops with many attributes
MORE_EXAMPLES = {"conv": 100, "conv_transpose": 100, "maxpool": 100, "avgpool": 100, "upsample": 80,
                 "reshape": 80, "concat": 80, "cross_entropy": 80, "add": 60, "mul": 60, "batchnorm": 60}
OMIT = "<omit>"  # an attribute left out: cnnc's default must then agree with PyTorch's


# -- writing programs -------------------------------------------------------


def lang(value: Any) -> str:
    """A Python value as the language writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(lang(v) for v in value) + "]"
    return repr(value)


def call(op: str, *args: Any, inputs: tuple[str, ...] = (), **attrs: Any) -> str:
    """`op(inputs..., args..., key=value...)`, leaving out attributes drawn as OMIT."""
    parts = [*inputs, *(lang(a) for a in args)]
    parts += [f"{key}={lang(value)}" for key, value in attrs.items() if value is not OMIT]
    return f"{op}({', '.join(parts)})"


def program(inputs: dict[str, tuple[str, tuple[int, ...]]], line: str) -> str:
    """A network declaring `inputs` (name -> (dtype, shape of one example)), then `line`."""
    decls = [
        f"    input {name}: {'' if dtype == 'float32' else dtype}{lang(list(shape))}"
        for name, (dtype, shape) in inputs.items()
    ]
    return "network probe {\n" + "\n".join(decls) + f"\n    {line}\n}}\n"


def floats(**shapes: tuple[int, ...]) -> dict[str, tuple[str, tuple[int, ...]]]:
    return {name: ("float32", tuple(shape)) for name, shape in shapes.items()}


# -- the PyTorch side -------------------------------------------------------


def kw(**attrs: Any) -> dict[str, Any]:
    """PyTorch keyword arguments: left-out attributes dropped, [h, w] lists as tuples."""
    return {key: tup(value) for key, value in attrs.items() if value is not OMIT}


def tup(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def nchw(x):
    """PyTorch's 2-D ops also take an unbatched [C, H, W]; cnnc's batch axis is always there."""
    if x.dim() != 4:
        raise ValueError(f"expected a 4-D batch, got {x.dim()}-D")
    return x


def apply(module, *xs):
    return module(*xs), module


@dataclass
class Case:
    """One random application of an op, in cnnc and in PyTorch."""

    inputs: dict[str, tuple[str, tuple[int, ...]]]
    line: str  # the layer in the language; labelled `l` where it owns parameters
    torch: Callable[..., Any]  # batched tensors -> output, or (output, module)

    @property
    def program(self) -> str:
        return program(self.inputs, self.line)


def run_cnnc(case: Case):
    """(output shape with the batch set to 2, [(parameter, shape)]) or the CnncError."""
    try:
        g = cnnc.load(case.program)
    except CnncError as e:
        return e
    out = g.output_types()["output"].concrete(BATCH_SIZE)
    return out, [(name.removeprefix("l."), shape) for name, shape in g.param_shapes.items()]


def run_torch(case: Case):
    """The same pair from PyTorch, or the exception it raised."""
    tensors = [
        torch.zeros((BATCH_SIZE, *shape), dtype=torch.int64)  # class 0 is valid for every logits shape
        if dtype == "int64"
        else torch.randn((BATCH_SIZE, *shape))
        for dtype, shape in case.inputs.values()
    ]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. conv's note on even kernels with pad="same"
            # mse warns, then broadcasts, when the target's shape differs: count that as a rejection
            warnings.filterwarnings("error", "Using a target size", UserWarning)
            result = case.torch(*tensors)
    except (RuntimeError, ValueError, IndexError, UserWarning) as e:
        return e
    out, module = result if isinstance(result, tuple) else (result, None)
    if out.numel() == 0:  # e.g. conv_transpose with too much padding; cnnc rejects empty outputs
        return ValueError(f"empty output {tuple(out.shape)}")
    state = [] if module is None else [*module.named_parameters(), *module.named_buffers()]
    params = [(name, tuple(p.shape)) for name, p in state if name != "num_batches_tracked"]
    return tuple(out.shape), params


def compare(case: Case) -> str:
    ours, theirs = run_cnnc(case), run_torch(case)
    report = f"\n{case.program}cnnc:  {ours}\ntorch: {theirs!r}"
    if isinstance(ours, Exception) or isinstance(theirs, Exception):
        assert isinstance(ours, Exception) == isinstance(theirs, Exception), report
        assert ours.line == len(case.inputs) + 2, report  # rejected by the op, not elsewhere
        return "rejected"
    assert ours == theirs, report
    return "accepted"


# -- random cases, one strategy per op ----------------------------------------


def maybe(strategy):
    """A value, or OMIT (the attribute is left out on both sides)."""
    return st.one_of(st.just(OMIT), strategy)


def pair(lo: int, hi: int):
    """n or [h, w], as the language takes kernel sizes, strides and padding."""
    return st.one_of(st.integers(lo, hi), st.lists(st.integers(lo, hi), min_size=2, max_size=2))


def shapes(min_rank: int = 1, max_rank: int = 3, hi: int = 5):
    return st.lists(st.integers(1, hi), min_size=min_rank, max_size=max_rank).map(tuple)


def image_dims(draw, hi: int = 8) -> tuple[int, ...]:
    """[height, width]; now and then another rank, which every 2-D op must reject."""
    rank = draw(st.sampled_from([2] * 9 + [0, 1, 3]))
    return tuple(draw(st.lists(st.integers(1, hi), min_size=rank, max_size=rank)))


def axis_within_example(draw, rank: int) -> int:
    """An axis for softmax or concat; the batch axis is refused by design, so it is never drawn."""
    axis = draw(st.integers(-rank - 1, rank))
    assume(not (-rank <= axis < rank and axis % rank == 0))
    return axis


@st.composite
def conv_case(draw):
    groups = draw(st.integers(1, 3))
    cin = groups * draw(st.integers(1, 2)) + draw(st.sampled_from([0, 0, 0, 1]))  # sometimes indivisible
    cout = groups * draw(st.integers(1, 2))
    shape = (cin, *image_dims(draw))
    kernel = draw(pair(1, 4))
    stride = draw(maybe(pair(1, 3)))
    pad = draw(maybe(st.one_of(pair(0, 2), st.sampled_from(["same", "valid"]))))
    dilation = draw(maybe(pair(1, 2)))
    g = draw(maybe(st.just(groups)))
    bias = draw(maybe(st.booleans()))
    line = "l: " + call("conv", cout, kernel=kernel, stride=stride, pad=pad, dilation=dilation, groups=g, bias=bias)
    options = kw(stride=stride, padding=pad, dilation=dilation, groups=g, bias=bias)
    return Case(floats(x=shape), line, lambda x: apply(nn.Conv2d(cin, cout, tup(kernel), **options), nchw(x)))


@st.composite
def conv_transpose_case(draw):
    groups = draw(st.integers(1, 3))
    cin = groups * draw(st.integers(1, 2)) + draw(st.sampled_from([0, 0, 0, 1]))
    cout = groups * draw(st.integers(1, 2))
    shape = (cin, *image_dims(draw, hi=5))
    kernel = draw(pair(1, 4))
    stride = draw(maybe(pair(1, 3)))
    pad = draw(maybe(pair(0, 2)))
    output_pad = draw(maybe(pair(0, 1)))
    dilation = draw(maybe(pair(1, 2)))
    g = draw(maybe(st.just(groups)))
    bias = draw(maybe(st.booleans()))
    line = "l: " + call(
        "conv_transpose", cout, kernel=kernel, stride=stride, pad=pad,
        output_pad=output_pad, dilation=dilation, groups=g, bias=bias,
    )
    options = kw(stride=stride, padding=pad, output_padding=output_pad, dilation=dilation, groups=g, bias=bias)
    return Case(floats(x=shape), line,
                lambda x: apply(nn.ConvTranspose2d(cin, cout, tup(kernel), **options), nchw(x)))


@st.composite
def dense_case(draw):
    features, units, bias = draw(st.integers(1, 8)), draw(st.integers(1, 5)), draw(maybe(st.booleans()))
    leading = draw(st.sampled_from([(), (), (3,), (2, 1, 3), (2, 3)]))  # [2, 3, features]: an image, over its width
    dtype = draw(st.sampled_from(["float32"] * 4 + ["int64"]))  # integers: refused by both
    line = "l: " + call("dense", units, bias=bias)

    def linear(x):
        return apply(nn.Linear(features, units, **kw(bias=bias)), x)

    return Case({"x": (dtype, (*leading, features))}, line, linear)


@st.composite
def pool_case(draw, op: str):
    shape = (draw(st.integers(1, 3)), *image_dims(draw))
    kernel = draw(pair(1, 4))
    stride = draw(maybe(pair(1, 3)))
    pad = draw(maybe(pair(0, 2)))
    ceil = draw(maybe(st.booleans()))
    dilation = draw(maybe(pair(1, 2))) if op == "maxpool" else OMIT
    if op == "maxpool":
        line = call("maxpool", kernel, stride=stride, pad=pad, dilation=dilation, ceil=ceil)
        options = kw(stride=stride, padding=pad, dilation=dilation, ceil_mode=ceil)
        return Case(floats(x=shape), line, lambda x: F.max_pool2d(nchw(x), tup(kernel), **options))
    count_pad = draw(maybe(st.booleans()))
    line = call("avgpool", kernel, stride=stride, pad=pad, ceil=ceil, count_pad=count_pad)
    options = kw(stride=stride, padding=pad, ceil_mode=ceil, count_include_pad=count_pad)
    return Case(floats(x=shape), line, lambda x: F.avg_pool2d(nchw(x), tup(kernel), **options))


@st.composite
def global_avgpool_case(draw):
    shape = (draw(st.integers(1, 3)), *image_dims(draw))
    return Case(floats(x=shape), "global_avgpool", lambda x: F.adaptive_avg_pool2d(nchw(x), 1))


@st.composite
def adaptive_avgpool_case(draw):
    shape = (draw(st.integers(1, 3)), *image_dims(draw))
    size = draw(pair(1, 5))
    return Case(floats(x=shape), call("adaptive_avgpool", size), lambda x: F.adaptive_avg_pool2d(nchw(x), tup(size)))


@st.composite
def upsample_case(draw):
    shape = (draw(st.integers(1, 3)), *image_dims(draw, hi=4))
    given = draw(st.sampled_from(["scale", "size"] * 3 + ["both", "neither"]))  # cnnc takes exactly one
    scale = draw(pair(1, 3)) if given in ("scale", "both") else OMIT
    size = draw(pair(1, 6)) if given in ("size", "both") else OMIT
    mode = draw(maybe(st.sampled_from(["nearest", "bilinear"])))
    align = draw(maybe(st.booleans())) if mode == "bilinear" or draw(st.integers(0, 3)) == 0 else OMIT
    line = call("upsample", scale=scale, mode=mode, size=size, align_corners=align)
    # PyTorch refuses align_corners=False with "nearest"; None is its spelling of cnnc's default.
    options = kw(scale_factor=scale, size=size, mode=mode, align_corners=True if align is True else OMIT)
    return Case(floats(x=shape), line, lambda x: F.interpolate(nchw(x), **options))


@st.composite
def flatten_case(draw):
    return Case(floats(x=draw(shapes())), "flatten", lambda x: x.flatten(1))


@st.composite
def reshape_case(draw):
    shape = draw(shapes(hi=4))
    if draw(st.booleans()):  # a valid target: a factorization of the size, perhaps with one -1
        left, target = math.prod(shape), []
        for _ in range(draw(st.integers(0, 2))):
            d = draw(st.sampled_from([d for d in range(1, left + 1) if left % d == 0]))
            target.append(d)
            left //= d
        target.append(left)
        if draw(st.booleans()):
            target[draw(st.integers(0, len(target) - 1))] = -1
    else:
        target = draw(st.lists(st.integers(-2, 6), max_size=3))
    return Case(floats(x=shape), call("reshape", target), lambda x: x.reshape(BATCH_SIZE, *target))


def elementwise_case(op: str, fn: Callable):
    return st.builds(lambda shape: Case(floats(x=shape), op, fn), shapes())


@st.composite
def leaky_relu_case(draw):
    shape, slope = draw(shapes()), draw(maybe(st.sampled_from([0.0, 0.01, 0.2, -0.5, 1.5])))
    options = kw(negative_slope=slope)
    return Case(floats(x=shape), call("leaky_relu", slope=slope), lambda x: F.leaky_relu(x, **options))


@st.composite
def prelu_case(draw):
    shape, init = draw(st.one_of(shapes(1, 1), shapes(3, 3), shapes(2, 2))), draw(maybe(st.sampled_from([0.25, 0.1, -0.3])))

    def torch_prelu(x):
        # nn.PReLU takes any rank with channels on axis 1; cnnc, like batchnorm, takes [C] and [C, H, W].
        if x.dim() not in (2, 4):
            raise ValueError(f"prelu of rank {x.dim()}")
        return apply(nn.PReLU(shape[0], **kw(init=init)), x)

    return Case(floats(x=shape), "l: " + call("prelu", init=init), torch_prelu)


@st.composite
def normalize_case(draw):
    shape = draw(st.one_of(shapes(1, 1), shapes(3, 3), shapes(2, 2)))
    mean = draw(st.lists(st.floats(-1, 1), min_size=1, max_size=4))
    std = draw(st.lists(st.floats(0.5, 2), min_size=1, max_size=4))

    def torch_normalize(x):
        # torchvision's Normalize (written out: torchvision does not import beside this torch) on [C] or [C, H, W]
        if x.dim() not in (2, 4) or any(len(v) not in (1, x.shape[1]) for v in (mean, std)):
            raise ValueError("normalize: shapes do not match")
        view = (1, -1) + (1,) * (x.dim() - 2)
        return (x - torch.tensor(mean).view(view)) / torch.tensor(std).view(view)

    return Case(floats(x=shape), call("normalize", mean, std), torch_normalize)


@st.composite
def softmax_case(draw, op: str, fn: Callable):
    shape = draw(shapes())
    axis = draw(maybe(st.just(axis_within_example(draw, len(shape) + 1))))
    dim = 1 if axis is OMIT else axis  # cnnc normalizes over the channels by default
    return Case(floats(x=shape), call(op, axis=axis), lambda x: fn(x, dim=dim))


@st.composite
def batchnorm_case(draw):
    shape = draw(st.one_of(shapes(1, 1), shapes(3, 3), shapes(2, 2), shapes(4, 4, hi=2)))
    eps = draw(maybe(st.sampled_from([1e-5, 1e-3, 0.1])))
    momentum = draw(maybe(st.sampled_from([0.1, 0.5, 0.9])))
    affine = draw(maybe(st.booleans()))
    line = "l: " + call("batchnorm", eps=eps, momentum=momentum, affine=affine)
    norm = nn.BatchNorm1d if len(shape) == 1 else nn.BatchNorm2d  # the 2-D one rejects the other ranks
    options = kw(eps=eps, momentum=momentum, affine=affine)
    return Case(floats(x=shape), line, lambda x: apply(norm(shape[0], **options), x))


@st.composite
def dropout_case(draw):
    shape, p = draw(shapes()), draw(maybe(st.sampled_from([0.0, 0.25, 0.5, 0.9])))
    return Case(floats(x=shape), call("dropout", p=p), lambda x: F.dropout(x, **kw(p=p), training=True))


@st.composite
def dropout2d_case(draw):
    shape, p = draw(shapes(max_rank=4)), draw(maybe(st.sampled_from([0.0, 0.25, 0.5, 0.9])))

    def channel_dropout(x):
        # PyTorch's dropout2d of [N, C, L] is dropout1d's (it warns); other ranks it deprecates
        if x.dim() not in (3, 4):
            raise ValueError(f"dropout2d of a {x.dim()}-D batch")
        return (F.dropout1d if x.dim() == 3 else F.dropout2d)(x, **kw(p=p), training=True)

    return Case(floats(x=shape), call("dropout2d", p=p), channel_dropout)


@st.composite
def broadcast_case(draw, op: str, fn: Callable):
    """Two or three values of the same rank; each axis is the common size, 1, or (rarely) another size."""
    base = draw(shapes())
    names = ["a", "b", "c"][: draw(st.integers(2, 2 if op == "sub" else 3))]  # sub takes two
    inputs = {
        name: tuple(draw(st.sampled_from([d, d, 1, d + 1])) for d in base) for name in names
    }
    symbol = {"add": " + ", "sub": " - ", "mul": " * "}[op]
    line = symbol.join(names) if draw(st.booleans()) else call(op, inputs=tuple(names))
    return Case(floats(**inputs), line, lambda *xs: functools.reduce(fn, xs))


@st.composite
def concat_case(draw):
    base = draw(shapes())
    rank = len(base) + 1
    axis = draw(maybe(st.just(axis_within_example(draw, rank))))
    join = 1 if axis is OMIT else axis
    names = ["a", "b", "c"][: draw(st.integers(2, 3))]
    inputs = {}
    for name in names:
        shape = list(base)
        if -rank <= join < rank:
            shape[join % rank - 1] = draw(st.integers(1, 4))  # the joined axis may differ
        if draw(st.integers(0, 5)) == 0:  # rarely, another axis or the rank differs too
            shape = draw(shapes())
        inputs[name] = tuple(shape)
    line = call("concat", inputs=tuple(names), axis=axis)
    return Case(floats(**inputs), line, lambda *xs: torch.cat(xs, dim=join))


@st.composite
def slice_case(draw):
    shape = draw(shapes())
    axis = axis_within_example(draw, len(shape) + 1)
    start, stop = draw(st.integers(-6, 6)), draw(maybe(st.integers(-6, 6)))

    def narrow(x):
        # x[..., start:stop] as Python counts, but out of range or empty is an error (narrow raises for those)
        n = x.shape[axis]
        end = n if stop is OMIT else stop + n * (stop < 0)
        return x.narrow(axis, start, end - (start + n * (start < 0)))

    return Case(floats(x=shape), call("slice", axis, start, stop=stop), narrow)


@st.composite
def crop_case(draw):
    shape, offset, size = draw(shapes(2, 3, hi=8)), draw(pair(0, 4)), draw(pair(1, 6))
    (top, left), (h, w) = [v if isinstance(v, list) else [v, v] for v in (offset, size)]

    def window(x):
        if nchw(x).shape[2] < top + h or x.shape[3] < left + w:  # slicing would clip it
            raise ValueError("the window does not fit")
        return x[:, :, top : top + h, left : left + w]

    return Case(floats(x=shape), call("crop", offset, size), window)


def changed(draw, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The same shape, or (now and then) one with an axis resized, dropped or added."""
    how = draw(st.sampled_from(["same", "same", "resize", "drop", "add"]))
    if how == "resize" and shape:
        i = draw(st.integers(0, len(shape) - 1))
        return shape[:i] + (draw(st.sampled_from([1, shape[i] + 1])),) + shape[i + 1 :]
    if how == "drop" and shape:
        return shape[1:]
    if how == "add":
        return (draw(st.integers(1, 3)), *shape)
    return shape


def weight_shape(draw, shape: tuple[int, ...]) -> tuple[int, ...]:
    """A loss's weight: the shape of the terms, one time in three another one."""
    return changed(draw, shape) if draw(st.integers(0, 2)) == 0 else shape


def weighted_loss(terms: Callable, reduction: Any) -> Callable:
    """A loss from its per-element terms and an optional weight of exactly their shape (no broadcasting; the
    comparison reads its shape, so a mean over all terms stands for every normalization)."""
    def loss(*xs):
        *operands, weight = xs if len(xs) == 3 else (*xs, None)
        out = terms(*operands)
        if weight is not None:
            if weight.shape != out.shape:
                raise ValueError(f"weight {tuple(weight.shape)} differs from the terms {tuple(out.shape)}")
            out = out * weight
        return out.sum() if reduction == "sum" else out.mean()
    return loss


@st.composite
def cross_entropy_case(draw):
    """Labels or probabilities along a class axis (1 when left out), now and then a weight per element."""
    logits = draw(shapes())
    rank = len(logits) + 1
    how = draw(st.sampled_from(["default", "within", "any"]))  # "any": now and then out of range
    if how == "default":
        axis = OMIT
    else:
        axis = axis_within_example(draw, rank) if how == "any" else draw(st.sampled_from([d for d in range(1 - rank, rank) if d]))
    dim = 1 if axis is OMIT else axis
    soft = draw(st.booleans())
    per_element = logits[: dim % rank - 1] + logits[dim % rank :] if -rank <= dim < rank else logits[1:]
    target = changed(draw, logits if soft else per_element)
    if soft:  # both refuse ignore with probabilities (PyTorch a non-negative one): drawn now and then
        ignore = draw(st.sampled_from([OMIT, OMIT, OMIT, 2]))
    else:
        ignore = draw(maybe(st.integers(-1, 3)))
    reduction = draw(maybe(st.sampled_from(["mean", "sum"])))
    inputs = {"logits": ("float32", logits), "target": ("float32" if soft else "int64", target)}
    if draw(st.booleans()):
        inputs["weight"] = ("float32", weight_shape(draw, per_element))
    line = call("cross_entropy", inputs=tuple(inputs), ignore=ignore, axis=axis, reduction=reduction)

    def terms(x, y):
        y = y.movedim(dim, 1) if soft else y
        return F.cross_entropy(x.movedim(dim, 1), y, reduction="none", **kw(ignore_index=ignore))

    if "weight" not in inputs:  # PyTorch's own reductions
        return Case(inputs, line, lambda x, y: F.cross_entropy(x.movedim(dim, 1), y.movedim(dim, 1) if soft else y,
                                                               **kw(ignore_index=ignore, reduction=reduction)))
    return Case(inputs, line, weighted_loss(terms, reduction))


@st.composite
def pointwise_loss_case(draw, op: str, fn: Callable):
    """Now and then a weight per element; bce_with_logits's pos_weight."""
    pred = draw(shapes())
    inputs = floats(p=pred, t=changed(draw, pred))
    if draw(st.booleans()):
        inputs["w"] = ("float32", weight_shape(draw, pred))
    reduction = draw(maybe(st.sampled_from(["mean", "sum"])))
    pos = draw(maybe(st.sampled_from([0.5, 2.0]))) if op == "bce_with_logits" else OMIT
    line = call(op, inputs=tuple(inputs), reduction=reduction, pos_weight=pos)
    options = kw(pos_weight=OMIT if pos is OMIT else torch.tensor(pos))
    return Case(inputs, line, weighted_loss(lambda p, t: fn(p, t, reduction="none", **options), reduction))


@st.composite
def reduce_case(draw, op: str):
    """sum or mean over none (everything), an axis or a list of axes (now and then out of range or repeated)."""
    shape = draw(shapes(max_rank=4))
    how = draw(st.sampled_from(["none", "one", "list", "list"]))
    axes = [axis_within_example(draw, len(shape) + 1) for _ in range(draw(st.integers(1, 3)))]
    axis = None if how == "none" else axes[0] if how == "one" else axes
    given = draw(maybe(st.just(axis)))
    keepdims = draw(maybe(st.booleans()))

    def torch_reduce(x):
        if axis is None or given is OMIT:
            if keepdims is True:  # PyTorch would keep the batch as an axis of 1; cnnc refuses
                raise ValueError("keepdims needs an axis")
            return getattr(x, op)()
        return getattr(x, op)(dim=axis, keepdim=keepdims is True)

    return Case(floats(x=shape), call(op, axis=given, keepdims=keepdims), torch_reduce)


@st.composite
def expand_case(draw):
    shape = draw(shapes())
    target = [draw(st.sampled_from([1, 2, 3, -1] if d == 1 else [d, d, -1, d + 1])) for d in shape]
    target = draw(st.sampled_from([target] * 5 + [target[1:], [2, *target]]))  # rarely another rank

    def torch_expand(x):
        if len(target) != x.dim() - 1:  # PyTorch would add axes before the batch
            raise ValueError("expand keeps the rank")
        return x.expand(BATCH_SIZE, *target)

    return Case(floats(x=shape), call("expand", target), torch_expand)


@st.composite
def gram_case(draw):
    def torch_gram(x):
        if x.dim() not in (3, 4):
            raise ValueError(f"gram of a {x.dim()}-D batch")
        f = x.reshape(BATCH_SIZE, x.shape[1], -1)
        return f @ f.transpose(1, 2) / f[0].numel()

    return Case(floats(x=draw(shapes(1, 4))), "gram", torch_gram)


# op -> a function giving its strategy (called only once PyTorch is known to be there)
CASES: dict[str, Callable[[], Any]] = {
    "conv": conv_case,
    "conv_transpose": conv_transpose_case,
    "dense": dense_case,
    "maxpool": functools.partial(pool_case, "maxpool"),
    "avgpool": functools.partial(pool_case, "avgpool"),
    "global_avgpool": global_avgpool_case,
    "adaptive_avgpool": adaptive_avgpool_case,
    "upsample": upsample_case,
    "flatten": flatten_case,
    "reshape": reshape_case,
    "relu": lambda: elementwise_case("relu", F.relu),
    "sigmoid": lambda: elementwise_case("sigmoid", torch.sigmoid),
    "tanh": lambda: elementwise_case("tanh", torch.tanh),
    "leaky_relu": leaky_relu_case,
    "prelu": prelu_case,
    "normalize": normalize_case,
    "softmax": lambda: softmax_case("softmax", F.softmax),
    "log_softmax": lambda: softmax_case("log_softmax", F.log_softmax),
    "batchnorm": batchnorm_case,
    "dropout": dropout_case,
    "dropout2d": dropout2d_case,
    "add": lambda: broadcast_case("add", torch.add),
    "mul": lambda: broadcast_case("mul", torch.mul),
    "concat": concat_case,
    "sub": lambda: broadcast_case("sub", torch.sub),
    "slice": slice_case,
    "crop": crop_case,
    "neg": lambda: elementwise_case("neg", torch.neg),
    "scale": lambda: elementwise_case("scale(-2.5)", lambda x: x * -2.5),
    "shift": lambda: elementwise_case("shift(offset=0.5)", lambda x: x + 0.5),
    "reciprocal": lambda: elementwise_case("reciprocal", torch.reciprocal),
    "sqrt": lambda: elementwise_case("sqrt", torch.sqrt),
    "abs": lambda: elementwise_case("abs", torch.abs),
    "exp": lambda: elementwise_case("exp", torch.exp),
    "log": lambda: elementwise_case("log", torch.log),
    "square": lambda: elementwise_case("square", torch.square),
    "cross_entropy": cross_entropy_case,
    "mse": lambda: pointwise_loss_case("mse", F.mse_loss),
    "bce_with_logits": lambda: pointwise_loss_case("bce_with_logits", F.binary_cross_entropy_with_logits),
    "sum": lambda: reduce_case("sum"),
    "mean": lambda: reduce_case("mean"),
    "expand": expand_case,
    "gram": gram_case,
}

# Ops whose random cases are all valid: the comparison sees no rejections for them.
ALWAYS_VALID = {"relu", "sigmoid", "tanh", "leaky_relu", "dropout", "flatten"}
ALWAYS_VALID |= {"neg", "scale", "shift", "reciprocal", "sqrt", "abs", "exp", "log", "square"}


@pytest.mark.parametrize("op", PUBLIC_OPS)
def test_shapes_match_torch(op):
    pytest.importorskip("torch")
    assert op in CASES, f"no PyTorch comparison for '{op}': add a strategy to CASES"
    outcomes = set()

    @settings(
        max_examples=MORE_EXAMPLES.get(op, EXAMPLES), deadline=None, derandomize=True, database=None,
        suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
    )
    @given(CASES[op]())
    def check(case):
        outcomes.add(compare(case))

    check()
    # Make sure both sides of the rule were exercised, not only the error paths.
    assert "accepted" in outcomes
    if op not in ALWAYS_VALID:
        assert "rejected" in outcomes


# In ceil mode PyTorch keeps a window that starts inside the input (or its left padding)
# even when it overhangs the padded input, so a window larger than the input still gives
# one output. Found by the comparison above; kept as a regression test.
CEIL_OVERHANG = [
    # (input, layer, PyTorch's output shape)
    ((1, 1, 1), "avgpool(2, ceil=true)", (N, 1, 1, 1)),
    ((1, 2, 2), "maxpool(3, stride=2, ceil=true)", (N, 1, 1, 1)),
    ((2, 4, 4), "maxpool(3, stride=[1, 2], dilation=[1, 2], ceil=true)", (N, 2, 2, 1)),
]


@pytest.mark.parametrize("shape, line, expected", CEIL_OVERHANG, ids=[case[1] for case in CEIL_OVERHANG])
def test_pool_ceil_mode_window_larger_than_input(shape, line, expected):
    g = cnnc.load(program(floats(x=shape), line))
    assert g.output_types()["output"].shape == expected


# -- hand-computed shapes (no PyTorch) ----------------------------------------

HAND = [
    # (inputs, layer, output type's shape, parameter shapes)
    (floats(x=(3, 9, 11)), "l: conv(4, kernel=3, stride=2, pad=1, bias=false)", (N, 4, 5, 6),
     {"l.weight": (4, 3, 3, 3)}),
    (floats(x=(4, 7, 8)), 'l: conv(6, kernel=3, pad="same", dilation=2, groups=2)', (N, 6, 7, 8),
     {"l.weight": (6, 2, 3, 3), "l.bias": (6,)}),
    (floats(x=(3, 10, 10)), "l: conv(2, kernel=[5, 1], stride=[1, 3])", (N, 2, 6, 4),
     {"l.weight": (2, 3, 5, 1), "l.bias": (2,)}),
    (floats(x=(4, 5, 5)), "l: conv_transpose(8, kernel=4, stride=2, pad=1)", (N, 8, 10, 10),
     {"l.weight": (4, 8, 4, 4), "l.bias": (8,)}),
    # (3 - 1) * 2 - 2 * 1 + (3 - 1) + 1 + 1 = 6
    (floats(x=(2, 3, 3)), "l: conv_transpose(4, kernel=3, stride=2, pad=1, output_pad=1, groups=2, bias=false)",
     (N, 4, 6, 6), {"l.weight": (2, 2, 3, 3)}),
    (floats(x=(16, 5, 5)), "flatten -> l: dense(10)", (N, 10), {"l.weight": (10, 400), "l.bias": (10,)}),
    (floats(x=(8, 7, 7)), "maxpool(3, stride=2, pad=1)", (N, 8, 4, 4), {}),
    (floats(x=(1, 5, 5)), "maxpool(2, ceil=true)", (N, 1, 3, 3), {}),
    # ceil would give 3, but the third window would start in the right padding
    (floats(x=(2, 5, 5)), "avgpool(3, stride=3, pad=1, ceil=true)", (N, 2, 2, 2), {}),
    (floats(x=(8, 7, 7)), "global_avgpool", (N, 8, 1, 1), {}),
    (floats(x=(8, 7, 7)), "adaptive_avgpool([2, 3])", (N, 8, 2, 3), {}),
    (floats(x=(3, 4, 5)), "upsample(2)", (N, 3, 8, 10), {}),
    (floats(x=(3, 4, 5)), 'upsample(size=[7, 3], mode="bilinear")', (N, 3, 7, 3), {}),
    (floats(x=(4, 5, 5)), "reshape([-1, 5])", (N, 20, 5), {}),
    (floats(x=(6,)), "l: batchnorm", (N, 6),
     {"l.weight": (6,), "l.bias": (6,), "l.running_mean": (6,), "l.running_var": (6,)}),
    (floats(x=(6, 2, 2)), "l: batchnorm(affine=false)", (N, 6, 2, 2),
     {"l.running_mean": (6,), "l.running_var": (6,)}),
    (floats(x=(4, 5)), "softmax(axis=-1)", (N, 4, 5), {}),
    (floats(a=(4, 1, 5), b=(4, 3, 1)), "a * b", (N, 4, 3, 5), {}),
    (floats(a=(4, 5, 5), b=(4, 5, 2)), "concat(a, b, axis=-1)", (N, 4, 5, 7), {}),
    ({"logits": ("float32", (10, 4, 4)), "labels": ("int64", (4, 4))}, "cross_entropy(logits, labels)", (), {}),
    ({"logits": ("float32", (10,)), "labels": ("int64", ())}, "cross_entropy(logits, labels)", (), {}),
]


@pytest.mark.parametrize("inputs, line, shape, params", HAND, ids=[case[1] for case in HAND])
def test_hand_computed_shapes(inputs, line, shape, params):
    g = cnnc.load(program(inputs, line))
    assert g.output_types()["output"].shape == shape
    assert list(g.param_shapes.items()) == list(params.items())


# -- shape errors -------------------------------------------------------------

# op: (body of a network, the text the error points at, what the message must name)
ERRORS = {
    "add": ("input a: [64, 32, 32]\ninput b: [128, 16, 16]\na + b", "a + b",
            ["[64, 32, 32]", "[128, 16, 16]", "differ"]),
    "mul": ("input a: [4, 5, 5]\ninput b: [4, 6, 5]\ny = mul(a, b)", "mul(", ["[4, 5, 5]", "[4, 6, 5]", "differ"]),
    "sub": ("input a: [4, 5, 5]\ninput b: [4, 6, 5]\ny = a - b", "a - b", ["[4, 5, 5]", "[4, 6, 5]", "differ"]),
    "neg": ("input x: int64[4]\ny = -x", "-x", ["floating-point", "int64"]),
    "scale": ("input x: int64[4]\ny = 2 * x", "2 * x", ["floating-point", "int64"]),
    "shift": ("input x: int64[4]\ny = x + 1", "x + 1", ["floating-point", "int64"]),
    "reciprocal": ("input x: int64[4]\ny = 1 / x", "1 / x", ["floating-point", "int64"]),
    "sqrt": ("input x: int64[4]\nsqrt", "sqrt", ["floating-point", "int64"]),
    "abs": ("input x: int64[4]\nabs", "abs", ["floating-point", "int64"]),
    "exp": ("input x: int64[4]\nexp", "exp", ["floating-point", "int64"]),
    "log": ("input x: int64[4]\nlog", "log", ["floating-point", "int64"]),
    "square": ("input x: int64[4]\nsquare", "square", ["floating-point", "int64"]),
    "slice": ("input x: [4, 5, 5]\nslice(2, 1, 7)", "slice(", ["stop 7", "axis 2", "[4, 5, 5]"]),
    "crop": ("input x: [4, 5, 5]\ncrop(3, [2, 3])", "crop(", ["size [2, 3]", "offset [3, 3]", "[4, 5, 5]"]),
    "concat": ("input a: [4, 5, 5]\ninput b: [3, 5, 5]\nconcat(a, b, axis=2)", "concat(",
               ["[4, 5, 5]", "[3, 5, 5]", "axis 2"]),
    "conv": ("input x: [3, 4, 4]\nx -> conv(8, kernel=7)", "conv(", ["kernel [7, 7]", "[3, 4, 4]"]),
    "conv_transpose": ("input x: [2, 1, 1]\nup: conv_transpose(4, kernel=1, pad=1)", "conv_transpose(",
                       ["padding [1, 1]", "[2, 1, 1]", "(in up)"]),
    "dense": ("input a: [3]\ninput b: [3]\nmse(a, b) -> fc: dense(10)", "dense(", ["[features]", "got []", "(in fc)"]),
    "maxpool": ("input x: [3, 4, 4]\nrelu -> maxpool(5)", "maxpool(", ["window [5, 5]", "[3, 4, 4]"]),
    "avgpool": ("input x: [3, 4, 4]\navgpool([2, 6])", "avgpool(", ["window [2, 6]", "[3, 4, 4]"]),
    "global_avgpool": ("input x: [8]\nglobal_avgpool", "global_avgpool", ["[channels, height, width]", "[8]"]),
    "adaptive_avgpool": ("input x: [8, 4]\nadaptive_avgpool(2)", "adaptive_avgpool(",
                         ["[channels, height, width]", "[8, 4]"]),
    "upsample": ("input x: [8]\nupsample(2)", "upsample(", ["[channels, height, width]", "[8]"]),
    "flatten": ("input a: [3]\ninput b: [3]\nmse(a, b) -> flatten", "flatten", ["batched", "[]"]),
    "reshape": ("input x: [4, 5, 5]\nreshape([3, 33])", "reshape(",
                ["[4, 5, 5] (100 elements)", "[3, 33] (99 elements)"]),
    "relu": ("input x: int64[4]\nrelu", "relu", ["floating-point", "int64"]),
    "leaky_relu": ("input x: int64[4]\nleaky_relu(0.1)", "leaky_relu(", ["floating-point", "int64"]),
    "prelu": ("input x: [4, 5]\nl: prelu", "prelu", ["[channels]", "[4, 5]", "(in l)"]),
    "normalize": ("input x: [3, 4, 4]\nn: normalize([0.5, 0.5], 1)", "normalize(", ["mean has 2 values", "[3, 4, 4] has 3 channels", "(in n)"]),
    "sigmoid": ("input x: int64[4]\nsigmoid", "sigmoid", ["floating-point", "int64"]),
    "tanh": ("input x: int64[4]\ntanh", "tanh", ["floating-point", "int64"]),
    "dropout": ("input x: int64[4]\ndropout(0.5)", "dropout(", ["floating-point", "int64"]),
    "dropout2d": ("input x: [8]\ndropout2d(0.5)", "dropout2d(", ["[channels, height, width]", "[8]"]),
    "softmax": ("input x: [4, 5]\nsoftmax(axis=3)", "softmax(", ["axis 3", "[4, 5]"]),
    "log_softmax": ("input x: [4, 5]\nlog_softmax(axis=-3)", "log_softmax(", ["axis -3", "[4, 5]"]),
    "batchnorm": ("input x: [4, 5]\nbn: batchnorm", "batchnorm", ["[channels]", "[4, 5]", "(in bn)"]),
    "cross_entropy": ("input logits: [10, 4, 4]\ninput labels: int64[4, 5]\nloss = cross_entropy(logits, labels)",
                      "cross_entropy(", ["labels [4, 5] int64", "logits [10, 4, 4]", "expected labels [4, 4] int64"]),
    "mse": ("input p: [10]\ninput t: [5]\nmse(p, t)", "mse(", ["prediction [10]", "target [5]"]),
    "bce_with_logits": ("input p: [3, 4, 4]\ninput t: [3, 4, 5]\np -> relu -> bce_with_logits(t)", "bce_with_logits(",
                        ["prediction [3, 4, 4]", "target [3, 4, 5]"]),
    "sum": ("input x: [4, 5]\nsum(axis=3)", "sum(", ["axis 3", "[4, 5]"]),
    "mean": ("input x: [4, 5, 6]\nmean(axis=[2, -2])", "mean(", ["axes [2, -2]", "[4, 5, 6]", "twice"]),
    "expand": ("input x: [3, 4]\nexpand([3, 8])", "expand(", ["[3, 4]", "[3, 8]", "axis 2"]),
    "gram": ("input x: [8]\ngram", "gram", ["[channels, height, width]", "[8]"]),
}


def locate(text: str, marker: str) -> tuple[int, int]:
    """1-based line and column of the only occurrence of `marker`."""
    assert text.count(marker) == 1, marker
    before = text[: text.index(marker)]
    return before.count("\n") + 1, len(before) - before.rfind("\n")


@pytest.mark.parametrize("op", PUBLIC_OPS)
def test_shape_error_names_op_and_shapes(op):
    assert op in ERRORS, f"no shape-error case for '{op}': add one to ERRORS"
    body, marker, names = ERRORS[op]
    text = "network probe {\n" + "".join(f"    {line}\n" for line in body.splitlines()) + "}\n"
    with pytest.raises(CnncError) as info:
        cnnc.load(text)
    err = info.value
    assert err.message.split()[0].rstrip(":") == op, err.message
    for name in names:
        assert name in err.message, err.message
    line, column = locate(text, marker)
    assert (err.line, err.column) == (line, column), str(err)
    assert str(err).startswith(f"<string>:{line}:{column}: {op}")


# -- multiply-accumulates -------------------------------------------------------

MACS = [
    # 4 * 5 * 6 outputs, each 3 channels * 3 * 3 taps
    (floats(x=(3, 9, 11)), "l: conv(4, kernel=3, stride=2, pad=1)", 120 * 27),
    # 6 * 8 * 8 outputs, each 4 / 2 channels * 3 * 3 taps
    (floats(x=(4, 8, 8)), "l: conv(6, kernel=3, pad=1, groups=2)", 384 * 18),
    (floats(x=(16, 5, 5)), "flatten -> l: dense(10, bias=false)", 400 * 10),
    (floats(x=(7,)), "l: dense(3)", 21),
    # each of 4 * 5 * 5 inputs meets 8 output channels * 4 * 4 taps; the same as the adjoint
    # conv(4, kernel=4, stride=2, pad=1) on [8, 10, 10]
    (floats(x=(4, 5, 5)), "l: conv_transpose(8, kernel=4, stride=2, pad=1)", 100 * 128),
    (floats(x=(4, 3, 3)), "l: conv_transpose(6, kernel=2, stride=2, groups=2)", 36 * 3 * 4),
]


def cost(inputs, line: str) -> tuple[int, int]:
    """(MACs, FLOPs) of the layer labelled `l`, per example."""
    g = cnnc.load(program(inputs, line))
    node = g["l"]
    types = [g[i].type for i in node.inputs]
    return node.op.macs(node.attrs, node.type, *types), node.op.flops(node.attrs, node.type, *types)


@pytest.mark.parametrize("inputs, line, macs", MACS, ids=[case[1] for case in MACS])
def test_macs(inputs, line, macs):
    assert cost(inputs, line) == (macs, 2 * macs)


def test_transposed_conv_costs_what_its_conv_costs():
    up = cost(floats(x=(4, 5, 5)), "l: conv_transpose(8, kernel=4, stride=2, pad=1, groups=2)")
    down = cost(floats(x=(8, 10, 10)), "l: conv(4, kernel=4, stride=2, pad=1, groups=2)")
    assert up == down
