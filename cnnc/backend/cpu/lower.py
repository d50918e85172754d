"""Lowering a schedule of groups (cnnc.passes.fuse) to CPU kernels, one per group.

A single node is lowered by its op's `cpu()`. A fused group's elementwise chain
is built once (cnnc.backend.chain) and rendered here as the anchor's epilogue,
as a loop of its own, or as the normalizing pass after batch statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...graph import Graph
from ...passes.fuse import Group
from ..chain import Chain, build_chain
from ..layout import physical_shape
from .fused import LOOP_SOURCE, epilogue_source, loop_block
from .kernel import TRAINING, CpuKernel, NodeParam, Pack, Value


@dataclass
class Lowered:
    group: Group
    kernel: CpuKernel
    owner: str  # the node that In/Param/Out specs are relative to
    out: str  # the node whose buffer OUT names


def channels(graph: Graph, name: str) -> int:
    """The last physical axis of a value (channels for NHWC and [N, C] buffers)."""
    return physical_shape(graph[name].type, 1)[-1]


def node_types(graph: Graph, name: str):
    node = graph[name]
    return node.attrs, node.type, [graph[i].type for i in node.inputs]


def has_bias(graph: Graph, name: str) -> bool:
    return graph[name].attrs.get("bias") is True


def _chain_for(graph: Graph, group: Group, members: list[str], source: str | None, into: str, **kw) -> Chain:
    """The chain of `members` writing the group's values: `into` in place, the other outputs stored."""
    stores = [m for m in members if m in group.outputs and m != into]
    target = into if into in members else None
    return build_chain(graph, members, source, stores, target, **kw)


def lower_group(graph: Graph, group: Group) -> Lowered:
    if group.kind == "single":
        a, out, ins = node_types(graph, group.end)
        return Lowered(group, graph[group.end].op.cpu(a, out, *ins), group.end, group.end)
    if group.kind == "horizontal":
        return _horizontal(graph, group)
    if group.kind == "elementwise":
        chain = _chain_for(graph, group, group.pre, None, group.end)
        c = channels(graph, group.end) if chain.per_channel else 1
        kernel = CpuKernel(
            LOOP_SOURCE + "\n\n" + epilogue_source(chain),
            "fused_loop",
            (Value(group.end), chain.pack(), c, loop_block(c)),
        )
        return Lowered(group, kernel, group.end, group.end)
    if group.kind == "epilogue":
        return _epilogue(graph, group)
    if group.kind == "batchnorm":
        return _batchnorm(graph, group)
    raise ValueError(f"no CPU lowering for a {group.kind} group")


def _epilogue(graph: Graph, group: Group) -> Lowered:
    anchor = group.anchor
    # The anchor writes into its own buffer when its value is needed outside; otherwise into
    # the group's last output, which the epilogue then overwrites in place.
    into = anchor if anchor in group.outputs else group.end
    chain = _chain_for(graph, group, group.pre, anchor, into, bias=has_bias(graph, anchor))
    a, out, ins = node_types(graph, anchor)
    return Lowered(group, graph[anchor].op.cpu(a, out, *ins, epilogue=chain), anchor, into)


# The anchor (with its own epilogue) fills x; then batchnorm's statistics and constants, computed
# by the same function as the batchnorm kernel (so the results are the same to the bit); then one
# normalizing pass that runs the chain of ops after batchnorm.
BATCHNORM_GROUP_SOURCE = """
@njit(parallel=True, cache=True)
def _normalize(x, o, m, s, b, C, e, block):
    n = o.size
    for blk in prange((n + block - 1) // block):
        lo = blk * block
        _post(o, lo, min(n, lo + block), C, e, x, m, s, b)


@njit(cache=True)
def fused_batchnorm({args}x, weight, bias, running_mean, running_var, training, o, e, C, eps, momentum, affine, block):
    {stage}
    m, s, b = _batch_constants(x, weight, bias, running_mean, running_var, training, C, eps, momentum, affine)
    _normalize(x, o, m, s, b, C, e, block)
"""


