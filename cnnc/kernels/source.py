"""Kernel modules assembled from the kernel files: only what the entries need, every hole filled.

A kernel file (`cnnc/kernels/<target>/<family>.py`) is an ordinary Python module
that linters and editors read: imports, constants and functions. It is never
imported by the compiler. `assemble` reads it as text and builds the source of
one generated module from it:

- it keeps only the definitions the requested entries reach (their closure over
  the names they read), so a module carries the kernels it calls and no others;
- `from .common import blocks` in a kernel file inlines `blocks` (and what it
  needs) from the sibling file `common.py`;
- `from ..shared.softmax import softmax_line` inlines a function of
  `cnnc/kernels/shared/softmax.py`: numerics written once, as plain undecorated
  Python over scalars and arrays, and compiled for each target as its device
  function (`@njit` on the CPU, `@cuda.jit(device=True)` on CUDA);
- names imported from the sibling `holes.py` are holes: stubs there keep the file
  valid Python, and the lowering fills each with generated source (`provide`,
  e.g. a fused group's `_epilogue`) or with another definition of the files
  (`bind`, e.g. `_gather = _forward_gather`). A hole the entries reach and nobody
  filled, a filling nobody reads and a name no file defines are errors, raised
  here, never a silently different kernel.

Nothing here imports Numba: this is text in, text out.
"""

from __future__ import annotations

import ast
import builtins
import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

FOLDER = Path(__file__).parent
HOLES = "holes"
SHARED = "shared"
# How each target compiles a function of a shared file, and the import that decorator needs.
DEVICE_FUNCTION = {
    "cpu": ("@njit(cache=True)", "njit", "from numba import njit"),
    "cuda": ("@cuda.jit(device=True)", "cuda", "from numba import cuda"),
}
_BUILTINS = frozenset(dir(builtins))


class KernelSourceError(Exception):
    """A kernel file or a request for one that cannot give a complete module (a bug in cnnc)."""


@dataclass(frozen=True)
class Definition:
    """One top-level function or assignment of a kernel file (or of generated source)."""

    name: str
    origin: str  # "cpu/conv.py", or "generated"
    text: str  # the source, decorators included
    eager: frozenset[str]  # the names it needs when the module runs (assignments, decorators)
    line: int
    function: bool = True
    node: ast.AST | None = field(default=None, compare=False, repr=False)  # its syntax tree, read when it is taken
    given_reads: frozenset[str] = frozenset()  # for a definition without a tree

    @functools.cached_property
    def reads(self) -> frozenset[str]:
        """The global names it reads (found when a module first takes it: most definitions never are)."""
        return frozenset(_global_reads(self.node, set())) if self.node is not None else self.given_reads


@dataclass(frozen=True)
class KernelFile:
    origin: str
    definitions: Mapping[str, Definition]
    imports: Mapping[str, str]  # local name -> its import line (packages outside cnnc)
    siblings: Mapping[str, tuple[str, str]]  # local name -> the (folder, file) it is imported from


def _global_reads(node: ast.AST, bound: set[str]) -> set[str]:
    """Names a function or expression reads that it does not bind itself (its globals)."""
    loads, stores = set(), set(bound)
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            (loads if isinstance(sub.ctx, ast.Load) else stores).add(sub.id)
        elif isinstance(sub, ast.arg):
            stores.add(sub.arg)
        elif isinstance(sub, (ast.Global, ast.Nonlocal)):
            raise KernelSourceError("kernel files do not use global or nonlocal")
    return loads - stores


def _segment(lines: list[str], node: ast.stmt) -> str:
    first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", ()))])
    return "".join(lines[first - 1 : node.end_lineno]).rstrip() + "\n"


