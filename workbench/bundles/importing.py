"""`import_bundle`: a bundle's run into a store (marked as imported), its cache entries into the cache.

Order matters, so that a bad bundle leaves no trace: the whole bundle is checked first
(workbench/bundles/reader.py) without writing anything; then each entry is written into a
staging folder of the cache (cache/tmp/, swept if we die), read back with the cache's own checks
(its manifest, every hash, result.json against its tensors), the run is recorded in one
transaction, and only then are the entries moved into place, one `os.replace` each, as the
executor commits its own. An entry the cache already holds is kept: same key, same inputs.

Importing a bundle trusts its results: a later run of the same recipe here loads the imported
entries instead of computing them (that is the point). `workbench reproduce` recomputes
everything instead, and `workbench run --force '*'` does too.

Importing the same bundle twice (same sha256) records no second run: the first is returned.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.bundles.layout import BundleError
from workbench.bundles.reader import Bundle, open_bundle
from workbench.store_location import StoreLocation

if TYPE_CHECKING:
    from workbench.cache import Cache
    from workbench.db.store import Store


@dataclass(frozen=True)
class ImportedBundle:
    run_id: int
    imported_from: str
    entries_added: list[str] = field(default_factory=list)  # cache keys written by this import
    entries_kept: list[str] = field(default_factory=list)  # keys the cache already had
    already_imported: bool = False  # the bundle was imported before: run_id is that run

    def lines(self) -> list[str]:
        """What the CLI prints."""
        verb = "already imported as" if self.already_imported else "imported as"
        lines = [f"{verb} run {self.run_id} ({self.imported_from})"]
        if self.entries_added or self.entries_kept:
            lines.append(
                f"cache: {len(self.entries_added)} entries added, {len(self.entries_kept)} already present"
            )
        return lines


def as_location(store: StoreLocation | Path | str) -> StoreLocation:
    """A StoreLocation from a location or a store folder (WORKBENCH_DB still names the database)."""
    if isinstance(store, StoreLocation):
        return store
    from workbench.store_location import locate_store

    return locate_store(Path(store))


def import_bundle(path: str | Path, store_location: StoreLocation | Path | str) -> ImportedBundle:
    """Check the bundle, seed the cache with its entries and record its run; see the module docstring."""
    location = as_location(store_location)
    with open_bundle(path) as bundle:
        return _import(bundle, location)


def _import(bundle: Bundle, location: StoreLocation) -> ImportedBundle:
    from workbench.cache import Cache

    origin = imported_from(bundle)
    store = location.open(create=True)
    try:
        cache = Cache(location.cache_dir)
        staged: dict[str, Path] = {}
        kept: list[str] = []
        try:
            for key in sorted(bundle.entries):
                if _usable(cache, key):
                    kept.append(key)
                else:
                    staged[key] = _stage(bundle, cache, key)
            previous = _previous_import(store, bundle.sha256)
            run_id = previous if previous is not None else _record(store, bundle, origin)
            added = [key for key, folder in staged.items() if _commit(cache, key, folder)]
        finally:
            for folder in staged.values():
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        store.close()
    return ImportedBundle(run_id, origin, added, kept + [k for k in staged if k not in added], previous is not None)


def imported_from(bundle: Bundle) -> str:
    """The line `workbench runs` shows: the bundle's file, the run it holds, where and when it was made."""
    run = bundle.run.summary
    export = bundle.provenance.get("export") if isinstance(bundle.provenance.get("export"), dict) else {}
    host = bundle.provenance.get("host") or export.get("host") or "an unknown host"
    when = export.get("at") or "at an unknown time"
    return f"{bundle.path.name}: run {run.id} of '{run.name}' on {str(host)[:80]}, exported {str(when)[:40]}"


def _usable(cache: "Cache", key: str) -> bool:
    from workbench.cache import CorruptEntry, read_result

    if not cache.has(key):
        return False
    try:
        cache.verify(key)  # every file re-hashed (a run's load hashes only the small ones): imports are rare
        read_result(cache.entry_dir(key), key)
        return True
    except CorruptEntry:  # a damaged local entry: the bundle's replaces it
        return False


def _stage(bundle: Bundle, cache: "Cache", key: str) -> Path:
    """The entry written into a fresh staging folder and read back with the cache's checks."""
    from workbench.cache import CorruptEntry, read_manifest, read_result
    from workbench.hashing import read_sha256

    staging = cache.staging_dir(key)
    try:
        bundle.extract_entry(key, staging)
        if not any((staging / "files").iterdir()):
            (staging / "files").rmdir()  # as Cache.commit leaves an entry without files
        for item in read_manifest(staging, key):
            if read_sha256(staging / item.path) != item.sha256:
                raise CorruptEntry(f"cache entry {key[:12]}: {item.path} does not match its hash")
        read_result(staging, key)
    except CorruptEntry as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise BundleError(f"bundle entry entries/{key[:12]} is not a usable cache entry: {error}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def _commit(cache: "Cache", key: str, staging: Path) -> bool:
    """Move a staged entry into place; False when a usable entry got there meanwhile (it stays)."""
    if _usable(cache, key):
        return False  # another process committed the key meanwhile: same key, same inputs
    cache.discard(key)  # a damaged entry, or a folder without a manifest, is in the way
    final = cache.entry_dir(key)
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(staging, final)
    except OSError:
        return False  # lost the race to another writer after all
    return True


def _previous_import(store: "Store", bundle_sha256: str) -> int | None:
    for run_id, environment in store.imported_runs().items():
        imported = environment.get("imported") if isinstance(environment, dict) else None
        if isinstance(imported, dict) and imported.get("bundle_sha256") == bundle_sha256:
            return run_id
    return None


def _record(store: "Store", bundle: Bundle, origin: str) -> int:
    from workbench.hashing import value_sha256

    run = bundle.run
    environment = {
        **run.environment,
        "imported": {
            "bundle": bundle.path.name,
            "bundle_sha256": bundle.sha256,
            "original_run_id": run.summary.id,
            "export": bundle.provenance.get("export"),
        },
    }
    if "provenance" not in environment and isinstance(bundle.provenance, dict):
        environment["provenance"] = bundle.provenance
    host = bundle.provenance.get("host") or (bundle.provenance.get("export") or {}).get("host") or "imported"
    return store.import_run(
        replace(run, environment=environment),
        recipe_hash=value_sha256(run.recipe_text),
        imported_from=origin,
        host=str(host),
    )
