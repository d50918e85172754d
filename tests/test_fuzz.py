"""Fuzzing the front end: whatever the text, `cnnc.load` returns a Graph or raises CnncError.

Programs come from three sources: a grammar-aware generator, mutations of the
library models and of small valid programs, and arbitrary text. Every example
must finish in time, and every located error must point inside its file.
"""

from __future__ import annotations

import faulthandler
import functools
import multiprocessing
import re
import signal
import traceback
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cnnc
from cnnc import CnncError
from cnnc.ops import REGISTRY
from cnnc.resources import lib_dir

# The builder stops itself after 2,000,000 steps or 100,000 layers, which takes
# a few seconds; a slower example fails the deadline. One that never ends is
# interrupted after HARD_LIMIT seconds, or, stuck inside C code where no signal
# handler runs, ends the process with a traceback after twice that.
DEADLINE = timedelta(seconds=5)
HARD_LIMIT = 30


def fuzz(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        deadline=DEADLINE,
        derandomize=True,  # the same examples on every run
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.filter_too_much,
        ],
    )


# -- the property -------------------------------------------------------------


class Hang(BaseException):
    """Raised by the alarm; a BaseException so that no `except Exception` swallows it."""


@contextmanager
def time_limit(seconds: float):
    faulthandler.dump_traceback_later(2 * seconds, exit=True)
    if not hasattr(signal, "setitimer"):  # no SIGALRM (Windows): rely on the deadline
        try:
            yield
        finally:
            faulthandler.cancel_dump_traceback_later()
        return

    def stop(signum, frame):
        raise Hang

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        faulthandler.cancel_dump_traceback_later()


def source_of(err: CnncError, text: str) -> str | None:
    """The text the error points into: the program itself, or a file it imported."""
    if err.file == "<string>":
        return text
    path = Path(err.file)
    return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None


def check_load(text: str, seconds: float = HARD_LIMIT) -> None:
    """cnnc.load(text) gives a Graph or a well-formed CnncError, and nothing else."""
    try:
        with time_limit(seconds):
            graph = cnnc.load(text)
    except CnncError as err:
        assert str(err), "a CnncError with an empty message"
        if err.line is not None:
            assert err.column is not None and err.column >= 1, f"bad column in {err}"
            source = source_of(err, text)
            lines = len(source.splitlines()) if source is not None else err.line
            # The end of the file may be reported one line past the last.
            assert 1 <= err.line <= lines + 1, f"line {err.line} is outside {err.file} ({lines} lines): {err}"
    except Hang as hang:
        where = "".join(traceback.format_list(traceback.extract_tb(hang.__traceback__)[-4:-1]))
        raise AssertionError(f"cnnc.load did not finish within {seconds} s; it was here:\n{where}") from None
    else:
        assert isinstance(graph, cnnc.Graph)


def check_load_in_child(text: str, seconds: float) -> None:
    """check_load in a forked process, which is killed if it hangs, even inside C code."""
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("needs fork")
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)

    def run():
        try:
            check_load(text, seconds)
            sender.send(None)
        except BaseException:
            sender.send(traceback.format_exc()[-4000:])

    child = context.Process(target=run, daemon=True)
    child.start()
    child.join(seconds + 1)
    if child.is_alive():
        child.kill()
        child.join()
        pytest.fail(f"cnnc.load did not finish within {seconds} s")
    failure = receiver.recv() if receiver.poll() else f"the child process died (exit code {child.exitcode})"
    if failure:
        pytest.fail(failure, pytrace=False)


def as_text(source: str) -> str:
    """cnnc.load reads a string with no newline and no '{' as a path; keep programs text."""
    return source if "\n" in source or "{" in source else source + "\n"


# -- vocabulary -----------------------------------------------------------------

OPS = sorted(name for name, op in REGISTRY.items() if not op.internal)
ATTRS = sorted({attr.name for op in REGISTRY.values() for attr in op.attrs} | {"foo"})
VARS = ["x", "y", "z", "n", "k", "in", "channels", "stride"]
BLOCKS = ["b0", "b1", "b2", "basic", "bottleneck"]  # the last two come with `import resnet_blocks`
KEYWORDS = ["network", "block", "input", "output", "import", "repeat", "if", "elif", "else",
            "and", "or", "not", "true", "false", "none"]
