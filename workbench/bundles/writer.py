"""`export_bundle`: a run as a zip that another machine can check, import and reproduce.

The layout is workbench/bundles/layout.py. The zip is written beside its destination as
`NAME.zip.partial` and renamed into place, so a bundle on disk is always complete; an existing
file is replaced only with `overwrite` (someone's shared bundle is not silently lost).

With `with_artifacts`, the run's cache entries go in under entries/<key>/ exactly as the cache
holds them (manifest.json included), after `Cache.verify` re-hashed them: a damaged entry is not
shipped. Entries hold safetensors and JSON only (masks, importance, features, attention maps,
fine-tuned and pruned models); any other file is refused, because the importer refuses it too.
"""

from __future__ import annotations

import hashlib
import shlex
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from workbench.bundles import layout
from workbench.bundles.layout import BundleError
from workbench.db.records import RunDetail
from workbench.store_location import StoreLocation

CHUNK = 1 << 20
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # members carry no time: the same run exports to the same bytes
EXPORTABLE_STATUSES = ("done", "cached")


@dataclass(frozen=True)
class ExportedBundle:
    path: Path
    members: int
    bytes: int  # of the zip file
    entries: list[str] = field(default_factory=list)  # cache keys included (with_artifacts)


def export_bundle(
    run: RunDetail,
    store: StoreLocation | Path | None,
    output: Path,
    *,
    with_artifacts: bool = False,
    overwrite: bool = False,
) -> ExportedBundle:
    """Write the bundle of `run` to `output` (.zip added if missing). `store` is needed for artifacts."""
    output = Path(output)
    if output.suffix != ".zip":
        output = output.with_suffix(".zip")
    if output.exists() and not overwrite:
        raise BundleError(f"{output} exists", hint="pass --force to overwrite it, or choose another -o")
    if run.summary.status == "running":  # its results are not all there, and an importer refuses the status
        raise BundleError(f"run {run.summary.id} is still running", hint="export it when it has finished")
    entries = _entries(run, store) if with_artifacts else {}
    provenance = bundle_provenance(run, with_artifacts=with_artifacts)
    texts = {
        layout.README: readme(run, provenance, output.name, sorted(entries)).encode(),
        layout.RECIPE: run.recipe_text.encode(),
        layout.RECIPE_AS_RUN: _as_run(run).encode(),
        layout.RESULTS: _json(_results(run)),
        layout.PROVENANCE: _json(provenance),
    }
    partial = output.with_name(output.name + ".partial")
    listed: list[dict[str, Any]] = []
    try:
        with zipfile.ZipFile(partial, "w", allowZip64=True) as archive:
            for name, data in texts.items():
                listed.append(_write_bytes(archive, name, data))
            for key, (folder, paths) in entries.items():
                for path in paths:
                    listed.append(_write_file(archive, layout.entry_member(key, path), folder / path))
            manifest = {"format": layout.FORMAT, "version": layout.FORMAT_VERSION, "members": listed}
            _write_bytes(archive, layout.MANIFEST, _json(manifest))
        partial.replace(output)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise BundleError(f"cannot write {output}: {error.strerror or error}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return ExportedBundle(output, len(listed) + 1, output.stat().st_size, sorted(entries))


def _entries(run: RunDetail, store: StoreLocation | Path | None) -> dict[str, tuple[Path, list[str]]]:
    """{key: (entry folder, paths to ship: manifest.json first)} of every finished step, all verified."""
    from workbench.cache import MANIFEST, Cache, CorruptEntry

    if store is None:
        raise BundleError("exporting artifacts needs the store whose cache holds them")
    cache_dir = store.cache_dir if isinstance(store, StoreLocation) else Path(store) / "cache"
    cache = Cache(cache_dir)
    entries: dict[str, tuple[Path, list[str]]] = {}
    for step in run.steps:
        if step.status not in EXPORTABLE_STATUSES or step.key in entries:
            continue
        if not cache.has(step.key):
            raise BundleError(
                f"step '{step.step_id}': its cache entry {step.key[:12]} is not in {cache_dir} (removed by `workbench gc`?)",
                hint="run the recipe again to recompute it, or export without --with-artifacts",
            )
        try:
            manifest = cache.verify(step.key)
        except CorruptEntry as error:
            raise BundleError(f"step '{step.step_id}': {error}", hint="`workbench verify` repairs the cache; then run the recipe again") from None
        for item in manifest:
            member = layout.entry_member(step.key, item.path)
            if not layout.ENTRY_FILE.match(member) or not layout.MEMBER_NAME.match(member):
                raise BundleError(
                    f"step '{step.step_id}': its cache entry holds {item.path}, which is neither safetensors nor JSON; "
                    "bundles carry only those (nothing in them may be executed or unpickled)",
                    hint="export without --with-artifacts",
                )
        entries[step.key] = (cache.entry_dir(step.key), [MANIFEST, *(item.path for item in manifest)])
    return entries


def bundle_provenance(run: RunDetail, *, with_artifacts: bool) -> dict[str, Any]:
    """provenance.json: what the run recorded when it started, with the environment it ran in."""
    from importlib import metadata

    from workbench.processes import HOST

    environment = run.environment
    recorded = environment.get("provenance")
    provenance: dict[str, Any] = dict(recorded) if isinstance(recorded, dict) else {}
    if not recorded or "error" in provenance:
        provenance["incomplete"] = provenance.pop("error", None) or (
            "the run was recorded before the workbench kept provenance: no model or data hashes"
        )
    try:
        version = metadata.version("bertology-workbench")
    except metadata.PackageNotFoundError:
        version = None
    provenance.update(
        run={
            "id": run.summary.id,
            "name": run.summary.name,
            "status": run.summary.status,
            "started_at": run.summary.started_at.isoformat(),
            "finished_at": run.summary.finished_at.isoformat() if run.summary.finished_at else None,
        },
        seed=run.seed,
        device={
            "requested": provenance.get("device_requested"),
            "used": run.summary.device,
            **{k: environment[k] for k in ("device_name", "threads", "torch_cuda") if k in environment},
        },
        world_size=provenance.get("world_size", 1),
        packages=environment.get("packages"),
        python=environment.get("python"),
        platform=environment.get("platform"),
        git_commit=environment.get("git_commit"),
        model_commits=environment.get("model_commits"),
        export={
            "at": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
            "by": version,
            "host": HOST,
            "with_artifacts": with_artifacts,
        },
    )
    if run.summary.imported_from:
        provenance["imported_from"] = run.summary.imported_from
    return provenance


def readme(run: RunDetail, provenance: dict[str, Any], bundle_name: str, entries: list[str]) -> str:
    """README.txt: what the bundle is and how to reproduce it, every command quoted for a POSIX shell."""
    lines = [
        f"Run {run.summary.id} of recipe '{run.recipe_name}' ({run.summary.status}), exported "
        f"{provenance['export']['at']} by bertology-workbench {provenance['export']['by'] or '(unknown version)'}.",
        "",
        "recipe.yaml         the recipe file exactly as written",
        "recipe.as_run.yaml  the recipe with the run's --set overrides applied: what ran",
        "results.json        every metric, head score and layer score, the environment and step keys",
        "provenance.json     the model's and every data file's sha256, packages, seed, device, world size",
        "manifest.json       size and sha256 of every other member",
    ]
    if entries:
        lines.append(f"entries/<key>/      {len(entries)} cache entries (safetensors and JSON): imported, they seed the cache")
    lines += [
        "",
        f"Check the data and re-run here, comparing every value: {shlex.join(['workbench', 'reproduce', bundle_name])}",
        f"Import the results into a store: {shlex.join(['workbench', 'import', bundle_name])}",
        f"Reproduce with: {reproduce_command(run.overrides)}",
    ]
    files = [
        (name, item)
        for name, dataset in (provenance.get("datasets") or {}).items()
        for item in dataset.get("inputs", [])
        if item.get("kind") == "file"
    ]
    if files:
        lines += ["", "Data files (reproduce finds them by name; --data-dir DIR says where):"]
        lines += [f"  {name}: {item['written']}  {item['bytes']} bytes  sha256 {item['sha256']}" for name, item in files]
    model = provenance.get("model") or {}
    if model.get("fingerprint"):
        lines += ["", f"Model: {model.get('id')}  ({model.get('source')}; fingerprint {model['fingerprint']})"]
    return "\n".join(lines) + "\n"


def reproduce_command(overrides: list[str]) -> str:
    """`workbench run recipe.yaml --set ...` with every value quoted for a POSIX shell."""
    return shlex.join(["workbench", "run", layout.RECIPE, *(part for o in overrides for part in ("--set", o))])


def _as_run(run: RunDetail) -> str:
    """The recipe as run: recorded at run time, else computed now (runs recorded before provenance)."""
    from workbench.bundles.recipe_text import recipe_as_run

    recorded = (run.environment.get("provenance") or {}).get("recipe", {}).get("as_run")
    if isinstance(recorded, str):
        return recorded
    computed = recipe_as_run(run.recipe_text, run.overrides)
    if computed is None:  # cannot be written faithfully: the file and the overrides say it exactly
        return run.recipe_text
    return computed


def _results(run: RunDetail) -> dict[str, Any]:
    from workbench.ui.views import run_json

    return run_json(run)


def _json(value: Any) -> bytes:
    import json

    return json.dumps(value, indent=1, default=str).encode()


def _info(name: str, size: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, ZIP_TIME)
    info.external_attr = 0o100644 << 16  # a regular file, rw-r--r--
    # Weights barely compress and deflating gigabytes is slow: safetensors are stored as they are.
    info.compress_type = zipfile.ZIP_STORED if name.endswith(".safetensors") else zipfile.ZIP_DEFLATED
    info.file_size = size
    return info


def _write_bytes(archive: zipfile.ZipFile, name: str, data: bytes) -> dict[str, Any]:
    archive.writestr(_info(name, len(data)), data)
    return {"path": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _write_file(archive: zipfile.ZipFile, name: str, path: Path) -> dict[str, Any]:
    """Stream a file into the zip, hashing exactly the bytes written."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    written = 0
    with open(path, "rb") as source, archive.open(_info(name, size), "w", force_zip64=size > 2**31) as sink:
        for block in iter(lambda: source.read(CHUNK), b""):
            digest.update(block)
            written += len(block)
            sink.write(block)
    return {"path": name, "bytes": written, "sha256": digest.hexdigest()}
