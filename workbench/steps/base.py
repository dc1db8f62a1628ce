"""What every step kind is: a typed parameter model, the artifacts it produces, and `run`.

Step modules import only pydantic at the top so that `workbench validate` stays light; torch and
transformers are imported inside `run`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import torch

    from workbench.context import StepContext
    from workbench.recipe.schema import Recipe


class StepParams(BaseModel):
    """Fields every step accepts. Subclasses add their own; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    description: str | None = Field(None, description="free text; does not affect the result")

    # Field name -> the artifact the referenced step must produce ("model", "mask", "importance", ...).
    references: ClassVar[dict[str, str]] = {}
    # Fields that name a dataset of the recipe.
    dataset_fields: ClassVar[tuple[str, ...]] = ()
    # Fields that do not change the result, left out of the cache key.
    cosmetic_fields: ClassVar[frozenset[str]] = frozenset({"description"})

    def referenced_steps(self) -> dict[str, str]:
        """field -> step id, for every reference that is set."""
        return {name: getattr(self, name) for name in self.references if getattr(self, name, None)}

    def used_datasets(self) -> dict[str, str]:
        """field -> dataset id, for every dataset field that is set."""
        return {name: getattr(self, name) for name in self.dataset_fields if getattr(self, name, None)}

    def check(self, recipe: "Recipe") -> list[tuple[str, str]]:
        """Cross-field problems as (field, message); the recipe is given for context (model head, ...)."""
        return []

    def uses_recipe_model(self) -> bool:
        """Whether the step runs the recipe's model (rather than one produced by another step)."""
        return "model" in type(self).model_fields and getattr(self, "model", None) is None


@dataclass
class StepResult:
    """Everything a step produced. Tensors go to the cache; scores and metrics also to the store."""

    metrics: dict[str, float] = field(default_factory=dict)
    head_scores: dict[str, "torch.Tensor"] = field(default_factory=dict)  # name -> [layers, heads]
    layer_scores: dict[str, "torch.Tensor"] = field(default_factory=dict)  # name -> [layers]
    tensors: dict[str, "torch.Tensor"] = field(default_factory=dict)  # other named outputs
    data: dict[str, Any] = field(default_factory=dict)  # JSON-able: curves, tables, iterations
    files_dir: Path | None = None  # folder of produced files (a model, feature shards), if any

    def to_torch(self) -> "StepResult":
        """Turn arrays read from the cache into tensors, in place.

        The cache hands back numpy arrays so that a fully cached run never imports torch; a step
        that reads an upstream result gets tensors.
        """
        import torch

        for group in (self.head_scores, self.layer_scores, self.tensors):
            for name, value in group.items():
                if not isinstance(value, torch.Tensor):
                    group[name] = torch.from_numpy(value)
        return self

    def file(self, name: str) -> Path:
        """A produced file or folder; raises if the step did not produce it."""
        if self.files_dir is None or not (self.files_dir / name).exists():
            raise FileNotFoundError(name)
        return self.files_dir / name


class Step(ABC):
    kind: ClassVar[str]
    version: ClassVar[int] = 1
    Params: ClassVar[type[StepParams]]
    produces: ClassVar[frozenset[str]] = frozenset()
    summary: ClassVar[str] = ""

    @abstractmethod
    def run(self, ctx: "StepContext", params: StepParams) -> StepResult:
        """Compute the step's outputs. Write files only under ctx.output_dir."""
