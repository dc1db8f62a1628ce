"""What every step kind is: a typed parameter model, the artifacts it produces, and `run`.

Step modules import only pydantic at the top so that `workbench validate` stays light; torch and
transformers are imported inside `run`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from workbench.recipe.schema import STRICT_TYPES
from workbench.step_result import StepResult  # step modules import it from here

if TYPE_CHECKING:
    from workbench.context import StepContext
    from workbench.recipe.schema import Recipe


class StepParams(BaseModel):
    """Fields every step accepts. Subclasses add their own; unknown keys are errors.

    Types are strict, as in the recipe's own schema (workbench/recipe/schema.py): `batch_size: '16'`
    and `batch_size: true` are errors rather than 16 and 1, a float field takes an int, and every
    float must be finite, so a NaN learning rate is reported by field name instead of training on it.
    """

    model_config = ConfigDict(extra="forbid", **STRICT_TYPES)

    kind: str
    description: str | None = Field(None, description="free text; does not affect the result")

    # Field name -> the artifact the referenced step must produce ("model", "mask", "importance", ...).
    references: ClassVar[dict[str, str]] = {}
    # Fields that name a dataset of the recipe.
    dataset_fields: ClassVar[tuple[str, ...]] = ()
    # Fields that do not change the result, left out of the cache key.
    cosmetic_fields: ClassVar[frozenset[str]] = frozenset({"description"})
    # Options added after release, left out of the cache key while at this value (what the step
    # did before it had them), so adding an option keeps every existing cache entry valid.
    added_options: ClassVar[dict[str, object]] = {}

    def referenced_steps(self) -> dict[str, str]:
        """field -> step id, for every reference that is set."""
        return {name: getattr(self, name) for name in self.references if getattr(self, name, None)}

    def used_datasets(self) -> dict[str, str]:
        """field -> dataset id, for every dataset field that is set."""
        return {name: getattr(self, name) for name in self.dataset_fields if getattr(self, name, None)}

    def check(self, recipe: "Recipe") -> list[tuple[str, str]]:
        """Cross-field problems as (field, message); the recipe is given for context (model head, ...)."""
        return []

    def with_defaults_from(self, steps: "dict[str, StepParams]") -> "StepParams":
        """The parameters with defaults that depend on other steps filled in (the recipe's validated steps)."""
        return self

    def uses_recipe_model(self) -> bool:
        """Whether the step runs the recipe's model (rather than one produced by another step)."""
        return "model" in type(self).model_fields and getattr(self, "model", None) is None


PRESETS = ("workbench", "paper")


class PresetParams(StepParams):
    """An analysis step with `preset: workbench | paper`.

    A preset is a set of defaults: `paper` gives the options the papers' own code uses
    (../shared/REFERENCE.md), `workbench` the workbench's choices. Options given in the recipe
    win over either. The resolved options, not the preset's name, enter the cache key, so a preset
    and the same options spelled out share a cache entry.
    """

    preset: Literal["workbench", "paper"] = Field(
        "workbench", description="workbench: this tool's defaults; paper: the original code's definitions"
    )

    # preset -> {field: default}; fields not named keep their declared default under every preset.
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    # field -> why the workbench default differs from the paper's (the README's preset tables).
    PRESET_NOTES: ClassVar[dict[str, str]] = {}
    cosmetic_fields: ClassVar[frozenset[str]] = frozenset({"description", "preset"})

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("preset", "workbench"), str):
            defaults = cls.PRESETS.get(data.get("preset", "workbench"), {})
            data = {**defaults, **data}
        return data

    @classmethod
    def preset_default(cls, preset: str, name: str) -> Any:
        """The value a field takes under a preset when the recipe does not give it."""
        if name in cls.PRESETS.get(preset, {}):
            return cls.PRESETS[preset][name]
        field = cls.model_fields[name]
        return field.default_factory() if field.default_factory is not None else field.default


class Step(ABC):
    kind: ClassVar[str]
    version: ClassVar[int] = 1
    Params: ClassVar[type[StepParams]]
    produces: ClassVar[frozenset[str]] = frozenset()
    summary: ClassVar[str] = ""
    # In a data-parallel run, every rank runs the step over its share of the data (workbench/distributed.py);
    # False: rank 0 runs it alone, as one process, and the other ranks wait for its result.
    data_parallel: ClassVar[bool] = True

    @abstractmethod
    def run(self, ctx: "StepContext", params: StepParams) -> StepResult:
        """Compute the step's outputs. Write files only under ctx.output_dir."""
