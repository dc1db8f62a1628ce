"""Hub revisions resolved to commit shas, so cache keys follow what a branch or tag points to.

A key that says `bert-base-uncased@main` would stay the same when `main` moves; a key with the
commit sha changes with it. Online, the hub says which commit a revision is; offline (or when the
hub cannot be reached) the local Hugging Face cache does: `<cache>/<type>s--<org>--<name>/refs/<revision>`
holds the sha of the snapshot that loading will use. Unresolvable revisions (offline and not
cached) stay as their text: such a model or dataset cannot be loaded anyway.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

COMMIT = re.compile(r"[0-9a-f]{40}")
HUB_TIMEOUT_S = 5.0


def resolve_commit(repo_id: str, revision: str | None, repo_type: str = "model") -> str | None:
    """The commit sha a revision (default `main`) of a hub repository points to, or None if unknown."""
    revision = revision or "main"
    if COMMIT.fullmatch(revision):
        return revision
    cached = cached_commit(repo_id, revision, repo_type)
    if offline():
        return cached
    return _ask_hub(repo_id, revision, repo_type) or cached


def hub_cache_dir() -> Path:
    """Where huggingface_hub keeps downloads, read from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def offline() -> bool:
    return any(os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE") for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"))


def cached_commit(repo_id: str, revision: str, repo_type: str = "model", cache_dir: Path | None = None) -> str | None:
    """The sha the local cache recorded for `revision`, if any."""
    folder = (cache_dir or hub_cache_dir()) / f"{repo_type}s--{repo_id.replace('/', '--')}"
    ref = folder / "refs" / revision
    try:
        sha = ref.read_text().strip()
    except OSError:
        return None
    return sha if COMMIT.fullmatch(sha) else None


@lru_cache(maxsize=256)
def _ask_hub(repo_id: str, revision: str, repo_type: str) -> str | None:
    """The hub's answer, memoised per process: a recipe names the same model in every step's key."""
    try:
        from huggingface_hub import HfApi

        info = HfApi().repo_info(repo_id, revision=revision, repo_type=repo_type, timeout=HUB_TIMEOUT_S)
    except Exception:  # noqa: BLE001 -- no network, no such repo, rate limits: the local cache answers
        return None
    return getattr(info, "sha", None)
