"""The registry of step kinds: `kind:` in a recipe -> the Step class that runs it.

Its own module, not the package's __init__: importing one step's module (or steps.base, as
workbench/context.py does) must not import every step.
"""

from __future__ import annotations

from workbench.steps.attention import Attention
from workbench.steps.base import Step
from workbench.steps.cat_probe import CatProbe
from workbench.steps.evaluate import Evaluate
from workbench.steps.extract import Extract
from workbench.steps.finetune import Finetune
from workbench.steps.head_ablation import HeadAblation
from workbench.steps.importance import Importance
from workbench.steps.mask_search import MaskSearch
from workbench.steps.probe import Probe
from workbench.steps.prune import Prune
from workbench.steps.prune_curve import PruneCurve
from workbench.steps.syntax_heads import SyntaxHeads

STEP_TYPES: dict[str, type[Step]] = {
    step.kind: step
    for step in (
        Finetune,
        Evaluate,
        Extract,
        Attention,
        Importance,
        MaskSearch,
        PruneCurve,
        Prune,
        HeadAblation,
        Probe,
        SyntaxHeads,
        CatProbe,
    )
}
