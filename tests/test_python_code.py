import ast
import json
from pathlib import Path

import numpy as np
import pytest

from workbench.data.python_code import (
    _attach_leaves,
    _inner_nodes,
    parse_code,
    read_code_dir,
    read_code_jsonl,
)
from workbench.data.tree_distances import graph_distances as _graph_distances
from workbench.data.tree_distances import tree_distances as _tree_distances
from workbench.errors import DataError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FUNCTIONS = SHARED_DATA / "cpython_stdlib_functions" / "functions.jsonl"


def distance(example, first: int, second: int) -> int:
    return int(example.distances[first, second])


def test_assignment_tree_by_hand():
    # Module -> Assign -> [Name(x) -> x, "=", BinOp -> [Name(a) -> a, "+", Name(b) -> b]]
    example = parse_code("x = a + b\n", name="assign")
    assert example.tokens == ["x", "=", "a", "+", "b"]
    assert example.parents == ["Name", "Assign", "Name", "BinOp", "Name"]
    x, equals, a, plus, b = range(5)
    assert distance(example, x, a) == 5  # x, Name, Assign, BinOp, Name, a
    assert distance(example, a, b) == 4  # a, Name, BinOp, Name, b
    assert distance(example, a, plus) == 3  # a, Name, BinOp, +
    assert distance(example, x, equals) == 3  # x, Name, Assign, =
    assert (example.distances == example.distances.T).all()
    assert (np.diag(example.distances) == 0).all()


def test_leaves_under_the_same_node_are_two_apart():
    example = parse_code("f()\n")
    assert example.tokens == ["f", "(", ")"]
    assert example.parents == ["Name", "Call", "Call"]
    assert distance(example, 1, 2) == 2


def test_comments_are_left_out_and_a_docstring_is_one_leaf():
    source = 'def f(a):  # a comment\n    """Say what f does.\n\n    At length."""\n    # another\n    return a\n'
    example = parse_code(source)
    assert example.tokens == ["def", "f", "(", "a", ")", ":", '"""Say what f does.\n\n    At length."""', "return", "a"]
    assert example.kinds[6] == "STRING"
    assert example.parents[6] == "Constant"
    assert example.spans[6] == (2, 4, 4, 17)


def test_non_ascii_source_is_placed_by_characters_not_bytes():
    # The string is 7 characters but 12 UTF-8 bytes: read as characters, the byte offsets
    # of ast would stretch the Constant over "+" and move "t" out of its Name.
    example = parse_code('s = "ééééé" + tëst\n')
    assert example.tokens == ["s", "=", '"ééééé"', "+", "tëst"]
    assert example.parents == ["Name", "Assign", "Constant", "BinOp", "Name"]
    assert example.spans[4] == (1, 14, 1, 18)


def test_positionless_nodes_take_their_childrens_range_and_decorators_their_at_sign():
    example = parse_code("@cache\ndef f(a, *, k=1):\n    return [y for y in a if y]\n")
    parent_of = dict(zip(example.tokens, example.parents))  # each of these tokens occurs once
    assert parent_of["@"] == "FunctionDef"
    assert parent_of["*"] == "arguments"
    assert (parent_of["for"], parent_of["in"], parent_of["if"]) == ("ListComp", "comprehension", "comprehension")
    assert "Module" not in example.parents


def test_sequence_edges_shorten_distances():
    tree = parse_code("x = a + b\n")
    graph = parse_code("x = a + b\n", add_sequence_edges=True)
    assert (graph.distances <= tree.distances).all()
    assert distance(graph, 0, 1) == 1  # x, = are neighbours now
    assert distance(graph, 0, 4) == 4  # x = a + b along the sequence beats 5 in the tree
    assert distance(graph, 2, 4) == 2  # a + b


def test_dataflow_edges_link_identifiers_but_not_keywords():
    source = "if a:\n    x = 1\nif b:\n    y = x\nz = x\n"
    tree = parse_code(source)
    graph = parse_code(source, add_dataflow_edges=True)
    first_x, second_x, third_x = [i for i, token in enumerate(tree.tokens) if token == "x"]
    first_if, second_if = [i for i, token in enumerate(tree.tokens) if token == "if"]
    assert distance(tree, first_x, second_x) > 1
    assert distance(graph, first_x, second_x) == 1
    assert distance(graph, second_x, third_x) == 1
    # a chain to the previous occurrence (the paper's get_sast), not a clique of all occurrences
    assert distance(graph, first_x, third_x) == 2
    assert distance(graph, first_if, second_if) == distance(tree, first_if, second_if)


def test_invalid_python_raises_data_error_with_name_and_line():
    with pytest.raises(DataError, match=r"broken: not valid Python .*line 2"):
        parse_code("x = 1\ndef (:\n", name="broken")


def test_too_deep_a_tree_is_a_data_error_not_a_crash():
    with pytest.raises(DataError, match="nested too deeply"):
        parse_code("x = " + " + ".join(["a"] * 3000) + "\n", name="deep")


def test_empty_source_has_no_leaves():
    assert parse_code("# only a comment\n").distances.shape == (0, 0)


