"""The software environment of a run (versions, platform, git commit), without importing torch.

What the run was made FROM (recipe as run, model and data hashes, seed, world size) is
workbench/bundles/provenance.py; the executor stores both in the run's environment JSON.
"""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = (
    "torch",
    "transformers",
    "datasets",
    "tokenizers",
    "safetensors",
    "huggingface-hub",
    "accelerate",
    "scikit-learn",
    "numpy",
    "bertology-workbench",
)


def software_environment(recipe_dir: Path | None) -> dict[str, object]:
    """Package versions, Python, platform and the git commit of the recipe's folder."""
    from workbench.processes import HOST

    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    described: dict[str, object] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": HOST,
        "packages": versions,
    }
    if recipe_dir is not None:
        described["git_commit"] = _git_commit(recipe_dir)
    return described


def _git_commit(folder: Path) -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "-C", str(folder), "status", "--porcelain", "--", "."], capture_output=True, text=True, timeout=5
    ).stdout.strip()
    return result.stdout.strip() + ("+dirty" if dirty else "")
