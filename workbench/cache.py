"""Content-addressed cache of step outputs.

One entry per step key, a folder `cache/ab/cdef.../`:

    result.json         metrics, JSON data, and the names of the tensors
    tensors.safetensors head scores, layer scores and other named tensors
    files/              produced files (a saved model, feature shards), if any
    manifest.json       size and sha256 of every file above

An entry is assembled in `cache/tmp/` and moved into place with one `os.replace`, so a crash never
leaves half an entry. Reads check the manifest, every file's size, the hashes of the smallest files
that fit in HASH_ON_READ_BYTES together (result.json and score tensors; a saved multi-GB model is
not read on every rerun), and then the structure (an entry can match its manifest and still be unusable:
written by a buggy version, or its manifest rewritten); a damaged entry raises CorruptEntry and
the executor recomputes it. `Cache.verify` (workbench verify, export) re-hashes every file. Only
safetensors and JSON are read: no pickle.

`cache/locks/<key>.lock` says which process is computing a key, so that an identical run started
meanwhile waits for it instead of computing the step a second time.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from workbench.errors import StoreError
from workbench.hashing import read_sha256
from workbench.processes import HOST, LockFile, LockHolder, process_alive, process_start_time, read_lock
from workbench.step_result import StepResult

MANIFEST = "manifest.json"
RESULT = "result.json"
TENSORS = "tensors.safetensors"
TENSOR_GROUPS = ("head_scores", "layer_scores", "tensors")
TENSOR_RANKS = {"head_scores": (2, 3), "layer_scores": (1, 2)}  # [layers, heads] (or per example), [layers]
FOREIGN_STAGING_AGE_S = 7 * 24 * 3600  # staging folders of other hosts older than this are abandoned
WAIT_POLL_S = 0.25
HASH_ON_READ_BYTES = 64 << 20  # per entry, smallest files first: cheap next to reading them back

_HOST = HOST.replace("/", "_").replace("-", "_")  # safe in a folder name, and unambiguous to parse
# {key[:16]}-{host}-{pid}-{start time}-{tag}: the start time tells a reused pid from the writer.
_STAGING = re.compile(r"^(?P<key>[0-9a-f]{16})-(?P<host>[^-]+)-(?P<pid>\d+)-(?P<started>\d+)-(?P<tag>[0-9a-z]+)$")
# Folders of earlier versions: {key[:16]}-{host, dashes kept}-{pid}-{tag}.
_OLD_STAGING = re.compile(r"^(?P<key>[0-9a-f]{16})-(?P<host>.+)-(?P<pid>\d+)-(?P<tag>[0-9a-z]+)$")


class CorruptEntry(StoreError):
    """A cache entry whose files do not match its manifest, or whose content cannot be read back."""


@dataclass(frozen=True)
class EntryFile:
    path: str  # relative to the entry folder
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Commit:
    """What Cache.commit left in the cache. `won` is False when another process committed the key
    first: `manifest` and `result` are then that entry's, read back, which is what must be recorded."""

    manifest: list[EntryFile]
    result: StepResult
    won: bool


@dataclass(frozen=True)
class Waited:
    """How Cache.claim ended: with the lock held (`lock`), or with the entry committed by `holder`."""

    lock: LockFile | None
    holder: LockHolder | None
    waited_s: float


