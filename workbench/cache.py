"""Content-addressed cache of step outputs.

One entry per step key, a folder `cache/ab/cdef.../`:

    result.json         metrics, JSON data, and the names of the tensors
    tensors.safetensors head scores, layer scores and other named tensors
    files/              produced files (a saved model, feature shards), if any
    manifest.json       size and sha256 of every file above

An entry is assembled in `cache/tmp/` and moved into place with one `os.replace`, so a crash never
leaves half an entry. Reads check every size and hash; a damaged entry raises CorruptEntry and the
executor recomputes it. Only safetensors and JSON are read: no pickle.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import StoreError
from workbench.hashing import read_sha256
from workbench.processes import HOST, process_alive

_HOST = HOST.replace("/", "_")  # safe in a folder name
from workbench.steps.base import StepResult

MANIFEST = "manifest.json"


class CorruptEntry(StoreError):
    """A cache entry whose files do not match its manifest."""


@dataclass(frozen=True)
class EntryFile:
    path: str  # relative to the entry folder
    bytes: int
    sha256: str


class Cache:
    def __init__(self, root: Path):
        self.root = Path(root)

    def entry_dir(self, key: str) -> Path:
        return self.root / key[:2] / key[2:]

    def has(self, key: str) -> bool:
        return (self.entry_dir(key) / MANIFEST).is_file()

    def staging_dir(self, key: str) -> Path:
        """A fresh private folder in which a step writes its files before the entry is committed."""
        folder = self.root / "tmp" / f"{key[:16]}-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        (folder / "files").mkdir(parents=True)
        return folder

    def sweep_staging(self) -> list[Path]:
        """Remove staging folders left by processes of this host that no longer exist (a killed run)."""
        removed = []
        for folder in (self.root / "tmp").glob("*-*-*-*"):
            owner, pid, _ = folder.name.rsplit("-", 2)
            if owner[17:] == _HOST and pid.isdigit() and not process_alive(int(pid)):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        return removed

    def commit(self, key: str, staging: Path, result: StepResult) -> list[EntryFile]:
        """Write the result into the staging folder, hash everything, and move it into place."""
        from safetensors.torch import save_file

        tensors = _flatten_tensors(result)
        if tensors:
            save_file(tensors, str(staging / "tensors.safetensors"))
        summary = {
            "metrics": result.metrics,
            "data": result.data,
            "head_scores": sorted(result.head_scores),
            "layer_scores": sorted(result.layer_scores),
            "tensors": sorted(result.tensors),
        }
        (staging / "result.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
        files_dir = staging / "files"
        if files_dir.is_dir() and not any(files_dir.iterdir()):
            files_dir.rmdir()
        manifest = [_describe(staging, path) for path in sorted(staging.rglob("*")) if path.is_file()]
        (staging / MANIFEST).write_text(json.dumps([vars(item) for item in manifest], indent=1))

        final = self.entry_dir(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(staging, final)
        except OSError:
            if not self.has(key):
                # A damaged folder without a manifest is in the way (has() never trusted it): replace it.
                self.discard(key)
                try:
                    os.replace(staging, final)
                    return manifest
                except OSError:
                    if not self.has(key):
                        shutil.rmtree(staging, ignore_errors=True)
                        raise
            # Another process committed the same key first; its entry has the same content.
            shutil.rmtree(staging, ignore_errors=True)
        return manifest

    def load(self, key: str) -> tuple[StepResult, list[EntryFile]]:
        """The stored result, after checking every file against the manifest."""
        entry = self.entry_dir(key)
        manifest = self.verify(key)
        try:
            summary = json.loads((entry / "result.json").read_text())
        except (OSError, ValueError) as error:
            raise CorruptEntry(f"cache entry {key[:12]} has an unreadable result.json: {error}") from None
        result = StepResult(metrics=summary["metrics"], data=summary["data"])
        if (entry / "tensors.safetensors").is_file():
            import numpy as np
            from safetensors.numpy import load_file  # numpy, not torch: see StepResult.to_torch

            for name, array in load_file(str(entry / "tensors.safetensors")).items():
                group, _, short = name.partition("/")
                getattr(result, group)[short] = np.array(array)  # a writable copy
        if (entry / "files").is_dir():
            result.files_dir = entry / "files"
        return result, manifest

    def verify(self, key: str) -> list[EntryFile]:
        entry = self.entry_dir(key)
        try:
            manifest = [EntryFile(**item) for item in json.loads((entry / MANIFEST).read_text())]
        except (OSError, ValueError, TypeError) as error:
            raise CorruptEntry(f"cache entry {key[:12]} has no readable manifest ({error})") from None
        for item in manifest:
            path = entry / item.path
            if not path.is_file():
                raise CorruptEntry(f"cache entry {key[:12]}: {item.path} is missing")
            if path.stat().st_size != item.bytes:
                raise CorruptEntry(
                    f"cache entry {key[:12]}: {item.path} has {path.stat().st_size} bytes, expected {item.bytes}"
                )
            if read_sha256(path) != item.sha256:
                raise CorruptEntry(f"cache entry {key[:12]}: {item.path} does not match its hash")
        return manifest

    def discard(self, key: str) -> None:
        """Remove an entry (a corrupt one, or one the user forces to recompute)."""
        entry = self.entry_dir(key)
        if entry.exists():
            # Named like a staging folder, so a sweep removes it if we die before rmtree finishes.
            trash = self.root / "tmp" / f"{key[:16]}-{_HOST}-{os.getpid()}-trash{uuid.uuid4().hex[:8]}"
            trash.parent.mkdir(parents=True, exist_ok=True)
            os.replace(entry, trash)  # atomic: readers see either the entry or nothing
            shutil.rmtree(trash, ignore_errors=True)


def _flatten_tensors(result: StepResult) -> dict:
    flat = {}
    for group in ("head_scores", "layer_scores", "tensors"):
        for name, tensor in getattr(result, group).items():
            flat[f"{group}/{name}"] = tensor.detach().cpu().contiguous().clone()  # no shared storage
    return flat


def _describe(entry: Path, path: Path) -> EntryFile:
    return EntryFile(str(path.relative_to(entry)), path.stat().st_size, read_sha256(path))