LABELS = ["a", "b", "conv1", "layer1", "features", "x", "relu", "b0"]
BINOPS = ["+", "-", "*", "/", "//", "%", "**", "==", "!=", "<", "<=", ">", ">=", "and", "or"]
BUILTINS = ["min", "max", "abs", "int", "float", "len"]
IMPORTS = ["import resnet_blocks", "import lenet", "import lib.resnet_blocks", "import no_such_module",
           'import "lib/lenet.cnn"', 'import "lib"', 'import ""', 'import "."']

# -- the generator ----------------------------------------------------------------
# Mostly well-formed programs, so that the builder runs far, with a few wrong
# pieces (a bad value, a stray argument, a clashing name) mixed in at random.
# Strategies are built once (module constants, cached factories): building
# them inside every draw would cost more than loading the programs.

EDGE_INTS = [0, 1, 2, 3, 7, 64, 9999, 10000, 10001, 2**31, 2**62, 2**62 + 1, 2**63, 10**29, 10**30]
INTS = st.one_of(st.integers(0, 8), st.sampled_from(EDGE_INTS), st.integers(0, 2**64)).map(str)
FLOATS = st.one_of(
    st.sampled_from(["0.5", "0.0", "1.0", ".5", "2.", "1e-5", "1e308", "1e309", "1e-400", "3.5e2"]),
    st.floats(min_value=0, allow_nan=False, allow_infinity=False).map(repr),
)
STRING_CHARS = st.characters(blacklist_characters='"\\\n', blacklist_categories=("Cs",))
STRINGS = st.one_of(
    st.sampled_from(['"nearest"', '"bilinear"', '"float64"', '"int64"', '""', '"x"']),
    st.text(STRING_CHARS, max_size=6).map(lambda s: f'"{s}"'),
)
ATOMS = st.one_of(
    INTS,
    INTS.map(lambda s: "-" + s),
    FLOATS,
    STRINGS,
    st.sampled_from(["true", "false", "none"]),
    st.sampled_from(VARS),
    st.sampled_from(["x.channels", "in.channels", "in.height", "x.width", "x.shape", "in.shape[0]",
                     "x.shape[-1]", "x.dtype", "x.size", "channels.channels", "[1, 2][5]"]),
)
SMALL = st.one_of(st.integers(1, 4).map(str), st.sampled_from(["channels", "n", "x.channels", "n * 2", "[2, 3]"]))
COUNTS = st.one_of(
    st.integers(0, 3).map(str),
    st.sampled_from(["40", "9999", "10000", "10001", "n", "k", "channels", "(n - 1)", "(-1)", "(2 ** 62)",
                     "(1 / 2)", '("3")', "(true)", "(x.channels)", "(10 // 0)"]),
)
TENSOR_ATTRIBUTES = st.sampled_from(["channels", "height", "width", "shape", "dtype", "foo"])
HEADS = st.sampled_from(["x", "in", "y", "x + y", "x * x", "x - y", "relu(x)", "concat(x, y)", "(x -> relu)"])
TENSOR_ARGS = st.lists(st.sampled_from(["x", "y", "in", "x + y", "labels"]), max_size=3)
BLOCK_KEYS = st.lists(st.sampled_from(["channels", "stride", "n", "k", "width", "foo"]), max_size=2)
SEPARATORS = st.sampled_from(["\n", "\n", "; ", "\n\n    "])
SHAPES = st.sampled_from(["[3, 8, 8]", "[3, 8, 8]", "[4]", "[2, 6, 6]", "[1, 5, 5]", "[3, 4]", "[]"])
DTYPES = st.sampled_from(["", "", "", "", "", "", "float64", "int64", "int32", "complex"])
QUOTED_IMPORTS = st.text(STRING_CHARS.filter(lambda c: c != "/"), max_size=5).map(lambda s: f'import "{s}"')


@functools.cache
def one_in(n: int) -> st.SearchStrategy[bool]:
    """True about one time in n (Hypothesis favours the first option, so that is False)."""
    return st.sampled_from([False] * (n - 1) + [True])


@functools.cache
def choice(*options: str) -> st.SearchStrategy[str]:
    return st.sampled_from(options)


