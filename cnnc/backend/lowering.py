"""Lowering a schedule of groups (cnnc.passes.fuse) to kernels, one per group, for either target.

A single node is lowered by its op's kernel choice (`cpu()` / `cuda()`), or,
when the op is an elementwise expression, as a one-member chain. A fused group's
elementwise chain is built once (cnnc.backend.chain); each target's renderer
(cnnc.backend.cpu.kernel, cnnc.backend.cuda.kernel) turns it into the anchor's
`_epilogue`, a loop of its own, or the `_post` pass after batch statistics. The
targets differ only in the few facts `Target` holds.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..graph import Graph
from ..kernels import EPILOGUE, TRAINING, Epilogue, Fused, In, Kernel, NodeParam, Out, Pack, Param, Value
from ..layout import physical_shape
from ..ops.base import Fusion
from .chain import Chain, bias_chain, build_chain

# Elements per parallel iteration of a standalone elementwise loop (whole rows), on the CPU.
BLOCK = 1 << 14


@dataclass(frozen=True)
class Target:
    """What the lowering needs to know of a target.

    anchor_value: how an epilogue reads the value its kernel computed: from the output it has
                  already stored (the CPU's kernels store whole tiles, then run the chain on
                  them) or as `acc`, handed over per element (the CUDA kernels').
    normalized:   how the `_post` pass of a fused batchnorm reads an element's normalized value.
    batch:        the batch size the kernels are built for (an executor's), or None where it is
                  not known; ops that choose their algorithm by it (`Op.batch_aware`) are given it.
    """

    name: str
    anchor_value: str
    normalized: str
    batch: int | None = None

    @property
    def stored_first(self) -> bool:
        """Whether the output already holds the anchor's value when its epilogue runs."""
        return self.anchor_value == "o[i]"

    def kernel(self, graph: Graph, name: str, epilogue: Chain | None = None) -> Kernel:
        """The op's own kernel for node `name` (with an epilogue, for ops that host one)."""
        node = graph[name]
        choose = node.op.cpu if self.name == "cpu" else node.op.cuda
        ins = [graph[i].type for i in node.inputs]
        extra = {"batch": self.batch} if node.op.batch_aware else {}
        if epilogue is not None:
            extra["epilogue"] = epilogue
        return choose(node.attrs, node.type, *ins, **extra)


CPU = Target("cpu", anchor_value="o[i]", normalized="(x[i] - m[c]) * s[c] + b[c]")
CUDA = Target("cuda", anchor_value="acc", normalized="acc")


@dataclass
class Lowered:
    group: object  # cnnc.passes.fuse.Group
    kernel: Kernel
    owner: str  # the node that In/Param/Out specs are relative to
    out: str  # the node whose buffer OUT names


def channels(graph: Graph, name: str) -> int:
    """The last physical axis of a value (channels for NHWC and [N, C] buffers)."""
    return physical_shape(graph[name].type, 1)[-1]


def loop_block(channels: int) -> int:
    return max(1, BLOCK // channels) * channels


def has_bias(graph: Graph, name: str) -> bool:
    """Whether node `name`'s epilogue starts by adding its bias."""
    node = graph[name]
    return node.op.bias_in_epilogue(node.attrs, *(graph[i].type for i in node.inputs))


def is_expression(graph: Graph, name: str) -> bool:
    node = graph[name]
    return node.op.expression(node.attrs, node.type, *(graph[i].type for i in node.inputs)) is not None


def _chain_for(graph: Graph, group, members: list[str], source: str | None, into: str, **kw) -> Chain:
    """The chain of `members` writing the group's values: `into` in place, the other outputs stored."""
    stores = [m for m in members if m in group.outputs and m != into]
    target = into if into in members else None
    return build_chain(graph, members, source, stores, target, **kw)


def _loop(graph: Graph, chain: Chain, out: str) -> Kernel:
    c = channels(graph, out) if chain.per_channel else 1
    return Kernel("loop", "fused_loop", (Value(out), EPILOGUE, c, loop_block(c)), epilogue=chain)


def _anchored(graph: Graph, group, target: Target, into: str) -> Kernel:
    """The group's anchor with the chain of `group.pre` as its epilogue, writing `into`."""
    anchor = group.anchor
    chain = _chain_for(graph, group, group.pre, anchor, into, source_expr=target.anchor_value, bias=has_bias(graph, anchor))
    if into == anchor and not target.stored_first and not has_bias(graph, anchor):
        chain.lines.insert(1, "o[i] = v0")  # nothing stored the anchor's own value yet
    return target.kernel(graph, anchor, chain)


def lower_group(graph: Graph, group, target: Target) -> Lowered:
    if group.kind == "single":
        name = group.end
        if is_expression(graph, name):
            return Lowered(group, _loop(graph, build_chain(graph, [name], None, [], name), name), name, name)
        hosts = graph[name].op.fusion == Fusion.OUT_ELEMWISE_FUSABLE
        # An anchor alone still adds its own bias in its epilogue.
        epilogue = bias_chain(target.anchor_value) if hosts and has_bias(graph, name) else None
        return Lowered(group, target.kernel(graph, name, epilogue), name, name)
    if group.kind == "elementwise":
        chain = _chain_for(graph, group, group.pre, None, group.end)
        return Lowered(group, _loop(graph, chain, group.end), group.end, group.end)
    if group.kind == "epilogue":
        # The anchor writes into its own buffer when its value is needed outside; otherwise into
        # the group's last output, which the epilogue then overwrites in place.
        into = group.anchor if group.anchor in group.outputs else group.end
        return Lowered(group, _anchored(graph, group, target, into), group.anchor, into)
    if group.kind == "batchnorm":
        return _batchnorm(graph, group, target)
    if group.kind == "horizontal":
        return _horizontal(graph, group, target)
    raise ValueError(f"no lowering for a {group.kind} group")


def _batchnorm(graph: Graph, group, target: Target) -> Lowered:
    """A stage fills x (the anchor with its epilogue, or an elementwise loop); then batchnorm's statistics
    and constants, computed by the batchnorm kernels' own functions (so the results are the same to the
    bit); then one normalizing pass that runs the chain of ops after batchnorm (`_post`)."""
    bn = graph[group.tail]
    x = bn.inputs[0]
    c = channels(graph, x)
    owner, stage_out, stage = bn.name, x, None
    if group.anchor is not None:
        owner = group.anchor
        stage_out = owner if owner in group.outputs else x
        stage = _anchored(graph, group, target, stage_out)
    elif group.pre:
        stage = _loop(graph, _chain_for(graph, group, group.pre, None, x), x)
    post = _chain_for(graph, group, group.post, bn.name, group.end, source_expr=target.normalized)
    if group.end == bn.name:  # nothing after batchnorm: store its value
        post.lines.append("o[i] = v0")
    elif bn.name in group.outputs:
        post.lines.insert(1, f"E{len(post.operands)}[i] = v0")
        post.operands.append(Value(bn.name))
    weight, bias = ("weight", "bias") if bn.attrs["affine"] else ("running_var", "running_mean")
    p = lambda local: NodeParam(bn.name, local)  # noqa: E731
    # The stage's specs are relative to its node; the fused kernel's are absolute.
    stage_args = Pack(() if stage is None else
                      tuple(absolute_spec(graph, arg, owner, stage_out, stage.epilogue) for arg in stage.args))
    args = (stage_args, Value(x), p(weight), p(bias), p("running_mean"), p("running_var"), TRAINING,
            Value(group.end), Fused(post, post.pack(), "_post"), c, bn.attrs["eps"], bn.attrs["momentum"], bn.attrs["affine"], loop_block(c))
    bind = (("_stage", "_no_stage"),) if stage is None else ()
    kernel = Kernel("norm", "fused_batchnorm", args, post=post, bind=bind, stage=stage)
    return Lowered(group, kernel, owner, stage_out)


def absolute_spec(graph: Graph, arg, owner: str, out: str, epilogue: Chain | None = None):
    """A spec relative to the node `owner` (In, Out, Param, the epilogue's operands) as one naming its node."""
    if isinstance(arg, Out):
        return Value(out, arg.flat)
    if isinstance(arg, In):
        return Value(graph[owner].inputs[arg.index], arg.flat)
    if isinstance(arg, Param):
        return NodeParam(owner, arg.name)
    if isinstance(arg, Epilogue):
        return Fused(epilogue, absolute_spec(graph, epilogue.pack() if epilogue is not None else Pack(()), owner, out))
    if isinstance(arg, Pack):
        return Pack(tuple(absolute_spec(graph, a, owner, out, epilogue) for a in arg.items))
    return arg


def _horizontal(graph: Graph, group, target: Target) -> Lowered:
    """Sibling reductions (cnnc.ops.base.Op.siblings): the first member's op gives their one kernel."""
    first = group.nodes[0]
    return Lowered(group, graph[first].op.siblings_kernel(graph, group.nodes, target.name), first, first)
