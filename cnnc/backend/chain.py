"""A chain of elementwise ops fused into one loop body, written once for every backend.

A fused group applies elementwise ops (activations, their gradients, adds,
batchnorm in eval mode) one after another to each element, optionally to the
value an anchor kernel (a conv, a GEMM, a batchnorm) has just produced. `Chain`
holds that body as a list of assignments in plain Python syntax over scalars:
the CPU backend wraps it in a Numba loop over a range of elements, the CUDA
backend in a grid-stride loop. Each element is indexed by `i` (flat) and `c`
(its channel: the last physical axis).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..graph import Graph
from ..kernels import NodeParam, Pack, Param, Value
from ..ops.base import EXPR_INPUTS

_NAME = re.compile(r"\b[A-Za-z_][A-Za-z_0-9]*\b")


@dataclass
class Chain:
    """The per-element body of a fused loop.

    operands: arrays the body reads or writes, in the order the kernel receives them;
              `E<k>` in the body is operand k. Values are read at [i], parameters at [c].
    lines:    assignments, in order, over the variables `v_<k>` (one per member), `v0`
              (the anchor's value, read from the in-place target `o[i]`) and loads.
    hoisted:  per-channel terms, computed into arrays (in the buffer's dtype) before the loop.
    target:   the variable stored back into `o[i]` (None: `o` keeps the anchor's value).
    """

    operands: list = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    target: str | None = None
    hoisted: list[tuple[str, str]] = field(default_factory=list)  # (array, per-channel expression)
    reads_target: bool = False  # whether the body starts from o[i] (an anchor's output)

    @property
    def per_channel(self) -> bool:
        return any("[c]" in line for line in self.lines)

    def pack(self) -> Pack:
        return Pack(tuple(self.operands))


def build_chain(
    graph: Graph,
    members: list[str],
    source: str | None,
    stores: list[str],
    target: str | None,
    source_expr: str = "o[i]",
    bias: bool = False,
) -> Chain:
    """The body computing `members` (elementwise nodes, in order) per element.

    source:  the node whose value the body starts from (`source_expr`: read in place from
             `o[i]`, the anchor's output), or None.
    stores:  members whose values must be written to their own buffers.
    target:  the member whose value replaces `o[i]` (the group's in-place output), or None.
    bias:    add the anchor's own per-channel bias to the source value first (the anchor is
             the node the kernel is lowered for, so `Param("bias")` names its bias).
    """
    chain = Chain(reads_target=source is not None)
    var: dict[str, str] = {}
    if source is not None:
        var[source] = "v0"
        chain.lines.append(f"v0 = {source_expr}")
        if bias:
            chain.operands.append(Param("bias"))
            chain.lines.append("v0 = v0 + E0[c]")
            if target is None:  # `o` holds the anchor's own value, which includes its bias
                chain.lines.append("o[i] = v0")
    loads: dict[str, str] = {}

    def operand(spec) -> int:
        if spec not in chain.operands:
            chain.operands.append(spec)
        return chain.operands.index(spec)

    def value(name: str) -> str:
        if name in var:
            return var[name]
        if name not in loads:
            k = operand(Value(name))
            loads[name] = f"f{k}"
            chain.lines.append(f"f{k} = E{k}[i]")
        return loads[name]

    for n, name in enumerate(members, start=1):
        node = graph[name]
        expr = node.op.expression(node.attrs, node.type, *(graph[i].type for i in node.inputs))
        if expr is None:
            raise ValueError(f"{name} ({node.op.name}) is not an elementwise expression")
        names = {EXPR_INPUTS[k]: value(x) for k, x in enumerate(node.inputs)}
        names.update({key: repr(float(v)) for key, v in expr.scalars})
        for local in expr.params:
            names[f"P_{local}"] = f"E{operand(NodeParam(name, local))}[c]"
        substitute = lambda text: _NAME.sub(lambda m: names.get(m.group(0), m.group(0)), text)  # noqa: E731
        for term, term_code in expr.channel:
            array = f"h{len(chain.hoisted)}"
            chain.hoisted.append((array, substitute(term_code)))
            names[f"H_{term}"] = f"{array}[c]"
        code = substitute(expr.code)
        var[name] = f"v_{n}"
        chain.lines.append(f"v_{n} = {code}")
    for name in stores:
        chain.lines.append(f"E{operand(Value(name))}[i] = {var[name]}")
    if target is not None:
        chain.target = var[target]
        chain.lines.append(f"o[i] = {var[target]}")
    return chain


def bias_chain(source_expr: str = "o[i]") -> Chain:
    """An anchor's own per-channel bias as its whole epilogue: o[i] = value + bias[c]."""
    return Chain(operands=[Param("bias")], lines=[f"v0 = {source_expr} + E0[c]", "o[i] = v0"], target="v0", reads_target=True)
