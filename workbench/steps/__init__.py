"""The registry of step kinds: `kind:` in a recipe -> the Step class that runs it."""

from __future__ import annotations

from workbench.steps.attention import Attention
from workbench.steps.base import Step
from workbench.steps.evaluate import Evaluate
from workbench.steps.extract import Extract
from workbench.steps.finetune import Finetune

STEP_TYPES: dict[str, type[Step]] = {step.kind: step for step in (Finetune, Evaluate, Extract, Attention)}
