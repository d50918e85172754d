"""Drawing a graph with Graphviz: DOT text, and SVG/PNG/PDF files rendered by `dot`.

Nodes are boxes labelled with their name and op, inputs are ellipses, edges carry
the shape of the value they move. Graph outputs get a double border and a note
naming the output; parameter-gradient nodes are shaded. Given the schedule
(cnnc.passes.schedule), every fused group of two or more nodes becomes a cluster.
The text depends only on the graph, so the same graph always draws the same way.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

from .errors import CnncError

TEXT_SUFFIXES = (".dot", ".gv")
RENDERED_SUFFIXES = (".svg", ".png", ".pdf")
SUPPORTED_SUFFIXES = TEXT_SUFFIXES + RENDERED_SUFFIXES

# Light fills, one per fusion kind, so that neighbouring clusters stay distinguishable.
GROUP_FILLS = {
    "epilogue": "#e3f2fd",
    "elementwise": "#fff8e1",
    "batchnorm": "#e8f5e9",
    "horizontal": "#f3e5f5",
    "single": "#f5f5f5",
}
DEFAULT_GROUP_FILL = "#eceff1"
GRADIENT_FILL = "#fde7e7"
INPUT_FILL = "#e0f7fa"
OUTPUT_FILL = "#fffde7"

GRAPH_STYLE = 'rankdir=TB, fontname="Helvetica", fontsize=11, nodesep=0.25, ranksep=0.3, labelloc=t'
NODE_STYLE = (
    'shape=box, style="rounded,filled", fillcolor=white, fontname="Helvetica", '
    'fontsize=10, height=0.3, margin="0.08,0.03"'
)
EDGE_STYLE = 'fontname="Helvetica", fontsize=8, arrowsize=0.6, color="#555555", fontcolor="#333333"'

DOT_TIMEOUT_S = 600
STDERR_LINES = 5


def quote(text: str) -> str:
    """`text` as a double-quoted DOT string (ID or label), newlines drawn as line breaks."""
    escaped = str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _attrs(**attrs: str) -> str:
    return ", ".join(f"{key}={quote(value)}" for key, value in attrs.items())


def _groups(graph, schedule) -> list:
    """The fusion groups worth a cluster: two or more members present in the graph."""
    groups = []
    for group in schedule.groups if schedule is not None else []:
        members = [name for name in group.nodes if name in graph]
        if len(members) >= 2:
            groups.append((group, members))
    return groups


def _node_label(node, input_names: dict[str, str], grad_of: dict[str, list[str]]) -> str:
    if node.name in input_names:
        return f"{input_names[node.name]}\n{node.type}"
    # Autodiff names already end in the op (`fc1.grad12:dense_grad_weight`): no second line.
    names_op = node.name == node.op.name or node.name.endswith(f":{node.op.name}")
    label = node.name if names_op else f"{node.name}\n{node.op.name}"
    for param in grad_of.get(node.name, []):
        label += f"\ngradient of {param}"
    return label


def _node_line(node, input_names, output_nodes, grad_of) -> str:
    attrs = {"label": _node_label(node, input_names, grad_of)}
    if node.name in input_names or node.op.placeholder:
        attrs.update(shape="ellipse", style="filled", fillcolor=INPUT_FILL)
    elif node.name in grad_of:
        attrs.update(fillcolor=GRADIENT_FILL, color="#c62828", penwidth="1.5")
    if node.name in output_nodes:
        attrs["peripheries"] = "2"
    return f"{quote(node.name)} [{_attrs(**attrs)}];"


def _unique_id(base: str, taken: set[str]) -> str:
    """An ID for a drawn-only node that no graph node (or earlier drawn node) uses."""
    candidate, suffix = base, 1
    while candidate in taken:
        suffix += 1
        candidate = f"{base} ({suffix})"
    taken.add(candidate)
    return candidate


def to_dot(graph, title: str | None = None, schedule=None) -> str:
    """The graph as Graphviz DOT text; `title` (default: the graph's name) labels the drawing, and
    the groups of `schedule` (the graph's schedule, if given) become clusters."""
    nodes = graph.nodes()
    input_names = {node: name for name, node in graph.inputs.items()}
    output_nodes = set(graph.outputs.values())
    grad_of: dict[str, list[str]] = {}
    for param, node in graph.grads.items():
        grad_of.setdefault(node, []).append(param)

    def node_line(node) -> str:
        return _node_line(node, input_names, output_nodes, grad_of)

    lines = [
        f"digraph {quote(graph.name)} {{",
        f"  graph [{GRAPH_STYLE}, label={quote(title if title is not None else graph.name)}];",
        f"  node [{NODE_STYLE}];",
        f"  edge [{EDGE_STYLE}];",
    ]

    # A node belongs to the first group that lists it; its cluster is written where
    # the first member falls in topological order, which keeps the layout stable.
    cluster_of: dict[str, int] = {}
    groups = _groups(graph, schedule)
    for index, (_, members) in enumerate(groups):
        for name in members:
            cluster_of.setdefault(name, index)
    written: set[int] = set()
    for node in nodes:
        index = cluster_of.get(node.name)
        if index is None:
            lines.append("  " + node_line(node))
            continue
        if index in written:
            continue
        written.add(index)
        group, members = groups[index]
        fill = GROUP_FILLS.get(group.kind, DEFAULT_GROUP_FILL)
        lines.append(f"  subgraph cluster_{index} {{")
        lines.append(
            f"    graph [{_attrs(label=f'{group.kind}: {group.name}', style='filled,rounded', fillcolor=fill, color='#9e9e9e')}];"
        )
        lines.extend("    " + node_line(graph[name]) for name in members if cluster_of[name] == index)
        lines.append("  }")

    for node in nodes:
        for source in node.inputs:
            label = str(graph[source].type)
            lines.append(f"  {quote(source)} -> {quote(node.name)} [label={quote(label)}];")

    taken = {node.name for node in nodes}
    for output, source in graph.outputs.items():
        note = _unique_id(f"output {output}", taken)
        lines.append(
            f"  {quote(note)} [{_attrs(label=f'output {output}', shape='note', fillcolor=OUTPUT_FILL)}];"
        )
        lines.append(f"  {quote(source)} -> {quote(note)} [style=dashed, arrowhead=none];")

    lines.append("}")
    return "\n".join(lines) + "\n"


def _render(text: str, fmt: str) -> bytes:
    """Run Graphviz's `dot -T<fmt>` on DOT text and return what it prints."""
    dot = shutil.which("dot")
    if dot is None:
        raise CnncError(
            f"drawing a .{fmt} file needs Graphviz's 'dot' program, which is not installed; "
            "install Graphviz (e.g. `apt-get install graphviz`) or write a .dot file instead"
        )
    try:
        done = subprocess.run([dot, f"-T{fmt}"], input=text.encode(), capture_output=True, timeout=DOT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise CnncError(f"Graphviz 'dot -T{fmt}' took longer than {DOT_TIMEOUT_S} s; write a .dot file instead") from None
    except OSError as err:
        raise CnncError(f"cannot run Graphviz 'dot' ({dot}): {err.strerror or err}") from None
    if done.returncode != 0:
        stderr = done.stderr.decode(errors="replace").strip().splitlines()[:STDERR_LINES]
        detail = "\n".join(stderr) or "(no message)"
        raise CnncError(f"Graphviz 'dot -T{fmt}' failed (exit status {done.returncode}):\n{detail}")
    return done.stdout


def _write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    # Not mkstemp: its 0600 mode would survive the rename; os.open honours the umask.
    temporary = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as err:
        raise CnncError(f"cannot write {path}: {err.strerror or err}") from None
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except OSError as err:
        os.unlink(temporary)
        raise CnncError(f"cannot write {path}: {err.strerror or err}") from None
    except BaseException:
        os.unlink(temporary)
        raise


def write(graph, path, title: str | None = None, schedule=None) -> Path:
    """Draw the graph into `path`; its suffix picks DOT text (.dot, .gv) or a rendered .svg, .png, .pdf."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise CnncError(
            f"cannot draw to '{path}': unknown suffix '{path.suffix or '(none)'}'; "
            f"supported: {', '.join(SUPPORTED_SUFFIXES)}"
        )
    text = to_dot(graph, title, schedule)
    data = text.encode() if suffix in TEXT_SUFFIXES else _render(text, suffix[1:])
    _write_atomically(path, data)
    return path
