"""The summary of a graph: a row per layer, then totals (text or JSON-ready data)."""

from __future__ import annotations

from typing import Any

from .graph import Graph


def _count(n: int) -> str:
    for unit, size in (("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def summary_data(graph: Graph) -> dict[str, Any]:
    """Per-layer rows and totals, all per example (one image)."""
    rows = []
    for node in graph.nodes():
        in_types = [graph[i].type for i in node.inputs]
        params = sum(graph.params[full].size for full in node.params.values() if graph.params[full].kind in ("param", "frozen"))
        macs = node.op.macs(node.attrs, node.type, *in_types)
        rows.append(
            {
                "layer": node.name,
                "op": node.op.name,
                "shape": list(node.type.sample_shape),
                "dtype": node.type.dtype,
                "params": params,
                "macs": macs,
                "flops": node.op.flops(node.attrs, node.type, *in_types),
                "activation_bytes": node.type.sample_bytes(),
            }
        )
    return {
        "network": graph.name,
        "hyperparameters": graph.hyperparameters,
        "inputs": {n: list(t.sample_shape) for n, t in graph.input_types().items()},
        "outputs": {n: list(t.sample_shape) for n, t in graph.output_types().items()},
        "layers": rows,
        "totals": {
            "params": graph.parameter_count(),
            "buffers": sum(s.size for s in graph.params.values() if s.kind == "buffer"),
            "macs_per_example": sum(r["macs"] for r in rows),
            "flops_per_example": sum(r["flops"] for r in rows),
            "activation_bytes_per_example": sum(r["activation_bytes"] for r in rows),
        },
    }


def summary_text(graph: Graph) -> str:
    data = summary_data(graph)
    header = ("layer", "op", "output shape", "params", "FLOPs", "activations")
    table = [header]
    for r in data["layers"]:
        shape = "[" + ", ".join(map(str, r["shape"])) + "]" + ("" if r["dtype"] == "float32" else f" {r['dtype']}")
        table.append((r["layer"], r["op"], shape, f"{r['params']:,}" if r["params"] else "", _count(r["flops"]), _bytes(r["activation_bytes"])))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    right = {3, 4, 5}

    def line(row):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    rule = "-" * len(line(header))
    t = data["totals"]
    hyper = ", ".join(f"{k}={v}" for k, v in data["hyperparameters"].items())
    out = [f"network {data['network']}({hyper})", rule, line(header), rule, *(line(r) for r in table[1:]), rule]
    out.append(f"parameters:              {t['params']:,}" + (f" (+ {t['buffers']:,} in buffers)" if t["buffers"] else ""))
    out.append(f"multiply-accumulates:    {_count(t['macs_per_example'])} per example ({t['macs_per_example']:,})")
    out.append(f"activation memory:       {_bytes(t['activation_bytes_per_example'])} per example")
    return "\n".join(out)
