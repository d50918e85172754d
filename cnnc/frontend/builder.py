"""Syntax tree -> typed Graph, by interpreting a network's body.

Hyperparameters are ordinary values; tensors are `Value`s (a node and its
type). Every layer's output type is inferred the moment it is added, so that
`x.channels` can be read and a mistake is reported at the call that made it.

Naming (the parameter names are an interface: PyTorch state dicts use them):
- `label: layer` names a layer; `label: block(...)` opens a scope `label`.
- A block call opens a scope; unlabelled layers are named after their op
  (`relu`, `relu_1`, ...) in source order, skipping the labels in use.
- `label: repeat n X` and `label: { ... }` are sequences: every member is
  numbered in order (`label.0`, `label.1`, ...), as PyTorch's nn.Sequential.
  Inside a sequence, an unlabelled repeat or group adds its members to the
  enclosing numbering, so a VGG feature stack numbers straight through.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from ..errors import CnncError, Loc, closest
from ..graph import BATCH, Graph, Node, ParamSpec, TensorType
from ..initializers import NAMES as INITIALIZERS
from ..initializers import Initializer
from ..initializers import make as make_initializer
from ..ops import REGISTRY, Op, ShapeError
from ..ops.base import Attrs, BindError
from . import ast
from .loader import Module

MAX_DEPTH = 64  # nested block calls
MAX_NODES = 100_000
MAX_REPEAT = 10_000
MAX_STEPS = 2_000_000
MAX_INT = ast.MAX_INT
MAX_LIST = 10_000
DTYPES = ("float32", "float64", "int64", "int32")


@dataclass(frozen=True)
class Value:
    """A tensor being built: the node that computes it and its type."""

    node: str
    type: TensorType


class Scope:
    """Names the layers defined in one scope (a network, a block call, a sequence)."""

    def __init__(self, path: str, sequential: bool, reserved: set[str] = frozenset()):
        self.path = path
        self.sequential = sequential
        self.reserved = set(reserved)
        self.used: set[str] = set()
        self.counts: dict[str, int] = {}
        self.index = 0

    def full(self, local: str) -> str:
        return f"{self.path}.{local}" if self.path else local

    def name(self, label: str | None, kind: str, loc: Loc) -> str:
        if self.sequential:
            local = label or str(self.index)
            self.index += 1
        elif label:
            local = label
        else:
            n = self.counts.get(kind, 0)
            local = kind if n == 0 else f"{kind}_{n}"
            while local in self.used or local in self.reserved:
                n += 1
                local = f"{kind}_{n}"
            self.counts[kind] = n + 1
        if local in self.used:
            raise CnncError(f"the name '{self.full(local)}' is already used in this scope", loc)
        self.used.add(local)
        return self.full(local)


@dataclass
class Frame:
    """The state of one network or block body being interpreted."""

    module: Module
    vars: dict[str, Any]
    scope: Scope
    current: Value | None
    depth: int
    is_network: bool


def labels_in(stmts: list[ast.Node]) -> set[str]:
    """Labels written at the top level of a body, so that automatic names avoid them."""
    found: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, ast.Chain):
            for link in node.links:
                if link.label:
                    found.add(link.label)
                elif isinstance(link.expr, (ast.Group, ast.Repeat, ast.Chain)):
                    visit(link.expr)
        elif isinstance(node, (ast.Assign, ast.Output)):
            visit(node.chain)
        elif isinstance(node, ast.If):
            for _, body in node.branches:
                for s in body:
                    visit(s)
            for s in node.orelse or []:
                visit(s)
        elif isinstance(node, ast.Group):
            for s in node.body:
                visit(s)
        elif isinstance(node, ast.Repeat):
            visit(node.body)

    for stmt in stmts:
        visit(stmt)
    return found


def _show(value: Any) -> str:
    if isinstance(value, Initializer):
        return f"the initializer {value}"
    if isinstance(value, Value):
        return f"a tensor {value.type}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if value is None:
        return "none"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return repr(value)


def _builtin_int(x: Any) -> int:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise TypeError(f"int() needs a finite number, got {_show(x)}")
    if abs(x) > MAX_INT:  # int(1e300) would be a 301-digit integer
        raise ValueError(f"int(): {x} is too large (integers are limited to 2^62)")
    return int(x)


def _numbers(name: str, xs: tuple) -> tuple:
    if len(xs) == 1 and isinstance(xs[0], list):
        xs = tuple(xs[0])
    if not xs or any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in xs):
        raise TypeError(f"{name}() needs numbers, got {', '.join(_show(x) for x in xs) or 'nothing'}")
    return xs


BUILTINS = {
    "min": lambda *xs: min(_numbers("min", xs)),
    "max": lambda *xs: max(_numbers("max", xs)),
    "abs": lambda x: abs(_numbers("abs", (x,))[0]),
    "int": _builtin_int,
    "float": lambda x: float(_numbers("float", (x,))[0]),
    "len": lambda x: len(x) if isinstance(x, list) else (_ for _ in ()).throw(TypeError(f"len() needs a list, got {_show(x)}")),
}

VALUE_ATTRIBUTES = {
    "channels": (2, 1),  # (minimum rank, axis)
    "height": (4, 2),
    "width": (4, 3),
}


class Builder:
    """Interprets one network definition into a Graph."""

    def __init__(self, network: ast.Definition, hyperparameters: dict[str, Any]):
        self.network = network
        self.graph = Graph(network.name)
        self.steps = 0
        self.where = network.loc  # the last place interpreted
        self.layers = 0  # checked against MAX_NODES as each layer is added
        self.hyper = hyperparameters
        self._list_sizes: dict[int, tuple[list, int]] = {}

    # -- entry ------------------------------------------------------------
    def build(self) -> Graph:
        frame = Frame(
            module=self.network.module,
            vars={},
            scope=Scope("", sequential=False, reserved=labels_in(self.network.body)),
            current=None,
            depth=0,
            is_network=True,
        )
        self._bind_params(self.network, frame, [], dict(self.hyper), self.network.loc, from_user=True)
        self.graph.hyperparameters = {p.name: frame.vars[p.name] for p in self.network.params}
        self._body(self.network.body, frame)
        if not self.graph.inputs:
            raise CnncError(f"network {self.network.name} declares no input (write e.g. `input image: [3, 32, 32]`)", self.network.loc)
        if not self.graph.outputs:
            if frame.current is None:
                raise CnncError(f"network {self.network.name} computes nothing", self.network.loc)
            self.graph.outputs["output"] = frame.current.node
        return self.graph

    # -- statements ---------------------------------------------------------
    def _body(self, stmts: list[ast.Node], frame: Frame) -> None:
        for stmt in stmts:
            self._stmt(stmt, frame)

    def _stmt(self, stmt: ast.Node, frame: Frame) -> None:
        self._tick(stmt.loc)
        if isinstance(stmt, ast.Chain):
            sign = _leading_sign(stmt.links[0].expr)
            if sign is not None:  # `x = a\n + b` would otherwise compute `+ b` on its own, silently
                raise CnncError(f"a statement cannot start with '{sign}' (a line break ends the statement before it); "
                                "to continue an expression on the next line, put it in parentheses", stmt.loc)
            value = self._chain(stmt, frame)
            if not isinstance(value, Value):
                raise CnncError(f"this statement computes {_show(value)}, not a tensor; assign it to a name", stmt.loc)
            frame.current = value
        elif isinstance(stmt, ast.Assign):
            self._check_bindable(stmt.name, frame, stmt.loc)
            value = self._chain(stmt.chain, frame)
            frame.vars[stmt.name] = value
            if isinstance(value, Value):
                frame.current = value
        elif isinstance(stmt, ast.If):
            for cond, body in stmt.branches:
                if self._condition(cond, frame):
                    self._body(body, frame)
                    return
            if stmt.orelse is not None:
                self._body(stmt.orelse, frame)
        elif isinstance(stmt, ast.Input):
            self._input(stmt, frame)
        elif isinstance(stmt, ast.Output):
            self._output(stmt, frame)
        else:  # pragma: no cover - the parser makes no other statements
            raise CnncError(f"unexpected statement {type(stmt).__name__}", stmt.loc)

    def _condition(self, cond: ast.Node, frame: Frame) -> bool:
        value = self._eval(cond, frame)
        if not isinstance(value, bool):
            raise CnncError(f"a condition must be true or false, got {_show(value)}", cond.loc)
        return value

    def _check_bindable(self, name: str, frame: Frame, loc: Loc) -> None:
        if name in REGISTRY or name in BUILTINS or name in INITIALIZERS:
            raise CnncError(f"'{name}' is the name of a built-in; choose another name", loc)
        if name in frame.module.visible:
            raise CnncError(f"'{name}' is the name of a block or network; choose another name", loc)

    def _input(self, stmt: ast.Input, frame: Frame) -> None:
        if not frame.is_network:
            raise CnncError("inputs are declared in a network, not in a block (a block's input is `in`)", stmt.loc)
        self._check_bindable(stmt.name, frame, stmt.loc)
        if stmt.name in self.graph.inputs or stmt.name in frame.vars:
            raise CnncError(f"'{stmt.name}' is already defined", stmt.loc)
        dtype = stmt.dtype or "float32"
        if dtype not in DTYPES:
            raise CnncError(f"unknown dtype '{dtype}'; expected one of {', '.join(DTYPES)}{closest(dtype, DTYPES)}", stmt.loc)
        dims = []
        for d in stmt.dims:
            size = self._eval(d, frame)
            if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_INT:
                raise CnncError(f"an input dimension must be a positive integer, got {_show(size)}", d.loc)
            dims.append(size)
        t = TensorType((BATCH, *dims), dtype)
        op = REGISTRY["input"]
        node = Node(stmt.name, op, Attrs(type=t), [], t, {}, stmt.loc)
        if stmt.name in self.graph:
            raise CnncError(f"the name '{stmt.name}' is already used by a layer", stmt.loc)
        self.graph.add(node)
        frame.scope.used.add(stmt.name)
        self.graph.inputs[stmt.name] = stmt.name
        value = Value(stmt.name, t)
        frame.vars[stmt.name] = value
        if frame.current is None:  # the first input is what the next statement follows on from
            frame.current = value

    def _output(self, stmt: ast.Output, frame: Frame) -> None:
        if not frame.is_network:
            raise CnncError("outputs are declared in a network, not in a block (a block returns its last value)", stmt.loc)
        if stmt.name in self.graph.outputs:
            raise CnncError(f"output '{stmt.name}' is declared twice", stmt.loc)
        if stmt.chain is None:
            value = frame.vars.get(stmt.name, frame.current)
            if not isinstance(value, Value):
                raise CnncError(f"nothing to output: no tensor has been computed before 'output {stmt.name}'", stmt.loc)
        else:
            value = self._chain(stmt.chain, frame)
            if not isinstance(value, Value):
                raise CnncError(f"an output must be a tensor, got {_show(value)}", stmt.chain.loc)
            frame.current = value
        self.graph.outputs[stmt.name] = value.node

    # -- chains -------------------------------------------------------------
    def _chain(self, chain: ast.Chain, frame: Frame) -> Any:
        value = self._link(chain.links[0], frame, frame.current, head=True)
        for link in chain.links[1:]:
            if not isinstance(value, Value):
                raise CnncError(f"only a tensor can flow into the next layer; this is {_show(value)}", link.loc)
            value = self._link(link, frame, value, head=False)
        return value

    def _is_layer(self, expr: ast.Node, frame: Frame) -> bool:
        """Does this expression apply something (an op, a block, a repeat, a group)?"""
        if isinstance(expr, (ast.Repeat, ast.Group)):
            return True
        if isinstance(expr, (ast.Name, ast.Call)):
            name = expr.id if isinstance(expr, ast.Name) else expr.func
            if isinstance(expr, ast.Name) and name in frame.vars:
                return False
            return name in REGISTRY or name in frame.module.visible
        return False

    def _link(self, link: ast.Link, frame: Frame, input: Value | None, head: bool) -> Any:
        expr = link.expr
        if self._is_layer(expr, frame):
            return self._apply(expr, frame, input, head, link.label)
        if link.label is not None:
            raise CnncError(f"a label names a layer, a block call or a sequence; '{link.label}' labels an expression", link.loc)
        if not head:
            if isinstance(expr, ast.Name) and expr.id in frame.vars:
                raise CnncError(f"'{expr.id}' is a value, not a layer; only layers can follow '->'", expr.loc)
            if isinstance(expr, ast.Name):
                self._unknown(expr.id, frame, expr.loc, called=True)
            raise CnncError("only a layer can follow '->'", expr.loc)
        return self._eval(expr, frame)

    def _apply(self, expr: ast.Node, frame: Frame, input: Value | None, head: bool, label: str | None) -> Value:
        self._tick(expr.loc)
        if isinstance(expr, ast.Repeat):
            return self._repeat(expr, frame, input, label)
        if isinstance(expr, ast.Group):
            return self._group(expr, frame, input, label)
        name = expr.id if isinstance(expr, ast.Name) else expr.func
        args = expr.args if isinstance(expr, ast.Call) else []
        if name in frame.module.visible:
            return self._call_block(frame.module.visible[name], args, expr.loc, frame, input, label)
        return self._call_op(REGISTRY[name], args, expr.loc, frame, input, head, label)

    # -- ops ----------------------------------------------------------------
    def _call_op(self, op: Op, args: list[ast.Arg], loc: Loc, frame: Frame, input: Value | None, head: bool, label: str | None) -> Value:
        if op.internal:
            raise CnncError(f"'{op.name}' cannot be called", loc)
        tensors: list[Value] = []
        positional: list[Any] = []
        positional_args: list[ast.Arg] = []
        keywords: dict[str, Any] = {}
        keyword_args: dict[str, ast.Arg] = {}
        for arg in args:
            value = self._eval(arg.value, frame)
            self._tick(arg.loc, self._size(value))  # the op reads every element of a list
            if arg.name is None and keywords:
                raise CnncError("positional arguments come before keyword arguments", arg.loc)
            if arg.name is not None:
                if isinstance(value, Value):
                    raise CnncError(f"{op.name}: tensor inputs are passed by position, not as '{arg.name}='", arg.loc)
                if arg.name in keywords:
                    raise CnncError(f"{op.name}: argument '{arg.name}' given twice", arg.loc)
                keywords[arg.name] = value
                keyword_args[arg.name] = arg
            elif isinstance(value, Value):
                if positional:
                    raise CnncError(f"{op.name}: tensor inputs come before the other arguments", arg.loc)
                tensors.append(value)
            else:
                positional.append(value)
                positional_args.append(arg)
        if head and positional and not tensors and op.name in BUILTINS:  # abs(-2) is the built-in, abs(x) the op
            return self._builtin(op.name, positional, loc)
        if head and tensors:
            inputs = tensors
        elif input is not None:
            inputs = [input, *tensors]
        else:
            inputs = tensors
        want = op.inputs
        if want == Op.VARIADIC:
            if len(inputs) < 2:
                raise CnncError(f"{op.name} takes two or more inputs, got {len(inputs)}", loc)
        elif len(inputs) != want:
            if not inputs:
                raise CnncError(f"{op.name} has no input: nothing comes before it", loc)
            raise CnncError(f"{op.name} takes {want} input{'s' if want != 1 else ''}, got {len(inputs)}", loc)
        options = {key: (keywords.pop(key), keyword_args[key].loc) for key in LAYER_OPTIONS
                   if key in keywords and key not in {at.name for at in op.attrs}}
        try:
            attrs = op.bind(positional, keywords)
        except BindError as e:
            where = loc
            if isinstance(e.where, int) and e.where < len(positional_args):
                where = positional_args[e.where].loc
            elif isinstance(e.where, str) and e.where in keyword_args:
                where = keyword_args[e.where].loc
            raise CnncError(str(e), where) from None
        return self._add_node(op, attrs, inputs, loc, frame, label, options)

    def _add_node(self, op: Op, attrs: Attrs, inputs: list[Value], loc: Loc, frame: Frame, label: str | None,
                  options: dict | None = None) -> Value:
        name = frame.scope.name(label, op.name, loc)
        types = [v.type for v in inputs]
        try:
            out = op.infer(attrs, *types)
        except ShapeError as e:
            where = "" if name == op.name else f" (in {name})"
            raise CnncError(f"{e}{where}", loc) from None
        self.layers += 1  # inputs are not layers: a chain of MAX_NODES layers after an input is allowed
        if self.layers > MAX_NODES:
            raise CnncError(f"the network has more than {MAX_NODES:,} layers", loc)
        specs: dict[str, ParamSpec] = {}
        local_to_full: dict[str, str] = {}
        for spec in op.params(attrs, *types):
            full = f"{name}.{spec.name}"
            local_to_full[spec.name] = full
            specs[full] = replace(spec, name=full, node=name)
        if options:
            _apply_layer_options(op, name, specs, options)
        if name in self.graph:
            raise CnncError(f"the name '{name}' is already used", loc)
        self.graph.add(Node(name, op, attrs, [v.node for v in inputs], out, local_to_full, loc), specs)
        return Value(name, out)

    # -- blocks, repeats and sequences --------------------------------------
    def _call_block(self, block: ast.Definition, args: list[ast.Arg], loc: Loc, frame: Frame, input: Value | None, label: str | None) -> Value:
        if block.kind != "block":
            raise CnncError(f"'{block.name}' is a network; only blocks can be used as layers", loc)
        if frame.depth + 1 > MAX_DEPTH:
            raise CnncError(f"blocks nest more than {MAX_DEPTH} deep (does '{block.name}' call itself?)", loc)
        path = frame.scope.name(label, block.name, loc)
        inner = Frame(
            module=block.module,
            vars={"in": input} if input is not None else {},
            scope=Scope(path, sequential=False, reserved=labels_in(block.body)),
            current=input,
            depth=frame.depth + 1,
            is_network=False,
        )
        positional = []
        keywords = {}
        for arg in args:
            value = self._eval(arg.value, frame)
            if arg.name is None:
                if keywords:
                    raise CnncError("positional arguments come before keyword arguments", arg.loc)
                positional.append((value, arg.loc))
            else:
                if arg.name in keywords:
                    raise CnncError(f"{block.name}: argument '{arg.name}' given twice", arg.loc)
                keywords[arg.name] = (value, arg.loc)
        self._bind_params(block, inner, positional, keywords, loc, from_user=False)
        self._body(block.body, inner)
        if inner.current is None:
            raise CnncError(f"block {block.name} computes no tensor", loc)
        return inner.current

    def _bind_params(self, definition: ast.Definition, frame: Frame, positional: list, keywords: dict, loc: Loc, from_user: bool) -> None:
        """Bind call arguments to a definition's hyperparameters, defaults filled in order."""
        kind = "hyperparameter" if from_user else "argument"
        names = [p.name for p in definition.params]
        if len(positional) > len(names):
            raise CnncError(f"{definition.name} takes {len(names)} argument(s), got {len(positional)}", positional[len(names)][1])
        given: dict[str, Any] = {}
        for p, (value, _) in zip(definition.params, positional):
            given[p.name] = value
        for key, item in keywords.items():
            value, where = item if (not from_user) else (item, loc)
            if key not in names:
                raise CnncError(f"{definition.kind} {definition.name} has no {kind} '{key}'{closest(key, names)}", where)
            if key in given:
                raise CnncError(f"{definition.name}: '{key}' is given twice", where)
            given[key] = value
        for p in definition.params:
            if p.name in given:
                frame.vars[p.name] = given[p.name]
            elif p.default is not None:
                frame.vars[p.name] = self._eval(p.default, frame)
            else:
                raise CnncError(f"{definition.name} needs {kind} '{p.name}'", loc)

    def _repeat(self, expr: ast.Repeat, frame: Frame, input: Value | None, label: str | None) -> Value:
        count = self._eval(expr.count, frame)
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_REPEAT:
            raise CnncError(f"repeat needs a count between 0 and {MAX_REPEAT}, got {_show(count)}", expr.count.loc)
        if not self._is_layer(expr.body, frame):
            raise CnncError("repeat needs a layer, a block call or { ... } to repeat", expr.body.loc)
        if input is None:
            raise CnncError("repeat has no input: nothing comes before it", expr.loc)
        value = input
        with self._sequence(frame, label, "repeat", expr.loc):
            for _ in range(count):
                value = self._apply(expr.body, frame, value, head=False, label=None)
        return value

    def _group(self, expr: ast.Group, frame: Frame, input: Value | None, label: str | None) -> Value:
        saved = frame.current
        frame.current = input
        with self._sequence(frame, label, "group", expr.loc, reserved=labels_in(expr.body)):
            self._body(expr.body, frame)
        value = frame.current
        if value is None:  # an empty group with nothing before it
            frame.current = saved
            raise CnncError("this group computes nothing", expr.loc)
        return value

    @contextmanager
    def _sequence(self, frame: Frame, label: str | None, kind: str, loc: Loc, reserved: set[str] = frozenset()) -> Iterator[None]:
        """A labelled repeat or group (or one outside a sequence) numbers its members in a new scope."""
        outer = frame.scope
        if label is not None or not outer.sequential:
            frame.scope = Scope(outer.name(label, kind, loc), sequential=True, reserved=reserved)
        try:
            yield
        finally:
            frame.scope = outer

    # -- expressions --------------------------------------------------------
    def _tick(self, loc: Loc, cost: int = 1) -> None:
        self.steps += cost
        self.where = loc
        if self.steps > MAX_STEPS:
            raise CnncError(f"the program takes more than {MAX_STEPS:,} steps to build", loc)

    def _unknown(self, name: str, frame: Frame, loc: Loc, called: bool = False) -> None:
        layers = [*frame.module.visible, *(n for n, op in REGISTRY.items() if not op.internal)]
        if called:  # name(...) or `-> name` is a layer, a block or a function
            raise CnncError(f"unknown layer or function '{name}'{closest(name, [*layers, *BUILTINS])}", loc)
        raise CnncError(f"unknown name '{name}'{closest(name, [*frame.vars, *layers, *BUILTINS])}", loc)

    def _eval(self, expr: ast.Node, frame: Frame) -> Any:
        self._tick(expr.loc)
        if isinstance(expr, ast.Const):
            return expr.value
        if isinstance(expr, ast.Name):
            if expr.id in frame.vars:
                return frame.vars[expr.id]
            if expr.id in REGISTRY or expr.id in frame.module.visible:
                return self._apply(expr, frame, frame.current, True, None)
            if expr.id in INITIALIZERS:
                return self._initializer(expr.id, [], expr.loc, frame)
            self._unknown(expr.id, frame, expr.loc)
        if isinstance(expr, ast.ListExpr):
            return self._new_list([self._eval(item, frame) for item in expr.items], expr.loc)
        if isinstance(expr, ast.Call):
            return self._call(expr, frame)
        if isinstance(expr, ast.BinOp):
            return self._binop(expr, frame)
        if isinstance(expr, ast.UnaryOp):
            return self._unary(expr, frame)
        if isinstance(expr, ast.Attribute):
            return self._attribute(expr, frame)
        if isinstance(expr, ast.Index):
            return self._index(expr, frame)
        if isinstance(expr, (ast.Repeat, ast.Group)):
            return self._apply(expr, frame, frame.current, True, None)
        if isinstance(expr, ast.Chain):
            return self._chain(expr, frame)
        raise CnncError(f"unexpected expression {type(expr).__name__}", expr.loc)  # pragma: no cover

    def _new_list(self, items: list, loc: Loc) -> list:
        """A list value, refused when it (with the lists inside it) holds too many elements.

        Lists share their elements, so `a = [a, a]` repeated would otherwise
        describe 2**n values in n steps; sizes are remembered per list object.
        """
        size = len(items) + sum(self._size(i) for i in items)
        if size > MAX_LIST:
            raise CnncError(f"a list may hold at most {MAX_LIST:,} elements, nested lists included", loc)
        self._list_sizes[id(items)] = (items, size)  # the list is kept alive, so its id stays its own
        return items

    def _size(self, value: Any) -> int:
        """The elements of a list, nested lists included (0 for anything else): what reading it all costs.

        Operations that read every element (min, max, ==, an op's list argument)
        cost that many steps, so that the step limit bounds the time they take.
        """
        if not isinstance(value, list):
            return 0
        known = self._list_sizes.get(id(value))
        if known is None:  # a list from a hyperparameter or an attribute, measured once
            known = (value, len(value) + sum(self._size(i) for i in value))
            self._list_sizes[id(value)] = known
        return known[1]

    def _call(self, expr: ast.Call, frame: Frame) -> Any:
        if expr.func in REGISTRY or expr.func in frame.module.visible:
            return self._apply(expr, frame, frame.current, True, None)
        if expr.func in BUILTINS:
            if any(a.name for a in expr.args):
                raise CnncError(f"{expr.func}() takes no keyword arguments", expr.loc)
            args = [self._eval(a.value, frame) for a in expr.args]
            self._tick(expr.loc, sum(self._size(a) for a in args))
            return self._builtin(expr.func, args, expr.loc)
        if expr.func in INITIALIZERS:
            return self._initializer(expr.func, expr.args, expr.loc, frame)
        if expr.func in frame.vars:
            raise CnncError(f"'{expr.func}' is a value and cannot be called", expr.loc)
        self._unknown(expr.func, frame, expr.loc, called=True)

    def _builtin(self, name: str, args: list[Any], loc: Loc) -> Any:
        """A built-in function (`min`, `abs`, ...) of evaluated arguments."""
        try:
            return BUILTINS[name](*args)
        except (TypeError, ValueError, OverflowError) as e:
            message = str(e) if f"{name}()" in str(e) else f"{name}(): bad arguments {', '.join(_show(a) for a in args)}"
            raise CnncError(message, loc) from None

    def _initializer(self, name: str, args: list[ast.Arg], loc: Loc, frame: Frame) -> Initializer:
        """`normal(0.02)`, `xavier`: an initializer, a value that `init=` and `bias_init=` take."""
        positional, keywords = [], {}
        for arg in args:
            value = self._eval(arg.value, frame)
            if arg.name is None:
                if keywords:
                    raise CnncError("positional arguments come before keyword arguments", arg.loc)
                positional.append(value)
            else:
                keywords[arg.name] = value
        try:
            return make_initializer(name, positional, keywords)
        except ValueError as e:
            raise CnncError(str(e), loc) from None

    def _binop(self, expr: ast.BinOp, frame: Frame) -> Any:
        # a + b + c + ... is a left-deep tree: walk down its left operands in a loop, not by recursion.
        spine = []
        while isinstance(expr, ast.BinOp):
            spine.append(expr)
            expr = expr.left
        value = self._eval(expr, frame)
        for binop in reversed(spine):
            self._tick(binop.loc)
            value = self._combine(binop, frame, value)
        return value

    def _combine(self, expr: ast.BinOp, frame: Frame, left: Any) -> Any:
        """`left op right` for one binary operator, its left operand already evaluated."""
        op = expr.op
        if op in ("and", "or"):
            if not isinstance(left, bool):
                raise CnncError(f"'{op}' needs true or false, got {_show(left)}", expr.left.loc)
            if (op == "and" and not left) or (op == "or" and left):
                return left
            right = self._eval(expr.right, frame)
            if not isinstance(right, bool):
                raise CnncError(f"'{op}' needs true or false, got {_show(right)}", expr.right.loc)
            return right
        right = self._eval(expr.right, frame)
        if isinstance(left, Value) or isinstance(right, Value):
            return self._tensor_binop(expr, frame, left, right)
        if op in ("==", "!="):
            self._tick(expr.loc, self._size(left) + self._size(right))
            equal = left == right and type(left) is type(right) or (_is_num(left) and _is_num(right) and left == right)
            return equal if op == "==" else not equal
        if op in ("<", "<=", ">", ">="):
            if not ((_is_num(left) and _is_num(right)) or (isinstance(left, str) and isinstance(right, str))):
                raise CnncError(f"cannot compare {_show(left)} and {_show(right)} with '{op}'", expr.loc)
            return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op]
        if not (_is_num(left) and _is_num(right)):
            raise CnncError(f"'{op}' needs numbers, got {_show(left)} and {_show(right)}", expr.loc)
        try:
            if op == "+":
                result = left + right
            elif op == "-":
                result = left - right
            elif op == "*":
                result = left * right
            elif op == "/":
                result = left / right
            elif op == "//":
                result = left // right
            elif op == "%":
                result = left % right
            else:  # "**"
                if abs(right) > 64 or (isinstance(left, int) and isinstance(right, int) and right < 0 and left == 0):
                    raise CnncError(f"exponent {_show(right)} is out of range", expr.right.loc)
                result = left**right
        except ZeroDivisionError:
            raise CnncError(f"division by zero in '{op}'", expr.loc) from None
        except OverflowError:
            raise CnncError("number too large", expr.loc) from None
        if isinstance(result, complex):
            raise CnncError(f"{_show(left)} ** {_show(right)} is not a real number", expr.loc)
        if isinstance(result, int) and abs(result) > MAX_INT or isinstance(result, float) and not math.isfinite(result):
            raise CnncError("number too large", expr.loc)
        return result

    def _tensor_binop(self, expr: ast.BinOp, frame: Frame, left: Any, right: Any) -> Value:
        """`left op right` with a tensor on either side: +, - and * of two tensors; +, -, * and / with a number."""
        op = expr.op

        def apply(name: str, x: Value, *others: Value, **attrs: Any) -> Value:
            layer = REGISTRY[name]
            return self._add_node(layer, layer.bind([], attrs), [x, *others], expr.loc, frame, None)

        tensors = isinstance(left, Value) and isinstance(right, Value)
        if tensors and op in ("+", "-", "*"):
            return apply({"+": "add", "-": "sub", "*": "mul"}[op], left, right)
        x, k = (left, right) if isinstance(left, Value) else (right, left)
        if not tensors and _is_num(k) and op in ("+", "-", "*", "/"):  # the language's numbers are finite
            k = float(k)
            if op == "+":
                return apply("shift", x, offset=k)
            if op == "*":
                return apply("scale", x, factor=k)
            if op == "-":
                return apply("shift", x, offset=-k) if x is left else apply("shift", apply("neg", x), offset=k)
            if x is right:  # k / x, as PyTorch computes it
                return apply("reciprocal", x) if k == 1.0 else apply("scale", apply("reciprocal", x), factor=k)
            if k == 0.0:
                raise CnncError("division of a tensor by zero", expr.loc)
            if not math.isfinite(1.0 / k):  # x / k is x * (1 / k)
                raise CnncError(f"division of a tensor by {_show(right)}: its reciprocal is too large", expr.loc)
            return apply("scale", x, factor=1.0 / k)
        hints = {"**": " (x ** 2 is square(x), x ** 0.5 is sqrt(x))", "/": " (x / y is x * reciprocal(y))"}
        hint = hints.get(op, "") if op == "**" or tensors else ""
        raise CnncError(
            f"'{op}' is not defined for {_show(left)} and {_show(right)}; tensors take +, - and * with each other "
            f"and +, -, * and / with a number{hint}",
            expr.loc,
        )

    def _unary(self, expr: ast.UnaryOp, frame: Frame) -> Any:
        value = self._eval(expr.operand, frame)
        if expr.op == "not":
            if not isinstance(value, bool):
                raise CnncError(f"'not' needs true or false, got {_show(value)}", expr.loc)
            return not value
        if isinstance(value, Value):  # -x is neg(x); +x is x
            op = REGISTRY["neg"]
            return self._add_node(op, op.bind([], {}), [value], expr.loc, frame, None) if expr.op == "-" else value
        if not _is_num(value):
            raise CnncError(f"unary '{expr.op}' needs a number or a tensor, got {_show(value)}", expr.loc)
        return -value if expr.op == "-" else value

    def _attribute(self, expr: ast.Attribute, frame: Frame) -> Any:
        value = self._eval(expr.value, frame)
        if not isinstance(value, Value):
            raise CnncError(f"{_show(value)} has no attribute '{expr.attr}'", expr.loc)
        t = value.type
        if expr.attr == "shape":
            return list(t.sample_shape)
        if expr.attr == "dtype":
            return t.dtype
        if expr.attr in VALUE_ATTRIBUTES:
            rank, axis = VALUE_ATTRIBUTES[expr.attr]
            if t.rank < rank or (expr.attr != "channels" and t.rank != rank):
                raise CnncError(f"a tensor {t} has no {expr.attr}", expr.loc)
            return t.shape[axis]
        names = [*VALUE_ATTRIBUTES, "shape", "dtype"]
        raise CnncError(
            f"a tensor has no attribute '{expr.attr}'{closest(expr.attr, names)} (tensors have {', '.join(names)})", expr.loc
        )

    def _index(self, expr: ast.Index, frame: Frame) -> Any:
        value = self._eval(expr.value, frame)
        index = self._eval(expr.index, frame)
        if not isinstance(value, list):
            raise CnncError(f"only lists can be indexed, not {_show(value)}", expr.loc)
        if isinstance(index, bool) or not isinstance(index, int):
            raise CnncError(f"an index must be an integer, got {_show(index)}", expr.loc)
        if not -len(value) <= index < len(value):
            raise CnncError(f"index {index} is out of range for a list of {len(value)}", expr.loc)
        return value[index]


