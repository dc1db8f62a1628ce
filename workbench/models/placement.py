"""Spreading a model over devices: `model.device_map` and `model.max_memory`, through accelerate.

Transformers' `from_pretrained(device_map=..., max_memory=..., offload_folder=...)` hands the model to
accelerate, which places every module on a GPU, the CPU or the disk and hooks each one so that its
inputs move to its device (and, for offloaded modules, its weights are loaded for the forward and
dropped after it). A model placed so is never `.to(device)`-ed afterwards; its inputs go to the
execution device of its root hook (`input_device`), where its outputs come back too.

A strategy (`auto`, `balanced`, `balanced_low_0`, `sequential`) is computed by accelerate from
`max_memory`, by default what is free on the recipe's device(s) and the CPU: `device: cpu` keeps a
strategy on the CPU (and the disk), `device: cuda:N` on GPU N (and the CPU, the disk), `cuda` or
`auto` uses every GPU.

An explicit map is checked against the model's modules before any weight is read (a name that is no
module is an error naming it, with a suggestion) and rewritten as a partition of the model: every
module with tensors placed exactly once. Keys may omit the base model's prefix (`encoder.layer.0`
for `bert.encoder.layer.0`), `''` places every module not named, and a named module inside another
named one overrides it there. The partition matters beyond convenience: Transformers 5 matches map
keys against parameter names as unanchored regular-expression prefixes (`encoder.layer.1` also
matches `encoder.layer.10.*`), while accelerate's hooks match whole module names, so a map with a
catch-all or nested keys ({'': 'cpu', 'encoder.layer.1': 'disk'}) makes them disagree and the load
fails ("weight is on the meta device, we need a `value`"). In a partition every module is named by
the longest key that matches it in both readings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from workbench.errors import ModelError, RecipeError, did_you_mean

_UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}

Device = int | str  # a GPU index, "cpu", "mps" or "disk" (accelerate's spelling)


@dataclass(frozen=True)
class Placement:
    """What the recipe asks: a strategy or an explicit {module: device} map, and memory limits."""

    device_map: str | Mapping[str, int | str]
    max_memory: Mapping[int | str, int | str] | None = None

    @property
    def strategy(self) -> str | None:
        return self.device_map if isinstance(self.device_map, str) else None

    @property
    def may_use_disk(self) -> bool:
        if self.strategy is not None:
            return True
        return any(accelerate_device(device) == "disk" for device in self.device_map.values())  # type: ignore[union-attr]


def accelerate_device(device: int | str) -> Device:
    """0, "0", "cuda" and "cuda:0" -> 0; cpu, mps and disk as they are."""
    if isinstance(device, int):
        return device
    if device == "cuda":
        return 0
    if device.startswith("cuda:"):
        return int(device.split(":", 1)[1])
    if device.isdigit():
        return int(device)
    return device


def memory_bytes(size: int | str) -> int:
    """10GiB, 500MB, 1.5 TB or a number of bytes -> bytes."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?B)\s*", size)
    if match is None:
        raise ModelError(f"model.max_memory: '{size}' is not a size (bytes, or a number with KB, MB, GB, TB, KiB, MiB, GiB, TiB)")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def memory_limits(placement: Placement, device: torch.device) -> dict[Device, int] | None:
    """max_memory for accelerate, in bytes; by default confined to the recipe's device (see the module doc)."""
    if placement.max_memory is not None:
        limits = {accelerate_device(key): memory_bytes(value) for key, value in placement.max_memory.items()}
        check_devices(limits, device, "model.max_memory names")
        return limits
    if device.type == "cpu":
        import psutil

        return {"cpu": psutil.virtual_memory().available}
    if device.type == "cuda" and device.index is not None:
        import psutil

        return {device.index: torch.cuda.mem_get_info(device.index)[0], "cpu": psutil.virtual_memory().available}
    return None  # accelerate's default: every GPU, then the CPU


def check_devices(devices: Iterable[Device], device: torch.device, what: str) -> None:
    """GPUs that exist, and none when the recipe asks for the CPU."""
    for place in devices:
        if isinstance(place, int):
            if device.type == "cpu":
                raise ModelError(
                    f"{what} GPU {place}, but the recipe's device is cpu",
                    hint="set device: auto (or cuda), or place every module on cpu or disk",
                )
            count = torch.cuda.device_count()
            if place >= count:
                there = f"{count} GPU{'s' if count != 1 else ''}" if count else "no GPU"
                raise ModelError(f"{what} GPU {place}, but this machine has {there}")
        elif place == "mps":
            if device.type == "cpu":
                raise ModelError(f"{what} mps, but the recipe's device is cpu")
            if not torch.backends.mps.is_available():
                raise ModelError(f"{what} mps, but MPS is not available here")


