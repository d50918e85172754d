"""The front end on hostile or unlucky input: special files, what errors quote, text, nesting, limits.

Each case ends in a CnncError (exit 2 from the command) within seconds.
"""

import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import cnnc
from cnnc import CnncError
from cnnc.cli import main, parse_setting
from cnnc.errors import Loc
from cnnc.frontend.loader import MAX_SOURCE_BYTES
from cnnc.frontend.parser import MAX_NESTING, MAX_TOKENS

PROGRAM = "network n(c = 4) {\n    input x: [3]\n    dense(c)\n}\n"
MAX_INT = 2**62


def finishes(fn, seconds=10, fifos=()):
    """fn() in a thread; fails (rather than hangs) when it takes longer than `seconds`."""
    outcome = {}

    def target():
        try:
            outcome["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            outcome["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        for fifo in fifos:  # a reader blocked opening a FIFO is released by a writer
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"did not finish within {seconds} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def load_error(source, **kwargs) -> CnncError:
    with pytest.raises(CnncError) as info:
        finishes(lambda: cnnc.load(source, **kwargs))
    return info.value


def check_fails(args, capsys, seconds=10, fifos=()) -> str:
    """`cnnc ARGS` exits 2; its error message (stderr)."""
    assert finishes(lambda: main(args), seconds, fifos) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "internal error" not in captured.err
    return captured.err


# -- files that are not regular files ---------------------------------------------


def test_a_fifo_is_refused_not_waited_on(tmp_path, capsys):
    fifo = tmp_path / "pipe.cnn"
    os.mkfifo(fifo)
    with pytest.raises(CnncError, match="is a FIFO"):
        finishes(lambda: cnnc.load(fifo), fifos=[fifo])
    assert "is a FIFO" in check_fails(["check", str(fifo)], capsys, fifos=[fifo])


def test_an_imported_fifo_and_a_link_to_one_are_refused(tmp_path):
    fifo = tmp_path / "pipe.cnn"
    os.mkfifo(fifo)
    (tmp_path / "link.cnn").symlink_to(fifo)
    for target in ("pipe.cnn", "link.cnn"):
        main_file = tmp_path / "main.cnn"
        main_file.write_text(f'import "{target}"\n' + PROGRAM)
        with pytest.raises(CnncError, match="is a FIFO") as info:
            finishes(lambda path=main_file: cnnc.load(path), fifos=[fifo])
        assert (info.value.file, info.value.line) == (str(main_file), 1)
    # A dotted import looks for regular files only.
    (tmp_path / "main.cnn").write_text("import pipe\n" + PROGRAM)
    with pytest.raises(CnncError, match="cannot find 'pipe'"):
        finishes(lambda: cnnc.load(tmp_path / "main.cnn"), fifos=[fifo])


def test_the_command_refuses_a_fifo_in_a_separate_process(tmp_path):
    fifo = tmp_path / "pipe.cnn"
    os.mkfifo(fifo)
    result = subprocess.run([sys.executable, "-m", "cnnc", "check", str(fifo)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == f"{fifo} is a FIFO (named pipe), not a .cnn file"


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_devices_are_refused(device, tmp_path, capsys):
    if not os.path.exists(device):
        pytest.skip(f"no {device}")
    assert f"{device} is a device" in str(load_error(device))
    assert f"{device} is a device" in check_fails(["check", device], capsys)
    (tmp_path / "dev.cnn").symlink_to(device)
    assert "is a device" in str(load_error(tmp_path / "dev.cnn"))


def test_folders_and_sockets_are_refused(tmp_path, capsys):
    (tmp_path / "folder.cnn").mkdir()
    assert "is a folder" in check_fails(["check", str(tmp_path / "folder.cnn")], capsys)
    (tmp_path / "main.cnn").write_text('import "folder.cnn"\n' + PROGRAM)
    assert "folder.cnn is a folder" in str(load_error(tmp_path / "main.cnn"))
    path = tmp_path / "s.cnn"
    if len(str(path)) > 100:
        pytest.skip("the temporary folder's name is too long for a socket")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(path))
        assert "is a socket" in str(load_error(path))
    finally:
        server.close()


def test_a_symlink_loop_is_a_clean_error(tmp_path, capsys):
    (tmp_path / "a.cnn").symlink_to(tmp_path / "b.cnn")
    (tmp_path / "b.cnn").symlink_to(tmp_path / "a.cnn")
    assert "a loop of symbolic links" in check_fails(["check", str(tmp_path / "a.cnn")], capsys)
    (tmp_path / "main.cnn").write_text('import "a.cnn"\n' + PROGRAM)
    err = load_error(tmp_path / "main.cnn")
    assert "a loop of symbolic links" in str(err) and err.line == 1


def test_an_unreadable_file(tmp_path):
    path = tmp_path / "locked.cnn"
    path.write_text(PROGRAM)
    path.chmod(0)
    if os.access(path, os.R_OK):
        pytest.skip("running as a user who reads any file")
    assert "cannot read" in str(load_error(path)) and "Permission denied" in str(load_error(path))


@pytest.mark.parametrize("name", ["d" * 100_000 + ".cnn", "d/" * 50_000 + "x.cnn"])
def test_an_absurdly_long_import_name_is_not_repeated(name):
    err = load_error(f'import "{name}"\n' + PROGRAM)
    assert err.line == 1 and len(str(err)) < 600


def test_a_broken_link_is_no_such_file(tmp_path):
    (tmp_path / "gone.cnn").symlink_to(tmp_path / "nothing.cnn")
    assert "no such file" in str(load_error(tmp_path / "gone.cnn"))


def test_a_huge_file_is_refused_before_it_is_parsed(tmp_path):
    big = tmp_path / "big.cnn"
    with open(big, "wb") as f:
        f.write(b"# a comment\n")
        f.truncate(MAX_SOURCE_BYTES + 1)  # sparse: cheap to make, slow to parse
    start = time.perf_counter()
    assert "is larger than 4 MB" in str(load_error(big))
    assert time.perf_counter() - start < 5


def test_a_file_at_the_size_limit_is_read(tmp_path):
    path = tmp_path / "padded.cnn"
    comment = "#" + "x" * 1000 + "\n"
    padding = comment * ((MAX_SOURCE_BYTES - len(PROGRAM)) // len(comment))
    path.write_text(padding + PROGRAM)
    assert os.path.getsize(path) <= MAX_SOURCE_BYTES
    assert finishes(lambda: cnnc.load(path), seconds=30).name == "n"


def test_nul_bytes_and_invalid_utf8_name_the_byte_and_quote_nothing(tmp_path):
    (tmp_path / "nul.cnn").write_bytes(PROGRAM.encode().replace(b"dense", b"de\x00se"))
    err = load_error(tmp_path / "nul.cnn")
    assert str(err) == f"{tmp_path / 'nul.cnn'} is not a text file (a NUL character at byte {PROGRAM.index('dense') + 2})"
    (tmp_path / "latin1.cnn").write_bytes("# café\n".encode("latin-1") + PROGRAM.encode())
    err = load_error(tmp_path / "latin1.cnn")
    assert str(err) == f"{tmp_path / 'latin1.cnn'} is not UTF-8 text (invalid continuation byte at byte 5)"


# -- which strings are files ---------------------------------------------------


@pytest.mark.parametrize("name", ["a{b}.cnn", "x{.cnn", "lenet"])
def test_an_existing_file_is_read_as_a_file_whatever_its_name(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).write_text(PROGRAM.replace("network n", "network from_file"))
    assert cnnc.load(name).name == "from_file"
    assert cnnc.load(str(tmp_path / name)).name == "from_file"


def test_program_text_is_still_text(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cnnc.load(PROGRAM).name == "n"
    assert cnnc.load("network one { input x: [3]; relu }").name == "one"
    assert cnnc.load("lenet").name == "lenet"  # a library model's name
    with pytest.raises(CnncError, match="no such file: absent.cnn"):
        cnnc.load("absent.cnn")


def test_odd_sources_are_clean_errors():
    assert "a path or the text of a program, got int" in str(load_error(3))
    assert "File name too long" in str(load_error("x" * 100_000))
    assert len(str(load_error("x" * 100_000))) < 200


# -- what an error may quote ------------------------------------------------------


def test_importing_a_file_that_is_not_a_cnn_program_is_refused_before_reading(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNC_TEST_SECRET", "hunter2")
    secret = tmp_path / "secret.txt"
    secret.write_text("sekrit:hunter2:19000:0:99999:7:::\n")
    for target in ("/proc/self/environ", "/etc/shadow", str(secret)):
        err = load_error(f'import "{target}"\n' + PROGRAM)
        assert str(err).startswith('<string>:1:1: only .cnn files can be imported; "')  # a long path is shortened
        assert f'import "{target}"' in str(err) and '" is not one' in str(err)
        assert "hunter2" not in str(err)


def test_a_cnn_link_to_another_file_is_not_quoted(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("sekrit:hunter2:19000:0:99999:7:::\n")
    (tmp_path / "sneaky.cnn").symlink_to(secret)
    (tmp_path / "main.cnn").write_text('import "sneaky.cnn"\n' + PROGRAM)
    err = load_error(tmp_path / "main.cnn")
    assert err.file == str(tmp_path / "sneaky.cnn") and (err.line, err.column) == (1, 1)
    assert "hunter2" not in str(err) and "sekrit" not in str(err)
    assert str(err).count("\n") == 0


def test_a_file_that_is_not_a_cnn_file_is_located_but_not_quoted(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("password = hunter2 {\n")
    message = check_fails(["check", str(notes)], capsys)
    assert message.startswith(f"{notes}:1:1: unexpected name; expected")
    assert "hunter2" not in message and "password" not in message
    # A .cnn file is quoted as always.
    (tmp_path / "model.cnn").write_text("network n {\n    input x: [3]\n    rleu\n}\n")
    assert check_fails(["check", str(tmp_path / "model.cnn")], capsys).endswith("    rleu\n        ^\n")


def test_proc_files_are_never_quoted(capsys):
    if not os.path.exists("/proc/self/environ"):
        pytest.skip("no /proc")
    message = check_fails(["check", "/proc/self/environ"], capsys)
    assert message.strip().startswith("/proc/self/environ is not a text file")
    assert os.environ.get("PATH", "PATH") not in message


# -- text ---------------------------------------------------------------------------


def test_a_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.cnn"
    path.write_bytes(b"\xef\xbb\xbf" + PROGRAM.encode())
    assert cnnc.load(path).name == "n"
    assert cnnc.load("\ufeff" + PROGRAM).name == "n"
    path.write_bytes(b"\xef\xbb\xbf" + b"network n {\n    input x: [3]\n    rleu\n}\n")
    err = load_error(path)
    assert (err.line, err.column) == (3, 5) and str(err).endswith("    rleu\n        ^")


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85", "\x0c", "\x1c", "\x0b"])
def test_errors_quote_the_line_the_lexer_counted(separator):
    text = f"# one{separator}two\nnetwork n {{\n    input x: [3]\n    rleu\n}}\n"
    err = load_error(text)
    assert (err.line, err.column) == (4, 5)
    assert str(err).split("\n")[1:] == ["        rleu", "        ^"]


def test_crlf_lines_are_quoted_without_the_carriage_return():
    err = load_error("network n {\r\n    input x: [3]\r\n    rleu\r\n}\r\n")
    assert (err.line, err.column) == (4 - 1, 5)
    assert "\r" not in str(err)


@pytest.mark.parametrize(
    "line",
    [
        "y = " + " " * 800_000 + "rleu",
        'y = "' + "s" * 400_000 + '" + rleu + "' + "s" * 400_000 + '"',
        "y = rleu" + " " * 800_000 + "+ 1",
        "y = " + "1 + " * 20_000 + "rleu",
        "y = rleu  # " + "c" * 800_000,
    ],
    ids=["at-the-end", "in-the-middle", "at-the-start", "many-tokens", "before-a-comment"],
)
def test_a_long_line_is_cut_around_the_column(line):
    for text, char in [(f"network n {{\n    input x: [3]\n    {line}\n}}\n", "r")]:
        err = load_error(text)
        message = str(err)
        assert len(message) < 400
        _, line, caret = message.split("\n")
        assert line[caret.index("^")] == char


@pytest.mark.parametrize(
    "statement",
    ["y = " + "a" * 800_000, 'dense("' + "s" * 800_000 + '")', "y = " + "a" * 800_000 + " + )", "dense(3, bias=" + "b" * 800_000 + ")"],
    ids=["unknown-name", "string-value", "syntax-after-a-long-name", "suggestion"],
)
def test_huge_names_and_values_are_cut_in_messages(statement):
    start = time.perf_counter()
    message = str(load_error(body(statement)))
    assert time.perf_counter() - start < 5
    assert len(message) < 1500


def test_control_characters_in_a_quoted_line_are_replaced():
    err = load_error("network n {\n    input x: [3]\n    \x1b[2Jrelu\n}\n")
    _, line, caret = str(err).split("\n")
    assert "\x1b" not in str(err) and line[caret.index("^")] == "?"


def test_quoting_keeps_the_caret_under_the_column_with_tabs_and_cuts():
    loc = Loc("f.cnn", 1, 301, "\t" + "x" * 299 + "Y" + "\tz" * 200)
    _, line, caret = str(CnncError("m", loc)).split("\n")
    assert line[caret.index("^")] == "Y" and line.startswith("    ...") and line.endswith("...")


# -- nesting --------------------------------------------------------------------------


def body(statement: str) -> str:
    return f"network n(k = 1) {{\n    input x: [3]\n    {statement}\n}}\n"


def dense_units(graph) -> list[int]:
    return [n.type.shape[-1] for n in graph.nodes() if n.op.name == "dense"]


@pytest.mark.parametrize("terms", [485, 5000])
@pytest.mark.parametrize("op", ["+", "-", "*", "//", "and", "or"])
def test_a_flat_chain_of_operators_is_not_nesting(terms, op):
    operand = "(k == 1)" if op in ("and", "or") else "k"
    graph = finishes(lambda: cnnc.load(body(f" y = {f' {op} '.join([operand] * terms)}\n    dense(3)")))
    assert dense_units(graph) == [3]


def test_flat_sums_and_logic_compute_the_right_values():
    graph = cnnc.load(body("dense(" + " + ".join(["k"] * 3000) + " - 2990 * k)"))
    assert dense_units(graph) == [10]
    cond = " and ".join(["k == 1"] * 2000) + " and k == 2 or " + " or ".join(["k == 2"] * 2000) + " or k == 1"
    graph = cnnc.load(body(f"if {cond} {{ dense(7) }} else {{ dense(9) }}"))
    assert dense_units(graph) == [7]
    graph = cnnc.load(body(f"if {cond} and false {{ dense(7) }} else {{ dense(9) }}"))
    assert dense_units(graph) == [9]


def test_a_flat_sum_of_tensors_builds_one_add_per_term():
    graph = finishes(lambda: cnnc.load(body("y = " + " + ".join(["x"] * 1000) + "\n    output out = y")))
    assert sum(1 for n in graph.nodes() if n.op.name == "add") == 999


@pytest.mark.parametrize(
    "make",
    [
        lambda n: "y = " + "[" * n + "1" + "]" * n,
        lambda n: "y = " + "-" * n + "1",
        lambda n: "y = " + "min(" * n + "1" + ")" * n,
        lambda n: "y = " + "(1 + " * n + "1" + ")" * n,
        lambda n: "y = " + "1 ** " * n + "1",
        lambda n: "{ " * n + "relu" + " }" * n,
        lambda n: "if true { " * n + "relu" + " }" * n,
        lambda n: "repeat 1 " * n + "relu",
    ],
    ids=["list", "neg", "call", "parens", "power", "group", "if", "repeat"],
)
def test_deep_nesting_is_refused_where_it_is_too_deep(make):
    cnnc.load(body(make(MAX_NESTING - 5)))  # deep, but within the limit
    for depth in (MAX_NESTING + 1, 20_000):
        text = body(make(depth))
        err = load_error(text)
        assert f"nested too deeply (more than {MAX_NESTING} levels)" in str(err)
        assert err.line == 3 and err.column > 50, err  # at the deep part, not at 1:1


def test_redundant_parentheses_are_not_nesting():
    graph = cnnc.load(body("y = " + "(" * 20_000 + "x -> relu" + ")" * 20_000 + "\n    dense(" + "(" * 20_000 + "3" + ")" * 20_000 + ")"))
    assert dense_units(graph) == [3]


def test_deep_block_calls_of_deep_expressions_are_located_where_they_ran_out():
    groups = "{ " * 40 + "b(c - 1)" + " }" * 40
    text = f"block b(c) {{\n    if c > 0 {{\n        {groups}\n    }}\n    relu\n}}\n" + body("b(60)")
    err = load_error(text)
    assert "nested too deeply" in str(err) and err.line == 3, err


def test_nested_block_calls_still_have_their_own_limit():
    text = "block b(c) {\n    b(c)\n}\n" + body("b(1)")
    assert "blocks nest more than 64 deep" in str(load_error(text))


# -- the 2^62 limit -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "literal, column",
    [(str(MAX_INT + 1), 11), ("1" * 30, 11), ("9" * 100_000, 11), ("0" * 50 + str(MAX_INT + 1), 11)],
)
def test_integer_literals_above_2_62_are_refused_where_they_are(literal, column):
    err = load_error(body(f"dense({literal})"))
    assert "is too large (integers are limited to 2^62)" in str(err)
    assert (err.line, err.column) == (3, column)
    assert len(str(err)) < 400


def test_literals_at_the_limit_are_accepted():
    text = body(f"y = {MAX_INT} - {MAX_INT} + 0000000000000000000000000000003\n    dense(y)")
    assert cnnc.load(text)
    err = load_error(body("dense(3.5e400)"))
    assert "number 3.5e400 is too large for a float" in str(err) and (err.line, err.column) == (3, 11)


def test_hyperparameters_from_python_obey_the_limit(monkeypatch):
    for value, message in [
        (MAX_INT + 1, "is too large (integers are limited to 2^62)"),
        (-(10**30), "is too large"),
        (np.uint64(2**63), "is too large"),
        (float("inf"), "inf is not a finite number"),
        (float("nan"), "nan is not a finite number"),
        ([1, [2, [10**40]]], "is too large"),
        ([1] * 20_000, "at most 10,000 elements"),
    ]:
        err = load_error(PROGRAM, c=value)
        assert "hyperparameter 'c' of n: " in str(err) and message in str(err)
        assert (err.line, err.column) == (1, 11)  # at the declaration of c


def test_deeply_nested_lists_from_python_are_refused():
    value = 1
    for _ in range(50_000):
        value = [value]
    err = load_error(PROGRAM, c=value)
    assert f"lists are nested more than {MAX_NESTING} deep" in str(err)


def test_compile_checks_hyperparameters_before_anything_else():
    with pytest.raises(CnncError, match="hyperparameter 'c' of n: .* is too large"):
        finishes(lambda: cnnc.compile(PROGRAM, c=2**70))


def test_hyperparameters_within_the_limit_still_work():
    assert dense_units(cnnc.load(PROGRAM, c=5)) == [5]
    assert dense_units(cnnc.load(PROGRAM, c=np.int64(6))) == [6]  # NumPy numbers become Python numbers
    text = "network n(c = 4, sizes = [1]) {\n    input x: [3]\n    dense(sizes[0] + c)\n}\n"
    assert dense_units(cnnc.load(text, c=np.int32(1), sizes=(np.int64(2), 3))) == [3]
    assert dense_units(cnnc.load(text, c=MAX_INT - 3, sizes=[8 - MAX_INT])) == [5]


@pytest.mark.parametrize(
    "setting, message",
    [
        (f"c={MAX_INT + 1}", "is too large (integers are limited to 2^62)"),
        ("c=" + "9" * 10_000, "is too large (integers are limited to 2^62)"),
        (f"c=[1, {MAX_INT * 4}]", "--set c: 18446744073709551616 is too large"),
        (f"c=[1, {MAX_INT + 1}]", "hyperparameter 'c' of n: 4611686018427387905 is too large"),
        ("c=[1, " + "1" * 5000 + "]", "--set c: 11111111111111111111... is too large"),
        ("c=inf", "inf is not a finite number"),
        ("c=[1e400]", "inf is not a finite number"),
        ("c=[NaN]", "nan is not a finite number"),
        ("c=" + "[" * 20_000 + "]" * 20_000, "is nested too deeply"),
        ("c=" + "[" * 500 + "]" * 500, f"lists are nested more than {MAX_NESTING} deep"),
        ("c=[" + "1," * 20_000 + "1]", "at most 10,000 elements"),
    ],
    ids=["2^62+1", "10k-digits", "list-item", "list-item-19-digits", "json-digits", "inf", "list-inf", "nan", "deep-json", "deep-list", "long-list"],
)
def test_set_values_are_checked(setting, message, tmp_path, capsys):
    model = tmp_path / "m.cnn"
    model.write_text(PROGRAM)
    err = check_fails(["check", str(model), "--set", setting], capsys)
    assert message in err
    assert len(err) < 400


def test_parse_setting_never_recurses_out():
    with pytest.raises(CnncError, match="nested too deeply"):
        parse_setting("c=" + "[" * 100_000)
    assert parse_setting(f"c={MAX_INT}") == ("c", MAX_INT)


# -- floats converted to integers obey the limit too -------------------------------


@pytest.mark.parametrize(
    "statement, column",
    [("dense(1e300)", 11), ("dense(4.0 * 2**62 * 2)", 11), ("conv(4, kernel=[1, 1e19])", 13), ("y = int(1e300)\n    dense(y)", 9)],
    ids=["attribute", "float-result", "pair-item", "int-builtin"],
)
def test_integer_valued_floats_above_2_62_are_refused(statement, column):
    err = load_error(body(statement))
    assert "is too large (integers are limited to 2^62)" in str(err)
    assert (err.line, err.column) == (3, column)
    assert len(str(err)) < 400


def test_integer_valued_floats_within_the_limit_still_work():
    assert dense_units(cnnc.load(body("dense(4.0)"))) == [4]
    assert dense_units(cnnc.load(body("dense(int(5.5))"))) == [5]


@pytest.mark.parametrize("value", [1e300, np.float64(1e300), [1, np.float64(1e300)], 1e19])
def test_float_hyperparameters_used_as_integers_are_refused(value):
    text = "network n(c = 4) {\n    input x: [3, 8, 8]\n    conv(4, kernel=c)\n}\n"
    err = load_error(text, c=value)
    assert "is too large (integers are limited to 2^62)" in str(err) and (err.line, err.column) == (3, 13)


def test_a_float_set_on_the_command_line_is_held_to_the_limit(tmp_path, capsys):
    model = tmp_path / "m.cnn"
    model.write_text(PROGRAM)
    err = check_fails(["check", str(model), "--set", "c=1e19"], capsys)
    assert "m.cnn:3:11: dense: " in err and "is too large (integers are limited to 2^62)" in err


# -- control characters never reach the terminal ------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        body('conv(4, kernel=3, pad="\x1b]0;pwned\x07\x1b[2J")'),
        'import "\x1b[2J\x1b[32mall good.cnn"\n' + PROGRAM,
        body("dense(\u202ek)"),
    ],
    ids=["string-value", "import-name", "bidi-override"],
)
def test_control_characters_in_messages_are_escaped(text):
    message = str(load_error(text))
    assert all(c.isprintable() or c == "\n" for c in message)
    assert "\\x1b" in message or "\\u202e" in message


def test_escaping_keeps_the_lines_of_a_message():
    message = str(CnncError("first\x1b[2J\nsecond\x07", Loc("a\x1b.cnn", 1, 1)))
    assert message == "a\\x1b.cnn:1:1: first\\x1b[2J\nsecond\\x07"


def test_control_characters_from_the_command_line_are_escaped(tmp_path, capsys):
    model = tmp_path / "m.cnn"
    model.write_text(PROGRAM)
    err = check_fails(["check", str(model), "--set", "c=\x1b[2J"], capsys)
    assert "\x1b" not in err and '"\\x1b[2J"' in err
    err = check_fails(["check", str(tmp_path / "\x1b[2J.cnn")], capsys)
    assert "\x1b" not in err and "no such file" in err


# -- the cost of a program, not its length, is what is limited --------------------


@pytest.mark.parametrize("statement", ["z = max(xs) + len(xs) + min(xs)", "z = xs == xs", "if [xs] != [xs] { relu }"])
def test_list_operations_cost_a_step_per_element(statement):
    xs = "[" + ",".join(["1"] * 9999) + "]"
    text = f"network n(xs = {xs}) {{\n    input x: [1, 8, 8]\n    repeat 10000 {{ repeat 10000 {{ {statement} }} }}\n}}\n"
    with pytest.raises(CnncError) as info:
        finishes(lambda: cnnc.load(text), seconds=10)
    assert "steps to build" in str(info.value) and info.value.line == 3


def test_a_list_from_python_costs_its_size_too():
    text = "network n(xs = [1]) {\n    input x: [1]\n    repeat 10000 { repeat 10000 { z = max(xs) } }\n}\n"
    with pytest.raises(CnncError, match="steps to build"):
        finishes(lambda: cnnc.load(text, xs=list(range(9999))), seconds=10)


@pytest.mark.parametrize(
    "statement",
    ["y = min(" + ",".join(["4"] * 1_000_000) + ")", "y = " + "+".join(["1"] * 1_000_000)],
    ids=["many-arguments", "flat-sum"],
)
def test_programs_of_too_many_tokens_are_refused_before_parsing(statement):
    start = time.perf_counter()
    err = load_error(body(statement))
    assert time.perf_counter() - start < 3
    assert f"more than {MAX_TOKENS:,} tokens" in str(err) and err.line == 3
    assert len(str(err)) < 400


def test_the_token_limit_admits_a_chain_of_100000_layers():
    from cnnc.frontend.parser import check_size

    chain = "network n {\n    input x: [4]\n" + "".join("    relu -> " * 100 + "relu\n" for _ in range(1000)) + "}\n"
    check_size(chain, None)  # counting alone: building it is tests/test_scaling.py's business


# -- imports ---------------------------------------------------------------------


@pytest.mark.parametrize("target", ["a" * 300, ".".join(["a"] * 5000)], ids=["long-name", "many-parts"])
def test_an_import_of_an_impossible_name_is_a_located_error(target, tmp_path):
    main_file = tmp_path / "main.cnn"
    main_file.write_text(f"import {target}\n" + PROGRAM)
    err = load_error(main_file)
    assert f"cannot import '{target[:20]}" in str(err) and (err.line, err.column) == (1, 1)
    assert len(str(err)) < 400


def test_imports_nest_at_most_100_deep(tmp_path):
    from cnnc.frontend.loader import MAX_IMPORT_DEPTH

    def write_chain(n):
        for k in range(n):
            following = f"import m{k + 1}\n" if k + 1 < n else ""
            (tmp_path / f"m{k}.cnn").write_text(following + f"block b{k} {{ relu }}\n")
        (tmp_path / "main.cnn").write_text("import m0\n" + PROGRAM)

    write_chain(MAX_IMPORT_DEPTH - 1)
    assert cnnc.load(tmp_path / "main.cnn").name == "n"
    write_chain(1200)
    err = load_error(tmp_path / "main.cnn")
    assert f"imports nest more than {MAX_IMPORT_DEPTH} deep" in str(err) and err.line == 1


# -- smaller matters -------------------------------------------------------------


def test_op_calls_take_positional_arguments_before_keywords():
    err = load_error(body("maxpool(stride=1, 2)"))
    assert "positional arguments come before keyword arguments" in str(err) and (err.line, err.column) == (3, 23)


@pytest.mark.parametrize("digits", ["\uff11", "\u0661\u0662"], ids=["fullwidth", "arabic-indic"])
def test_numbers_are_written_in_ascii_digits(digits, tmp_path, capsys):
    err = load_error(body(f"dense({digits})"))
    assert "unexpected character" in str(err) and (err.line, err.column) == (3, 11)
    assert parse_setting(f"c={digits}") == ("c", digits)  # a string, not a number
    model = tmp_path / "m.cnn"
    model.write_text(PROGRAM)
    assert "expected an integer" in check_fails(["check", str(model), "--set", f"c={digits}"], capsys)


def test_odd_names_on_the_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert "the file name is empty" in check_fails(["check", ""], capsys)
    assert "no such file: models/a{b}.cnn" in check_fails(["check", "models/a{b}.cnn"], capsys)


def test_the_network_is_named_by_a_string():
    assert "network must be the name of a network, got int" in str(load_error(PROGRAM, network=5))
