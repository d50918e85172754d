"""Every kind of error: golden messages with file, line, column, the source line and a caret."""

import re

import pytest

import cnnc
import cnnc.resources
from cnnc import CnncError

# name: (program, expected str(error))
GOLDEN = {
    "syntax_unclosed_paren": (
        'network n {\n    input x: [3, 8, 8]\n    conv(4, kernel=3\n}\n',
        "<string>:4:1: unexpected '}'; expected one of ')', ','\n    }\n    ^",
    ),
    "syntax_dangling_arrow": (
        'network n {\n    input x: [3, 8, 8]\n    conv(4, kernel=3) ->\n}\n',
        "<string>:4:1: unexpected '}'; expected an expression\n    }\n    ^",
    ),
    "syntax_bad_character": (
        'network n {\n    input x: [3, 8, 8]\n    conv(4, kernel=3) $ relu\n}\n',
        "<string>:3:23: unexpected character '$'\n        conv(4, kernel=3) $ relu\n                          ^",
    ),
    "syntax_missing_brace": (
        'network n {\n    input x: [3, 8, 8]\n    relu\n',
        "<string>:3:9: unexpected end of the file; expected one of '}', '!=', '%', '(', '*', '**', '+', '-', ...\n        relu\n            ^",
    ),
    "syntax_keyword_as_label": (
        'network n {\n    input x: [3]\n    if: relu\n}\n',
        "<string>:3:7: unexpected ':'; expected an expression\n        if: relu\n          ^",
    ),
    "unknown_layer": (
        'network n {\n    input x: [3, 8, 8]\n    cnv(4, kernel=3)\n}\n',
        "<string>:3:5: unknown layer or function 'cnv'; did you mean 'conv'?\n        cnv(4, kernel=3)\n        ^",
    ),
    "unknown_layer_in_chain": (
        'network n {\n    input x: [3, 8, 8]\n    conv(4, kernel=3) -> rleu\n}\n',
        "<string>:3:26: unknown layer or function 'rleu'; did you mean 'relu'?\n        conv(4, kernel=3) -> rleu\n                             ^",
    ),
    "unknown_keyword": (
        'network n {\n    input x: [3, 8, 8]\n    conv(4, kernel=3, strid=2)\n}\n',
        "<string>:3:23: conv has no argument 'strid'; did you mean 'stride'?\n        conv(4, kernel=3, strid=2)\n                          ^",
    ),
    "unknown_name": (
        'network n(width = 4) {\n    input x: [3, 8, 8]\n    conv(widht, kernel=3)\n}\n',
        "<string>:3:10: unknown name 'widht'; did you mean 'width'?\n        conv(widht, kernel=3)\n             ^",
    ),
    "unknown_tensor_attribute": (
        'network n {\n    input x: [3, 8, 8]\n    conv(x.chanels, kernel=1)\n}\n',
        "<string>:3:12: a tensor has no attribute 'chanels'; did you mean 'channels'? "
        "(tensors have channels, height, width, shape, dtype)\n        conv(x.chanels, kernel=1)\n               ^",
    ),
    "arity_too_few": (
        'network n {\n    input x: [3, 8, 8]\n    concat(x)\n}\n',
        '<string>:3:5: concat takes two or more inputs, got 1\n        concat(x)\n        ^',
    ),
    "arity_no_input": (
        'network n {\n    input x: [3]\n    y = 4\n    z = mse(x)\n}\n',
        '<string>:4:9: mse takes two or more inputs, got 1\n        z = mse(x)\n            ^',
    ),
    "attribute_bad_value": (
        'network n {\n    input x: [3, 8, 8]\n    conv(0, kernel=3)\n}\n',
        '<string>:3:10: conv: channels: expected an integer >= 1, got 0\n        conv(0, kernel=3)\n             ^',
    ),
    "attribute_bad_type": (
        'network n {\n    input x: [3, 8, 8]\n    maxpool(2, pad="same")\n}\n',
        '<string>:3:16: maxpool: pad: expected an integer, got "same"\n        maxpool(2, pad="same")\n                   ^',
    ),
    "attribute_missing": (
        'network n {\n    input x: [3, 8, 8]\n    conv(kernel=3)\n}\n',
        "<string>:3:5: conv needs argument 'channels'\n        conv(kernel=3)\n        ^",
    ),
    "attribute_bad_choice": (
        'network n {\n    input x: [3, 8, 8]\n    upsample(2, mode="cubic")\n}\n',
        '<string>:3:17: upsample: mode: expected one of "nearest", "bilinear", got "cubic"\n        upsample(2, mode="cubic")\n                    ^',
    ),
    "shape_add": (
        'network n {\n    input x: [64, 32, 32]\n    a = conv(64, kernel=3, pad=1)\n    b = x -> conv(128, kernel=3, stride=2, pad=1)\n    a + b\n}\n',
        '<string>:5:5: add: [64, 32, 32] and [128, 16, 16] differ\n        a + b\n        ^',
    ),
    "shape_dense_needs_features": (
        'network n {\n    input a: [3]\n    input b: [3]\n    y = mse(a, b)\n    fc: dense(10)\n}\n',
        '<string>:5:9: dense expects [features] or [..., features] input, got [] (in fc)\n        fc: dense(10)\n            ^',
    ),
    "shape_kernel_too_big": (
        'network n {\n    input x: [3, 4, 4]\n    conv(8, kernel=7)\n}\n',
        '<string>:3:5: conv: kernel [7, 7] (dilation [1, 1]) does not fit the padded input [3, 4, 4]\n        conv(8, kernel=7)\n        ^',
    ),
    "shape_in_block": (
        'block res(c) {\n    in + conv(c, kernel=3)\n}\nnetwork n {\n    input x: [8, 8, 8]\n    layer1: res(8)\n}\n',
        '<string>:2:5: add: [8, 8, 8] and [8, 6, 6] differ (in layer1.add)\n        in + conv(c, kernel=3)\n        ^',
    ),
    "shape_groups": (
        'network n {\n    input x: [6, 8, 8]\n    conv(8, kernel=3, groups=4)\n}\n',
        '<string>:3:5: conv: groups=4 must divide both the input channels (6) and the output channels (8)\n        conv(8, kernel=3, groups=4)\n        ^',
    ),
    "duplicate_label": (
        'network n {\n    input x: [3]\n    fc: dense(3)\n    fc: dense(3)\n}\n',
        "<string>:4:9: the name 'fc' is already used in this scope\n        fc: dense(3)\n            ^",
    ),
    "not_a_layer_after_arrow": (
        'network n {\n    input x: [3]\n    y = relu\n    x -> y\n}\n',
        "<string>:4:10: 'y' is a value, not a layer; only layers can follow '->'\n        x -> y\n             ^",
    ),
    "repeat_count": (
        'network n {\n    input x: [3]\n    repeat -1 relu\n}\n',
        "<string>:3:12: unexpected '-'; expected one of '(', a name, a number\n        repeat -1 relu\n               ^",
    ),
    "recursive_block": (
        'block forever(c) {\n    forever(c)\n}\nnetwork n {\n    input x: [3]\n    forever(1)\n}\n',
        "<string>:2:5: blocks nest more than 64 deep (does 'forever' call itself?)\n        forever(c)\n        ^",
    ),
    "condition_not_bool": (
        'network n(k = 3) {\n    input x: [3]\n    if k {\n        relu\n    }\n}\n',
        '<string>:3:8: a condition must be true or false, got 3\n        if k {\n           ^',
    ),
    "division_by_zero": (
        'network n(k = 0) {\n    input x: [3]\n    dense(6 // k)\n}\n',
        "<string>:3:11: division by zero in '//'\n        dense(6 // k)\n              ^",
    ),
    "no_input": (
        'network n {\n    relu\n}\n',
        '<string>:2:5: relu has no input: nothing comes before it\n        relu\n        ^',
    ),
    "block_shadows_op": (
        'block conv(c) {\n    relu\n}\n',
        "<string>:1:1: 'conv' is the name of a built-in op; choose another name\n    block conv(c) {\n    ^",
    ),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_message(name):
    text, expected = GOLDEN[name]
    with pytest.raises(CnncError) as info:
        cnnc.load(text)
    err = info.value
    assert str(err) == expected
    # The attributes agree with the printed location.
    assert f"{err.file}:{err.line}:{err.column}: " == expected.split(" ", 1)[0] + " "
    assert err.file == "<string>"


def test_error_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "broken.cnn"
    path.write_text("network n {\n    input x: [3]\n    dense(3, bias=maybe)\n}\n")
    with pytest.raises(CnncError) as info:
        cnnc.load(path)
    assert str(info.value).startswith(f"{path}:3:19: unknown name 'maybe'")
    assert (info.value.line, info.value.column) == (3, 19)


def test_error_in_an_imported_file_points_into_that_file(tmp_path):
    (tmp_path / "parts.cnn").write_text("block bad(c) {\n    conv(c, kernel=3, padd=1)\n}\n")
    (tmp_path / "main.cnn").write_text("import parts\nnetwork n {\n    input x: [3, 8, 8]\n    bad(4)\n}\n")
    with pytest.raises(CnncError) as info:
        cnnc.load(tmp_path / "main.cnn")
    assert info.value.file == str(tmp_path / "parts.cnn")
    assert (info.value.line, info.value.column) == (2, 23)
    assert "conv has no argument 'padd'; did you mean 'pad'?" in str(info.value)


def test_missing_import_lists_where_it_looked():
    with pytest.raises(CnncError) as info:
        cnnc.load("import nosuchfile\nnetwork n {\n    input x: [3]\n}\n")
    assert re.match(r"<string>:1:1: cannot find 'nosuchfile' to import \(nosuchfile\.cnn in .*lib\)", str(info.value))


def test_import_cycle_is_an_error_not_a_hang(tmp_path):
    (tmp_path / "a.cnn").write_text("import b\nblock x(c) { relu }\n")
    (tmp_path / "b.cnn").write_text("import a\nblock y(c) { relu }\n")
    with pytest.raises(CnncError) as info:
        cnnc.load(tmp_path / "a.cnn")
    assert "import cycle: a.cnn -> b.cnn -> a.cnn" in str(info.value)
    assert info.value.file == str(tmp_path / "b.cnn") and info.value.line == 1


def test_self_import_is_a_cycle(tmp_path):
    (tmp_path / "me.cnn").write_text('import "me.cnn"\nnetwork n {\n    input x: [3]\n}\n')
    with pytest.raises(CnncError, match="import cycle: me.cnn -> me.cnn"):
        cnnc.load(tmp_path / "me.cnn")


def test_definition_defined_twice_across_imports(tmp_path):
    (tmp_path / "one.cnn").write_text("block unit(c) { relu }\n")
    (tmp_path / "two.cnn").write_text("block unit(c) { sigmoid }\n")
    (tmp_path / "main.cnn").write_text("import one\nimport two\nnetwork n {\n    input x: [3]\n}\n")
    with pytest.raises(CnncError, match="'unit' is defined twice: here and at .*one.cnn:1:1") as info:
        cnnc.load(tmp_path / "main.cnn")
    assert info.value.line == 2


def test_unknown_hyperparameter_from_the_api():
    with pytest.raises(CnncError, match="network lenet has no hyperparameter 'clases'; did you mean 'classes'\\?"):
        cnnc.load(cnnc.resources.lib_dir() / "lenet.cnn", clases=3)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(CnncError, match="no such file"):
        cnnc.load(tmp_path / "absent.cnn")
    (tmp_path / "binary.cnn").write_bytes(b"\xff\xfe\x00network")
    with pytest.raises(CnncError, match="not UTF-8"):
        cnnc.load(tmp_path / "binary.cnn")
    with pytest.raises(CnncError, match="is a folder"):
        cnnc.load(tmp_path)


def test_tabs_keep_the_caret_under_the_column():
    with pytest.raises(CnncError) as info:
        cnnc.load("network n {\n\tinput x: [3]\n\tdense(3) -> rleu\n}\n")
    _, line, caret = str(info.value).split("\n")
    assert line[caret.index("^")] == "r"



@pytest.mark.parametrize(
    "text, where, hint",
    [
        ("netwrok n {\n    input x: [3]\n}\n", (1, 1), "'netwrok' is not a keyword; did you mean 'network'?"),
        ("network n {\n    inptu x: [3]\n}\n", (2, 11), "'inptu' is not a keyword; did you mean 'input'?"),
        ("network n {\n    input x: [3]\n    relu -> repeet 2 relu\n}\n", (3, 20), "did you mean 'repeat'?"),
    ],
)
def test_misspelt_keywords_are_named(text, where, hint):
    with pytest.raises(CnncError) as info:
        cnnc.load(text)
    assert (info.value.line, info.value.column) == where
    assert hint in str(info.value)