@functools.cache
def exprs(depth: int = 2) -> st.SearchStrategy[str]:
    """Hyperparameter arithmetic, comparisons, lists, indexing, attributes, built-ins."""
    if depth == 0:
        return ATOMS
    sub = exprs(depth - 1)
    pairs = st.tuples(sub, st.sampled_from(BINOPS), sub)
    return st.one_of(
        ATOMS,
        ATOMS,
        pairs.map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(choice("-", "+", "not "), sub).map("".join),
        st.lists(sub, max_size=3).map(lambda items: "[" + ", ".join(items) + "]"),
        st.tuples(sub, sub).map(lambda t: f"({t[0]})[{t[1]}]"),
        st.tuples(sub, TENSOR_ATTRIBUTES).map(lambda t: f"({t[0]}).{t[1]}"),
        st.tuples(st.sampled_from(BUILTINS), st.lists(sub, max_size=2)).map(lambda t: f"{t[0]}({', '.join(t[1])})"),
        st.tuples(sub, choice("//", "/", "%")).map(lambda t: f"{t[0]} {t[1]} 0"),  # division by zero
    )


@functools.cache
def plausible(op: str, attr: str) -> st.SearchStrategy[str]:
    """A value that an attribute's check may accept, so that shape rules run too."""
    kind = getattr(next(a for a in REGISTRY[op].attrs if a.name == attr).check, "__name__", "")
    if kind == "boolean":
        return choice("true", "false")
    if kind in ("probability", "number", "positive_number"):
        return choice("0.5", "0.1", "1e-5", "0", "1")
    if attr == "mode":
        return choice('"nearest"', '"bilinear"', '"bicubic"')
    if attr == "shape":
        return choice("[-1]", "[3, -1]", "[2, 2, 2]", "[0]", "[-1, -1]", "[]", "x.shape")
    if attr in ("axis", "ignore"):
        return choice("0", "1", "-1", "3", "none")
    return st.one_of(SMALL, choice("0", "[0, 2]", "none", "-1", "1.5"))


@st.composite
def call_args(draw, name: str) -> str:
    """Tensor inputs, then positional and keyword arguments, for an op or a block."""
    op = REGISTRY.get(name)
    args = []
    if op is not None and op.inputs != 1 or draw(one_in(8)):
        args += draw(TENSOR_ARGS)
    if op is None:  # a block: hyperparameters of the blocks generated here and of resnet_blocks
        args += draw(st.lists(SMALL, max_size=2))
        args += [f"{key}={draw(SMALL)}" for key in draw(BLOCK_KEYS)]
    else:
        args += [draw(plausible(name, attr.name)) for attr in op.attrs if attr.required]
        if op.attrs and draw(st.booleans()):
            attr = draw(choice(*(a.name for a in op.attrs)))
            args.append(f"{attr}={draw(plausible(name, attr))}")
    if draw(one_in(4)):  # something wrong, or at least odd
        junk = draw(exprs(1))
        if draw(st.booleans()):
            junk = f"{draw(st.sampled_from(ATTRS))}={junk}"
        args.insert(draw(st.integers(0, len(args))), junk)
    return ", ".join(args)


@st.composite
def _layers(draw, depth: int, labelled: bool) -> str:
    form = draw(choice(*OPS, *BLOCKS, *(["repeat"] * 4 + ["group"] * 4 if depth > 0 else [])))
    if form not in ("repeat", "group"):  # an op or a block
        text = form if draw(one_in(3)) else f"{form}({draw(call_args(form))})"
    elif form == "repeat":
        text = f"repeat {draw(COUNTS)} {draw(layers(depth - 1, labelled=False))}"
    else:
        text = "{ " + draw(SEPARATORS).join(draw(st.lists(statements(depth - 1), max_size=2))) + " }"
    if labelled and draw(one_in(4)):
        text = f"{draw(st.sampled_from(LABELS))}: {text}"
    return text


@functools.cache
def layers(depth: int, labelled: bool = True) -> st.SearchStrategy[str]:
    """An op, a block call, `repeat n X` or a group `{ ... }`, maybe labelled."""
    return _layers(depth, labelled)


