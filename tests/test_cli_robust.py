"""The CLI never shows a traceback (issue 8, part 1): usage errors, --version, unknown --step and
--score values, data that looks like markup, export that does not overwrite, compare --json and
--changed, whole errors, cached reruns, saved attention maps."""

from __future__ import annotations

import shlex
import zipfile

import pytest

from tests.helpers import agreement, cli, cli_subprocess, plain, recipe, run_json, write_yaml


@pytest.mark.parametrize(
    "args",
    [
        ["--no-such-option"],
        ["run"],
        ["runs", "--limit", "abc"],
        ["no-such-command"],
        ["show", "1", "2", "3"],
        ["compare", "1"],
        ["run", "recipe.yaml", "--set"],
        ["export", "1"],
        ["compare", "1", "2", "--tolerance", "-1"],
    ],
    ids=lambda args: " ".join(args) or "nothing",
)
def test_usage_errors_exit_2_with_the_usage_text(args):
    result = cli(*args)
    assert result.code == 2, result.text
    assert "Error:" in result.text and "Traceback" not in result.text
    if args != ["run", "recipe.yaml", "--set"]:  # click has no command context for a dangling option
        assert "Usage:" in result.text


def test_usage_errors_from_a_real_process():
    result = cli_subprocess("runs", "--limit", "abc")
    assert result.code == 2 and "Invalid value for '--limit'" in result.err and "Traceback" not in result.err


def test_version():
    from importlib import metadata

    result = cli("--version")
    assert result.code == 0 and result.out.strip() == f"workbench {metadata.version('bertology-workbench')}"


@pytest.fixture
def finished_run(tiny_model_dir, tmp_path, store_dir):
    """A tiny finetune -> evaluate, attention (with saved maps) run; returns the recipe path."""
    steps = {
        "finetune": {"kind": "finetune", "dataset": "train", "max_steps": 2, "batch_size": 16},
        "evaluate": {"kind": "evaluate", "model": "finetune", "dataset": "dev", "timing_rounds": 1},
        "attention": {"kind": "attention", "model": "finetune", "dataset": "dev", "save_maps": 2},
    }
    path = write_yaml(tmp_path / "r.yaml", recipe(tiny_model_dir("bert"), datasets={"train": agreement(32, 1), "dev": agreement(16, 2)}, steps=steps))
    assert cli("run", path, "--store", store_dir, "-q").code == 0
    return path


def test_unknown_step_and_score_are_errors_listing_the_valid_ones(finished_run, store_dir):
    bad_step = cli("show", "latest", "--store", store_dir, "--step", "atention")
    assert bad_step.code == 2 and "--step atention: run 1 has no such step" in bad_step.text
    assert "did you mean 'attention'" in bad_step.text and "finetune, evaluate, attention" in bad_step.text
    bad_score = cli("show", "latest", "--store", store_dir, "--score", "entropy")
    assert bad_score.code == 2 and "--score entropy" in bad_score.text and "entropy_smoothed" in bad_score.text
    good = cli("show", "latest", "--store", store_dir, "--step", "attention", "--score", "sep_to_sep")
    assert good.code == 0 and "sep_to_sep" in good.text


def test_show_draws_the_saved_attention_maps_and_the_loss_curve(finished_run, store_dir):
    shown = cli("show", "latest", "--store", store_dir)
    assert shown.code == 0, shown.text
    text = plain(shown.out)
    assert "attention of example 0, layer 0, mean over heads (row: from, column: to)" in text
    assert "attention of example 0, layer 1, mean over heads" in text and "[CLS]" in text
    assert "Training loss" in text
    one = plain(cli("show", "latest", "--store", store_dir, "--step", "attention", "--map", "1:3").out)
    assert "layer 1, head 3" in one and "mean over heads" not in one
    bad = cli("show", "latest", "--store", store_dir, "--map", "7")
    assert bad.code == 2 and "layers 0..1" in bad.text


def test_a_fully_cached_rerun_is_marked(finished_run, store_dir):
    assert cli("run", finished_run, "--store", store_dir, "-q").code == 0
    listed = plain(cli("runs", "--store", store_dir).out)
    assert "all cached" in listed


