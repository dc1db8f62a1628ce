"""Picking the device, seeding every random generator, and describing the environment of a run."""

from __future__ import annotations

import platform
import random
import subprocess
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from workbench.errors import WorkbenchError

PACKAGES = ("torch", "transformers", "datasets", "tokenizers", "safetensors", "scikit-learn", "numpy", "bertology-workbench")


def pick_device(requested: str) -> torch.device:
    """auto -> cuda, then mps, then cpu. An explicit device that is not there is an error."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise WorkbenchError(f"device '{requested}' was asked for, but CUDA is not available here")
        index = int(requested.split(":")[1]) if ":" in requested else 0
        if index >= torch.cuda.device_count():
            raise WorkbenchError(f"device '{requested}' does not exist ({torch.cuda.device_count()} GPUs)")
    if requested == "mps" and not torch.backends.mps.is_available():
        raise WorkbenchError("device 'mps' was asked for, but MPS is not available here")
    return torch.device(requested)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def environment(device: torch.device, recipe_dir: Path | None) -> dict[str, object]:
    """Versions, hardware and the git commit of the recipe's folder, recorded with every run."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    described = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "threads": torch.get_num_threads(),
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