@functools.lru_cache(maxsize=4096)
def parse(text: str, origin: str) -> KernelFile:
    """The definitions and imports of one kernel file (or of a piece of generated source)."""
    try:
        tree = ast.parse(text, origin)
    except SyntaxError as e:
        raise KernelSourceError(f"{origin}:{e.lineno}: {e.msg}") from None
    lines = text.splitlines(keepends=True)
    definitions: dict[str, Definition] = {}
    imports: dict[str, str] = {}
    siblings: dict[str, tuple[str, str]] = {}
    folder = origin.split("/")[0]

    def define(name: str, node: ast.stmt, eager: set[str]) -> None:
        if name in definitions or name in imports or name in siblings:
            raise KernelSourceError(f"{origin}:{node.lineno}: {name} is defined twice")
        definitions[name] = Definition(name, origin, _segment(lines, node), frozenset(eager), node.lineno,
                                       isinstance(node, ast.FunctionDef), node)

    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue  # the docstring
        if isinstance(node, ast.Import):
            for alias in node.names:
                local = alias.asname or alias.name.split(".")[0]
                imports[local] = f"import {alias.name}" + (f" as {alias.asname}" if alias.asname else "")
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            for alias in node.names:
                local = alias.asname or alias.name
                imports[local] = f"from {node.module} import {alias.name}" + (f" as {alias.asname}" if alias.asname else "")
        elif isinstance(node, ast.ImportFrom):
            parts = (node.module or "").split(".")
            if node.level == 1 and len(parts) == 1 and parts[0]:
                where = (folder, parts[0])
            elif node.level == 2 and len(parts) == 2 and parts[0] == SHARED:
                where = (SHARED, parts[1])
            else:
                raise KernelSourceError(f"{origin}:{node.lineno}: import from a sibling file (.name) or a shared one (..shared.name)")
            for alias in node.names:
                if alias.asname:
                    raise KernelSourceError(f"{origin}:{node.lineno}: imports of kernel files keep their names (no 'as')")
                siblings[alias.name] = where
        elif isinstance(node, ast.FunctionDef):
            if folder == SHARED and node.decorator_list:
                raise KernelSourceError(f"{origin}:{node.lineno}: shared functions are undecorated (each target compiles them its way)")
            decorators = set().union(*(_global_reads(d, set()) for d in node.decorator_list)) if node.decorator_list else set()
            define(node.name, node, decorators)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if len(targets) != 1 or not isinstance(targets[0], ast.Name) or node.value is None:
                raise KernelSourceError(f"{origin}:{node.lineno}: a kernel file assigns one name at a time")
            define(targets[0].id, node, _global_reads(node.value, set()))
        else:
            raise KernelSourceError(
                f"{origin}:{node.lineno}: a kernel file holds imports, functions and constants only, "
                f"not {type(node).__name__}"
            )
    return KernelFile(origin, definitions, imports, siblings)


@functools.cache
def kernel_file(folder: str, family: str, root: Path = FOLDER) -> KernelFile:
    """The parsed kernel file `<root>/<folder>/<family>.py` (folder: a target, or "shared")."""
    path = root / folder / f"{family}.py"
    if not path.is_file():
        raise KernelSourceError(f"there is no kernel file {folder}/{family}.py")
    return parse(path.read_text(), f"{folder}/{family}.py")


