"""Content hashes: of files (memoised by path, inode, size and mtime) and of JSON-able values (canonical form).

A file's hash is remembered in this process and, between processes, in the state table
(workbench/db/file_hashes.py): a rerun over an unchanged multi-GB checkpoint stats it and reads
nothing. `read_sha256` always reads (verifying what is on disk).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workbench.db.file_hashes import FileHashState

# A file modified less than this long before it was read is not remembered between processes: a
# same-size rewrite within the file system's timestamp granularity (up to 2 s on FAT, NFS servers
# vary) would keep its mtime, as git's "racily clean" index entries do. The next run remembers it.
RACY_NS = 2_000_000_000

_FILE_HASHES: dict[tuple[str, int, int, int], str] = {}  # (path, inode, size, mtime_ns) -> sha256
_STATES: dict[Path, "FileHashState | None"] = {}  # opened state files; None: failed, not used again
_READ_ONLY: set[Path] = set()  # state files a write to failed: this process only reads them


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes; read only when its (path, inode, size, mtime_ns) is new."""
    absolute = os.path.abspath(path)
    before = os.stat(absolute)
    key = (absolute, before.st_ino, before.st_size, before.st_mtime_ns)
    found = _FILE_HASHES.get(key)
    if found is not None:
        return found
    state = _state()
    found = _lookup(state, key)
    if found is None:
        started_ns = time.time_ns()
        found = read_sha256(Path(absolute))
        after = os.stat(absolute)
        if (absolute, after.st_ino, after.st_size, after.st_mtime_ns) != key:
            return found  # written to while we read it: remember nothing
        if started_ns - before.st_mtime_ns >= RACY_NS:
            _remember(state, key, found)
    _FILE_HASHES[key] = found
    return found


def _state() -> "FileHashState | None":
    """The state table WORKBENCH_HASH_STATE names (or the user cache's), opened once per process."""
    from workbench.db.file_hashes import STATE_ERRORS, FileHashState, default_state_path

    path = default_state_path()
    if path is None:
        return None
    if path not in _STATES:
        try:
            _STATES[path] = FileHashState(path)
        except STATE_ERRORS:  # a read-only home, a damaged file: hash as if there were no state
            _STATES[path] = None
    return _STATES[path]


def _lookup(state: "FileHashState | None", key: tuple[str, int, int, int]) -> str | None:
    from workbench.db.file_hashes import STATE_ERRORS

    if state is None:
        return None
    try:
        return state.lookup(*key)
    except STATE_ERRORS:
        _STATES[state.path] = None
        return None


def _remember(state: "FileHashState | None", key: tuple[str, int, int, int], sha256: str) -> None:
    from workbench.db.file_hashes import STATE_ERRORS

    if state is None:
        return
    if state.path in _READ_ONLY:
        return
    try:
        state.remember(*key, sha256)
    except STATE_ERRORS:  # locked past its busy timeout, a full disk: look up, but wait for no more writes
        _READ_ONLY.add(state.path)


def read_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read now (for verifying what is on disk)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def canonical_json(value: Any) -> str:
    """A stable text form: sorted keys, no whitespace; refuses values it cannot represent exactly."""
    return json.dumps(_canonical(value), sort_keys=True, separators=(",", ":"), allow_nan=False)


def value_sha256(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def _canonical(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"cannot hash the non-finite number {value!r}")
        return value
    if isinstance(value, (list, tuple)):
        return [_canonical(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _canonical(item) for key, item in value.items()}
    raise TypeError(f"cannot hash a value of type {type(value).__name__}: {value!r}")
