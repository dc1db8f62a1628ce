"""The syntax_heads step (Clark et al. 2019) end to end on a tiny BERT and a generated treebank."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.executor import run_recipe
from workbench.progress import SilentProgress
from workbench.recipe.loader import load_recipe

WORDS = ["the", "dog", "unaffable", "sees", "a", "bookkeeper", "runs", "home", "quizzical", "cat"]


def chain_treebank(path, count: int, seed: int, long_sentence: bool = True):
    """Every word's head is the word before it (word 1 is the root); relations alternate nsubj / obj.

    The fixed offset -1 therefore finds every head: the baseline is exactly 1.0. One sentence has a
    single `amod` arc (a rare relation) and, optionally, one sentence is far longer than max_length.
    """
    rng = random.Random(seed)
    blocks = []
    for number in range(count):
        length = 40 if long_sentence and number == 3 else rng.randint(3, 7)
        lines = [f"# sent_id = c{number}"]
        for index in range(1, length + 1):
            relation = "root" if index == 1 else ("nsubj" if index % 2 else "obj")
            if number == 0 and index == 2:
                relation = "amod"
            head = index - 1
            form = rng.choice(WORDS)
            lines.append("\t".join([str(index), form, form, "NOUN", "NN", "_", str(head), relation, "_", "_"]))
        blocks.append("\n".join(lines) + "\n")
    path.write_text("\n".join(blocks) + "\n")
    return path


@pytest.fixture
def clark_recipe(tmp_path, tiny_model_dir, write_recipe):
    def make(extra: str = "", count: int = 24) -> object:
        chain_treebank(tmp_path / "chain.conllu", count, seed=5)
        return write_recipe(
            f"""
            version: 1
            name: clark-test
            seed: 1
            model: {{id: {tiny_model_dir('bert', 'base')}, head: base}}
            datasets:
              tb: {{path: conllu, data_files: chain.conllu, max_length: 24}}
            steps:
              heads:
                kind: syntax_heads
                dataset: tb
                batch_size: 5
                min_count: 10
                js_sentences: 6
            {extra}
            """
        )

    return make


def _run(path, store_dir):
    return run_recipe(load_recipe(path), store_dir, progress=SilentProgress())


def test_best_heads_table_agrees_with_head_scores(clark_recipe, store_dir):
    outcome = _run(clark_recipe(), store_dir)
    result = outcome.step("heads").result
    metrics, data = result.metrics, result.data
    assert metrics["sentences"] == 24 and metrics["sentences_truncated"] == 1
    assert metrics["sentences_scored"] == 23

    assert set(result.head_scores) == {f"{d}:{r}" for d in ("dep_to_head", "head_to_dep") for r in ("all", "nsubj", "obj")}
    for grid in result.head_scores.values():
        assert grid.shape == (2, 4) and bool(((grid >= 0) & (grid <= 1)).all())
    assert data["rare"] == {"amod": 1}
    assert data["counts"]["nsubj"] + data["counts"]["obj"] + 1 == metrics["arcs"]

    rows = {row["relation"]: row for row in data["table"]}
    assert list(rows) == ["all", *sorted(["nsubj", "obj"], key=lambda r: -data["counts"][r])]
    for name, row in rows.items():
        for direction, label in (("dep_to_head", "dep_to_head"), ("head_to_dep", "head_to_dep")):
            grid = result.head_scores[f"{label}:{name}"]
            best = row[direction]
            assert best["accuracy"] == pytest.approx(float(grid.max()))
            assert float(grid[best["layer"], best["head"]]) == pytest.approx(best["accuracy"])
        assert row["best"]["accuracy"] == pytest.approx(max(row["dep_to_head"]["accuracy"], row["head_to_dep"]["accuracy"]))
        assert metrics[f"best:{name}"] == pytest.approx(row["best"]["accuracy"])
        # Every head is the previous word: offset -1 is a perfect baseline.
        assert row["baseline"] == {"offset": -1, "accuracy": 1.0}
    assert metrics["baseline:all"] == 1.0

    # Jensen-Shannon distances of the 8 heads and their MDS map.
    js = result.tensors["js_divergence"]
    assert js.shape == (8, 8) and torch.allclose(js, js.T) and bool((js.diagonal() == 0).all())
    assert bool((js[~torch.eye(8, dtype=torch.bool)] > 0).all())
    points = data["mds"]["points"]
    assert len(points) == 8 and {(p["layer"], p["head"]) for p in points} == {(l, h) for l in range(2) for h in range(4)}
    assert data["mds"]["sentences"] == metrics["js_sentences"] <= 6
    assert np.isfinite(np.array([[p["x"], p["y"]] for p in points])).all()


def test_forced_attention_to_the_previous_word_scores_one(clark_recipe, store_dir, monkeypatch):
    """Force every head to attend from each sub-token to the one before it: dep->head is then exact
    for every arc of the chain treebank whose words are single pieces (and for all arcs overall, as a
    word's first piece attends to the previous word's last piece)."""
    import workbench.models.attention as attention

    original = attention._eager_attention

    def previous_token(*args, **kwargs):  # the eager path's own signature, whatever it grows
        output, probs = original(*args, **kwargs)
        forced = torch.zeros_like(probs)
        seq = probs.shape[-1]
        forced[..., torch.arange(1, seq), torch.arange(0, seq - 1)] = 1.0
        forced[..., 0, 0] = 1.0
        return output, forced

    monkeypatch.setattr(attention, "_eager_attention", previous_token)
    outcome = _run(clark_recipe(), store_dir)
    result = outcome.step("heads").result
    grid = result.head_scores["dep_to_head:all"]
    assert torch.allclose(grid, torch.ones_like(grid))


def test_named_relations_are_reported_even_when_rare(clark_recipe, store_dir):
    """`relations:` names nsubj (frequent), amod (1 arc, under min_count) and iobj (no arc at all)."""
    path = clark_recipe()
    path.write_text(path.read_text().replace("js_sentences: 6", "js_sentences: 0\n    relations: [nsubj, amod, iobj]"))
    result = _run(path, store_dir).step("heads").result
    data = result.data
    assert set(result.head_scores) == {f"{d}:{r}" for d in ("dep_to_head", "head_to_dep") for r in ("all", "nsubj", "amod")}
    rows = {row["relation"]: row for row in data["table"]}
    assert list(rows) == ["all", "nsubj", "amod"]
    assert rows["amod"]["count"] == 1 and rows["amod"]["rare"] is True
    assert rows["nsubj"]["rare"] is False and "rare" not in rows["all"]
    assert rows["amod"]["baseline"] == {"offset": -1, "accuracy": 1.0}
    assert "best:amod" in result.metrics and "best:obj" not in result.metrics
    assert data["rare"] == {"iobj": 0}  # named, but never seen: listed with no head scores
    assert result.metrics["arcs"] > data["counts"]["nsubj"] + data["counts"]["amod"]  # "all" still counts obj arcs


def test_syntax_heads_needs_a_treebank(tiny_model_dir, write_recipe):
    path = write_recipe(
        f"""
        version: 1
        name: clark-bad
        model: {{id: {tiny_model_dir('bert', 'base')}, head: base}}
        datasets:
          text: {{path: agreement, size: 10, text: sentence}}
        steps:
          heads: {{kind: syntax_heads, dataset: text}}
        """
    )
    with pytest.raises(WorkbenchError, match="conllu"):
        load_recipe(path)


def test_offsets_must_be_distinct(clark_recipe):
    path = clark_recipe()
    text = path.read_text().replace("js_sentences: 6", "js_sentences: 6\n    offsets: [-1, -1]")
    path.write_text(text)
    with pytest.raises(WorkbenchError, match="distinct offsets"):
        load_recipe(path)

