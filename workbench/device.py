"""Picking the device, seeding every random generator, and describing the hardware of a run."""

from __future__ import annotations

import platform
import random

import numpy as np
import torch

from workbench.errors import WorkbenchError

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


def hardware(device: torch.device) -> dict[str, object]:
    """What the run computed on, recorded once a step has needed the device."""
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "threads": torch.get_num_threads(),
        "torch_cuda": torch.version.cuda,
    }