def explicit_map(model: torch.nn.Module, requested: Mapping[str, int | str], device: torch.device) -> dict[str, Device]:
    """The recipe's map as a partition of `model`'s modules (names checked; see the module docstring)."""
    modules = dict(model.named_modules())
    prefix = getattr(model, "base_model_prefix", "") or ""
    wrapped = bool(prefix) and getattr(model, "base_model", model) is not model and prefix in modules
    assigned: dict[str, Device] = {}
    written: dict[str, str] = {}  # full module name -> the key as the recipe wrote it
    for key, value in requested.items():
        name = key
        if key and key not in modules and wrapped and f"{prefix}.{key}" in modules:
            name = f"{prefix}.{key}"
        if key and name not in modules:
            short = [n[len(prefix) + 1:] for n in modules if wrapped and n.startswith(prefix + ".")]
            suggestion = did_you_mean(key, [n for n in modules if n] + short)
            raise RecipeError(
                f"{type(model).__name__} has no module '{key}'",
                field=f"model.device_map.{key}" if key else "model.device_map",
                hint=suggestion or "names are those of model.named_modules(), e.g. "
                + ", ".join(_examples(modules, prefix if wrapped else "")),
            )
        if name in written:
            raise RecipeError(
                f"'{key}' and '{written[name]}' name the same module ({name})", field=f"model.device_map.{key}"
            )
        written[name] = key
        assigned[name] = accelerate_device(value)
    check_devices(set(assigned.values()), device, "model.device_map puts modules on")

    partition: dict[str, Device] = {}
    unplaced: list[str] = []
    split: list[tuple[str, list[str]]] = []

    def place(name: str, module: torch.nn.Module, inherited: Device | None) -> None:
        own = assigned.get(name, inherited)
        below = any(other != name and (not name or other.startswith(name + ".")) for other in assigned)
        if not below:
            if _holds_tensors(module):
                if own is None:
                    unplaced.append(name)
                else:
                    partition[name] = own
            return
        direct = [tensor for tensor, value in [*module._parameters.items(), *module._buffers.items()] if value is not None]
        if direct:
            split.append((name, direct))
        for child, submodule in module.named_children():
            place(f"{name}.{child}" if name else child, submodule, own)

    place("", model, None)
    if split:
        name, tensors = split[0]
        raise RecipeError(
            f"the map splits {name or 'the model'}, which holds tensors of its own ({', '.join(tensors)}), "
            "between devices",
            field="model.device_map",
            hint=f"place {name} whole (drop the keys inside it)" if name else None,
        )
    if unplaced:
        raise RecipeError(
            f"no device for {module_names(unplaced, 5)}",
            field="model.device_map",
            hint="name them too, or give '' a device: it places every module not named",
        )
    return partition


def module_of(tensor: str, device_map: Mapping[str, Device]) -> str | None:
    """The key of `device_map` that places a tensor: the longest module prefix of its name."""
    best = None
    for key in device_map:
        if (key == "" or tensor == key or tensor.startswith(key + ".")) and (best is None or len(key) > len(best)):
            best = key
    return best


def input_device(model: torch.nn.Module) -> torch.device:
    """Where a (possibly dispatched) model takes its inputs: its root hook's execution device."""
    hook = getattr(model, "_hf_hook", None)
    for candidate in [hook, *getattr(hook, "hooks", ())]:
        execution = getattr(candidate, "execution_device", None)
        if execution is not None:
            return torch.device("cuda", execution) if isinstance(execution, int) else torch.device(execution)
    for parameter in model.parameters():
        if parameter.device.type != "meta":
            return parameter.device
    return torch.device("cpu")


def offloaded_modules(device_map: Mapping[str, Device] | None, main: torch.device) -> tuple[str, ...]:
    """Modules whose weights live off the execution device and are loaded at every forward."""
    if not device_map or len(set(device_map.values())) < 2 and "disk" not in device_map.values():
        return ()
    offloaded = ("disk",) if main.type in ("cpu", "mps") else ("disk", "cpu")
    return tuple(name for name, place in device_map.items() if place in offloaded)


def dispatch(model: torch.nn.Module, placement: Placement, device: torch.device, offload_folder: str) -> torch.nn.Module:
    """Place a model already built in memory (a pruned one) as `from_pretrained(device_map=...)` would."""
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory, get_max_memory

    if placement.strategy is not None:
        no_split = getattr(model, "_no_split_modules", None) or []
        limits = memory_limits(placement, device)
        if placement.strategy == "sequential":
            limits = get_max_memory(limits)
        else:
            limits = get_balanced_memory(
                model, max_memory=limits, no_split_module_classes=no_split, low_zero=placement.strategy == "balanced_low_0"
            )
        device_map = infer_auto_device_map(model, max_memory=limits, no_split_module_classes=no_split)
    else:
        device_map = explicit_map(model, placement.device_map, device)  # type: ignore[arg-type]
    model = dispatch_model(model, device_map=device_map, offload_dir=offload_folder)
    model.hf_device_map = device_map
    return model


def describe(device_map: Mapping[str, Device]) -> str:
    """'0 (14 modules), cpu (2), disk (1)' for the log; 'disk (the whole model)'."""
    if set(device_map) == {""}:
        return f"{device_map['']} (the whole model)"
    counts: dict[str, int] = {}
    for place in device_map.values():
        counts[str(place)] = counts.get(str(place), 0) + 1
    parts = [f"{place} ({count}{' modules' if index == 0 else ''})" for index, (place, count) in enumerate(counts.items())]
    return ", ".join(parts)


def module_names(names: Iterable[str], most: int = 4) -> str:
    """'bert.encoder.layer.1, bert.pooler' ('the whole model' for '') for messages."""
    shown = [name or "the whole model" for name in names]
    return ", ".join(shown[:most]) + (f" and {len(shown) - most} more" if len(shown) > most else "")


def _holds_tensors(module: torch.nn.Module) -> bool:
    return any(True for _ in module.parameters()) or any(True for _ in module.buffers())


def _examples(modules: Mapping[str, torch.nn.Module], prefix: str) -> list[str]:
    """A few top-level-ish module names, as a hint."""
    strip = len(prefix) + 1 if prefix else 0
    names = [name[strip:] if prefix and name.startswith(prefix + ".") else name for name in modules if name and name != prefix]
    return [name for name in names if name.count(".") <= 1][:4]