class Cache:
    def __init__(self, root: Path):
        self.root = Path(root)

    def entry_dir(self, key: str) -> Path:
        return self.root / key[:2] / key[2:]

    def has(self, key: str) -> bool:
        return (self.entry_dir(key) / MANIFEST).is_file()

    def keys(self) -> list[str]:
        """Every committed key (entries with a manifest), sorted."""
        return sorted(p.parent.parent.name + p.parent.name for p in self.root.glob(f"??/*/{MANIFEST}"))

    def entry_folders(self) -> list[Path]:
        """Every entry folder, committed or not (a folder without a manifest is damaged)."""
        return sorted(p for p in self.root.glob("??/*") if p.is_dir() and p.parent.name not in ("tmp", "locks"))

    # ---- staging and committing ------------------------------------------------------------------

    def staging_dir(self, key: str) -> Path:
        """A fresh private folder in which a step writes its files before the entry is committed."""
        started = _started_cs()
        folder = self.root / "tmp" / f"{key[:16]}-{_HOST}-{os.getpid()}-{started}-{uuid.uuid4().hex[:8]}"
        try:
            (folder / "files").mkdir(parents=True)
        except OSError as error:
            raise _write_error(error, self.root) from None
        return folder

    def stale_staging(self) -> list[Path]:
        """Staging folders nobody will finish: their process (this host) is gone, or, for another
        host, they are older than a week."""
        stale = []
        for folder in (self.root / "tmp").glob("*-*-*"):
            match = _STAGING.match(folder.name) or _OLD_STAGING.match(folder.name)
            if match is None:
                continue
            if match["host"] in (_HOST, HOST.replace("/", "_")):  # the latter: folders of earlier versions
                started = float(match.groupdict().get("started") or 0) / 100 or None  # kept in centiseconds
                if not process_alive(int(match["pid"]), started):
                    stale.append(folder)
            elif _age(folder) > FOREIGN_STAGING_AGE_S:
                stale.append(folder)
        return stale

    def sweep_staging(self) -> list[Path]:
        """Remove staging folders left by processes that no longer exist (a killed run)."""
        removed = []
        for folder in self.stale_staging():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        return removed

    def commit(self, key: str, staging: Path, result: StepResult) -> Commit:
        """Write the result into the staging folder, hash everything, and move it into place.

        If another process committed the same key first, its entry stays (readers may be using it)
        and is returned instead: identical inputs, so the same result up to timings and
        nondeterministic kernels, and the store must describe what the cache holds.
        """
        try:
            manifest = self._write(staging, result)
        except OSError as error:
            shutil.rmtree(staging, ignore_errors=True)
            raise _write_error(error, self.root) from None
        final = self.entry_dir(key)
        last_error: OSError | None = None
        for _ in range(3):
            try:
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging, final)
                return Commit(manifest, result, won=True)
            except OSError as error:  # the entry exists (another process won), or the disk refuses
                last_error = error
            if self.has(key):
                try:
                    theirs, their_manifest = self.load(key)
                except CorruptEntry:
                    self.discard(key)  # a damaged winner is no winner: put ours in its place
                    continue
                shutil.rmtree(staging, ignore_errors=True)
                return Commit(their_manifest, theirs, won=False)
            # A damaged folder without a manifest is in the way (has() never trusted it): replace it.
            self.discard(key)
        shutil.rmtree(staging, ignore_errors=True)
        if last_error is not None and last_error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise _write_error(last_error, self.root)
        raise StoreError(f"could not move the cache entry {key[:12]} into place in {self.root}")

    @staticmethod
    def _write(staging: Path, result: StepResult) -> list[EntryFile]:
        from safetensors.torch import save_file

        tensors = _flatten_tensors(result)
        if tensors:
            from safetensors import SafetensorError

            try:
                save_file(tensors, str(staging / TENSORS))
            except SafetensorError as error:  # its I/O errors are not OSErrors: recover the errno
                code = re.search(r"os error (\d+)", str(error))
                if code is None:
                    raise
                raise OSError(int(code[1]), os.strerror(int(code[1]))) from None
        summary = {
            "metrics": result.metrics,
            "data": result.data,
            "head_scores": sorted(result.head_scores),
            "layer_scores": sorted(result.layer_scores),
            "tensors": sorted(result.tensors),
        }
        (staging / RESULT).write_text(json.dumps(summary, indent=1, sort_keys=True))
        files_dir = staging / "files"
        if files_dir.is_dir() and not any(files_dir.iterdir()):
            files_dir.rmdir()
        manifest = [_describe(staging, path) for path in sorted(staging.rglob("*")) if path.is_file()]
        (staging / MANIFEST).write_text(json.dumps([vars(item) for item in manifest], indent=1))
        return manifest

    # ---- reading ---------------------------------------------------------------------------------

    def load(self, key: str) -> tuple[StepResult, list[EntryFile]]:
        """The stored result, after checking the files against the manifest (sizes; hashes of the
        small ones) and the content's shape."""
        entry = self.entry_dir(key)
        manifest = self.verify(key, hash_bytes=HASH_ON_READ_BYTES)
        result = read_result(entry, key)
        if (entry / "files").is_dir():
            result.files_dir = entry / "files"
        return result, manifest

    def verify(self, key: str, *, hash_bytes: int | None = None) -> list[EntryFile]:
        """The manifest, after checking that every file it lists is there with its size and hash.

        `hash_bytes` limits the hashing to the smallest files that fit in that many bytes together
        (the others are checked by size); None re-hashes every file.
        """
        entry = self.entry_dir(key)
        manifest = read_manifest(entry, key)
        budget = float("inf") if hash_bytes is None else hash_bytes
        for item in sorted(manifest, key=lambda item: item.bytes):
            path = entry / item.path
            if not path.is_file():
                raise CorruptEntry(f"cache entry {key[:12]}: {item.path} is missing")
            try:
                size = path.stat().st_size
                if size != item.bytes:
                    raise CorruptEntry(f"cache entry {key[:12]}: {item.path} has {size} bytes, expected {item.bytes}")
                budget -= size
                if budget >= 0 and read_sha256(path) != item.sha256:
                    raise CorruptEntry(f"cache entry {key[:12]}: {item.path} does not match its hash")
            except OSError as error:  # unreadable, or discarded by another process while we read
                raise CorruptEntry(f"cache entry {key[:12]}: {item.path} cannot be read ({error.strerror})") from None
        return manifest

    def discard(self, key: str) -> None:
        """Remove an entry (a corrupt one, or one the user forces to recompute)."""
        self.discard_folder(self.entry_dir(key), key)

    def discard_folder(self, entry: Path, key: str) -> None:
        if entry.exists():
            # Named like a staging folder, so a sweep removes it if we die before rmtree finishes.
            started = _started_cs()
            trash = self.root / "tmp" / f"{key[:16]}-{_HOST}-{os.getpid()}-{started}-trash{uuid.uuid4().hex[:8]}"
            trash.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(entry, trash)  # atomic: readers see either the entry or nothing
            except FileNotFoundError:
                return  # another process discarded it first
            shutil.rmtree(trash, ignore_errors=True)

    # ---- who computes a key ------------------------------------------------------------------------

    def lock_path(self, key: str) -> Path:
        return self.root / "locks" / f"{key}.lock"

    def claim(
        self, key: str, *, wait: bool = True, on_wait: Callable[[LockHolder], None] | None = None
    ) -> Waited:
        """Take the right to compute `key`, waiting while a live process of this store computes it.

        Returns with `lock` held (compute, commit, then `lock.release()`), or with `lock` None once
        the holder committed the entry (load it). A holder that dies releases nothing: its lock is
        broken and this process computes the step. `wait=False` returns at once with the lock or not.
        """
        lock = LockFile(self.lock_path(key))
        started = time.monotonic()
        told: LockHolder | None = None
        while True:
            try:
                holder = lock.acquire()
            except OSError as error:
                raise _write_error(error, self.root) from None
            if holder is None:
                return Waited(lock, None, time.monotonic() - started)
            if self.has(key) or not wait:
                return Waited(None, holder, time.monotonic() - started)
            if on_wait is not None and holder != told:
                on_wait(holder)
                told = holder
            time.sleep(WAIT_POLL_S)

    def sweep_locks(self) -> list[Path]:
        """Remove lock files left by processes that no longer exist (a killed run)."""
        removed = self.stale_locks()
        for path in removed:
            path.unlink(missing_ok=True)
        return removed

    def stale_locks(self) -> list[Path]:
        """Lock files whose holder (on this host) is gone, or that cannot be read and are old."""
        stale = []
        for path in (self.root / "locks").glob("*.lock"):
            holder = read_lock(path)
            if (holder is None and _age(path) > 60) or (holder is not None and holder.alive() is False):
                stale.append(path)
        return stale