class _Assembly:
    def __init__(self, target: str, provide: Mapping[str, str], bind: Mapping[str, str], defaults: Mapping[str, str], root: Path):
        self.target = target
        self.root = root
        self.files: list[KernelFile] = []  # the files of the requested parts, where bound names are found
        self.defaults = {hole: parse(text, f"generated {hole}")
                         for hole, text in defaults.items() if hole not in provide and hole not in bind}
        self.chosen: dict[str, Definition] = {}
        self.imports: dict[str, str] = {}
        self.filled: dict[str, KernelFile | str] = {}  # hole -> its generated source, or the name bound to it
        self.used_holes: set[str] = set()
        for hole, text in provide.items():
            generated = parse(text, f"generated {hole}")
            if hole not in generated.definitions:
                raise KernelSourceError(f"the source given for {hole} does not define it")
            self.filled[hole] = generated
        for hole, name in bind.items():
            if hole in self.filled:
                raise KernelSourceError(f"{hole} is both provided and bound")
            self.filled[hole] = name

    def take(self, name: str, home: KernelFile) -> None:
        """Add `name` as `home` sees it, with everything it reads."""
        if name in home.imports:
            self._import(name, home.imports[name])
        elif name in home.definitions:
            self._define(home.definitions[name], home)
        elif name in home.siblings:
            folder, module = home.siblings[name]
            if module == HOLES:
                self._fill(name, home)
            else:
                self.take(name, kernel_file(folder, module, self.root))
        elif name not in _BUILTINS:
            raise KernelSourceError(f"{home.origin}: {name} is not defined (nor imported from a package or a sibling file)")

    def _import(self, name: str, line: str) -> None:
        if self.imports.setdefault(name, line) != line:
            raise KernelSourceError(f"{name} is imported as both '{self.imports[name]}' and '{line}'")

    def _define(self, definition: Definition, home: KernelFile) -> None:
        if definition.origin.startswith(SHARED + "/") and definition.function:
            decorator, name, line = DEVICE_FUNCTION[self.target]
            self._import(name, line)
            definition = replace(definition, text=f"{decorator}\n{definition.text}", eager=definition.eager | {name})
        present = self.chosen.get(definition.name)
        if present is not None:
            if present.text != definition.text:
                raise KernelSourceError(
                    f"{definition.name} is defined differently in {present.origin} and {definition.origin}: "
                    "move it to a shared file"
                )
            return
        self.chosen[definition.name] = definition
        for read in sorted(definition.reads):
            self.take(read, home)

    def _fill(self, hole: str, home: KernelFile) -> None:
        self.used_holes.add(hole)
        filling = self.filled.get(hole)
        if filling is None and hole in self.defaults:
            filling = self.filled[hole] = self.defaults[hole]
        if filling is None:
            raise KernelSourceError(f"{home.origin} needs the hole {hole}, and the lowering did not fill it")
        if isinstance(filling, KernelFile):
            scope = _within(filling, home)
            for definition in filling.definitions.values():
                self._define(definition, scope)
        else:  # bound: the name is looked up in the hole's file, then in every file the module was asked for
            owner = next((f for f in (home, *self.files) if filling in f.definitions or filling in f.siblings), None)
            if owner is None:
                raise KernelSourceError(f"{hole} is bound to {filling}, which none of the module's files defines")
            if hole not in self.chosen:
                line = max((d.line for d in self.chosen.values()), default=0) + 1
                self.chosen[hole] = Definition(hole, "generated", f"{hole} = {filling}\n", frozenset([filling]), line,
                                               False, given_reads=frozenset([filling]))
                self.take(filling, owner)

    def check_filled(self) -> None:
        unused = set(self.filled) - self.used_holes
        if unused:
            raise KernelSourceError(f"filled {', '.join(sorted(unused))}, which no kernel of this module reads")

    def text(self, chosen: Mapping[str, Definition] | None = None) -> str:
        """The module of `chosen` (default: everything taken), with the imports its definitions read."""
        chosen = self.chosen if chosen is None else chosen
        needed = set().union(*(d.reads | d.eager for d in chosen.values()))
        out = sorted({line for name, line in self.imports.items() if name in needed},
                     key=lambda line: (not line.startswith("import "), line))
        return "\n".join(out) + "\n\n\n" + "\n\n".join(d.text for d in _in_order(chosen))

    def reading_holes(self) -> set[str]:
        """The names that are holes, generated, or read such a name, directly or through others."""
        tainted = set(self.used_holes) | {n for n, d in self.chosen.items() if d.origin.startswith("generated")}
        grew = True
        while grew:
            grew = False
            for name, d in self.chosen.items():
                if name not in tainted and (d.reads | d.eager) & tainted:
                    tainted.add(name)
                    grew = True
        return tainted


def _within(generated: KernelFile, home: KernelFile) -> KernelFile:
    """Generated source sees its own names first, then those of the file that holds its hole."""
    return KernelFile(
        generated.origin,
        {**home.definitions, **generated.definitions},
        {**home.imports, **generated.imports},
        {k: v for k, v in home.siblings.items() if k not in generated.definitions},
    )


