"""Lowering a schedule of groups to CUDA kernels: the CPU backend's groups, rendered for the GPU.

A node is lowered by its op's `cuda()`, or, when the op is an elementwise
expression, as a one-member chain. A fused group's chain (cnnc.backend.chain)
becomes the anchor's `_epilogue` device function or a grid-stride loop.
"""

from __future__ import annotations

from ...graph import Graph
from ...passes.fuse import Group
from ..chain import Chain, build_chain
from ..cpu.kernel import TRAINING, NodeParam, Value
from ..cpu.lower import Lowered, absolute_spec, has_bias, node_types, channels
from .fused import LOOP_SOURCE, epilogue_source
from .kernel import CudaKernel


def _chain_for(graph: Graph, group: Group, members: list[str], source: str | None, into: str, **kw) -> Chain:
    stores = [m for m in members if m in group.outputs and m != into]
    target = into if into in members else None
    return build_chain(graph, members, source, stores, target, **kw)


def _loop(graph: Graph, chain: Chain, out: str) -> CudaKernel:
    c = channels(graph, out) if chain.per_channel else 1
    return CudaKernel(LOOP_SOURCE + "\n\n" + epilogue_source(chain), "fused_loop", (Value(out), chain.pack(), c))


def _store_anchor(chain: Chain, graph: Graph, anchor: str, into: str) -> None:
    """When `o` is the anchor's own buffer, store its value (with its bias: build_chain does that)."""
    if into == anchor and not has_bias(graph, anchor):
        chain.lines.insert(1, "o[i] = v0")


def _is_expression(graph: Graph, name: str) -> bool:
    node = graph[name]
    return node.op.expression(node.attrs, node.type, *(graph[i].type for i in node.inputs)) is not None


def lower_group(graph: Graph, group: Group) -> Lowered:
    if group.kind == "single":
        name = group.end
        if _is_expression(graph, name):
            return Lowered(group, _loop(graph, build_chain(graph, [name], None, [], name), name), name, name)
        a, out, ins = node_types(graph, name)
        return Lowered(group, graph[name].op.cuda(a, out, *ins), name, name)
    if group.kind == "elementwise":
        return Lowered(group, _loop(graph, _chain_for(graph, group, group.pre, None, group.end), group.end), group.end, group.end)
    if group.kind == "epilogue":
        anchor = group.anchor
        into = anchor if anchor in group.outputs else group.end
        chain = _chain_for(graph, group, group.pre, anchor, into, source_expr="acc", bias=has_bias(graph, anchor))
        _store_anchor(chain, graph, anchor, into)
        a, out, ins = node_types(graph, anchor)
        return Lowered(group, graph[anchor].op.cuda(a, out, *ins, epilogue=chain), anchor, into)
    if group.kind == "batchnorm":
        return _batchnorm(graph, group)
    if group.kind == "horizontal":
        return _horizontal(graph, group)
    raise ValueError(f"no CUDA lowering for a {group.kind} group")


# The stage filling x (an anchor with its epilogue, or an elementwise loop), batchnorm's constants
# (launched by the batchnorm op's CUDA source), then one normalizing pass with the chain after it.
BATCHNORM_GROUP_SOURCE = """
@cuda.jit(cache=True)
def _normalize(o, x, m, s, b, e, C, n):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        c = i % C
        _post(o, i, c, (x[i] - m[c]) * s[c] + b[c], e)


def fused_batchnorm({args}x, weight, bias, running_mean, running_var, training, o, e, C, eps, momentum, affine):
    {stage}
    m, s, b = batch_constants(x, weight, bias, running_mean, running_var, training, C, eps, momentum, affine)
    _normalize[blocks(o.size), THREADS](o, x, m, s, b, e, C, o.size)
"""


def _batchnorm(graph: Graph, group: Group) -> Lowered:
    from ...ops.norm import BATCHNORM_CUDA_SOURCE

    bn = graph[group.tail]
    x = bn.inputs[0]
    c = channels(graph, x)
    source, stage_args, call, names = "", (), "pass", ""
    owner, stage_out = bn.name, x
    if group.anchor is not None:
        anchor = group.anchor
        into = anchor if anchor in group.outputs else x
        pre = _chain_for(graph, group, group.pre, anchor, into, source_expr="acc", bias=has_bias(graph, anchor))
        _store_anchor(pre, graph, anchor, into)
        a, out, ins = node_types(graph, anchor)
        stage = graph[anchor].op.cuda(a, out, *ins, epilogue=pre)
        owner, stage_out = anchor, into
    elif group.pre:
        stage = _loop(graph, _chain_for(graph, group, group.pre, None, x), x)
    else:
        stage = None
    if stage is not None:
        stage_args = tuple(absolute_spec(graph, arg, owner, stage_out) for arg in stage.args)
        names = "".join(f"a{k}, " for k in range(len(stage_args)))
        source, call = stage.source + "\n\n", f"{stage.entry}({names[:-2]})"
    post = _chain_for(graph, group, group.post, bn.name, group.end, source_expr="acc")
    if group.end == bn.name:
        post.lines.append("o[i] = v0")
    elif bn.name in group.outputs:
        post.lines.insert(1, f"E{len(post.operands)}[i] = v0")
        post.operands.append(Value(bn.name))
    source += (
        epilogue_source(post, "_post") + "\n\n" + BATCHNORM_CUDA_SOURCE
        + BATCHNORM_GROUP_SOURCE.format(args=names, stage=call)
    )
    weight, bias = ("weight", "bias") if bn.attrs["affine"] else ("running_var", "running_mean")
    p = lambda local: NodeParam(bn.name, local)  # noqa: E731
    args = (*stage_args, Value(x), p(weight), p(bias), p("running_mean"), p("running_var"), TRAINING,
            Value(group.end), post.pack(), c, bn.attrs["eps"], bn.attrs["momentum"], bn.attrs["affine"])
    return Lowered(group, CudaKernel(source, "fused_batchnorm", args), owner, stage_out)


def _horizontal(graph: Graph, group: Group) -> Lowered:
    if group.pattern == "batchnorm_grad":
        from ...ops.norm import batchnorm_grads_kernel

        kernel = batchnorm_grads_kernel(graph, group.nodes, target="cuda")
        return Lowered(group, kernel, group.nodes[0], group.nodes[0])
    if group.pattern == "dense_grad":
        from ...ops.dense import dense_grad_params_kernel

        weight, bias = (graph[n] for n in group.nodes)
        return Lowered(group, dense_grad_params_kernel(weight, bias, target="cuda"), weight.name, weight.name)
    if group.pattern == "cross_entropy":
        from ...ops.loss import cross_entropy_with_grad_kernel

        loss, grad = (graph[n] for n in group.nodes)
        return Lowered(group, cross_entropy_with_grad_kernel(loss, grad, target="cuda"), loss.name, loss.name)
    raise ValueError(f"no CUDA lowering for the {group.pattern} pattern")

