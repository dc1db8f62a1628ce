"""Dataset fingerprints follow content and structure, not where the files lie."""

from __future__ import annotations

from workbench.data.sources import dataset_fingerprint
from workbench.recipe.schema import DatasetSpec


def _spec(**fields) -> DatasetSpec:
    return DatasetSpec(path="csv", text="sentence", **fields)


def test_same_content_elsewhere_same_print_and_new_content_new_print(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.csv").write_text("sentence\nhello\n")
    (tmp_path / "b" / "x.csv").write_text("sentence\nhello\n")
    assert dataset_fingerprint(_spec(data_files="a/x.csv"), tmp_path) == dataset_fingerprint(_spec(data_files="b/x.csv"), tmp_path)
    (tmp_path / "b" / "x.csv").write_text("sentence\ngoodbye\n")
    assert dataset_fingerprint(_spec(data_files="a/x.csv"), tmp_path) != dataset_fingerprint(_spec(data_files="b/x.csv"), tmp_path)


def test_data_dir_contents_count_for_every_builder(tmp_path):
    for name, text in (("v1", "sentence\none\n"), ("v2", "sentence\ntwo\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "part.csv").write_text(text)
    assert dataset_fingerprint(_spec(data_dir="v1"), tmp_path) != dataset_fingerprint(_spec(data_dir="v2"), tmp_path)


def test_which_split_a_file_belongs_to_counts(tmp_path):
    (tmp_path / "a.csv").write_text("sentence\na\n")
    (tmp_path / "b.csv").write_text("sentence\nb\n")
    together = _spec(data_files={"train": ["a.csv", "b.csv"]})
    apart = _spec(data_files={"train": "a.csv", "validation": "b.csv"})
    assert dataset_fingerprint(together, tmp_path) != dataset_fingerprint(apart, tmp_path)


# --- hub revisions are keyed by their commit (issue 7.6) ------------------------------------------

SHA_A, SHA_B = "a" * 40, "b" * 40


def _hub_cache(root, repo_type: str, repo_id: str, **refs: str):
    """A Hugging Face cache folder as huggingface_hub lays it out: refs/<revision> holds a commit sha."""
    folder = root / f"{repo_type}s--{repo_id.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    for revision, sha in refs.items():
        (folder / "refs" / revision).write_text(sha)
        (folder / "snapshots" / sha).mkdir(parents=True, exist_ok=True)


def _keys(tmp_path, **model) -> dict[str, str]:
    from tests.helpers import recipe, write_yaml
    from workbench.plan import build_plan
    from workbench.recipe.loader import load_recipe

    document = recipe(
        "someorg/tiny-model",
        datasets={"dev": {"path": "someorg/some-data", "text": "sentence", "label": "label"}},
        steps={"evaluate": {"kind": "evaluate", "dataset": "dev"}},
    )
    document["model"].update(model)
    plan = build_plan(load_recipe(write_yaml(tmp_path / "hub.yaml", document)))
    return {"model": plan.model_fingerprint, "dev": plan.dataset_fingerprints["dev"], "evaluate": plan.steps[0].key}


def test_hub_models_and_datasets_are_keyed_by_the_commit_their_revision_points_to(tmp_path, monkeypatch):
    from workbench.hub import resolve_commit

    cache = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    _hub_cache(cache, "model", "someorg/tiny-model", main=SHA_A)
    _hub_cache(cache, "dataset", "someorg/some-data", main=SHA_A)
    assert resolve_commit("someorg/tiny-model", None) == SHA_A
    first = _keys(tmp_path)

    _hub_cache(cache, "model", "someorg/tiny-model", main=SHA_B)  # `main` moved
    moved = _keys(tmp_path)
    assert moved["model"] != first["model"] and moved["evaluate"] != first["evaluate"]
    assert moved["dev"] == first["dev"]

    _hub_cache(cache, "dataset", "someorg/some-data", main=SHA_B)
    assert _keys(tmp_path)["dev"] != first["dev"]

    # An explicit commit is the commit; a branch name that resolves to it gives the same key.
    assert _keys(tmp_path, revision=SHA_B)["model"] == _keys(tmp_path)["model"]


def test_an_option_added_later_keeps_old_keys_at_its_old_behaviour(tiny_model_dir, tmp_path):
    """finetune.accumulate came after release: at 1 (what finetune did before) it is not in the key."""
    from tests.helpers import agreement, recipe, write_yaml
    from workbench.plan import _key_params, build_plan
    from workbench.recipe.loader import load_recipe

    def finetune_key(**options: object) -> str:
        steps = {"finetune": {"kind": "finetune", "dataset": "train", "max_steps": 2, **options}}
        document = recipe(tiny_model_dir("bert"), datasets={"train": agreement(16, 1)}, steps=steps)
        plan = build_plan(load_recipe(write_yaml(tmp_path / f"r{len(options)}{options}.yaml", document)))
        assert "accumulate" not in _key_params(plan.steps[0].params, {}) or options.get("accumulate", 1) != 1
        return plan.steps[0].key

    assert finetune_key() == finetune_key(accumulate=1)
    assert finetune_key(accumulate=2) != finetune_key()
