"""Views of step kinds' own data (curves, tables), registered by kind."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from rich.console import RenderableType

from workbench.db.records import StepRecord

StepView = Callable[[StepRecord], Iterable[RenderableType]]
STEP_VIEWS: dict[str, StepView] = {}


def step_view(kind: str) -> Callable[[StepView], StepView]:
    """Decorator: `@step_view("prune_curve")` renders that kind's data in `show` and run summaries."""

    def register(function: StepView) -> StepView:
        STEP_VIEWS[kind] = function
        return function

    return register