@st.composite
def _chains(draw, depth: int) -> str:
    head = draw(HEADS) if draw(one_in(4)) else draw(layers(depth))
    return " -> ".join([head, *draw(st.lists(layers(depth), max_size=2))])


@functools.cache
def chains(depth: int) -> st.SearchStrategy[str]:
    """`head -> layer -> layer`, where the head may be a value (`x`, `x + y`, `relu(x)`)."""
    return _chains(depth)


@st.composite
def _statements(draw, depth: int) -> str:
    forms = ["chain", "chain", "chain", "assign", "assign", "input", "output", *(["if"] if depth > 0 else [])]
    form = draw(choice(*forms))
    if form == "chain":
        return draw(chains(depth))
    if form == "assign":
        name = draw(choice(*VARS, "relu", "b0"))
        if draw(one_in(8)):  # in a repeat, a list that doubles each time
            return f"{name} = [{name}, {name}]"
        return f"{name} = {draw(chains(depth) if draw(st.booleans()) else exprs())}"
    if form == "input":
        return draw(inputs)
    if form == "output":
        name = draw(choice("logits", "x", "y", "out"))
        return f"output {name}" if draw(st.booleans()) else f"output {name} = {draw(chains(depth))}"
    text = f"if {draw(exprs())} {draw(bodies(depth - 1))}"
    if draw(st.booleans()):
        text += f" elif {draw(exprs())} {draw(bodies(depth - 1))}"
    if draw(st.booleans()):
        text += f" else {draw(bodies(depth - 1))}"
    return text


@functools.cache
def statements(depth: int) -> st.SearchStrategy[str]:
    """A chain, an assignment, `if`/`elif`/`else`, an input or an output."""
    return _statements(depth)


@functools.cache
def bodies(depth: int) -> st.SearchStrategy[str]:
    return st.tuples(SEPARATORS, st.lists(statements(depth), max_size=2)).map(
        lambda t: "{\n    " + t[0].join(t[1]) + "\n}"
    )


@st.composite
def _inputs(draw) -> str:
    name = draw(choice("x", "x", "y", "labels", "in"))
    dims = "[" + ", ".join(draw(st.lists(exprs(1), max_size=4))) + "]" if draw(one_in(5)) else draw(SHAPES)
    return f"input {name}: {draw(DTYPES)}{dims}"


inputs = _inputs()
PARAMS = st.one_of(
    choice("", "", "()", "(channels = 4)", "(channels = 4, stride = 1)", "(n = 2, k = n * 2)", "(width = 3, n)",
           "(k = k)", "(n = 1, n = 2)", "(in = 1)", "(relu)", "(channels = x.channels)", "(stride = 1 // 0)"),
    st.lists(st.tuples(st.sampled_from(["channels", "stride", "n", "k", "width"]), st.one_of(SMALL, exprs(1))),
             max_size=3, unique_by=lambda t: t[0]).map(lambda ps: "(" + ", ".join(f"{p} = {v}" for p, v in ps) + ")"),
)


@st.composite
def programs(draw) -> str:
    """Imports, blocks (which may call each other and themselves), then networks."""
    parts = []
    if draw(one_in(4)):
        parts.append(draw(choice(*IMPORTS)))
    if draw(one_in(20)):  # a quoted import of an arbitrary (relative) path
        parts.append(draw(QUOTED_IMPORTS))
    for index in range(draw(st.integers(0, 2))):
        parts.append(f"block b{index}{draw(PARAMS)} {draw(bodies(1))}")
    for index in range(2 if draw(one_in(6)) else 1):
        stmts = [] if draw(one_in(20)) else [draw(inputs)]
        stmts += draw(st.lists(statements(2), max_size=4))
        parts.append(f"network net{index}{draw(PARAMS)} {{\n    " + "\n    ".join(stmts) + "\n}")
    return "\n\n".join(parts) + "\n"


# -- mutations ------------------------------------------------------------------

