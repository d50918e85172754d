"""The kernel assembler (cnnc.kernels.source): modules built from kernel files, holes filled or refused.

The first tests use kernel files of their own, written to a temporary folder; the
last ones assemble every entry of cnnc's own kernel files.
"""

import ast
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cnnc.kernels import source
from cnnc.kernels.source import FOLDER, KernelSourceError, assemble, kernel_file

HOLES = '''
from numba import njit


@njit
def _epilogue(o, i):
    return
'''

FAMILY = '''
"""A family of two entries that share a helper and a constant."""

import math

from numba import njit, prange

from .common import ROWS, twice
from .holes import _epilogue
from ..shared.numerics import square

SCALE = 2.0


@njit(cache=True)
def _helper(x):
    return math.sqrt(x) * SCALE


@njit(parallel=True, cache=True)
def first(x, o):
    for i in prange(x.size):
        o[i] = _helper(x[i])
        _epilogue(o, i)


@njit(cache=True)
def second(x, o):
    for i in range(ROWS):
        o[i] = twice(square(x[i]))


@njit(cache=True)
def unused(x):
    return x
'''

COMMON = '''
from numba import njit

ROWS = 4


@njit(cache=True)
def twice(v):
    return v + v
'''

SHARED = '''
def square(v):
    return v * v
'''


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


@pytest.fixture
def tree(tmp_path):
    return write_tree(tmp_path, {"cpu/holes.py": HOLES, "cpu/fam.py": FAMILY, "cpu/common.py": COMMON,
                                 "shared/numerics.py": SHARED})


def defined(text: str) -> list[str]:
    return [n.name if isinstance(n, ast.FunctionDef) else n.targets[0].id
            for n in ast.parse(text).body if isinstance(n, (ast.FunctionDef, ast.Assign))]


EPILOGUE = "from numba import njit\n\n@njit\ndef _epilogue(o, i):\n    o[i] += 1.0\n"


def test_a_module_holds_what_its_entry_reaches_and_nothing_else(tree):
    text = assemble("cpu", [("fam", ["second"])], root=tree)
    assert sorted(defined(text)) == ["ROWS", "second", "square", "twice"]
    assert "unused" not in text and "_helper" not in text and "import math" not in text
    compile(text, "module", "exec")


def test_a_shared_function_is_compiled_as_each_targets_device_function(tree):
    write_tree(tree, {"cuda/holes.py": HOLES, "cuda/fam.py": FAMILY.replace("prange", "range").replace(
        "from numba import njit, range", "from numba import njit"), "cuda/common.py": COMMON})
    cpu = assemble("cpu", [("fam", ["second"])], root=tree)
    cuda = assemble("cuda", [("fam", ["second"])], root=tree)
    assert "@njit(cache=True)\ndef square(v):" in cpu
    assert "@cuda.jit(device=True)\ndef square(v):" in cuda and "from numba import cuda" in cuda


def test_a_hole_is_filled_by_generated_source_and_runs(tree):
    import numpy as np

    text = assemble("cpu", [("fam", ["first"])], provide={"_epilogue": EPILOGUE}, root=tree)
    assert "o[i] += 1.0" in text and "SCALE = 2.0" in text
    namespace: dict = {}
    exec(compile(text.replace("cache=True", "cache=False"), "module", "exec"), namespace)  # no file to cache beside
    out = np.zeros(3)
    namespace["first"](np.array([1.0, 4.0, 9.0]), out)
    np.testing.assert_allclose(out, [3.0, 5.0, 7.0])


def test_a_hole_nobody_fills_is_an_error(tree):
    with pytest.raises(KernelSourceError, match="needs the hole _epilogue"):
        assemble("cpu", [("fam", ["first"])], root=tree)


def test_a_filling_nobody_reads_is_an_error(tree):
    with pytest.raises(KernelSourceError, match="filled _epilogue, which no kernel of this module reads"):
        assemble("cpu", [("fam", ["second"])], provide={"_epilogue": EPILOGUE}, root=tree)


def test_a_default_filling_is_used_only_where_read(tree):
    assemble("cpu", [("fam", ["second"])], defaults={"_epilogue": EPILOGUE}, root=tree)
    assert "o[i] += 1.0" in assemble("cpu", [("fam", ["first"])], defaults={"_epilogue": EPILOGUE}, root=tree)


def test_bind_fills_a_hole_with_another_definition(tree):
    text = assemble("cpu", [("fam", ["first"])], bind={"_epilogue": "unused"}, root=tree)
    assert "_epilogue = unused\n" in text
    assert defined(text).index("unused") < defined(text).index("_epilogue")  # defined before it is named


def test_an_undefined_name_is_an_error(tree):
    write_tree(tree, {"cpu/bad.py": "from numba import njit\n\n@njit\ndef entry(x):\n    return missing(x)\n"})
    with pytest.raises(KernelSourceError, match="missing is not defined"):
        assemble("cpu", [("bad", ["entry"])], root=tree)


def test_an_unknown_entry_or_file_is_an_error(tree):
    with pytest.raises(KernelSourceError, match="defines no nothing"):
        assemble("cpu", [("fam", ["nothing"])], root=tree)
    with pytest.raises(KernelSourceError, match="there is no kernel file cpu/absent.py"):
        assemble("cpu", [("absent", ["x"])], root=tree)


def test_two_different_definitions_of_one_name_in_a_module_are_an_error(tree):
    write_tree(tree, {"cpu/other.py": "from numba import njit\n\n@njit(cache=True)\ndef twice(v):\n    return 2 * v\n\n\n"
                                      "@njit(cache=True)\ndef entry(v):\n    return twice(v)\n"})
    with pytest.raises(KernelSourceError, match="twice is defined differently"):
        assemble("cpu", [("fam", ["second"]), ("other", ["entry"])], root=tree)


