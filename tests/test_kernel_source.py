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


def test_each_definition_is_a_piece_after_the_pieces_it_reads(tree):
    pieces = source.assemble_pieces("cpu", [("fam", ["first"])], provide={"_epilogue": EPILOGUE}, root=tree)
    names = [p.names for p in pieces]
    assert sorted(n for ns in names for n in ns) == ["SCALE", "_epilogue", "_helper", "first"]
    where = {n: k for k, ns in enumerate(names) for n in ns}
    for k, piece in enumerate(pieces):
        assert all(i < k for i, _ in piece.imports)  # every piece comes after what it imports
    first = pieces[where["first"]]
    assert {n for _, read in first.imports for n in read} == {"_helper", "_epilogue"}
    assert "import math" in pieces[where["_helper"]].text and "def first" in first.text
    assert "def _helper" not in first.text  # read from its own piece, not copied
    # Another chain changes the chain's piece and the kernel's, never the helper's.
    other = source.assemble_pieces("cpu", [("fam", ["first"])], provide={"_epilogue": EPILOGUE.replace("1.0", "2.0")},
                                   root=tree)
    assert other[where["_helper"]] == pieces[where["_helper"]]
    assert other[where["_epilogue"]] != pieces[where["_epilogue"]]


def test_functions_that_call_each_other_share_a_piece(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "holes.py").write_text("")
    (tmp_path / "cpu" / "ring.py").write_text(textwrap.dedent("""
        def ping(n):
            return 0 if n == 0 else pong(n - 1)


        def pong(n):
            return ping(n)


        def entry(n):
            return ping(n)
    """))
    pieces = source.assemble_pieces("cpu", [("ring", ["entry"])], root=tmp_path)
    assert [p.names for p in pieces] == [("ping", "pong"), ("entry",)]
    assert pieces[1].imports == ((0, ("ping",)),)


def test_a_kernel_is_one_module_whatever_its_chain_and_a_fused_batchnorm_runs_its_stage_apart():
    from cnnc.backend.chain import Chain
    from cnnc.backend.cpu.kernel import chain_source, module_text, module_texts
    from cnnc.kernels import Kernel

    relu = Chain(lines=["v0 = o[i]", "v_1 = 0.0 if v0 < 0 else v0", "o[i] = v_1"], target="v_1", reads_target=True)
    plain, fused = module_texts(Kernel("conv", "conv_forward")), module_texts(Kernel("conv", "conv_forward", epilogue=relu))
    assert plain == fused  # the chain is a callback of its own: one compile serves every chain
    texts = dict(plain)
    im2col = next(name for name, text in plain if "def _im2col" in text)
    assert "def conv_forward" in plain[-1][1] and "def _im2col" not in plain[-1][1]
    assert any(f"from cnnc_kernels.k_{im2col} import _im2col" in text for text in texts.values())
    assert any("call(e[0], (np.intp(o.ctypes.data)" in text for text in texts.values())  # the hole calls the chain
    # A helper shared by two kernels is one module of the same name in both.
    grad = dict(module_texts(Kernel("conv", "conv_grad_weight")))
    assert im2col in grad
    source = chain_source(relu, "_epilogue", [], np.float32)
    assert "o = at(oa, hi, np.float32)" in source and "v_1 = 0.0 if v0 < 0 else v0" in source
    assert source in module_text(Kernel("conv", "conv_forward", epilogue=relu))  # `cnnc emit` shows it
    # A chain that stores nothing is no epilogue: the same callback as none.
    assert chain_source(Chain(lines=["v0 = o[i]"]), "_epilogue", [], np.float32) == chain_source(None, "_epilogue", [], np.float32)
    # The stage's modules are the conv's own; the batchnorm's hold no conv code.
    bn = module_texts(Kernel("norm", "fused_batchnorm", post=relu, stage=Kernel("conv", "conv_forward", epilogue=relu)))
    assert bn[: len(fused)] == fused and not any("conv_forward" in text for _, text in bn[len(fused):])
    assert any("_stage = _no_stage" in text for _, text in bn) and "from cnnc_kernels" in bn[-1][1]