def _batchnorm(graph: Graph, group: Group) -> Lowered:
    from ...ops.norm import BATCHNORM_SOURCE

    bn = graph[group.tail]
    x = bn.inputs[0]
    c = channels(graph, x)
    source, stage_args, call = "", (), ""
    owner, stage_out = bn.name, x
    if group.anchor is not None:
        anchor = group.anchor
        into = anchor if anchor in group.outputs else x
        pre = _chain_for(graph, group, group.pre, anchor, into, bias=has_bias(graph, anchor))
        a, out, ins = node_types(graph, anchor)
        stage = graph[anchor].op.cpu(a, out, *ins, epilogue=pre)
        # Relative specs of the anchor resolve against it; make them absolute.
        stage_args = tuple(absolute_spec(graph, arg, anchor, into) for arg in stage.args)
        names = "".join(f"a{k}, " for k in range(len(stage_args)))
        source, call = stage.source + "\n\n", f"{stage.entry}({names[:-2]})"
        owner, stage_out = anchor, into
    elif group.pre:  # an elementwise loop fills x
        loop = _chain_for(graph, group, group.pre, None, x)
        c_loop = c if loop.per_channel else 1
        stage_args = (Value(x), loop.pack(), c_loop, loop_block(c_loop))
        names = "a0, a1, a2, a3, "
        source, call = LOOP_SOURCE + "\n\n" + epilogue_source(loop) + "\n\n", "fused_loop(a0, a1, a2, a3)"
    else:
        names = ""
    post = _chain_for(graph, group, group.post, bn.name, group.end, source_expr="(x[i] - m[c]) * s[c] + b[c]")
    if group.end == bn.name:  # nothing after batchnorm: store its value
        post.lines.append("o[i] = v0")
    elif bn.name in group.outputs:
        post.lines.insert(1, f"E{len(post.operands)}[i] = v0")
        post.operands.append(Value(bn.name))
    source += (
        epilogue_source(post, "_post", ", x, m, s, b")
        + "\n\n" + BATCHNORM_SOURCE
        + BATCHNORM_GROUP_SOURCE.format(args=names, stage=call or "pass")
    )
    weight, bias = ("weight", "bias") if bn.attrs["affine"] else ("running_var", "running_mean")
    p = lambda local: NodeParam(bn.name, local)  # noqa: E731
    args = (*stage_args, Value(x), p(weight), p(bias), p("running_mean"), p("running_var"), TRAINING,
            Value(group.end), post.pack(), c, bn.attrs["eps"], bn.attrs["momentum"], bn.attrs["affine"], loop_block(c))
    return Lowered(group, CpuKernel(source, "fused_batchnorm", args), owner, stage_out)


def absolute_spec(graph: Graph, arg, owner: str, out: str):
    """A spec relative to the node `owner` (In, Out, Param) as one naming its node."""
    from .kernel import In, Out, Param

    if isinstance(arg, Out):
        return Value(out, arg.flat)
    if isinstance(arg, In):
        return Value(graph[owner].inputs[arg.index], arg.flat)
    if isinstance(arg, Param):
        return NodeParam(owner, arg.name)
    if isinstance(arg, Pack):
        return Pack(tuple(absolute_spec(graph, a, owner, out) for a in arg.items))
    return arg


def _horizontal(graph: Graph, group: Group) -> Lowered:
    if group.pattern == "batchnorm_grad":
        from ...ops.norm import batchnorm_grads_kernel

        return Lowered(group, batchnorm_grads_kernel(graph, group.nodes), group.nodes[0], group.nodes[0])
    if group.pattern == "dense_grad":
        from ...ops.dense import dense_grad_params_kernel

        weight, bias = (graph[n] for n in group.nodes)
        return Lowered(group, dense_grad_params_kernel(weight, bias), weight.name, weight.name)
    if group.pattern == "cross_entropy":
        from ...ops.loss import cross_entropy_with_grad_kernel

        loss, grad = (graph[n] for n in group.nodes)
        return Lowered(group, cross_entropy_with_grad_kernel(loss, grad), loss.name, loss.name)
    raise ValueError(f"no CPU lowering for the {group.pattern} pattern")