SMALL_PROGRAMS = [
    """
network mlp(hidden = 8, classes = 3) {
    input x: [4]
    fc1: dense(hidden) -> relu -> drop: dropout(0.25)
    fc2: dense(classes)
    output logits
    output probabilities = softmax
}
""",
    """
block twice(c, stride = 1) {
    x = in
    y = conv(c, kernel=3, stride=stride, pad=1) -> batchnorm -> relu
    if stride != 1 or x.channels != c {
        x = x -> skip: { conv(c, kernel=1, stride=stride) -> batchnorm }
    } elif c > 100 {
        x = x -> relu
    } else {
        x = x
    }
    relu(x + y)
}
network net(width = 4) {
    input image: [3, 16, 16]
    stem: conv(width, kernel=3, pad=1) -> relu
    stage: repeat 2 twice(width)
    down: twice(width * 2, stride=2)
    global_avgpool -> flatten -> head: dense(10)
}
""",
    """
network seg {
    input image: [3, 8, 8]
    input target: int64[8, 8]
    a = image -> conv(4, kernel=3, pad=1) -> relu
    b = a -> maxpool(2) -> conv(4, 3, pad=[1, 1]) -> upsample(scale=2)
    c = concat(a, b) -> conv(5, kernel=1)
    output scores = c
    output loss = cross_entropy(c, target)
}
""",
    """
network shapes(n = 3) {
    input x: float64[2, 6, 6]
    y = x -> conv_transpose(4, kernel=2, stride=2, output_pad=0) -> avgpool(2, stride=2, ceil=true)
    k = min(y.height, y.width) // 2 + n ** 2 % 4
    dims = y.shape
    y -> adaptive_avgpool([k, k]) -> reshape([dims[0], -1]) -> leaky_relu(slope=0.2)
    features: { flatten -> dense(int(float(k) * 1.5)) } -> tanh -> sigmoid
}
""",
    """
network seq {
    input x: [3, 8, 8]; input t: [10]
    body: {
        repeat 2 { conv(3, kernel=3, pad=1) -> relu }
        repeat (2 - 1) maxpool(kernel=2)
    }
    out = flatten -> dense(10) -> log_softmax
    output mse_loss = mse(out, t)
    output bce = bce_with_logits(out, t)
    output product = add(out, out) -> mul(out)
}
""",
]
SEEDS = {path.name: path.read_text(encoding="utf-8") for path in sorted(lib_dir().glob("*.cnn"))}
SEEDS.update((f"small{i}", text) for i, text in enumerate(SMALL_PROGRAMS))

TOKEN = re.compile(r"\s+|[A-Za-z_]\w*|\d+\.?\d*(?:[eE][+-]?\d+)?|->|\*\*|//|[=!<>]=|\S")
INSERTS = ["{", "}", "(", ")", "[", "]", "->", ":", ",", ";", "=", ".", "repeat 9999", "repeat", "**", "//",
           "0", "-1", "1e309", "9" * 31, '"', "#", "\\", "\\\n", "\n", "\t", "\r", "\r\n", "\f", "\x00",
           "\ufeff", "\u2028", "é", "Ω", "🙂", *KEYWORDS, *OPS[:6], "x.channels", "in"]
SNIPPETS = st.one_of(st.sampled_from(INSERTS), st.text(max_size=3))
CHAR_EDITS = st.sampled_from(["delete", "duplicate", "swap", "insert", "truncate"])
LINE_EDITS = st.sampled_from(["delete", "duplicate", "swap", "indent"])
TOKEN_EDITS = st.sampled_from(["delete", "duplicate", "swap", "insert", "replace"])
INDENTS = st.sampled_from(["\t", "    ", "\r", "\\"])
REPLACEMENTS = st.sampled_from([*OPS, *KEYWORDS, *VARS, *BLOCKS, *BINOPS, *INSERTS[:16]])
NUMBERS = st.one_of(INTS, FLOATS)


def mutate_chars(draw, text: str) -> str:
    i = draw(st.integers(0, len(text)))
    j = min(len(text), i + draw(st.integers(1, 8)))
    how = draw(CHAR_EDITS)
    if how == "delete":
        return text[:i] + text[j:]
    if how == "duplicate":
        return text[:j] + text[i:j] + text[j:]
    if how == "swap":  # the first and the last character of text[i:j]
        return text[:i] + text[i:j][-1:] + text[i + 1 : j - 1] + text[i:j][:1] + text[j:] if j - i > 1 else text
    if how == "insert":
        return text[:i] + draw(SNIPPETS) + text[i:]
    return text[:i]