@pytest.mark.parametrize("statement, message", [
    ("if True:\n    x = 1\n", "imports, functions and constants only"),
    ("a, b = 1, 2\n", "assigns one name at a time"),
    ("from .common import twice as thrice\n", "keep their names"),
    ("from ...up import x\n", "import from a sibling file"),
])
def test_kernel_files_hold_plain_definitions_only(tree, statement, message):
    write_tree(tree, {"cpu/odd.py": statement})
    kernel_file.cache_clear()
    with pytest.raises(KernelSourceError, match=message):
        kernel_file("cpu", "odd", tree)


def test_shared_functions_are_undecorated(tree):
    write_tree(tree, {"shared/decorated.py": "from numba import njit\n\n@njit\ndef f(x):\n    return x\n"})
    with pytest.raises(KernelSourceError, match="shared functions are undecorated"):
        kernel_file("shared", "decorated", tree)


# -- cnnc's own kernel files ----------------------------------------------------------------------

KERNEL_FILES = sorted(p for p in FOLDER.glob("*/*.py") if p.name != "__init__.py")


def stub(hole: str, target: str) -> str:
    if hole == "DTYPE":
        return "from numba import float32\n\nDTYPE = float32\n"
    decorator = "@njit" if target == "cpu" else "@cuda.jit(device=True)"
    imports = "from numba import njit\n" if target == "cpu" else "from numba import cuda\n"
    return f"{imports}\n{decorator}\ndef {hole}(*args):\n    return\n"


@pytest.mark.parametrize("path", [p for p in KERNEL_FILES if p.parent.name in ("cpu", "cuda")], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_entry_of_the_kernel_files_assembles_into_valid_python(path):
    target, family = path.parent.name, path.stem
    if family == "holes":
        return
    holes = set(kernel_file(target, "holes").definitions)
    for name, definition in kernel_file(target, family).definitions.items():
        if not definition.function:
            continue
        text = assemble(target, [(family, [name])], defaults={h: stub(h, target) for h in holes})
        compile(text, f"{target}/{family}.py:{name}", "exec")


def test_kernel_files_parse():
    for path in KERNEL_FILES:
        source.kernel_file(path.parent.name, path.stem)


def test_a_bound_name_is_found_in_any_file_of_the_module(tree):
    write_tree(tree, {"cpu/stage.py": "from numba import njit\n\n@njit(cache=True)\ndef run_stage(o, i):\n    o[i] = 1.0\n"})
    text = assemble("cpu", [("fam", ["first"]), ("stage", [])], bind={"_epilogue": "run_stage"}, root=tree)
    assert "_epilogue = run_stage\n" in text and "def run_stage" in text
    with pytest.raises(KernelSourceError, match="bound to nowhere, which none of the module's files defines"):
        assemble("cpu", [("fam", ["first"])], bind={"_epilogue": "nowhere"}, root=tree)


def test_what_reads_no_hole_is_a_module_of_its_own(tree):
    layers = source.assemble_layers("cpu", [("fam", ["first"])], provide={"_epilogue": EPILOGUE}, root=tree)
    assert defined(layers.core) == ["SCALE", "_helper"]
    assert defined(layers.rest) == ["first", "_epilogue"] and layers.names == ("_helper",)
    assert "import math" in layers.core and "import math" not in layers.rest  # each keeps the imports it reads
    other = source.assemble_layers("cpu", [("fam", ["first"])], provide={"_epilogue": EPILOGUE.replace("1.0", "2.0")},
                                   root=tree)
    assert other.core == layers.core and other.rest != layers.rest
    whole = source.assemble_layers("cpu", [("fam", ["second"])], root=tree)  # no hole: one module
    assert whole.core == "" and whole.rest == assemble("cpu", [("fam", ["second"])], root=tree)


def test_a_kernel_is_one_module_whatever_its_chain_and_a_fused_batchnorm_runs_its_stage_apart():
    from cnnc.backend.chain import Chain
    from cnnc.backend.cpu.kernel import chain_source, module_text, module_texts
    from cnnc.kernels import Kernel

    relu = Chain(lines=["v0 = o[i]", "v_1 = 0.0 if v0 < 0 else v0", "o[i] = v_1"], target="v_1", reads_target=True)
    plain, fused = module_texts(Kernel("conv", "conv_forward")), module_texts(Kernel("conv", "conv_forward", epilogue=relu))
    assert plain == fused and len(plain) == 2  # the chain is a callback of its own: one compile serves every chain
    assert "def _im2col" in plain[0][1] and "def conv_forward" not in plain[0][1]
    assert f"from cnnc_kernels.k_{plain[0][0]} import " in plain[1][1]
    assert "call(e[0], (np.intp(o.ctypes.data)" in plain[1][1]  # the hole calls the chain through its pointer
    source = chain_source(relu, "_epilogue", [], np.float32)
    assert "o = at(oa, hi, np.float32)" in source and "v_1 = 0.0 if v0 < 0 else v0" in source
    assert source in module_text(Kernel("conv", "conv_forward", epilogue=relu))  # `cnnc emit` shows it
    # A chain that stores nothing is no epilogue: the same callback as none.
    assert chain_source(Chain(lines=["v0 = o[i]"]), "_epilogue", [], np.float32) == chain_source(None, "_epilogue", [], np.float32)
    # The stage's modules are the conv's own; the batchnorm's hold no conv code.
    bn = module_texts(Kernel("norm", "fused_batchnorm", post=relu, stage=Kernel("conv", "conv_forward", epilogue=relu)))
    assert bn[:2] == fused and not any("conv_forward" in text for _, text in bn[2:])
    assert "_stage = _no_stage" in bn[-1][1]
