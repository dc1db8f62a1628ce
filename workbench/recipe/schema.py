"""The typed recipe (format version 1).

Step parameters are validated in a second pass by each step kind's own `Params` model
(workbench/steps), so this module only knows that a step is a mapping with a `kind`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from workbench.errors import did_you_mean
from workbench.recipe.yaml_source import SourceMap

IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_\-]*$"
MODEL_HEADS = ("base", "sequence-classification", "causal-lm", "masked-lm")
MAX_SEED = 2**32 - 1  # numpy's seeds are 32-bit; torch and random take any, so this is the common range
MAX_LABELS = 100_000  # a head of 100k classes is already a vocabulary; more is a typo
MAX_EXAMPLES = 100_000_000  # `limit`: far beyond any dataset the workbench reads into memory
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")  # accelerate's
ATTENTION_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")
MODULE_NAME = r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*"  # a dotted module path (model.device_map keys)
MEMORY_SIZE = r"[0-9]+(\.[0-9]+)?\s*([KMGT]i?B)"  # model.max_memory values (B for bytes: "10Gb" is no size here)


# pydantic's strict mode: '16' is not an int, true is not a number, 16.0 is not an int (a float field
# does take an int). No infinities or NaNs in float fields. The YAML reader (YAML 1.2 numbers, so
# `1e-4` is a float) decides what a value is; nothing converts it afterwards.
STRICT_TYPES = ConfigDict(strict=True, allow_inf_nan=False, frozen=True)


class Strict(BaseModel):
    """Unknown keys are errors; values are not silently coerced from the wrong type."""

    model_config = ConfigDict(extra="forbid", **STRICT_TYPES)


def _device_problem(device: int | str) -> str | None:
    """Why a device of model.device_map or model.max_memory is none: GPU index, cpu, mps, cuda[:N] or disk."""
    if isinstance(device, int):
        return f"GPU {device} does not exist (GPUs are 0, 1, ...)" if device < 0 else None
    if re.fullmatch(r"cpu|mps|disk|[0-9]+|cuda(:[0-9]+)?", device):  # "0": a key written by --set
        return None
    return f"'{device}' is not a device (0, 1, ... for GPUs, cpu, mps, cuda:N or disk)"


class ModelSpec(Strict):
    id: str = Field(min_length=1, description="hub id, local directory, or pkg:<python package>/<subdir>")
    revision: str | None = Field(None, description="hub commit, branch or tag")
    head: Literal["base", "sequence-classification", "causal-lm", "masked-lm"] = Field(
        "base", description="the task head loaded on top of the encoder/decoder"
    )
    num_labels: int | None = Field(
        None, ge=1, le=MAX_LABELS, description="classes of a classification head; 1 = regression"
    )
    labels: list[str] | None = Field(
        None,
        description="class names in id order; default: the checkpoint's id2label, else the sorted labels "
        "of the dataset the first finetune step trains on (all of it, before limit)",
    )
    dtype: Literal["float32", "float16", "bfloat16", "auto"] = Field(
        "float32",
        description="weights and activations; auto: the checkpoint's own (config.json's dtype, else its "
        "safetensors weights', else float32), for fine-tuned copies too",
    )
    device_map: str | dict[str, int | str] | None = Field(
        None,
        description="spread a model too big for one device (accelerate): a strategy (auto, balanced, "
        "balanced_low_0, sequential), or {module: device} with "
        "devices 0, 1, ... (GPUs), cpu, disk, mps; module names as in named_modules(), with or without the "
        "base model's prefix; '' places every module not named. cpu/disk modules are offloaded (weights loaded "
        "at each forward); results are the same as on one device, so it is not part of cache keys",
    )
    max_memory: dict[int | str, int | str] | None = Field(
        None,
        description="with a device_map strategy: the most each device may hold, {0: 10GiB, cpu: 30GiB} (bytes, "
        "or KB/MB/GB/TB, KiB/MiB/GiB/TiB); default: what is free on the recipe's device(s) and the CPU",
    )
    attn_implementation: str | None = Field(
        None,
        description="Transformers' attention (eager, sdpa, flash_attention_2, flash_attention_3, flex_attention) for "
        "the steps that read no heads (finetune, evaluate without a mask, extract); steps that gate or observe "
        "heads keep the workbench's own and say so",
    )

    @field_validator("attn_implementation")
    @classmethod
    def _known_attention(cls, value: str | None) -> str | None:
        if value is not None and value not in ATTENTION_IMPLEMENTATIONS:
            suggestion = did_you_mean(value, ATTENTION_IMPLEMENTATIONS)
            raise ValueError(
                f"'{value}' is not an attention implementation: {', '.join(ATTENTION_IMPLEMENTATIONS)}"
                + (f" ({suggestion})" if suggestion else "")
            )
        return value

    @field_validator("device_map")
    @classmethod
    def _device_map_entries(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in DEVICE_MAP_STRATEGIES:
            suggestion = did_you_mean(value, DEVICE_MAP_STRATEGIES)
            raise ValueError(
                f"'{value}' is no strategy: {', '.join(DEVICE_MAP_STRATEGIES)}, or give a {{module: device}} map"
                + (f" ({suggestion})" if suggestion else "")
            )
        if isinstance(value, dict):
            if not value:
                raise ValueError("give at least one module, or a strategy: auto, balanced, balanced_low_0, sequential")
            for module, device in value.items():
                if module and not re.fullmatch(MODULE_NAME, module):
                    raise ValueError(f"'{module}' is not a module name (dotted, e.g. encoder.layer.0)")
                problem = _device_problem(device)
                if problem:
                    raise ValueError(f"module '{module}': {problem}")
        return value

    @field_validator("max_memory")
    @classmethod
    def _memory_sizes(cls, value: dict[int | str, int | str] | None, info: ValidationInfo) -> dict[int | str, int | str] | None:
        if value is None:
            return None
        if not isinstance(info.data.get("device_map"), str):  # device_map is validated first (field order)
            raise ValueError(
                "max_memory limits what a device_map strategy places: set device_map to auto, balanced, "
                "balanced_low_0 or sequential (an explicit map already says where every module goes)"
            )
        if not value:
            raise ValueError("give at least one device, e.g. {0: 10GiB, cpu: 30GiB}")
        for device, size in value.items():
            problem = _device_problem(device)
            if problem:
                raise ValueError(problem)
            if isinstance(size, int) and size < 0 or isinstance(size, str) and not re.fullmatch(MEMORY_SIZE, size):
                raise ValueError(f"'{size}' ({device}) is not a size: bytes, or a number with KB, MB, GB, TB, KiB, MiB, GiB or TiB")
        return value

    @field_validator("labels")
    @classmethod
    def _distinct_labels(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (len(value) < 2 or len(set(value)) != len(value) or not all(value)):
            raise ValueError("give at least two distinct, non-empty class names")
        return value

    @model_validator(mode="after")
    def _labels_fit_head(self) -> "ModelSpec":
        if self.labels is not None and self.head != "sequence-classification":
            raise ValueError("labels name the classes of a sequence-classification head")
        if self.labels is not None and self.num_labels is not None and self.num_labels != len(self.labels):
            raise ValueError(f"num_labels is {self.num_labels} but {len(self.labels)} labels are named")
        return self


class DatasetSpec(BaseModel):
    """A dataset. Keys not named here pass through to the builder (e.g. `delimiter` for csv)."""

    model_config = ConfigDict(extra="allow", **STRICT_TYPES)

    path: str = Field(min_length=1, description="a hub dataset, a datasets builder, or conllu/python_code/agreement")
    name: str | None = Field(None, description="the builder configuration (e.g. 'mrpc' for glue)")
    data_files: str | list[str] | dict[str, str | list[str]] | None = Field(
        None, description="local files; relative paths resolve against the recipe's folder"
    )
    data_dir: str | None = Field(None, description="a folder of files (python_code: a folder of .py files)")
    revision: str | None = Field(None, description="hub dataset revision")
    split: str = Field(
        "train",
        description="the split to read (local files are all in 'train'), optionally sliced as datasets writes it: "
        "train[:2000], train[10%:20%], train[:1000]+validation[:100]",
    )
    text: str | list[str] | None = Field(None, description="text column, or two columns for sentence pairs")
    label: str | None = Field(None, description="label column (int classes, strings, or floats for regression)")
    limit: int | None = Field(None, ge=1, le=MAX_EXAMPLES, description="use only the first N examples")
    max_length: int = Field(128, ge=2, le=100_000, description="truncate tokenized examples to this many tokens")
    streaming: bool = Field(
        False,
        description="stream the split instead of downloading and converting it whole (hub datasets too big to "
        "fit); reads only the first `limit` examples (or an absolute slice, train[:2000]), so one is needed",
    )

    @field_validator("split")
    @classmethod
    def _split_syntax(cls, value: str) -> str:
        # datasets' own grammar (arrow_reader._SUB_SPEC_RE), checked here so a typo is a recipe error
        # at its line, not a builder's exception after the download
        example = "e.g. train, train[:2000], train[10%:20%] or train[:1000]+validation[:100]"
        for part in re.split(r"\s*\+\s*", value.strip()):
            match = re.fullmatch(
                r"(?P<split>\w+(\.\w+)*)(\[(?P<from>-?[\d_]+)?(?P<from_pct>%)?:(?P<to>-?[\d_]+)?(?P<to_pct>%)?\])?"
                r"(\((?P<rounding>[^)]*)\))?",
                part,
            )
            if match is None or (match["from_pct"] and match["from"] is None) or (match["to_pct"] and match["to"] is None):
                raise ValueError(f"'{part}' is not a split or a slice of one ({example})")
            start, stop = match["from"], match["to"]
            if match["rounding"] is not None and match["rounding"] not in ("closest", "pct1_dropremainder"):
                raise ValueError(f"'{part}': rounding is closest or pct1_dropremainder, not '{match['rounding']}'")
            if start is not None and stop is not None and bool(match["from_pct"]) != bool(match["to_pct"]):
                raise ValueError(f"'{part}': both ends of a slice are percentages, or neither ({example})")
            percent = bool(match["from_pct"] or match["to_pct"])
            bounds = [int(end.replace("_", "")) for end in (start, stop) if end is not None]
            if percent and any(not -100 <= bound <= 100 for bound in bounds):
                raise ValueError(f"'{part}': a percentage lies between -100% and 100%")
            if start is not None and stop is not None and (bounds[0] < 0) == (bounds[1] < 0) and bounds[0] >= bounds[1]:
                raise ValueError(f"'{part}' selects no examples (the slice's start is not before its end)")
        return value

    @field_validator("text")
    @classmethod
    def _one_or_two_columns(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and not 1 <= len(value) <= 2:
            raise ValueError("give one text column, or two for sentence pairs")
        return value

    @property
    def text_columns(self) -> list[str]:
        if self.text is None:
            return []
        return [self.text] if isinstance(self.text, str) else list(self.text)

    @property
    def builder_options(self) -> dict[str, Any]:
        """The pass-through keys, for the builder."""
        return dict(self.model_extra or {})


class Recipe(Strict):
    version: Literal[1] = Field(description="the recipe format version")
    name: str = Field(pattern=IDENTIFIER, max_length=100, description="names the runs of this recipe in the store")
    description: str | None = Field(None, description="free text")
    seed: int = Field(42, ge=0, le=MAX_SEED, description="seeds torch, numpy and random before every step")
    device: str = Field("auto", description="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    model: ModelSpec
    datasets: dict[str, DatasetSpec] = Field(default_factory=dict)
    steps: dict[str, Any] = Field(min_length=1)

    @field_validator("version", mode="before")
    @classmethod
    def _integer_version(cls, value: Any) -> Any:
        # Literal[1] alone would take true and 1.0, which equal 1 in Python.
        if type(value) is not int:
            raise ValueError("expected the integer 1")
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
            raise ValueError("expected auto, cpu, cuda, cuda:N or mps")
        return value

    @field_validator("datasets", "steps")
    @classmethod
    def _identifier_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if not isinstance(key, str) or not re.fullmatch(IDENTIFIER, key):
                raise ValueError(f"'{key}' is not a valid id (letters, digits, _ and -, not starting with a digit)")
        return value


class LoadedRecipe:
    """A validated recipe plus where it came from: the file, its text, positions and typed steps."""

    def __init__(
        self,
        recipe: Recipe,
        steps: dict[str, Any],
        *,
        path: Path | None,
        text: str,
        source: SourceMap,
        overrides: list[str],
    ):
        self.recipe = recipe
        self.steps = steps  # step id -> validated Params instance
        self.path = path
        self.text = text
        self.source = source
        self.overrides = overrides

    @property
    def base_dir(self) -> Path:
        """Relative paths in the recipe resolve against the recipe's folder."""
        return self.path.parent.resolve() if self.path is not None else Path.cwd()

    @property
    def name(self) -> str:
        return self.recipe.name
