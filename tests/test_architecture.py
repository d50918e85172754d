"""The layers run one way, and each fact lives in one place.

    frontend -> graph / ops records -> passes -> backends -> runtime -> command

These tests read the source (or import it in a fresh process); they compile nothing.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "cnnc"


def modules(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    """The absolute module names a file imports (relative imports resolved)."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if path.name == "__init__.py":
        package += ".__init__"
    base = package.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                prefix = base[: len(base) - node.level + 1]
                name = ".".join(prefix + ([node.module] if node.module else []))
            else:
                name = node.module
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)
    return found


def test_the_front_end_and_the_passes_load_no_backend_and_no_numba():
    code = ("import sys, cnnc.frontend, cnnc.passes; "
            "print([m for m in sys.modules if m.startswith('cnnc.backend') or m == 'numba'])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("layer", ["frontend", "ops", "passes", "kernels"])
def test_lower_layers_import_no_backend(layer):
    for path in modules(PACKAGE / layer):
        if layer == "kernels" and path.parent.name in ("cpu", "cuda", "shared"):
            continue  # kernel files are read as text, never imported
        backend = {m for m in imported_modules(path) if m.startswith("cnnc.backend") or m.split(".")[0] == "numba"}
        assert not backend, f"{path.relative_to(PACKAGE.parent)} imports {sorted(backend)}"


def test_the_cuda_backend_imports_nothing_of_the_cpu_backend():
    for path in modules(PACKAGE / "backend" / "cuda"):
        cpu = {m for m in imported_modules(path) if m.startswith("cnnc.backend.cpu")}
        assert not cpu, f"{path.relative_to(PACKAGE.parent)} imports {sorted(cpu)}"


def _is_op_name(node: ast.AST) -> bool:
    """`<anything>.op.name`, `op.name` or `op_name`."""
    if isinstance(node, ast.Name):
        return node.id == "op_name"
    if isinstance(node, ast.Attribute) and node.attr == "name":
        value = node.value
        return (isinstance(value, ast.Attribute) and value.attr == "op") or (isinstance(value, ast.Name) and value.id == "op")
    return False


def _holds_strings(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_holds_strings(e) for e in node.elts)
    return False


def test_no_code_outside_the_ops_compares_an_op_name_with_a_string():
    offenders = []
    for path in modules(PACKAGE):
        if path.is_relative_to(PACKAGE / "ops"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                if any(_is_op_name(s) for s in sides) and any(_holds_strings(s) for s in sides):
                    offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not offenders, "passes should read what ops declare, not their names: " + ", ".join(offenders)


KERNEL_MARKS = ("@njit", "@cuda.jit", "prange(", "cuda.grid", "def ")


def test_no_op_module_holds_kernel_source_in_a_string():
    offenders = []
    for path in modules(PACKAGE / "ops"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if any(mark in node.value for mark in KERNEL_MARKS):
                    offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not offenders, "kernel source belongs in cnnc/kernels/<target>/<family>.py: " + ", ".join(offenders)


def test_the_graph_carries_no_schedule():
    import cnnc
    from cnnc.passes.pipeline import optimize

    graph = cnnc.load("lenet")
    schedule = optimize(graph, training=False)
    for attribute in ("groups", "decisions"):
        assert not hasattr(graph, attribute) and not hasattr(schedule.graph, attribute)
    assert schedule.groups and schedule.graph is not graph


def test_backward_nodes_record_their_forward_node():
    import cnnc
    from cnnc.passes.autodiff import differentiate
    from cnnc.runtime.losses import with_loss

    graph, _, loss = with_loss(cnnc.load("lenet"), "cross_entropy")
    forward = {node.name for node in graph.nodes()}
    g = differentiate(graph, loss)
    backward = [node for node in g.nodes() if node.name not in forward]
    assert backward and all(node.forward in forward for node in backward)
    assert all(node.forward is None for node in g.nodes() if node.name in forward)


def test_a_rank_4_value_that_is_not_an_image_keeps_its_layout():
    import numpy as np

    from cnnc.graph import BATCH, TensorType
    from cnnc.layout import physical_axis, physical_shape, to_logical, to_physical

    image, grid = TensorType((BATCH, 3, 4, 5)), TensorType((BATCH, 4, 5, 2), image=False)
    assert physical_shape(image, 2) == (2, 4, 5, 3) and physical_shape(grid, 2) == (2, 4, 5, 2)
    assert physical_axis(image, 1) == 3 and physical_axis(grid, 3) == 3
    values = np.arange(2 * 4 * 5 * 2, dtype=np.float32).reshape(2, 4, 5, 2)
    buffer = np.empty(physical_shape(grid, 2), np.float32)
    to_physical(grid, values, buffer)
    np.testing.assert_array_equal(buffer, values)  # not permuted as an image would be
    np.testing.assert_array_equal(to_logical(grid, buffer), values)
