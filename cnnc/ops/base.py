"""What an op is: one record holding everything the compiler knows about it.

An op subclass declares its name as the language spells it, its inputs, its
attributes (with defaults and checks), its fusion kind, its shape rule, its
parameters and its cost. Later stages (autodiff, fusion, backends) read the same
record; adding an op means adding one class in one module of this package.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import MAX_INT
from ..graph import BATCH, ParamSpec, TensorType
from ..initializers import TABLE as INITIALIZERS


class Fusion(enum.Enum):
    """How an op may fuse with its neighbours (TVM's pattern kinds)."""

    ELEMENTWISE = "elementwise"  # out[i] = f(in[i])
    BROADCAST = "broadcast"  # elementwise with broadcasting of inputs
    INJECTIVE = "injective"  # each output element reads one input element (reshape, concat)
    REDUCTION = "reduction"  # pooling, softmax, losses, statistics
    # conv, dense, their input gradients: an elementwise epilogue may fuse (their kernels
    # take an `epilogue` chain and run it on each tile they write)
    OUT_ELEMWISE_FUSABLE = "out-elementwise-fusable"
    OPAQUE = "opaque"


# The names an elementwise expression gives its inputs, in order (at most eight inputs).
EXPR_INPUTS = tuple("abcdefgh")


@dataclass(frozen=True)
class Expr:
    """An elementwise op as one expression, so that a fused loop can compose it with others.

    `code` reads the op's inputs as `a`, `b`, ... (one element each), a per-channel
    parameter as `P_<local name>` (the element's channel), names from `scalars`,
    which are substituted as literals, and `H_<name>` for a term of `channel`: an
    expression of parameters and scalars alone, computed once per channel rather
    than per element. It must be valid in every backend's kernels: plain
    arithmetic, comparisons, conditional expressions and `math` functions.
    """

    code: str
    scalars: tuple[tuple[str, float], ...] = ()
    params: tuple[str, ...] = ()
    channel: tuple[tuple[str, str], ...] = ()


def evaluate_expression(code: str, names: dict[str, Any]) -> float:
    """An elementwise expression (Python syntax over `math`) evaluated on floats, e.g. to fold constants."""
    return float(eval(code, {"__builtins__": {}, "math": math}, names))


class ShapeError(Exception):
    """Raised by shape rules; the front end locates it at the op's call site."""


class AttrError(Exception):
    """Raised by attribute checks; the front end locates it at the argument."""


# -- attribute kinds: each converts a language value or raises AttrError ------


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_describe(v) for v in value) + "]"
    if hasattr(value, "type") and isinstance(getattr(value, "type"), TensorType):
        return f"a tensor {value.type}"
    return repr(value)




def integer(value: Any, minimum: int | None = None) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise AttrError(f"expected an integer, got {_describe(value)}")
    if abs(value) > MAX_INT:
        digits = str(value)
        raise AttrError(f"{digits if len(digits) <= 24 else digits[:20] + '...'} is too large (integers are limited to 2^62)")
    if minimum is not None and value < minimum:
        raise AttrError(f"expected an integer >= {minimum}, got {value}")
    return value


def positive_int(value: Any) -> int:
    return integer(value, minimum=1)


def nonnegative_int(value: Any) -> int:
    return integer(value, minimum=0)


def _pair_of(check: Callable[[Any], int]) -> Callable[[Any], tuple[int, int]]:
    def pair(value: Any) -> tuple[int, int]:
        if isinstance(value, (list, tuple)):
            if len(value) != 2:
                raise AttrError(f"expected one number or a pair [h, w], got {_describe(value)}")
            return (check(value[0]), check(value[1]))
        v = check(value)
        return (v, v)

    return pair


positive_pair = _pair_of(positive_int)
nonnegative_pair = _pair_of(nonnegative_int)


def number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AttrError(f"expected a number, got {_describe(value)}")
    if not math.isfinite(value):
        raise AttrError(f"expected a finite number, got {value}")
    return float(value)


def probability(value: Any) -> float:
    p = number(value)
    if not 0.0 <= p < 1.0:
        raise AttrError(f"expected a probability in [0, 1), got {value}")
    return p


def positive_number(value: Any) -> float:
    v = number(value)
    if v <= 0:
        raise AttrError(f"expected a positive number, got {value}")
    return v


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise AttrError(f"expected true or false, got {_describe(value)}")
    return value


def one_of(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            options = ", ".join(f'"{c}"' for c in choices)
            raise AttrError(f"expected one of {options}, got {_describe(value)}")
        return value

    return check


def optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        return None if value is None else check(value)

    return convert


def int_list(value: Any) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)):
        raise AttrError(f"expected a list of integers, got {_describe(value)}")
    return tuple(integer(v) for v in value)


