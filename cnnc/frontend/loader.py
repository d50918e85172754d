"""Source files -> modules: reading, imports (with `lib/` on the search path), definitions."""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CnncError, Loc
from ..ops import REGISTRY
from ..resources import lib_dir
from . import ast
from .parser import parse


@dataclass
class Module:
    """A loaded file: its own definitions and every definition it can see."""

    path: str
    own: list[ast.Definition] = field(default_factory=list)
    visible: dict[str, ast.Definition] = field(default_factory=dict)


def search_path(base: Path) -> list[Path]:
    """Where `import name` looks: the importing file's folder, $CNNC_PATH, then lib/."""
    extra = [Path(p) for p in os.environ.get("CNNC_PATH", "").split(os.pathsep) if p]
    return [base, *extra, lib_dir()]


MAX_SOURCE_BYTES = 4 * 1024 * 1024  # the largest .cnn file read (100,000 layers fit in about 1 MB)
MAX_IMPORT_DEPTH = 100  # files importing files: loading recurses once per level

# What a path names when it is not a regular file, for messages.
FILE_KINDS = [
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
]


def shown(path: Path) -> str:
    """A path for a message, cut when it is absurdly long."""
    name = str(path)
    return name if len(name) <= 200 else name[:197] + "..."


def short(name: str, width: int = 80) -> str:
    """A name for a message, cut when it is long (an import may name thousands of parts)."""
    return name if len(name) <= width else name[: width - 3] + "..."


def _os_error(path: Path, e: OSError, loc: Loc | None) -> CnncError:
    if e.errno == errno.ENOENT:
        return CnncError(f"no such file: {shown(path)}", loc)
    if e.errno == errno.ELOOP:
        return CnncError(f"cannot read {shown(path)}: a loop of symbolic links", loc)
    return CnncError(f"cannot read {shown(path)}: {e.strerror or e}", loc)


def check_regular(path: Path, mode: int, loc: Loc | None = None) -> None:
    """Only regular files are read: a FIFO would block, a device never ends."""
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in FILE_KINDS if test(mode)), "not a regular file")
    raise CnncError(f"{shown(path)} is {kind}, not a .cnn file", loc)


def read_source(path: Path, loc: Loc | None = None) -> str:
    """The text of a .cnn file: a regular file of at most MAX_SOURCE_BYTES, in UTF-8."""
    try:
        check_regular(path, os.stat(path).st_mode, loc)  # before opening: opening a FIFO blocks
        # O_NONBLOCK: should the path become a FIFO after the check, opening it still returns at once.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except ValueError as e:  # e.g. a NUL byte in the name
        raise CnncError(f"invalid file name {shown(path)!r}: {e}", loc) from None
    except OSError as e:
        raise _os_error(path, e, loc) from None
    with os.fdopen(fd, "rb") as file:
        try:
            check_regular(path, os.fstat(fd).st_mode, loc)
            data = file.read(MAX_SOURCE_BYTES + 1)  # the size may change while reading, or be unknown (/proc)
        except OSError as e:
            raise _os_error(path, e, loc) from None
    if len(data) > MAX_SOURCE_BYTES:
        raise CnncError(f"{shown(path)} is larger than {MAX_SOURCE_BYTES // (1024 * 1024)} MB; a .cnn file may be at most that", loc)
    return decode_source(path, data, loc)


