"""Bundles that reproduce (issue 9): provenance at run time, export, import, reproduce, hostile zips.

One tiny-BERT run on a real TSV file (finetune -> evaluate, importance, prune -> attention with saved
maps) is made once for the module and exported with its artifacts; the tests import it into fresh
stores, re-run it, reproduce it, tamper with its data and take it apart into malicious zips.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import sqlite3
import stat
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import SHARED_DATA
from tests.helpers import cli, plain, results, run_json, statuses, write_yaml
from workbench.bundles import BundleError, DataMismatch, export_bundle, import_bundle, reproduce_bundle
from workbench.bundles import layout
from workbench.bundles.reader import open_bundle
from workbench.bundles.recipe_text import dump_recipe, recipe_as_run
from workbench.bundles.verdict import compare_to_bundle
from workbench.db.store import Store
from workbench.errors import WorkbenchError
from workbench.hashing import read_sha256

OVERRIDE = "steps.evaluate.description=it's 1e-4; $(x)"
STEPS = ("finetune", "evaluate", "importance", "prune", "attention")


@pytest.fixture(scope="module")
def made(tiny_model_dir, tmp_path_factory):
    """(recipe file, data file, store, bundle with artifacts) of one finished run."""
    root = tmp_path_factory.mktemp("bundle-run")
    data = root / "experiment" / "data" / "dev.tsv"
    data.parent.mkdir(parents=True)
    data.write_text("\n".join((SHARED_DATA / "glue_sst2" / "dev.tsv").read_text().splitlines()[:33]) + "\n")
    shutil.copytree(tiny_model_dir("bert"), root / "experiment" / "model")
    document = {
        "version": 1,
        "name": "bundled",
        "seed": 5,
        "device": "cpu",
        "model": {"id": "./model", "head": "sequence-classification", "num_labels": 2},
        "datasets": {"dev": {"path": "tsv", "data_files": "data/dev.tsv", "text": "sentence", "label": "label"}},
        "steps": {
            "finetune": {"kind": "finetune", "dataset": "dev", "max_steps": 2, "batch_size": 8},
            "evaluate": {"kind": "evaluate", "model": "finetune", "dataset": "dev", "timing_rounds": 1},
            "importance": {"kind": "importance", "model": "finetune", "dataset": "dev"},
            "prune": {"kind": "prune", "model": "finetune", "dataset": "dev", "heads": {0: [1]}, "batch_sizes": [2], "timing_examples": 4},
            "attention": {"kind": "attention", "model": "prune", "dataset": "dev", "save_maps": 2, "batch_size": 8},
        },
    }
    recipe_file = write_yaml(root / "experiment" / "recipe.yaml", document)
    store = root / "store"
    result = cli("run", recipe_file, "--store", store, "-q", "--set", OVERRIDE)
    assert result.code == 0, result.text
    with Store.open(store, create=False) as db:
        run = db.get_run("latest")
    bundle = export_bundle(run, store, root / "run.zip", with_artifacts=True).path
    return recipe_file, data, store, bundle


def latest(store: Path):
    with Store.open(store, create=False) as db:
        return db.get_run("latest")


# ---- provenance and export ----------------------------------------------------------------------


def test_provenance_is_recorded_when_the_run_starts(made):
    recipe_file, data, store, _ = made
    environment = latest(store).environment
    provenance = environment["provenance"]
    assert provenance["recipe"]["text"] == recipe_file.read_text()
    assert provenance["recipe"]["overrides"] == [OVERRIDE]
    as_run = yaml.safe_load(provenance["recipe"]["as_run"])
    assert as_run["steps"]["evaluate"]["description"] == "it's 1e-4; $(x)"
    (item,) = provenance["datasets"]["dev"]["inputs"]
    assert (item["name"], item["written"], item["bytes"], item["sha256"]) == ("dev.tsv", "data/dev.tsv", data.stat().st_size, read_sha256(data))
    model = provenance["model"]
    assert model["source"] == "local" and len(model["fingerprint"]) == 64
    assert {f["name"] for f in model["files"]} >= {"config.json", "model.safetensors"}
    assert (provenance["seed"], provenance["device_requested"], provenance["world_size"]) == (5, "cpu", 1)
    assert provenance["step_keys"] == {step.step_id: step.key for step in latest(store).steps}
    assert environment["packages"]["torch"] and environment["device"] == "cpu"


def test_the_bundle_lists_every_member_with_its_size_and_hash(made):
    recipe_file, _, store, bundle = made
    with zipfile.ZipFile(bundle) as archive:
        names = set(archive.namelist())
        manifest = json.loads(archive.read(layout.MANIFEST))
        assert manifest["format"] == layout.FORMAT and manifest["version"] == layout.FORMAT_VERSION
        listed = {item["path"]: item for item in manifest["members"]}
        assert set(listed) == names - {layout.MANIFEST}
        for name, item in listed.items():
            content = archive.read(name)
            assert (len(content), hashlib.sha256(content).hexdigest()) == (item["bytes"], item["sha256"])
        assert archive.read(layout.RECIPE).decode() == recipe_file.read_text()
        readme = archive.read(layout.README).decode()
        provenance = json.loads(archive.read(layout.PROVENANCE))
    assert set(layout.REQUIRED) <= names
    entries = {name.split("/")[1] for name in names if name.startswith("entries/")}
    assert entries == {step.key for step in latest(store).steps}
    assert all(name.endswith((".json", ".safetensors")) for name in names if name.startswith("entries/"))
    command = next(line for line in readme.splitlines() if line.startswith("Reproduce with: "))[len("Reproduce with: "):]
    assert shlex.split(command) == ["workbench", "run", "recipe.yaml", "--set", OVERRIDE]
    assert "workbench reproduce run.zip" in readme and "dev.tsv" in readme
    assert provenance["datasets"]["dev"]["inputs"][0]["name"] == "dev.tsv"
    assert provenance["device"]["used"] == "cpu" and provenance["packages"]["transformers"]


def test_export_refuses_to_overwrite_and_ships_only_safetensors_and_json(made, tmp_path):
    _, _, store, bundle = made
    run = latest(store)
    with pytest.raises(BundleError, match="exists"):
        export_bundle(run, store, bundle)
    # A file of another kind in a cache entry (listed in its manifest, so the entry is intact).
    entry = store / "cache" / run.steps[0].key[:2] / run.steps[0].key[2:]
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    entry = copy / "cache" / entry.relative_to(store / "cache")
    (entry / "files" / "notes.txt").write_text("hello")
    items = json.loads((entry / "manifest.json").read_text())
    items.append({"path": "files/notes.txt", "bytes": 5, "sha256": hashlib.sha256(b"hello").hexdigest()})
    (entry / "manifest.json").write_text(json.dumps(items))
    with pytest.raises(BundleError, match="neither safetensors nor JSON"):
        export_bundle(run, copy, tmp_path / "x.zip", with_artifacts=True)
    assert not (tmp_path / "x.zip").exists() and not (tmp_path / "x.zip.partial").exists()
    plain_bundle = export_bundle(run, None, tmp_path / "plain.zip")  # without artifacts no store is needed
    assert not any(n.startswith("entries/") for n in zipfile.ZipFile(plain_bundle.path).namelist())


def test_recipe_as_run_reads_back_exactly():
    text = "version: 1\nname: x\ndescription: plain\nmodel: {id: m}\nsteps: {}\n"
    as_run = recipe_as_run(text, ["description=1e-4", "model.revision=12e34"])
    assert as_run is not None and yaml.safe_load(as_run)["description"] == "1e-4"
    from workbench.recipe.yaml_source import read_yaml_value

    document, _ = read_yaml_value(as_run, "x")
    assert document["description"] == "1e-4" and document["model"]["revision"] == "12e34"
    assert recipe_as_run(text, []) == text
    for value in ("yes", "null", " padded", "007", "0x1F", "1_000"):
        assert read_yaml_value(dump_recipe({"a": value}), "x")[0] == {"a": value}


# ---- import -------------------------------------------------------------------------------------


def test_import_into_a_fresh_store_then_the_same_recipe_is_all_cached(made, tmp_path):
    recipe_file, _, store, bundle = made
    fresh = tmp_path / "fresh"
    imported = import_bundle(bundle, fresh)
    assert not imported.already_imported and len(imported.entries_added) == len(STEPS)
    runs = Store.open(fresh, create=False).list_runs()
    assert [(r.id, r.imported_from) for r in runs] == [(imported.run_id, imported.imported_from)]
    assert imported.imported_from.startswith("run.zip: run 1 of 'bundled'")
    original, copied = run_json(store, 1), run_json(fresh, imported.run_id)
    assert results(copied, skip_metrics=()) == results(original, skip_metrics=())
    assert "imported" in copied["environment"]
    assert cli("show", imported.run_id, "--store", fresh).code == 0

    again = import_bundle(bundle, fresh)  # the same bundle twice: no second run
    assert again.already_imported and again.run_id == imported.run_id and not again.entries_added

    rerun = cli("run", recipe_file, "--store", fresh, "-q", "--set", OVERRIDE)
    assert rerun.code == 0, rerun.text
    assert statuses(run_json(fresh)) == dict.fromkeys(STEPS, "cached")
    compared = cli("compare", imported.run_id, "latest", "--store", fresh)
    assert compared.code == 0 and "identical" in plain(compared.out)


def test_a_store_of_the_previous_schema_gains_the_imported_from_column(tmp_path):
    from alembic import command
    from alembic.config import Config

    from workbench.db import migrations

    database = tmp_path / "workbench.sqlite"
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{database}")
    with engine.begin() as connection:
        config = Config()
        config.set_main_option("script_location", str(migrations.HERE))
        config.attributes["connection"] = connection
        command.upgrade(config, "0003")
    engine.dispose()
    with sqlite3.connect(database) as connection:
        assert "imported_from" not in {row[1] for row in connection.execute("PRAGMA table_info(runs)")}
    with Store.open(tmp_path) as store:
        assert store.schema_revision == migrations.HEAD == "0004"
        run_id = store.start_run(name="r", recipe_text="t", recipe_path=None, recipe_hash="a" * 64, seed=1,
                                 device="cpu", overrides=[], environment={})
        assert store.list_runs()[0].id == run_id and store.list_runs()[0].imported_from is None


# ---- reproduce ----------------------------------------------------------------------------------


def test_reproduce_finds_the_data_by_name_and_every_value_reproduces(made, tmp_path, monkeypatch):
    _, data, _, bundle = made
    elsewhere = tmp_path / "my-data"
    elsewhere.mkdir()
    shutil.copy(data, elsewhere / "dev.tsv")  # only the name is the same
    monkeypatch.chdir(tmp_path)
    verdict = reproduce_bundle(bundle, tmp_path / "here", data_dir=elsewhere)
    assert verdict.reproduced, [vars(check) for check in verdict.failures]
    assert verdict.differing_keys == []  # same content, same keys, wherever the files lie
    assert verdict.inputs == [f"dataset 'dev': data/dev.tsv = {elsewhere / 'dev.tsv'}"]
    kinds = {check.kind for check in verdict.checks}
    assert kinds == {"metric", "head score", "layer score"} and all(check.ok for check in verdict.checks)
    assert "evaluate.examples_per_s" in verdict.excluded and "prune.speedup_bs2" in verdict.excluded
    assert not any(check.name.startswith(("examples_per_s", "speedup")) for check in verdict.checks)
    here = latest(tmp_path / "here")
    assert {step.status for step in here.steps} == {"done"}  # recomputed, not loaded
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(verdict.table())
    assert "✓" in console.export_text() and "✗" not in console.export_text()


def test_a_tampered_data_file_is_reported_before_anything_runs(made, tmp_path):
    _, data, _, bundle = made
    changed = tmp_path / "data"
    changed.mkdir()
    (changed / "dev.tsv").write_bytes(data.read_bytes().replace(b"\t1\n", b"\t0\n", 1))
    with pytest.raises(DataMismatch) as raised:
        reproduce_bundle(bundle, tmp_path / "here", data_dir=changed)
    message = str(raised.value)
    assert "dataset 'dev': data/dev.tsv: expected sha256 " + read_sha256(data) in message
    assert f"found {read_sha256(changed / 'dev.tsv')}" in message and isinstance(raised.value, WorkbenchError)
    assert not (tmp_path / "here").exists()  # nothing ran, no store was made
    (changed / "dev.tsv").unlink()
    with pytest.raises(DataMismatch, match="not found"):
        reproduce_bundle(bundle, tmp_path / "here", data_dir=changed)


def test_the_verdict_names_the_largest_difference(made):
    from dataclasses import replace

    from workbench.db.records import HeadScores

    with open_bundle(made[3]) as bundle:
        original = bundle.run
    steps = []
    for step in original.steps:
        if step.step_id == "importance":
            grid = step.head_scores[0]
            values = [list(row) for row in grid.values]
            values[1][2] += 0.5
            step = replace(step, head_scores=[HeadScores(grid.name, values), *step.head_scores[1:]])
        if step.step_id == "evaluate":
            step = replace(step, metrics={**step.metrics, "accuracy": step.metrics["accuracy"] + 0.25})
        steps.append(step)
    verdict = compare_to_bundle(original, replace(original, steps=steps), rtol=1e-4, atol=1e-6)
    failed = {(c.step, c.name): c for c in verdict.failures}
    assert set(failed) == {("importance", original.step("importance").head_scores[0].name), ("evaluate", "accuracy")}
    assert failed[("evaluate", "accuracy")].max_abs_diff == pytest.approx(0.25)
    assert "layer 1, head 2" in failed[("importance", original.step("importance").head_scores[0].name)].note
    assert not verdict.reproduced and verdict.summary_lines()[0].startswith("NOT reproduced: 2 of")


# ---- hostile bundles ----------------------------------------------------------------------------


def members_of(bundle: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(bundle) as archive:
        return {name: archive.read(name) for name in archive.namelist() if name != layout.MANIFEST}


def written(members: dict[str, bytes], target: Path, *, add: tuple = (), listed: dict[str, bytes] | None = None) -> Path:
    """A bundle of `members` whose manifest.json lists `listed` (default: the members, with true hashes),
    plus raw `add`ed (ZipInfo, bytes) pairs that are not listed: exactly one check fails at a time."""
    listed = members if listed is None else listed
    manifest = {
        "format": layout.FORMAT,
        "version": layout.FORMAT_VERSION,
        "members": [{"path": n, "bytes": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in listed.items()],
    }
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        for info, data in add:
            archive.writestr(info, data)
        archive.writestr(layout.MANIFEST, json.dumps(manifest))
    return target


def entry_key(bundle: Path, step: str) -> str:
    results_ = json.loads(members_of(bundle)[layout.RESULTS])
    return next(s["key"] for s in results_["steps"] if s["id"] == step)


def with_entry_file(bundle: Path, target: Path, step: str, path: str, data: bytes) -> Path:
    """One file of a step's entry replaced (or added), both manifests updated: only its content is wrong."""
    key = entry_key(bundle, step)
    members = members_of(bundle)
    own = [item for item in json.loads(members[f"entries/{key}/manifest.json"]) if item["path"] != path]
    own.append({"path": path, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    members[f"entries/{key}/manifest.json"] = json.dumps(own).encode()
    members[f"entries/{key}/{path}"] = data
    return written(members, target)


PICKLE = b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x94\x93\x94."


def malicious(kind: str, bundle: Path, target: Path, monkeypatch) -> tuple[Path, str]:
    """(a bundle with one kind of attack, a phrase the refusal must contain)."""
    members = members_of(bundle)
    extra = {
        "zip-slip": ("entries/../../evil.json", "climbs out"),
        "absolute": ("/tmp/evil.json", "absolute"),
        "duplicate": (layout.RESULTS, "appears twice"),
        "case-duplicate": ("README.TXT", "appears twice"),
        "unlisted": (f"entries/{entry_key(bundle, 'evaluate')}/files/extra.json", "not listed"),
    }
    if kind in extra:
        name, phrase = extra[kind]
        return written(members, target, add=((zipfile.ZipInfo(name), b"{}"),)), phrase
    if kind == "symlink":
        info = zipfile.ZipInfo("README2.txt")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        return written(members, target, add=((info, b"/etc/passwd"),)), "symbolic link"
    if kind == "listed-but-absent":
        listed = dict(members)
        del members[layout.README]
        return written(members, target, listed=listed), "does not hold"
    if kind == "oversize":
        monkeypatch.setattr(layout, "MAX_MEMBER_BYTES", 10_000)
        return bundle, "more than a member may be"
    if kind == "too-many":
        monkeypatch.setattr(layout, "MAX_MEMBERS", 5)
        return bundle, "more than a bundle may have"
    if kind == "bad-hash":
        listed = dict(members)
        members[layout.RESULTS] = members[layout.RESULTS].replace(b'"accuracy": 0', b'"accuracy": 1', 1)
        assert members[layout.RESULTS] != listed[layout.RESULTS]
        return written(members, target, listed=listed), "does not match its sha256"
    if kind == "tensors-not-safetensors":
        return with_entry_file(bundle, target, "importance", "tensors.safetensors", PICKLE + b"\x00" * 64), "not a safetensors file (a Python pickle)"
    if kind == "pickle-named-bin":
        return with_entry_file(bundle, target, "finetune", "files/model/pytorch_model.bin", PICKLE), "pickle format"
    if kind == "pickle-named-json":
        return with_entry_file(bundle, target, "finetune", "files/model/config.json", PICKLE), "a Python pickle"
    if kind == "foreign-entry":
        key = entry_key(bundle, "evaluate")
        members = {(name.replace(key, "f" * 64) if name.startswith("entries/") else name): d for name, d in members.items()}
        return written(members, target), "not the cache entry of any step"
    if kind == "not-a-zip":
        target.write_bytes(b"PK\x03\x04 this is no zip")
        return target, "not a readable zip"
    raise AssertionError(kind)


ATTACKS = ["zip-slip", "absolute", "symlink", "duplicate", "case-duplicate", "unlisted", "listed-but-absent", "oversize",
           "too-many", "bad-hash", "tensors-not-safetensors", "pickle-named-bin", "pickle-named-json", "foreign-entry", "not-a-zip"]


@pytest.mark.parametrize("kind", ATTACKS)
def test_a_malicious_bundle_is_refused_and_nothing_is_written(made, tmp_path, monkeypatch, kind):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name we write on purpose
        hostile, phrase = malicious(kind, made[3], tmp_path / "hostile.zip", monkeypatch)
    store = tmp_path / "store"
    with pytest.raises(BundleError) as raised:
        import_bundle(hostile, store)
    assert phrase in str(raised.value), str(raised.value)
    assert isinstance(raised.value, WorkbenchError)  # the CLI's exit code 2
    assert not store.exists()  # no database, no cache, no staging folder
    assert not (tmp_path / "evil.json").exists() and not Path("/tmp/evil.json").exists()
    with pytest.raises(BundleError):
        reproduce_bundle(hostile, store)
    assert not store.exists()


def test_a_damaged_cache_entry_in_the_bundle_is_refused_before_the_store_is_touched(made, tmp_path):
    key = entry_key(made[3], "importance")
    with zipfile.ZipFile(made[3]) as archive:
        summary = json.loads(archive.read(f"entries/{key}/result.json"))
    summary["head_scores"].append("invented")  # result.json lists a tensor the file does not hold
    hostile = with_entry_file(made[3], tmp_path / "h.zip", "importance", "result.json", json.dumps(summary).encode())
    with pytest.raises(BundleError, match="does not hold"):
        import_bundle(hostile, tmp_path / "store")
    assert not (tmp_path / "store").exists()


def test_dense_export_of_the_pruned_step(made, tmp_path):
    import torch
    import transformers

    from workbench.models.dense import export_dense_model
    from workbench.models.loading import load_model

    _, _, store, _ = made
    run = latest(store)
    exported = export_dense_model(run, "prune", tmp_path / "dense", store=store)
    assert exported.pruned_heads == {0: [1]} and exported.family == "bert"
    config = json.loads((tmp_path / "dense" / "config.json").read_text())
    assert "workbench" not in config
    prune = run.step("prune")
    compact = load_model(str(store / "cache" / prune.key[:2] / prune.key[2:] / "files" / "model"), head="base")
    assert compact.model.bert.encoder.layer[0].attention.self.query.out_features == 24  # still compact
    dense = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "dense")
    assert dense.bert.encoder.layer[0].attention.self.query.out_features == 32
    ids = torch.tensor([[2, 45, 99, 7, 3]])
    with torch.no_grad():
        assert torch.allclose(dense(input_ids=ids).logits, compact.model(input_ids=ids).logits, atol=1e-5)
    with pytest.raises(WorkbenchError, match="not empty"):
        export_dense_model(run, "prune", tmp_path / "dense", store=store)
