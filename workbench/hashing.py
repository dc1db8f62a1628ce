"""Content hashes: of files (memoised per process) and of JSON-able values (canonical form)."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes; remembered per (path, size, mtime) so big weights are read once."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_HASHES:
        _FILE_HASHES[key] = read_sha256(path)
    return _FILE_HASHES[key]


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