def _in_order(chosen: Mapping[str, Definition]) -> list[Definition]:
    """File order, except that a definition comes after the names it needs when the module runs."""
    origins: dict[str, int] = {}
    for d in chosen.values():
        origins.setdefault(d.origin, len(origins))
    pending = sorted(chosen.values(), key=lambda d: (origins[d.origin], d.line))
    placed: set[str] = set()
    out: list[Definition] = []
    while pending:
        for k, d in enumerate(pending):
            if all(n in placed or n not in chosen for n in d.eager):
                out.append(d)
                placed.add(d.name)
                del pending[k]
                break
        else:
            raise KernelSourceError("definitions need each other when the module runs: " + ", ".join(d.name for d in pending))
    return out


def assemble(
    target: str,
    parts: Iterable[tuple[str, Sequence[str]]],
    provide: Mapping[str, str] | None = None,
    bind: Mapping[str, str] | None = None,
    defaults: Mapping[str, str] | None = None,
    root: Path = FOLDER,
) -> str:
    """The source of one module holding `parts` ((family, entries) pairs) and all they need.

    provide:  hole -> generated source defining it (an error if no entry reads the hole);
    bind:     hole -> a definition of the files that fills it (likewise);
    defaults: hole -> generated source used where an entry reads the hole and nothing else fills it.
    root:     the folder of the kernel files (tests use their own).
    """
    # A model asks for the same module many times (one conv kernel per layer of a shape): answer those once.
    return _assemble(*_request(target, parts, provide, bind, defaults, root))


def _request(target, parts, provide=None, bind=None, defaults=None, root=FOLDER) -> tuple:
    """assemble's arguments as a key of the caches below."""
    return (target, tuple((family, tuple(entries)) for family, entries in parts), _items(provide), _items(bind),
            _items(defaults), root)


def _items(mapping: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((mapping or {}).items()))


@dataclass(frozen=True)
class Layers:
    """A module split in two: `core`, the definitions that read no hole (directly or through others), and
    `rest`, which imports `names` from it. The core's text is the same whatever fills the holes, so every
    variant of a kernel (one per fused chain) shares one compile of it. No core: `core` is empty."""

    core: str
    names: tuple[str, ...]
    rest: str


def assemble_layers(target: str, parts: Iterable[tuple[str, Sequence[str]]], **fillings) -> Layers:
    """`assemble` (the same arguments), split into the module of what needs no hole and the module of the
    rest (see Layers). The rest reads the core's names as globals: the caller puts their import at its head."""
    assembly = _assembly(*_request(target, parts, **fillings))
    tainted = assembly.reading_holes()
    core = {n: d for n, d in assembly.chosen.items() if n not in tainted}
    rest = {n: d for n, d in assembly.chosen.items() if n in tainted}
    if not core or not rest:
        return Layers("", (), assembly.text())
    names = set().union(*(d.reads | d.eager for d in rest.values())) & core.keys()
    return Layers(assembly.text(core), tuple(sorted(names)), assembly.text(rest))


@functools.lru_cache(maxsize=4096)
def _assemble(target: str, parts: tuple, provide: tuple, bind: tuple, defaults: tuple, root: Path) -> str:
    return _assembly(target, parts, provide, bind, defaults, root).text()


@functools.lru_cache(maxsize=4096)
def _assembly(target: str, parts: tuple, provide: tuple, bind: tuple, defaults: tuple, root: Path) -> _Assembly:
    assembly = _Assembly(target, dict(provide), dict(bind), dict(defaults), root)
    parts = [(family, entries, kernel_file(target, family, root)) for family, entries in parts]
    assembly.files = [home for _, _, home in parts]
    for family, entries, home in parts:
        for entry in entries:
            if entry not in home.definitions:
                raise KernelSourceError(f"{target}/{family}.py defines no {entry}")
            assembly.take(entry, home)
    assembly.check_filled()
    return assembly
