"""The typed recipe (format version 1).

Step parameters are validated in a second pass by each step kind's own `Params` model
(workbench/steps), so this module only knows that a step is a mapping with a `kind`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from workbench.recipe.yaml_source import SourceMap

IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_\-]*$"
MODEL_HEADS = ("base", "sequence-classification", "causal-lm", "masked-lm")
MAX_SEED = 2**32 - 1  # numpy's seeds are 32-bit; torch and random take any, so this is the common range
MAX_LABELS = 100_000  # a head of 100k classes is already a vocabulary; more is a typo
MAX_EXAMPLES = 100_000_000  # `limit`: far beyond any dataset the workbench reads into memory


# pydantic's strict mode: '16' is not an int, true is not a number, 16.0 is not an int (a float field
# does take an int). No infinities or NaNs in float fields. The YAML reader (YAML 1.2 numbers, so
# `1e-4` is a float) decides what a value is; nothing converts it afterwards.
STRICT_TYPES = ConfigDict(strict=True, allow_inf_nan=False, frozen=True)


class Strict(BaseModel):
    """Unknown keys are errors; values are not silently coerced from the wrong type."""

    model_config = ConfigDict(extra="forbid", **STRICT_TYPES)


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
    dtype: Literal["float32", "float16", "bfloat16"] = Field("float32", description="weights and activations")

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
    split: str = Field("train", description="the split to read (local files are all in 'train')")
    text: str | list[str] | None = Field(None, description="text column, or two columns for sentence pairs")
    label: str | None = Field(None, description="label column (int classes, strings, or floats for regression)")
    limit: int | None = Field(None, ge=1, le=MAX_EXAMPLES, description="use only the first N examples")
    max_length: int = Field(128, ge=2, le=100_000, description="truncate tokenized examples to this many tokens")

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
