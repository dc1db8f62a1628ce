"""`reproduce_bundle`: check a bundle's inputs here, re-run its recipe, and say whether every value matches.

1. The bundle is checked (reader.py); its data files and model are found and hashed against the
   provenance (locate.py) BEFORE anything runs: a missing or different file is a DataMismatch
   (exit 2) naming the file, the expected and the found sha256.
2. The recipe as run (the file's text with its overrides applied) is rewritten to point at what was
   found: each local data path becomes the absolute path of the matching file here, a local model
   the folder found, a hub model's or hub dataset's revision the commit it resolved to. Fingerprints hash content,
   not places, so the cache keys stay the bundle's (a key that differs anyway is reported).
   The recipe is written into a temporary folder and run from there into the given store, with
   every step forced: a reproduction recomputes, it never reads what an import put in the cache.
3. Every metric, head score and layer score is compared with the bundle's (verdict.py).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.bundles.importing import as_location
from workbench.bundles.layout import BundleError
from workbench.bundles.locate import Located, locate
from workbench.bundles.reader import open_bundle
from workbench.bundles.verdict import DEFAULT_ATOL, DEFAULT_RTOL, Verdict, compare_to_bundle
from workbench.store_location import StoreLocation

if TYPE_CHECKING:
    from workbench.progress import Progress


def reproduce_bundle(
    path: str | Path,
    store_location: StoreLocation | Path | str,
    data_dir: Path | None = None,
    model_dir: Path | None = None,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    *,
    progress: "Progress | None" = None,
    cwd: Path | None = None,
) -> Verdict:
    """Re-run a bundle here and compare (see the module docstring). Raises DataMismatch before running."""
    if not (rtol >= 0 and atol >= 0):
        raise BundleError(f"tolerances must be non-negative numbers, got rtol {rtol}, atol {atol}")
    location = as_location(store_location)
    with open_bundle(path) as bundle:
        provenance = bundle.provenance
        if not isinstance(provenance.get("datasets"), dict) or not isinstance(provenance.get("model"), dict):
            raise BundleError(
                f"{bundle.path.name} has no provenance of its data and model ({provenance.get('incomplete') or 'not recorded'})",
                hint="its run was recorded by an older workbench: run recipe.yaml by hand and `workbench compare` the runs",
            )
        located = locate(provenance, data_dir=_folder(data_dir, "--data-dir"), model_dir=_folder(model_dir, "--model"), cwd=cwd or Path.cwd())
        document = _recipe_here(bundle.recipe_text, bundle.run.overrides, provenance, located)
        recorded_keys = {step.step_id: step.key for step in bundle.run.steps}
        run_id, differing = _run(document, location, recorded_keys, progress)
        store = location.open(create=False)
        try:
            here = store.get_run(run_id)
        finally:
            store.close()
        verdict = compare_to_bundle(bundle.run, here, rtol=rtol, atol=atol)
    verdict.differing_keys = differing
    verdict.inputs = located.checked
    return verdict


def _folder(folder: Path | None, option: str) -> Path | None:
    if folder is None:
        return None
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise BundleError(f"{option} {folder}: no such folder")
    return folder


def _recipe_here(text: str, overrides: list[str], provenance: dict[str, Any], located: Located) -> dict[str, Any]:
    """The recipe as run, its local paths replaced by where the matching files are here."""
    from workbench.bundles.recipe_text import recipe_document

    document = recipe_document(text, overrides)
    recorded = provenance.get("datasets") or {}
    for name, spec in (document.get("datasets") or {}).items():
        if not isinstance(spec, dict):
            continue
        for field in ("data_files", "data_dir", "path"):
            if field in spec:
                spec[field] = _moved(spec[field], name, located)
        commit = (recorded.get(name) or {}).get("resolved_commit") if isinstance(recorded.get(name), dict) else None
        if commit:  # a hub dataset: the commit that was read, even if its branch moved since
            spec["revision"] = commit
    model = document.get("model")
    described = provenance.get("model") or {}
    if isinstance(model, dict):
        if located.model_folder is not None:
            model["id"] = str(located.model_folder)
        elif described.get("source") == "hub" and described.get("resolved_commit"):
            model["revision"] = described["resolved_commit"]  # the commit that ran, even if the branch moved
    return document


def _moved(value: Any, dataset: str, located: Located) -> Any:
    if isinstance(value, str):
        found = located.inputs.get((dataset, value))
        return str(found) if found is not None else value
    if isinstance(value, list):
        return [_moved(item, dataset, located) for item in value]
    if isinstance(value, dict):
        return {split: _moved(item, dataset, located) for split, item in value.items()}
    return value


def _run(
    document: dict[str, Any], location: StoreLocation, recorded_keys: dict[str, str], progress: "Progress | None"
) -> tuple[int, list[str]]:
    """Write the recipe into a temporary folder, run it with every step forced; (run id, steps whose key differs)."""
    from workbench.bundles.recipe_text import dump_recipe
    from workbench.executor import run_recipe
    from workbench.plan import build_plan
    from workbench.recipe.loader import load_recipe

    folder = Path(tempfile.mkdtemp(prefix="workbench-reproduce-"))
    try:
        recipe_file = folder / "recipe.yaml"
        try:
            recipe_file.write_text(dump_recipe(document))
        except ValueError as error:
            raise BundleError(f"the bundle's recipe cannot be rewritten for this machine: {error}") from None
        loaded = load_recipe(recipe_file)
        plan = build_plan(loaded)
        differing = [step.step_id for step in plan.steps if recorded_keys.get(step.step_id) != step.key]
        outcome = run_recipe(loaded, location.store_dir, force=["*"], progress=progress)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert outcome.run_id is not None
    return outcome.run_id, differing