@pytest.mark.skipif(not FUNCTIONS.is_file(), reason="shared CPython functions data not present")
def test_twenty_rows_of_the_shared_jsonl():
    examples = read_code_jsonl(FUNCTIONS, limit=20)
    rows = [json.loads(line) for line, _ in zip(FUNCTIONS.open(encoding="utf-8"), range(20))]
    assert len(examples) == 20 and examples.skipped == []
    for example, row in zip(examples, rows):
        assert example.name == row["func_name"]
        assert example.tokens == row["code_tokens"]  # the data set's own tokenize leaves
        n = len(example)
        assert example.distances.shape == (n, n)
        assert (example.distances == example.distances.T).all()
        off_diagonal = example.distances[~np.eye(n, dtype=bool)]
        assert off_diagonal.min() >= 2


@pytest.mark.skipif(not FUNCTIONS.is_file(), reason="shared CPython functions data not present")
def test_vectorised_tree_distances_agree_with_breadth_first_search():
    for example in read_code_jsonl(FUNCTIONS, limit=5):
        node_parent, _, node_spans = _inner_nodes(ast.parse(example.source), example.source.split("\n"))
        token_spans = [((line, column), (end_line, end_column)) for line, column, end_line, end_column in example.spans]
        parents = np.asarray(node_parent)
        leaves = np.asarray(_attach_leaves(node_spans, token_spans))
        tree = _tree_distances(parents, leaves)
        assert (tree == _graph_distances(parents, leaves, [])).all()  # scipy's BFS on the same tree
        assert (tree == example.distances).all()


@pytest.mark.skipif(not FUNCTIONS.is_file(), reason="shared CPython functions data not present")
def test_partition_filter():
    examples = read_code_jsonl(FUNCTIONS, partition="valid", limit=3)
    rows = [json.loads(line) for line in FUNCTIONS.open(encoding="utf-8")]
    assert [e.name for e in examples] == [row["func_name"] for row in rows if row["partition"] == "valid"][:3]


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_rows_that_do_not_parse_are_skipped_and_listed(tmp_path: Path):
    path = write_jsonl(
        tmp_path / "code.jsonl",
        [
            {"code": "def f():\n    return 1\n", "func_name": "f", "partition": "test"},
            {"code": "def g(:\n", "func_name": "g", "partition": "test"},
            {"code": "h = 2\n", "func_name": "h", "partition": "train"},
            {"code": "k = 3\n", "func_name": "k", "partition": "test"},
        ],
    )
    examples = read_code_jsonl(path, partition="test")
    assert [e.name for e in examples] == ["f", "k"]
    assert [(s.name, s.location) for s in examples.skipped] == [("g", f"{path}:2")]
    assert "not valid Python" in examples.skipped[0].reason
    assert [e.name for e in read_code_jsonl(path, limit=1)] == ["f"]


def test_too_many_leaves_are_skipped(tmp_path: Path):
    path = write_jsonl(tmp_path / "code.jsonl", [{"code": "x = a + b\n", "func_name": "long"}])
    examples = read_code_jsonl(path, max_leaves=4)
    assert len(examples) == 0
    assert "5 leaves" in examples.skipped[0].reason


@pytest.mark.parametrize(
    ("content", "keywords"),
    [
        ('{"code": "x = 1", "func_name": "a"}\n{"code": \n', ["code.jsonl:2", "not valid JSON"]),
        ('{"code": "x = 1", "func_name": "a"}\n[1, 2]\n', ["code.jsonl:2", "JSON object"]),
        ('{"cod": "x = 1", "func_name": "a"}\n', ["code.jsonl:1", "no field 'code'", "did you mean 'cod'"]),
        ('{"code": 5, "func_name": "a"}\n', ["code.jsonl:1", "should be a string"]),
    ],
)
def test_bad_jsonl_names_file_and_line(tmp_path: Path, content: str, keywords: list[str]):
    path = tmp_path / "code.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as caught:
        read_code_jsonl(path)
    for keyword in keywords:
        assert keyword in str(caught.value)


def test_unknown_partition_lists_the_ones_present(tmp_path: Path):
    path = write_jsonl(tmp_path / "code.jsonl", [{"code": "x = 1\n", "func_name": "a", "partition": "valid"}])
    with pytest.raises(DataError) as caught:
        read_code_jsonl(path, partition="vaild")
    assert "partitions present: valid" in str(caught.value)
    assert "did you mean 'valid'" in str(caught.value)


def test_missing_files(tmp_path: Path):
    with pytest.raises(DataError, match="no such JSONL file"):
        read_code_jsonl(tmp_path / "absent.jsonl")
    with pytest.raises(DataError, match="no such directory"):
        read_code_dir(tmp_path / "absent")
    with pytest.raises(DataError, match="no .py files"):
        read_code_dir(tmp_path)


def test_read_code_dir(tmp_path: Path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "a.py").write_text("import os\n", encoding="utf-8")
    (tmp_path / "pkg" / "b.py").write_bytes("# -*- coding: latin-1 -*-\nname = 'café'\n".encode("latin-1"))
    (tmp_path / "pkg" / "broken.py").write_text("def (\n", encoding="utf-8")
    examples = read_code_dir(tmp_path)
    assert [e.name for e in examples] == ["a.py", "pkg/b.py"]
    assert examples[1].tokens == ["name", "=", "'café'"]
    assert [s.name for s in examples.skipped] == ["pkg/broken.py"]
    assert [e.name for e in read_code_dir(tmp_path, limit=1)] == ["a.py"]