# ---- reading an entry's files, trusting nothing ---------------------------------------------------


def read_manifest(entry: Path, key: str) -> list[EntryFile]:
    """The manifest of an entry folder; CorruptEntry unless it is a non-empty list of files inside the entry."""
    try:
        items = json.loads((entry / MANIFEST).read_text())
    except (OSError, ValueError) as error:
        raise CorruptEntry(f"cache entry {key[:12]} has no readable manifest ({error})") from None
    if not isinstance(items, list) or not items:
        raise CorruptEntry(f"cache entry {key[:12]} has an empty or malformed manifest")
    manifest = []
    for item in items:
        if (
            not isinstance(item, dict)
            or set(item) != {"path", "bytes", "sha256"}
            or not isinstance(item["path"], str)
            or not isinstance(item["bytes"], int)
            or isinstance(item["bytes"], bool)
            or item["bytes"] < 0
            or not isinstance(item["sha256"], str)
            or not re.fullmatch(r"[0-9a-f]{64}", item["sha256"])
        ):
            raise CorruptEntry(f"cache entry {key[:12]} has a malformed manifest item: {str(item)[:80]}")
        relative = PurePosixPath(item["path"])
        if relative.is_absolute() or ".." in relative.parts or item["path"] in ("", MANIFEST):
            raise CorruptEntry(f"cache entry {key[:12]}: the manifest names a path outside the entry: {item['path']!r}")
        manifest.append(EntryFile(item["path"], item["bytes"], item["sha256"]))
    if RESULT not in {item.path for item in manifest}:
        raise CorruptEntry(f"cache entry {key[:12]}: the manifest does not list {RESULT}")
    return manifest