def mutate_lines(draw, text: str) -> str:
    lines = text.split("\n")
    i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
    how = draw(LINE_EDITS)
    if how == "delete":
        del lines[i]
    elif how == "duplicate":
        lines.insert(j, lines[i])
    elif how == "swap":
        lines[i], lines[j] = lines[j], lines[i]
    else:
        lines[i] = draw(INDENTS) + lines[i]
    return "\n".join(lines)


def mutate_tokens(draw, text: str) -> str:
    tokens = TOKEN.findall(text)
    if not tokens:
        return draw(SNIPPETS)
    i, j = draw(st.integers(0, len(tokens) - 1)), draw(st.integers(0, len(tokens) - 1))
    how = draw(TOKEN_EDITS)
    if how == "delete":
        del tokens[i]
    elif how == "duplicate":
        tokens.insert(j, tokens[i])
    elif how == "swap":
        tokens[i], tokens[j] = tokens[j], tokens[i]
    elif how == "insert":
        tokens.insert(i, draw(SNIPPETS))
    elif tokens[i][0].isdigit():  # a number: another number
        tokens[i] = draw(NUMBERS)
    else:  # anything else: a name, a keyword or a symbol
        tokens[i] = draw(REPLACEMENTS)
    return "".join(tokens)


SEED_TEXTS = st.sampled_from(list(SEEDS.values()))
MUTATORS = st.sampled_from([mutate_chars, mutate_lines, mutate_tokens, mutate_tokens])


@st.composite
def mutants(draw):
    """A seed program after one to four random edits."""
    text = draw(SEED_TEXTS)
    for _ in range(draw(st.integers(1, 4))):
        text = draw(MUTATORS)(draw, text)
    return as_text(text)


# -- random text ------------------------------------------------------------------

LANGUAGE_CHARS = list("{}()[]<>=!:;,.+-*/%#\"\\_ \t\r\n\x000123456789eExyabcnrké")
RANDOM_TEXT = st.one_of(
    st.text(),  # as it comes: a string with no newline and no '{' is read as a path
    st.text(st.one_of(st.sampled_from(LANGUAGE_CHARS), st.characters()), max_size=200).map(as_text),
    st.lists(st.sampled_from([*INSERTS, *OPS, *VARS, "network", "n", "block", "b"]), max_size=40)
    .map(" ".join)
    .map(as_text),
)


# -- tests ----------------------------------------------------------------------


@pytest.mark.parametrize("name", [name for name, text in SEEDS.items() if re.search(r"^network ", text, re.M)])
def test_seeds_are_valid_programs(name):
    """The mutations start from programs that load."""
    assert isinstance(cnnc.load(SEEDS[name]), cnnc.Graph)


@fuzz(1200)
@given(programs())
def test_generated_programs(text):
    check_load(text)


@fuzz(1200)
@given(mutants())
def test_mutated_programs(text):
    check_load(text)


@fuzz(500)
@given(RANDOM_TEXT)
def test_random_text(text):
    check_load(text)


# Inputs on which cnnc.load raised something other than CnncError, or hung.
# Each runs in a child process, so that a hang fails the test instead of stalling it.
DOUBLING = "network n {\n    input x: [3]\n    a = 1\n    b = 1\n    repeat 60 { a = [a, a]; b = [b, b] }\n    %s\n}\n"
REGRESSIONS = [
    # A path with a NUL byte: ValueError: embedded null byte (Path.resolve in Loader.load_file).
    pytest.param("a\x00b", id="path-with-nul"),
    pytest.param('import "a\x00"\nnetwork n {\n    input x: [3]\n}\n', id="quoted-import-with-nul"),
    # A list of 2**60 leaves shared by reference: the error message that prints it never ends.
    pytest.param(DOUBLING % "y = a + 1", id="doubling-list-in-message"),
    pytest.param(DOUBLING % "dense(a)", id="doubling-list-in-op-argument"),
    # The same lists compared with ==: Python compares them element by element, in C.
    pytest.param(DOUBLING % "y = a == b", id="doubling-list-equality"),
]


@pytest.mark.parametrize("text", REGRESSIONS)
def test_regressions(text):
    check_load_in_child(text, seconds=2)