# Keywords every layer with parameters takes (unless its op has an argument of that name, as prelu's `init`):
# the initializer of its weight, that of its bias, and whether its parameters train.
LAYER_OPTIONS = ("init", "bias_init", "frozen")


def _apply_layer_options(op: Op, layer: str, specs: dict[str, ParamSpec], options: dict[str, tuple[Any, Loc]]) -> None:
    trained = {spec.name.rpartition(".")[2]: full for full, spec in specs.items() if spec.kind == "param"}
    for key, (value, loc) in options.items():
        if not trained:
            raise CnncError(f"{op.name} has no parameters, so '{key}=' does not apply", loc)
        if key == "frozen":
            if not isinstance(value, bool):
                raise CnncError(f"{op.name}: frozen: expected true or false, got {_show(value)}", loc)
            if value:
                for full in trained.values():
                    specs[full] = replace(specs[full], kind="frozen")
            continue
        local = "weight" if key == "init" else "bias"
        if not isinstance(value, Initializer):
            raise CnncError(f"{op.name}: {key}: expected an initializer such as normal(0.02), xavier or zeros, got {_show(value)}", loc)
        if local not in trained:
            raise CnncError(f"{op.name} has no {local} here, so '{key}=' does not apply (in {layer})", loc)
        spec = specs[trained[local]]
        if value.name in ("xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal") and len(spec.shape) < 2:
            raise CnncError(f"{op.name}: {key}: {value.name} needs a weight of two or more dimensions; {spec.name} is {list(spec.shape)}", loc)
        if value.name == "bilinear" and len(spec.shape) != 4:
            raise CnncError(f"{op.name}: {key}: bilinear initializes a conv_transpose weight; {spec.name} is {list(spec.shape)}", loc)
        specs[trained[local]] = replace(spec, init=value.name, args=value.args)


def _leading_sign(expr: ast.Node) -> str | None:
    """The unary + or - an expression starts with (`+ b * c` too), or None."""
    while isinstance(expr, ast.BinOp):
        expr = expr.left
    return expr.op if isinstance(expr, ast.UnaryOp) and expr.op in ("+", "-") else None


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def build(network: ast.Definition, hyperparameters: dict[str, Any]) -> Graph:
    """Interpret `network` with the given hyperparameter values into a typed Graph."""
    builder = Builder(network, hyperparameters)
    try:
        return builder.build()
    except RecursionError:
        raise CnncError("the program is nested too deeply (block calls and expressions together)", builder.where) from None
