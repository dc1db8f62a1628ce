"""Parameter groups shared by several step kinds."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from workbench.steps.base import StepParams


class ModelDatasetParams(StepParams):
    """A step that runs a model over one dataset."""

    dataset: str = Field(description="the dataset to run on")
    model: str | None = Field(None, description="a step whose model to use (finetune, prune); default: the recipe's")
    batch_size: int = Field(32, ge=1, le=65536, description="examples per forward pass (padding is per batch)")

    references: ClassVar[dict[str, str]] = {"model": "model"}
    dataset_fields: ClassVar[tuple[str, ...]] = ("dataset",)
