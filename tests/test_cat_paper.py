"""CAT-probing's own definitions (issue 7, preset paper): tree-sitter leaves, the upgraded tree,
the token-type filter, and the step end to end."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.analysis.cat import CatAccumulator, TypeRates, layer_cat_scores
from workbench.data.tree_sitter_code import parse_with_tree_sitter
from workbench.errors import DataError

SOURCE = 'def f(x):\n    """Doc."""\n    # a comment\n    y = x + "a b"\n    return f(y)\n'


def test_tree_sitter_leaves_are_the_papers_tokens():
    example = parse_with_tree_sitter(SOURCE, "f")
    assert example.tokens == ["def", "f", "(", "x", ")", ":", '"""Doc."""', "y", "=", "x", "+", '"a b"', "return", "f", "(", "y", ")"]
    # keywords and punctuation are typed by their text, names are identifiers, a string is ONE leaf
    assert example.kinds[:6] == ["def", "identifier", "(", "identifier", ")", ":"]
    assert example.kinds[6] == example.kinds[11] == "string"
    assert "# a comment" not in example.tokens
    assert example.parents[2] == "parameters" and example.parents[13] == "call"
    assert example.spans[7] == (4, 4, 4, 5)  # y: line 4, characters 4..5


def test_tree_distances_by_hand_and_the_upgraded_tree_adds_chains():
    plain = parse_with_tree_sitter("a = b\nb = a\n")  # module > 2 x expression_statement > assignment > leaves
    assert plain.tokens == ["a", "=", "b", "b", "=", "a"]
    assert plain.distances[0, 1] == 2  # siblings under one assignment
    assert plain.distances[0, 3] == 6  # leaf, assignment, statement, module, statement, assignment, leaf
    upgraded = parse_with_tree_sitter("a = b\nb = a\na = a\n", upgraded=True)
    a = [i for i, token in enumerate(upgraded.tokens) if token == "a"]  # 0, 5, 6, 8
    assert upgraded.distances[0, 1] == 1  # consecutive leaves
    assert upgraded.distances[a[0], a[1]] == 1  # previous occurrence of the identifier
    assert upgraded.distances[a[1], a[2]] == 1
    assert upgraded.distances[a[0], a[3]] > 1  # a chain, not a clique


def test_invalid_code_is_a_data_error():
    with pytest.raises(DataError, match="not valid Python for tree-sitter"):
        parse_with_tree_sitter("def (:\n", "broken")


def test_type_rates_follow_the_papers_count():
    # Two leaf types; attention high only between the two "x" leaves.
    rates = TypeRates(1)
    attention = np.array([[[0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]])  # [layers, n, n]
    rates.add(attention, ["x", "y", "x"])
    # pairs with an x end: 2 x-leaves * 2 * 3 = 12, high ones: row and column ends of (0,2) and (2,0) = 4
    assert rates.pairs == {"x": 12.0, "y": 6.0}
    assert rates.high[0] == {"x": 4.0, "y": 0.0}
    assert rates.frequent(1) == [["x"]]
    assert rates.frequent(5) == [["x", "y"]]  # both occur more than once per token (12, 6 > 3)


def test_a_per_layer_filter_scores_each_layer_on_its_leaves():
    rng = np.random.default_rng(0)
    attention = rng.random((2, 3, 5, 5))  # [layers, heads, n, n]
    distances = rng.integers(0, 6, (5, 5)).astype(float)
    distances = (distances + distances.T) / 2
    np.fill_diagonal(distances, 0)
    keep = [np.array([True, True, True, False, False]), np.array([False, True, True, True, True])]
    filtered = CatAccumulator(2, 3)
    filtered.add(attention, distances, keep)
    for layer, chosen in enumerate(keep):
        sub = attention[layer][:, chosen][:, :, chosen][None]
        expected = layer_cat_scores(sub, distances[chosen][:, chosen])[0]
        assert filtered.result().per_layer[layer] == pytest.approx(expected)


def test_the_paper_preset_runs_end_to_end(tiny_model_dir, write_recipe, store_dir):
    from tests.helpers import cli, run_json, steps_by_id

    data = write_recipe(
        "\n".join(
            '{"code": %s, "func_name": "f%d"}' % (__import__("json").dumps(f"def f{i}(a, b):\n    c = a + b * {i}\n    return c\n"), i)
            for i in range(6)
        ),
        "functions.jsonl",
    )
    recipe = write_recipe(
        f"""
        version: 1
        name: cat-paper
        device: cpu
        model: {{id: {tiny_model_dir("roberta", "base")}, head: base}}
        datasets:
          code: {{path: python_code, data_files: {data.name}}}
        steps:
          paper: {{kind: cat_probe, dataset: code, preset: paper, per_head: true}}
          workbench: {{kind: cat_probe, dataset: code}}
        """
    )
    result = cli("run", recipe, "--store", store_dir, "-q")
    assert result.code == 0, result.text
    steps = steps_by_id(run_json(store_dir))
    paper, workbench = steps["paper"], steps["workbench"]
    assert paper["params"]["parser"] == "tree_sitter" and paper["params"]["max_length"] == 256
    assert paper["data"]["tree"].startswith("tree_sitter, upgraded")
    assert all(len(types) == min(8, len(types)) and types for types in paper["data"]["type_filter"].values())
    assert workbench["data"]["tree"] == "ast" and "type_filter" not in workbench["data"]
    assert paper["metrics"]["examples_scored"] == workbench["metrics"]["examples_scored"] == 6