def read_result(entry: Path, key: str) -> StepResult:
    """result.json and the tensors of an entry as a StepResult (numpy arrays); CorruptEntry if malformed."""
    try:
        summary = json.loads((entry / RESULT).read_text())
    except (OSError, ValueError) as error:
        raise CorruptEntry(f"cache entry {key[:12]} has an unreadable {RESULT}: {error}") from None
    problem = _summary_problem(summary)
    if problem:
        raise CorruptEntry(f"cache entry {key[:12]}: {RESULT} {problem}")
    result = StepResult(metrics=summary["metrics"], data=summary["data"])
    stored = _read_tensors(entry, key)
    for group in TENSOR_GROUPS:
        listed = set(summary[group])
        found = {name for (g, name) in stored if g == group}
        if listed != found:
            raise CorruptEntry(
                f"cache entry {key[:12]}: {RESULT} lists {group} {sorted(listed)} but {TENSORS} holds {sorted(found)}"
            )
    for (group, name), array in stored.items():
        ranks = TENSOR_RANKS.get(group)
        if ranks is not None and array.ndim not in ranks:
            raise CorruptEntry(f"cache entry {key[:12]}: {group}/{name} has shape {list(array.shape)}")
        getattr(result, group)[name] = array
    return result


def _summary_problem(summary: Any) -> str | None:
    """What is wrong with a parsed result.json, or None."""
    if not isinstance(summary, dict):
        return "is not an object"
    missing = {"metrics", "data", *TENSOR_GROUPS} - set(summary)
    if missing:
        return f"lacks {', '.join(sorted(missing))}"
    metrics = summary["metrics"]
    if not isinstance(metrics, dict) or not all(
        isinstance(value, (int, float)) and not isinstance(value, bool) for value in metrics.values()
    ):
        return "has metrics that are not numbers"
    if not isinstance(summary["data"], dict):
        return "has data that is not an object"
    for group in TENSOR_GROUPS:
        if not isinstance(summary[group], list) or not all(isinstance(name, str) for name in summary[group]):
            return f"has a {group} list that is not a list of names"
    return None


def _read_tensors(entry: Path, key: str) -> dict[tuple[str, str], Any]:
    path = entry / TENSORS
    if not path.is_file():
        return {}
    import numpy as np
    from safetensors import SafetensorError
    from safetensors.numpy import load_file  # numpy, not torch: see StepResult.to_torch

    try:
        loaded = load_file(str(path))
    except (SafetensorError, OSError, ValueError, TypeError) as error:
        raise CorruptEntry(f"cache entry {key[:12]}: {TENSORS} cannot be read ({error})") from None
    tensors = {}
    for name, array in loaded.items():
        group, _, short = name.partition("/")
        if group not in TENSOR_GROUPS or not short:
            raise CorruptEntry(f"cache entry {key[:12]}: {TENSORS} holds an unexpected tensor {name!r}")
        if array.dtype.kind not in "fiub":
            raise CorruptEntry(f"cache entry {key[:12]}: {name} has dtype {array.dtype}")
        tensors[(group, short)] = np.array(array)  # a writable copy
    return tensors


def _flatten_tensors(result: StepResult) -> dict:
    flat = {}
    for group in TENSOR_GROUPS:
        for name, tensor in getattr(result, group).items():
            tensor = tensor.detach().cpu()
            if str(tensor.dtype) == "torch.bfloat16":  # numpy, which reads the cache back, has no bfloat16
                tensor = tensor.float()
            flat[f"{group}/{name}"] = tensor.contiguous().clone()  # no shared storage
    return flat


def _describe(entry: Path, path: Path) -> EntryFile:
    return EntryFile(str(path.relative_to(entry)), path.stat().st_size, read_sha256(path))


def _started_cs() -> int:
    """This process's start time in centiseconds (0 if unknown), for staging folder names."""
    return round((process_start_time() or 0) * 100)


def _write_error(error: OSError, root: Path) -> StoreError:
    from workbench.db.health import folder_error

    return folder_error(error, root, "cache folder")


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0
