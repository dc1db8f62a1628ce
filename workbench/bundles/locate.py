"""Find a bundle's data files and model here, and check them against its provenance before anything runs.

A bundle holds no data, only each file's path as the recipe wrote it, its name, size and sha256.
Where to look, in order, taking the first candidate whose content matches:

  * `--data-dir DIR` given: DIR/<the path as written, without leading ../ parts>, then DIR/<file name>.
    Only there: a folder named on purpose is not second-guessed.
  * otherwise: an absolute path as written; the path as written resolved against the current folder
    (a recipe that says ../shared/data/x.tsv works from a sibling checkout of its folder); resolved
    against the recipe's original folder, recorded in the provenance (the same machine).

Folders (a python_code data_dir, a local dataset folder) are matched file by file. A candidate that
exists with other content is a mismatch, reported (file, expected and found sha256, where) only if no
candidate matches; nothing is found, the places looked in are listed. The model likewise: a local
folder from `--model DIR`, else its path as written (cwd, then the recipe's original folder), a
`pkg:` model where the package is installed; its fingerprint (models/sources.py) must match.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from workbench.bundles.layout import BundleError
from workbench.errors import WorkbenchError
from workbench.hashing import file_sha256


class DataMismatch(BundleError):
    """A data file or model that is missing here or differs from the bundle's (exit 2, nothing ran)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(
            "the bundle's inputs are not here as they were:\n" + "\n".join(f"  {p}" for p in problems),
            hint="point --data-dir (or --model) at the original files; nothing was run",
        )


@dataclass
class Located:
    """Where each input was found: (dataset, path as written) -> path here; the model's folder, if local."""

    inputs: dict[tuple[str, str], Path] = field(default_factory=dict)
    model_folder: Path | None = None
    checked: list[str] = field(default_factory=list)  # "dataset 'dev': dev.tsv = /here/dev.tsv", for the report


def locate(provenance: dict[str, Any], *, data_dir: Path | None, model_dir: Path | None, cwd: Path) -> Located:
    """Every local input and the model, found and checked; DataMismatch listing every problem otherwise."""
    located = Located()
    problems: list[str] = []
    origin = provenance.get("recipe", {}).get("folder") if isinstance(provenance.get("recipe"), dict) else None
    for dataset, described in (provenance.get("datasets") or {}).items():
        for item in described.get("inputs", []) if isinstance(described, dict) else []:
            if not isinstance(item, dict) or item.get("kind") not in ("file", "folder"):
                continue  # a glob or hub path: nothing recorded to check it against
            found, problem = _find(item, _candidates(item, data_dir, cwd, origin))
            if problem:
                problems.append(f"dataset '{dataset}': {problem}")
            else:
                located.inputs[(dataset, item["written"])] = found  # type: ignore[assignment]
                located.checked.append(f"dataset '{dataset}': {item['written']} = {found}")
    problem = _locate_model(provenance.get("model") or {}, model_dir, cwd, origin, located)
    if problem:
        problems.append(problem)
    if problems:
        raise DataMismatch(problems)
    return located


def _candidates(item: dict[str, Any], data_dir: Path | None, cwd: Path, origin: str | None) -> list[Path]:
    written = str(item.get("written", ""))
    path = Path(written).expanduser()
    if data_dir is not None:
        inside = PurePosixPath(*[part for part in PurePosixPath(written).parts if part not in ("..", "/")])
        return _unique([data_dir / inside, data_dir / path.name])
    if path.is_absolute():
        return [path]
    places = [cwd / path] + ([Path(origin) / path] if origin else [])
    return _unique(places)


def _unique(paths: list[Path]) -> list[Path]:
    seen: list[Path] = []
    for path in paths:
        resolved = path.resolve()
        if resolved not in seen:
            seen.append(resolved)
    return seen