def decode_source(path: Path, data: bytes, loc: Loc | None = None) -> str:
    """UTF-8 text; an error names the byte, never quotes what is not text."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CnncError(f"{shown(path)} is not UTF-8 text ({e.reason} at byte {e.start})", loc) from None
    nul = data.find(b"\0")
    if nul >= 0:
        raise CnncError(f"{shown(path)} is not a text file (a NUL character at byte {nul})", loc)
    return text


def quotable(path: Path) -> bool:
    """Errors quote the lines of .cnn files only, never those of other files that were opened."""
    return path.suffix == ".cnn"


class Loader:
    """Loads modules once each, following imports and refusing cycles."""

    def __init__(self):
        self._modules: dict[str, Module] = {}
        self._loading: list[str] = []

    def load_file(self, path: Path, loc: Loc | None = None) -> Module:
        try:
            key = str(path.resolve())
        except ValueError as e:  # e.g. a NUL byte in the name
            raise CnncError(f"invalid file name {shown(path)!r}: {e}", loc) from None
        except OSError as e:
            raise _os_error(path, e, loc) from None
        except RuntimeError:  # a loop of symbolic links, before Python 3.13
            raise CnncError(f"cannot read {shown(path)}: a loop of symbolic links", loc) from None
        if key in self._loading:
            cycle = self._loading[self._loading.index(key) :] + [key]
            names = " -> ".join(Path(p).name for p in cycle)
            raise CnncError(f"import cycle: {names}", loc)
        if key not in self._modules:
            if len(self._loading) >= MAX_IMPORT_DEPTH:
                raise CnncError(f"imports nest more than {MAX_IMPORT_DEPTH} deep (files importing files)", loc)
            text = read_source(path, loc)
            tree = parse(text, str(path), quote=quotable(path) and quotable(Path(key)))
            self._modules[key] = self._load(tree, path.parent, key)
        return self._modules[key]

    def load_text(self, text: str, filename: str = "<string>", base: Path | None = None) -> Module:
        return self._load(parse(text, filename), base or Path.cwd(), filename)

    def _load(self, tree: ast.Module, base: Path, key: str) -> Module:
        module = Module(tree.path)
        self._loading.append(key)
        try:
            for item in tree.items:
                if isinstance(item, ast.Import):
                    imported = self.load_file(self._resolve(item, base), item.loc)
                    for definition in imported.own:
                        self._define(module, definition, item.loc)
                else:
                    item.module = module
                    self._check_definition(item)
                    module.own.append(item)
                    self._define(module, item, item.loc)
        finally:
            self._loading.pop()
        return module

    def _resolve(self, item: ast.Import, base: Path) -> Path:
        if item.quoted:
            path = Path(item.target)
            if path.suffix != ".cnn":  # nor is any other file read, or quoted in an error
                raise CnncError(f'only .cnn files can be imported; "{short(item.target)}" is not one', item.loc)
            return path if path.is_absolute() else base / path
        relative = Path(*item.target.split(".")).with_suffix(".cnn")
        places = search_path(base)
        for folder in places:
            if self._is_file(folder / relative, item):
                return folder / relative
        where = ", ".join(str(p) for p in places)
        raise CnncError(f"cannot find '{short(item.target)}' to import ({short(str(relative))} in {where})", item.loc)

    @staticmethod
    def _is_file(path: Path, item: ast.Import) -> bool:
        try:
            return path.is_file()
        except OSError as e:  # a name too long for the file system, say
            raise CnncError(f"cannot import '{short(item.target)}': {e.strerror or e}", item.loc) from None

    @staticmethod
    def _define(module: Module, definition: ast.Definition, loc: Loc) -> None:
        earlier = module.visible.get(definition.name)
        if earlier is not None and earlier is not definition:
            raise CnncError(
                f"'{definition.name}' is defined twice: here and at {earlier.loc}", loc
            )
        module.visible[definition.name] = definition

    @staticmethod
    def _check_definition(definition: ast.Definition) -> None:
        if definition.name in REGISTRY:
            raise CnncError(f"'{definition.name}' is the name of a built-in op; choose another name", definition.loc)
        seen = set()
        for p in definition.params:
            if p.name in seen:
                raise CnncError(f"hyperparameter '{p.name}' is declared twice", p.loc)
            if p.name in REGISTRY:
                raise CnncError(f"hyperparameter '{p.name}' has the name of a built-in op", p.loc)
            seen.add(p.name)