@dataclass(frozen=True)
class Attr:
    """One attribute: name, converter/check, and default (REQUIRED when none)."""

    name: str
    check: Callable[[Any], Any]
    default: Any = "<required>"

    @property
    def required(self) -> bool:
        return self.default == "<required>"


class Attrs(dict):
    """Checked attribute values, readable as `a.stride` as well as `a["stride"]`."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def param(name: str, shape: tuple[int, ...], init: str, fan_in: int = 0, kind: str = "param", args: tuple = ()) -> ParamSpec:
    """A parameter spec with a local name; the front end prefixes the layer's path. `init` and `args`: an
    initializer of cnnc/initializers.py (PyTorch's default for the layer) and its arguments."""
    assert init in INITIALIZERS, init
    return ParamSpec(name=name, shape=tuple(int(s) for s in shape), init=init, kind=kind, fan_in=fan_in, args=tuple(args))


# -- the op record ----------------------------------------------------------


@dataclass(frozen=True)
class IndexRange:
    """The values an integer input may hold where a kernel indexes memory with them (labels, token ids):
    `low <= v < high`, or one of `extra` (e.g. an ignored label). `what` names one value and
    `meaning` what `high` counts, for messages: "label 12 is out of range: the network has 10 classes"."""

    low: int
    high: int
    extra: tuple[int, ...] = ()
    what: str = "label"
    meaning: str = "classes"

    def invalid(self, values: np.ndarray) -> np.ndarray:
        """A mask of the values outside the range."""
        bad = (values < self.low) | (values >= self.high)
        for v in self.extra:
            bad &= values != v
        return bad


class Op:
    """Base class of every op. Subclasses override the class attributes and rules.

    inputs:   the number of tensor inputs; `VARIADIC` for two or more.
    attrs:    positional order is declaration order.
    """

    VARIADIC = -1

    name: str = ""
    inputs: int = 1
    attrs: tuple[Attr, ...] = ()
    fusion: Fusion = Fusion.OPAQUE
    internal: bool = False  # True for ops the language cannot call by name

    # -- what the passes need to know (declared here, so that no pass tests op names) --
    placeholder: bool = False  # a value the caller feeds (an input): no kernel computes it
    constant: bool = False  # a constant the executor fills once (`fill`): no kernel computes it
    random: bool = False  # draws fresh random numbers: two applications to equal inputs differ
    logical_view: bool = False  # the input's elements in the same logical order (a reshape): may share its buffer
    batch_statistics: bool = False  # normalizes with per-channel statistics over the batch (batchnorm in training)
    identity: float | None = None  # the constant operand that leaves the others unchanged (add: 0, mul: 1)
    batch_aware: bool = False  # its cpu()/cuda() take `batch=` (None when unknown) to choose an algorithm

    @property
    def computed(self) -> bool:
        """Whether a kernel computes the op's value (inputs and constants are filled by the executor)."""
        return not (self.placeholder or self.constant)

    # -- rules a subclass provides ------------------------------------------
    def infer(self, a: Attrs, *xs: TensorType) -> TensorType:
        """The output type from the input types; raise ShapeError on a mismatch."""
        raise NotImplementedError

    def params(self, a: Attrs, *xs: TensorType) -> list[ParamSpec]:
        """The parameters and buffers this application owns (local names)."""
        return []

    def macs(self, a: Attrs, out: TensorType, *xs: TensorType) -> int:
        """Multiply-accumulates for one example."""
        return 0

    def flops(self, a: Attrs, out: TensorType, *xs: TensorType) -> int:
        """Floating-point operations for one example (2 per multiply-accumulate)."""
        macs = self.macs(a, out, *xs)
        return 2 * macs if macs else out.sample_elements()

    def grad(self, g, dy) -> None:
        """Add the nodes computing this node's input and parameter gradients.

        `g` is a cnnc.passes.autodiff.GradContext; `dy` names the node holding the
        gradient of the loss with respect to this node's output.
        """
        from ..errors import CnncError

        raise CnncError(f"{self.name} cannot be differentiated", g.node.loc)

    def specialized(self, training: bool) -> Op:
        """The op that computes this one in a mode (batchnorm in eval mode is an elementwise op)."""
        return self

    def passes_input(self, a: Attrs, training: bool, out: TensorType, *xs: TensorType) -> bool:
        """Whether the op's value is its first input, unchanged (a reshape to the same type, dropout in eval)."""
        return False

    def bias_in_epilogue(self, a: Attrs, *xs: TensorType) -> bool:
        """Whether the lowering adds the op's bias (one per element of the last physical axis) in its
        epilogue; an op whose bias lies along another axis adds it in its own kernel."""
        return a.get("bias") is True

    def fold(self, a: Attrs, values: list[float]) -> float | None:
        """The op's value when every input is a constant holding `values`, or None when it cannot say."""
        return None

    def siblings(self, graph, node, taken: set[str]) -> tuple[str, str, list[str]] | None:
        """Sibling reductions that one kernel computes together with `node` (reading the same operands:
        a weight and a bias gradient, a loss and its gradient): (pattern, group name, members, `node` or
        another node of this op first), or None. Nodes in `taken` belong to another group already."""
        return None

    def siblings_kernel(self, graph, members: list[str], target: str):
        """The one kernel of the sibling group `members` (found by `siblings`; this op is the first member's)."""
        raise NotImplementedError

    def index_inputs(self, a: Attrs, *xs: TensorType) -> dict[int, IndexRange]:
        """Inputs whose values index memory: input position -> the values allowed. The executor
        checks every array fed to such an input, whatever the path, before any kernel reads it."""
        return {}

    def expression(self, a: Attrs, out: TensorType, *xs: TensorType) -> Expr | None:
        """This op as an elementwise expression (for fused loops), or None when it is not one."""
        return None

    def cpu(self, a: Attrs, out: TensorType, *xs: TensorType):
        """The CPU kernel (a cnnc.kernels.Kernel: an entry of cnnc/kernels/cpu/<family>.py and its arguments)
        computing this op on physical buffers. Ops that host an epilogue also take `epilogue=`."""
        from ..errors import CnncError

        raise CnncError(f"{self.name} has no CPU kernel")

    def cuda(self, a: Attrs, out: TensorType, *xs: TensorType):
        """The CUDA kernel (a cnnc.kernels.Kernel of cnnc/kernels/cuda/<family>.py) computing this op on device buffers."""
        from ..errors import CnncError

        raise CnncError(f"{self.name} has no CUDA kernel yet")

    # -- shared machinery ---------------------------------------------------
    def bind(self, positional: list[Any], keywords: dict[str, Any]) -> Attrs:
        """Match arguments to attributes, check them and fill in defaults.

        Raises AttrError(message, attr_name_or_index) describing the first problem.
        """
        values: dict[str, Any] = {}
        if len(positional) > len(self.attrs):
            raise BindError(
                f"{self.name} takes at most {len(self.attrs)} positional argument(s), got {len(positional)}",
                len(self.attrs),
            )
        for index, value in enumerate(positional):
            values[self.attrs[index].name] = (value, index)
        known = {at.name for at in self.attrs}
        for key, value in keywords.items():
            if key not in known:
                from ..errors import closest

                raise BindError(f"{self.name} has no argument '{key}'{closest(key, known)}", key)
            if key in values:
                raise BindError(f"{self.name}: argument '{key}' given twice", key)
            values[key] = (value, key)
        out = Attrs()
        for at in self.attrs:
            if at.name in values:
                value, where = values[at.name]
                try:
                    out[at.name] = at.check(value)
                except AttrError as e:
                    raise BindError(f"{self.name}: {at.name}: {e}", where) from None
            elif at.required:
                raise BindError(f"{self.name} needs argument '{at.name}'", None)
            else:  # defaults go through the same check, so rules see one form
                out[at.name] = at.check(at.default) if at.default is not None else None
        return out

    def __repr__(self) -> str:
        return f"<op {self.name}>"


class BindError(Exception):
    """An argument problem; `where` is the offending position, keyword or None."""

    def __init__(self, message: str, where: int | str | None):
        super().__init__(message)
        self.where = where


REGISTRY: dict[str, Op] = {}


def register(cls: type[Op]) -> type[Op]:
    """Class decorator: add one instance of the op to the registry."""
    if cls.name in REGISTRY:
        raise ValueError(f"op {cls.name!r} registered twice")
    REGISTRY[cls.name] = cls()
    return cls


# -- helpers for shape rules ------------------------------------------------


def fmt(shape: tuple) -> str:
    """A shape as the user writes it: without the batch axis."""
    dims = [d for d in shape if d is not BATCH] if shape and shape[0] is BATCH else list(shape)
    return "[" + ", ".join(str(d) for d in dims) + "]"


def expect_rank(op: str, x: TensorType, rank: int, what: str = "[channels, height, width]") -> None:
    if x.rank != rank or not x.batched:
        raise ShapeError(f"{op} expects {what} input, got {x}")


def expect_float(op: str, x: TensorType) -> None:
    if x.dtype not in ("float32", "float64"):
        raise ShapeError(f"{op} expects a floating-point input, got {x.dtype}")


def window_out(size: int, kernel: int, stride: int, pad_lo: int, pad_hi: int, dilation: int, ceil: bool = False) -> int:
    """Output length of a sliding window (conv, pooling), as PyTorch computes it."""
    span = dilation * (kernel - 1) + 1
    room = size + pad_lo + pad_hi - span
    if ceil:
        out = (room + stride - 1) // stride + 1  # floor division, as PyTorch's div_rtn
        # The last window must start inside the input or the left padding.
        if out > 0 and (out - 1) * stride >= size + pad_lo:
            out -= 1
        return max(out, 0)
    if room < 0:
        return 0
    return room // stride + 1