def test_export_keeps_an_existing_file_and_quotes_the_overrides(finished_run, store_dir, tmp_path):
    override = "steps.evaluate.description=it's a $(test); rm -rf ~"
    assert cli("run", finished_run, "--store", store_dir, "-q", "--set", override).code == 0
    target = tmp_path / "bundle.zip"
    target.write_text("someone's bundle")
    refused = cli("export", "latest", "-o", target, "--store", store_dir)
    assert refused.code == 2 and "exists" in refused.text and "--force" in refused.text
    assert target.read_text() == "someone's bundle"
    assert cli("export", "latest", "-o", target, "--store", store_dir, "--force").code == 0
    readme = zipfile.ZipFile(target).read("README.txt").decode()
    command = next(line for line in readme.splitlines() if line.startswith("Reproduce with: "))[len("Reproduce with: "):]
    assert shlex.split(command) == ["workbench", "run", "recipe.yaml", "--set", override]


def test_compare_json_and_changed(finished_run, store_dir):
    assert cli("run", finished_run, "--store", store_dir, "-q", "--set", "steps.evaluate.batch_size=4").code == 0
    result = cli("compare", "1", "2", "--store", store_dir, "--json")
    assert result.code == 0, result.text
    comparison = result.json()
    steps = {step["step_id"]: step for step in comparison["steps"]}
    assert list(steps) == ["finetune", "evaluate", "attention"]  # run A's order
    assert steps["finetune"]["same_key"] and steps["attention"]["same_key"] and not steps["evaluate"]["same_key"]
    assert steps["attention"]["head_scores"] == []  # one cache entry: no heatmap of zeros
    names = [row["name"] for row in steps["evaluate"]["metrics"]]
    assert names[:2] == ["accuracy", "f1"]  # the order the step recorded them in
    changed = cli("compare", "1", "2", "--store", store_dir, "--json", "--changed").json()
    # only timings differ: padding changes no score
    assert [step["step_id"] for step in changed["steps"]] == ["evaluate"]
    assert {row["name"] for row in changed["steps"][0]["metrics"]} <= {"examples_per_s", "examples_per_s_iqr"}
    drawn = plain(cli("compare", "1", "2", "--store", store_dir).out)
    assert "identical (one cache entry, same inputs): finetune, attention" in drawn


TREEBANK = """# sent_id = 1
1\tthe\tthe\tDET\tDT\t_\t2\t[/red]\t_\t_
2\tcat\tcat\tNOUN\tNN\t_\t3\tnsubj\t_\t_
3\tsat\tsit\tVERB\tVBD\t_\t0\troot\t_\t_
4\t.\t.\tPUNCT\t.\t_\t3\tpunct\t_\t_

"""


def test_relations_that_look_like_markup_are_shown_as_text(tiny_model_dir, tmp_path, store_dir):
    (tmp_path / "tb.conllu").write_text(TREEBANK * 3)
    steps = {"heads": {"kind": "syntax_heads", "dataset": "tb", "min_count": 1, "js_sentences": 0}}
    document = recipe(tiny_model_dir("bert", "base"), head="base", num_labels=None,
                      datasets={"tb": {"path": "conllu", "data_files": str(tmp_path / "tb.conllu")}}, steps=steps)
    path = write_yaml(tmp_path / "tb.yaml", document)
    summary = cli("run", path, "--store", store_dir)
    assert summary.code == 0, summary.text
    assert "[/red]" in plain(summary.out)
    detail = run_json(store_dir)
    names = list(detail["steps"][0]["head_scores"])
    assert "dep_to_head:__red_" in names  # score names are safe to type and to use as file names
    assert all(set(name) <= set("abcdefghijklmnopqrstuvwxyz_:.0123456789") for name in names)
    shown = cli("show", "latest", "--store", store_dir, "--score", "dep_to_head:__red_")
    assert shown.code == 0 and "[/red]" in plain(shown.out)
    assert cli("run", path, "--store", store_dir, "-q").code == 0
    compared = cli("compare", "1", "2", "--store", store_dir)
    assert compared.code == 0 and "Traceback" not in compared.text


def test_show_prints_the_whole_error_of_a_failed_run(tiny_model_dir, tmp_path, store_dir):
    steps = {"evaluate": {"kind": "evaluate", "dataset": "dev"}}
    document = recipe(tiny_model_dir("bert"), datasets={"dev": {**agreement(8, 1), "label": "no_such_column"}}, steps=steps)
    assert cli("run", write_yaml(tmp_path / "r.yaml", document), "--store", store_dir, "-q").code == 2
    shown = plain(cli("show", "latest", "--store", store_dir).out)
    assert "has no column 'no_such_column'" in shown and "its columns are" in shown

