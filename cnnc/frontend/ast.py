"""The syntax tree of a .cnn file. Every node remembers where it came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import MAX_INT, Loc  # noqa: F401 (MAX_INT: the language's limit, read as ast.MAX_INT)


@dataclass
class Node:
    loc: Loc


# -- expressions ------------------------------------------------------------


@dataclass
class Const(Node):
    value: Any  # int, float, str, bool or None


@dataclass
class Name(Node):
    id: str


@dataclass
class ListExpr(Node):
    items: list[Node]


@dataclass
class Arg(Node):
    name: str | None  # None for a positional argument
    value: Node


@dataclass
class Call(Node):
    func: str
    args: list[Arg]


@dataclass
class BinOp(Node):
    op: str  # + - * / // % ** == != < <= > >= and or
    left: Node
    right: Node


@dataclass
class UnaryOp(Node):
    op: str  # - + not
    operand: Node


@dataclass
class Attribute(Node):
    value: Node
    attr: str


@dataclass
class Index(Node):
    value: Node
    index: Node


@dataclass
class Repeat(Node):
    count: Node
    body: Node


@dataclass
class Group(Node):
    body: list[Node]


@dataclass
class Link(Node):
    label: str | None
    expr: Node


@dataclass
class Chain(Node):
    links: list[Link]


# -- statements -------------------------------------------------------------


@dataclass
class Input(Node):
    name: str
    dtype: str | None
    dims: list[Node]


@dataclass
class Output(Node):
    name: str
    chain: Chain | None


@dataclass
class Assign(Node):
    name: str
    chain: Chain


@dataclass
class If(Node):
    branches: list[tuple[Node, list[Node]]]  # (condition, body) for if and each elif
    orelse: list[Node] | None


# -- definitions ------------------------------------------------------------


@dataclass
class Param(Node):
    name: str
    default: Node | None


@dataclass
class Definition(Node):
    kind: str  # "network" or "block"
    name: str
    params: list[Param]
    body: list[Node]
    module: Any = field(default=None, repr=False)  # the Module that defines it


@dataclass
class Import(Node):
    target: str  # a quoted path or a dotted module name
    quoted: bool


@dataclass
class Module(Node):
    path: str
    items: list[Node]
