"""Text -> syntax tree, with Lark. Syntax errors become located CnncErrors."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import itertools
import math
import re

import lark
from lark import Token, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError
from lark.visitors import Transformer_NonRecursive

from ..errors import CnncError, Loc
from ..resources import grammar_file
from . import ast

OPENERS = {"LPAR": "RPAR", "LSQB": "RSQB", "LBRACE": "RBRACE"}
CLOSERS = {"RPAR", "RSQB", "RBRACE"}
# After these a line break cannot end a statement, so it is dropped.
CONTINUE_AFTER = {"LPAR", "LSQB", "LBRACE", "COMMA", "_ARROW"}
# How deeply expressions, groups and statements may nest. The builder interprets
# the tree recursively; a flat chain like a + b + c + ... does not count as nesting.
MAX_NESTING = 100
# Parsing takes about 80 µs and 2 KB per token, so the tokens are counted first.
# 300,000 admit a chain of 100,000 layers (`a -> b` is three tokens a layer).
MAX_TOKENS = 300_000
# What the lexer reads as one token (comments are counted too): an estimate, in C, of the lexer's count.
_TOKEN = re.compile(r'[A-Za-z_0-9.]+|"[^"\n]*"|#[^\n]*|->|\*\*|//|[=!<>]=|\n\s*|\S')


class LineJoiner:
    """Post-lexer: decides which newlines end statements.

    Newlines are dropped inside () and [], after `{`, `,` and `->`, before `}`
    and `->` (so a chain may continue on the next line), and at the start and
    end of the file; runs of newlines collapse into one.
    """

    always_accept = ("_NL",)

    def process(self, stream):
        stack: list[str] = []
        pending: Token | None = None
        previous: str | None = None
        for token in stream:
            kind = token.type
            if kind == "_NL":
                inside_brackets = stack and stack[-1] != "LBRACE"
                if not inside_brackets and previous is not None and previous not in CONTINUE_AFTER:
                    pending = pending or token
                continue
            if pending is not None:
                if kind not in ("RBRACE", "_ARROW"):
                    yield pending
                pending = None
            if kind in OPENERS:
                stack.append(kind)
            elif kind in CLOSERS and stack:
                stack.pop()
            previous = kind
            yield token


@functools.lru_cache(maxsize=1)
def _parser() -> lark.Lark:
    return lark.Lark(
        grammar_file().read_text(),
        parser="lalr",
        lexer="basic",  # the post-lexer looks ahead, which a contextual lexer cannot follow
        postlex=LineJoiner(),
        propagate_positions=True,
        maybe_placeholders=True,
        cache=False,
    )


# -- friendly names for what the parser expected -----------------------------

_NAMED = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": "a string",
    "_NL": "a line break",
    "$END": "the end of the file",
    "SEMICOLON": "';'",
}


def _terminal_text(name: str) -> str:
    if name in _NAMED:
        return _NAMED[name]
    for term in _parser().terminals:
        if term.name == name:
            if term.pattern.type == "str":
                return f"'{term.pattern.value}'"
            break
    return name.lower()


def _expected_text(expected) -> str:
    names = set(expected)
    if {"NAME", "NUMBER", "STRING"} <= names:
        names -= {"NAME", "NUMBER", "STRING", "LSQB", "LPAR", "MINUS", "PLUS", "NOT", "TRUE", "FALSE", "NONE", "REPEAT", "LBRACE"}
        head = ["an expression"]
    else:
        head = []
    # A missing closing bracket is the likeliest mistake: name it first.
    closing = [_terminal_text(n) for n in ("RBRACE", "RPAR", "RSQB") if n in names]
    names -= {"RBRACE", "RPAR", "RSQB"}
    items = closing + head + sorted(_terminal_text(n) for n in names)
    if len(items) > 8:
        items = items[:8] + ["..."]
    if len(items) == 1:
        return items[0]
    return "one of " + ", ".join(items)


def _describe_token(token: Token, show: bool = True) -> str:
    if token.type == "$END":
        return "end of the file"
    if token.type == "_NL":
        return "a line break"
    if not show:  # the text of a file that is not a .cnn program is not repeated
        return {"NAME": "name", "NUMBER": "number", "STRING": "string"}.get(token.type, "symbol")
    if token.type in ("NAME", "NUMBER", "STRING"):
        return f"{_NAMED[token.type][2:] if token.type != 'NAME' else 'name'} {token.value!s}"
    return f"'{token.value}'"


KEYWORDS = ("network", "block", "import", "input", "output", "repeat", "if", "elif", "else")


def _keyword_hint(token: Token, lines: list[str]) -> str:
    """Suggest a keyword when the unexpected token is, or follows, a misspelt one."""
    candidates = []
    if token.type == "NAME":
        candidates.append(str(token))
    if token.type != "$END":
        # Only the end of the line matters; searching all of a long line takes quadratic time.
        before = re.search(r"([A-Za-z_]\w*)$", _line(lines, token.line)[: token.column - 1].rstrip()[-40:])
        if before:
            candidates.append(before.group(1))
    for word in candidates:
        if word not in KEYWORDS:
            match = difflib.get_close_matches(word, KEYWORDS, n=1, cutoff=0.7)
            if match:
                return f" ('{word}' is not a keyword; did you mean '{match[0]}'?)"
    return ""


def _line(lines: list[str], n: int) -> str:
    return lines[n - 1].removesuffix("\r") if 0 < n <= len(lines) else ""


def _last_line(lines: list[str]) -> int:
    """The last line, where an unexpected end of the file is reported (a final \n starts no line)."""
    return max(1, len(lines) - (lines[-1] == ""))


def parse(text: str, filename: str = "<string>", quote: bool = True) -> ast.Module:
    """Parse one .cnn source text into a Module. Raises CnncError on bad syntax.

    Error locations carry the source line only when `quote` is true: the
    loader quotes lines of .cnn files alone, never of whatever else was opened.
    """
    text = text.removeprefix("\ufeff")  # a UTF-8 byte-order mark, as some editors write
    # Lines as the lexer counts them: only \n ends a line (not U+2028, U+0085, ...).
    lines = text.split("\n")

    def loc(line: int, column: int) -> Loc:
        return Loc(filename, line, column, _line(lines, line) if quote else "")

    check_size(text, loc)
    try:
        tree = _parser().parse(text)
    except UnexpectedCharacters as e:
        char = text[e.pos_in_stream] if e.pos_in_stream < len(text) else ""
        shown = f" {char!r}" if quote else ""
        raise CnncError(f"unexpected character{shown}", loc(e.line, e.column)) from None
    except UnexpectedEOF as e:
        n = _last_line(lines)
        raise CnncError(
            f"unexpected end of the file; expected {_expected_text(e.expected)}", loc(n, len(_line(lines, n)) + 1)
        ) from None
    except UnexpectedToken as e:
        token = e.token
        if token.type == "$END":
            n = _last_line(lines)
            where = loc(n, len(_line(lines, n)) + 1)
        else:
            where = loc(token.line, token.column)
        hint = _keyword_hint(token, lines) if quote else ""
        raise CnncError(f"unexpected {_describe_token(token, quote)}; expected {_expected_text(e.expected)}{hint}", where) from None
    except UnexpectedInput as e:  # pragma: no cover - other lark input errors
        raise CnncError(f"syntax error: {e}", loc(getattr(e, "line", 1), getattr(e, "column", 1))) from None
    try:
        module = _ToAst(loc, filename).transform(tree)
    except VisitError as e:
        if isinstance(e.orig_exc, CnncError):
            raise e.orig_exc from None
        raise
    check_nesting(module)
    return module


def check_size(text: str, loc) -> None:
    """Refuse a program of more than MAX_TOKENS tokens, at the first token past the limit."""
    past = next(itertools.islice(_TOKEN.finditer(text), MAX_TOKENS, None), None)
    if past is None:
        return
    line = text.count("\n", 0, past.start()) + 1
    column = past.start() - (text.rfind("\n", 0, past.start()) + 1) + 1
    raise CnncError(f"the program has more than {MAX_TOKENS:,} tokens (names, numbers and symbols); a file may hold at most that", loc(line, column))


# -- nesting ------------------------------------------------------------------


@functools.cache
def _child_fields(kind: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(kind) if f.name not in ("loc", "module"))


def _children(node: ast.Node) -> list[ast.Node]:
    """The syntax nodes directly inside `node` (statement lists and if-branches included)."""
    found = []
    pending = [getattr(node, name) for name in _child_fields(type(node))]
    while pending:
        value = pending.pop()
        if isinstance(value, ast.Node):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            pending.extend(value)
    return found


# The constructs that nest: each one inside another adds a level.
NESTING = (ast.ListExpr, ast.Call, ast.BinOp, ast.UnaryOp, ast.Attribute, ast.Index, ast.Repeat, ast.Group, ast.If)


def _nests(parent: ast.Node, child: ast.Node) -> bool:
    if isinstance(parent, ast.BinOp) and child is parent.left:
        return False  # a + b + c + ... is a left-deep tree, but not nesting
    # A chain nests when it is in parentheses (inside a link), not as a statement.
    return isinstance(child, NESTING) or isinstance(child, ast.Chain) and isinstance(parent, ast.Link)


def check_nesting(module: ast.Module) -> None:
    """Refuse programs nested more than MAX_NESTING deep, at the place that is too deep."""
    stack = [(module, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            raise CnncError(f"the program is nested too deeply (more than {MAX_NESTING} levels)", node.loc)
        for child in _children(node):
            stack.append((child, depth + _nests(node, child)))


@v_args(meta=True, inline=True)
class _ToAst(Transformer_NonRecursive):
    """Lark tree -> ast dataclasses (without recursion: a long chain is a deep tree)."""

    def __init__(self, loc, filename):
        super().__init__()
        self._loc = loc
        self._file = filename

    def _at(self, meta) -> Loc:
        if getattr(meta, "empty", True):
            return self._loc(1, 1)
        return self._loc(meta.line, meta.column)

    def _tok(self, token: Token) -> Loc:
        return self._loc(token.line, token.column)

    # -- file -------------------------------------------------------------
    def start(self, meta, *items):
        return ast.Module(self._at(meta), self._file, [i for i in items if i is not None])

    def import_(self, meta, target):
        if isinstance(target, Token):  # a quoted path
            return ast.Import(self._at(meta), target.value[1:-1], quoted=True)
        return ast.Import(self._at(meta), target, quoted=False)

    def dotted(self, meta, *names):
        return ".".join(str(n) for n in names)

    def _definition(self, kind, meta, name, params, body):
        return ast.Definition(self._at(meta), kind, str(name), params or [], body)

    def network(self, meta, name, params, body):
        return self._definition("network", meta, name, params, body)

    def block(self, meta, name, params, body):
        return self._definition("block", meta, name, params, body)

    def params(self, meta, *params):
        return [p for p in params if p is not None]

    def param(self, meta, name, default):
        return ast.Param(self._tok(name), str(name), default)

    def body(self, meta, *stmts):
        return [s for s in stmts if s is not None]

    # -- statements ---------------------------------------------------------
    def input(self, meta, name, dtype, dims):
        return ast.Input(self._at(meta), str(name), str(dtype) if dtype is not None else None, dims)

    def shape(self, meta, *dims):
        return [d for d in dims if d is not None]

    def output(self, meta, name, chain):
        return ast.Output(self._at(meta), str(name), chain)

    def assign(self, meta, name, chain):
        return ast.Assign(self._at(meta), str(name), chain)

    def if_(self, meta, cond, body, *rest):
        branches = [(cond, body)]
        orelse = rest[-1] if rest else None
        for elif_ in rest[:-1]:
            branches.append(elif_)
        return ast.If(self._at(meta), branches, orelse)

    def elif_(self, meta, cond, body):
        return (cond, body)

    def chain(self, meta, *links):
        return ast.Chain(links[0].loc, list(links))

    def link(self, meta, label, expr):
        return ast.Link(self._tok(label) if label is not None else expr.loc, str(label) if label is not None else None, expr)

    # -- expressions --------------------------------------------------------
    def number(self, meta, token):
        text = str(token)
        shown = text if len(text) <= 24 else text[:20] + "..."
        if any(c in text for c in ".eE"):
            value = float(text)
            if not math.isfinite(value):
                raise CnncError(f"number {shown} is too large for a float", self._tok(token))
        else:
            # Compare digits before converting: int() of a huge literal is slow.
            digits = text.lstrip("0") or "0"
            if len(digits) > len(str(ast.MAX_INT)) or int(digits) > ast.MAX_INT:
                raise CnncError(f"number {shown} is too large (integers are limited to 2^62)", self._tok(token))
            value = int(digits)
        return ast.Const(self._tok(token), value)

    def string(self, meta, token):
        return ast.Const(self._tok(token), token.value[1:-1])

    def true(self, meta):
        return ast.Const(self._at(meta), True)

    def false(self, meta):
        return ast.Const(self._at(meta), False)

    def none(self, meta):
        return ast.Const(self._at(meta), None)

    def name(self, meta, token):
        return ast.Name(self._tok(token), str(token))

    def list(self, meta, *items):
        return ast.ListExpr(self._at(meta), [i for i in items if i is not None])

    def paren(self, meta, chain):
        if len(chain.links) == 1 and chain.links[0].label is None:
            return chain.links[0].expr
        return chain

    def repeat(self, meta, count, body):
        return ast.Repeat(self._at(meta), count, body)

    def group(self, meta, *stmts):
        return ast.Group(self._at(meta), [s for s in stmts if s is not None])

    def call(self, meta, name, *args):
        return ast.Call(self._tok(name), str(name), [a for a in args if a is not None])

    def arg(self, meta, name, value):
        return ast.Arg(self._tok(name) if name is not None else value.loc, str(name) if name is not None else None, value)

    def attr(self, meta, value, name):
        return ast.Attribute(self._tok(name), value, str(name))

    def index(self, meta, value, index):
        return ast.Index(index.loc, value, index)

    def _binop(op):  # noqa: N805 - a factory used in the class body
        def rule(self, meta, left, right):
            return ast.BinOp(self._at(meta), op, left, right)

        return rule

    add, sub, mul, div = _binop("+"), _binop("-"), _binop("*"), _binop("/")
    floordiv, mod, pow = _binop("//"), _binop("%"), _binop("**")
    eq, ne, lt, le, gt, ge = _binop("=="), _binop("!="), _binop("<"), _binop("<="), _binop(">"), _binop(">=")
    and_op, or_op = _binop("and"), _binop("or")

    def neg(self, meta, operand):
        return ast.UnaryOp(self._at(meta), "-", operand)

    def pos(self, meta, operand):
        return ast.UnaryOp(self._at(meta), "+", operand)

    def not_op(self, meta, operand):
        return ast.UnaryOp(self._at(meta), "not", operand)