def _find(item: dict[str, Any], candidates: list[Path]) -> tuple[Path | None, str | None]:
    """(the first candidate with the recorded content, None) or (None, what is wrong)."""
    mismatch = None
    for candidate in candidates:
        difference = _difference(item, candidate)
        if difference is None:
            return candidate, None
        if difference != "missing" and mismatch is None:
            mismatch = difference
    if mismatch is not None:
        return None, mismatch
    looked = ", ".join(str(c) for c in candidates)
    return None, f"{item['written']}: not found (looked for {looked})"


def _difference(item: dict[str, Any], candidate: Path) -> str | None:
    """None when `candidate` holds exactly what the provenance recorded; "missing"; or the difference."""
    if item["kind"] == "file":
        if not candidate.is_file():
            return "missing"
        found = file_sha256(candidate)
        if found != item.get("sha256"):
            return f"{item['written']}: expected sha256 {item.get('sha256')}, found {found} at {candidate}"
        return None
    if not candidate.is_dir():
        return "missing"
    for entry in item.get("files", []):
        path = candidate / entry["path"]
        if not path.is_file():
            return f"{item['written']}: {entry['path']} is missing from {candidate}"
        found = file_sha256(path)
        if found != entry["sha256"]:
            return f"{item['written']}/{entry['path']}: expected sha256 {entry['sha256']}, found {found} at {path}"
    recorded = {entry["path"] for entry in item.get("files", [])}
    extra = sorted(f.relative_to(candidate).as_posix() for f in candidate.rglob("*") if f.is_file())
    extra = [name for name in extra if name not in recorded]
    if extra:
        return f"{item['written']}: {candidate} holds files the original did not ({', '.join(extra[:3])})"
    return None


def _locate_model(model: dict[str, Any], model_dir: Path | None, cwd: Path, origin: str | None, located: Located) -> str | None:
    """Check the model against its recorded fingerprint; a local one's folder goes into `located`."""
    from workbench.models.sources import folder_fingerprint

    source = model.get("source")
    expected = model.get("fingerprint")
    if source == "hub" or not expected:
        return None  # a hub model is pinned to its recorded commit instead (reproduce.py)
    if model_dir is not None:
        candidates = [model_dir]
    elif source == "package":
        folder = _package_folder(str(model["id"]))
        if folder is None:
            package = str(model["id"])[len("pkg:"):].partition("/")[0]
            return f"model {model['id']}: the Python package '{package}' is not installed here"
        candidates = [folder]
    else:
        written = Path(str(model.get("id"))).expanduser()
        candidates = [written] if written.is_absolute() else _unique([cwd / written] + ([Path(origin) / written] if origin else []))
    mismatch = None
    for candidate in candidates:
        if not (candidate / "config.json").is_file():
            continue
        try:
            found = folder_fingerprint(candidate)
        except (OSError, WorkbenchError):  # an unreadable folder, or one without model files: not the model
            continue
        if found == expected:
            if source != "package" or model_dir is not None:
                located.model_folder = candidate
            return None
        mismatch = mismatch or _model_difference(model, candidate, found)
    if mismatch:
        return mismatch
    return f"model {model.get('id')}: not found (looked in {', '.join(str(c) for c in candidates)}); pass --model DIR"


def _package_folder(model_id: str) -> Path | None:
    """The folder a `pkg:<package>/<subdir>` id names in this Python environment, or None."""
    import importlib.util

    package, _, subdir = model_id[len("pkg:"):].partition("/")
    try:
        spec = importlib.util.find_spec(package) if package else None
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / subdir


def _model_difference(model: dict[str, Any], folder: Path, found: str) -> str:
    from workbench.bundles.provenance import model_files

    recorded = {item["name"]: item["sha256"] for item in model.get("files", [])}
    here = {item["name"]: item["sha256"] for item in model_files(folder)}
    differing = sorted(name for name in set(recorded) | set(here) if recorded.get(name) != here.get(name))
    detail = "; ".join(
        f"{name}: expected {recorded.get(name) or 'no such file'}, found {here.get(name) or 'no such file'}"
        for name in differing[:3]
    )
    return f"model {model.get('id')}: {folder} has other weights (fingerprint expected {model.get('fingerprint')}, found {found}; {detail})"
