"""Text -> syntax tree, with Lark. Syntax errors become located CnncErrors."""

from __future__ import annotations

import difflib
import functools
import re

import lark
from lark import Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from ..errors import CnncError, Loc
from ..resources import grammar_file
from . import ast

OPENERS = {"LPAR": "RPAR", "LSQB": "RSQB", "LBRACE": "RBRACE"}
CLOSERS = {"RPAR", "RSQB", "RBRACE"}
# After these a line break cannot end a statement, so it is dropped.
CONTINUE_AFTER = {"LPAR", "LSQB", "LBRACE", "COMMA", "_ARROW"}


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


def _describe_token(token: Token) -> str:
    if token.type == "$END":
        return "end of the file"
    if token.type == "_NL":
        return "a line break"
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
        before = re.search(r"([A-Za-z_]\w*)\s*$", _line(lines, token.line)[: token.column - 1])
        if before:
            candidates.append(before.group(1))
    for word in candidates:
        if word not in KEYWORDS:
            match = difflib.get_close_matches(word, KEYWORDS, n=1, cutoff=0.7)
            if match:
                return f" ('{word}' is not a keyword; did you mean '{match[0]}'?)"
    return ""


def _line(lines: list[str], n: int) -> str:
    return lines[n - 1] if 0 < n <= len(lines) else ""


def parse(text: str, filename: str = "<string>") -> ast.Module:
    """Parse one .cnn source text into a Module. Raises CnncError on bad syntax."""
    lines = text.splitlines()

    def loc(line: int, column: int) -> Loc:
        return Loc(filename, line, column, _line(lines, line))

    try:
        tree = _parser().parse(text)
    except UnexpectedCharacters as e:
        char = text[e.pos_in_stream] if e.pos_in_stream < len(text) else ""
        raise CnncError(f"unexpected character {char!r}", loc(e.line, e.column)) from None
    except UnexpectedEOF as e:
        n = len(lines) or 1
        raise CnncError(
            f"unexpected end of the file; expected {_expected_text(e.expected)}", loc(n, len(_line(lines, n)) + 1)
        ) from None
    except UnexpectedToken as e:
        token = e.token
        if token.type == "$END":
            n = len(lines) or 1
            where = loc(n, len(_line(lines, n)) + 1)
        else:
            where = loc(token.line, token.column)
        hint = _keyword_hint(token, lines)
        raise CnncError(f"unexpected {_describe_token(token)}; expected {_expected_text(e.expected)}{hint}", where) from None
    except UnexpectedInput as e:  # pragma: no cover - other lark input errors
        raise CnncError(f"syntax error: {e}", loc(getattr(e, "line", 1), getattr(e, "column", 1))) from None
    except RecursionError:
        raise CnncError("the program is nested too deeply", loc(1, 1)) from None
    try:
        return _ToAst(loc, filename).transform(tree)
    except VisitError as e:
        if isinstance(e.orig_exc, CnncError):
            raise e.orig_exc from None
        if isinstance(e.orig_exc, RecursionError):
            raise CnncError("the program is nested too deeply", loc(1, 1)) from None
        raise
    except RecursionError:
        raise CnncError("the program is nested too deeply", loc(1, 1)) from None


@v_args(meta=True, inline=True)
class _ToAst(Transformer):
    """Lark tree -> ast dataclasses."""

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
        if any(c in text for c in ".eE"):
            value = float(text)
        else:
            if len(text) > 30:
                raise CnncError(f"number {text[:20]}... is too large", self._tok(token))
            value = int(text)
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
