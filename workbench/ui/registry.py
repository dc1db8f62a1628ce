"""Views of step kinds' own data (curves, tables), registered by kind."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from rich.console import RenderableType

from workbench.db.records import StepRecord

StepView = Callable[[StepRecord], Iterable[RenderableType]]
STEP_VIEWS: dict[str, StepView] = {}
# Kinds whose view already presents their metrics; end-of-run summaries skip the metrics table.
VIEWS_WITH_METRICS: set[str] = set()


def step_view(kind: str, *, shows_metrics: bool = False) -> Callable[[StepView], StepView]:
    """Decorator: `@step_view("prune_curve")` renders that kind's data in `show` and run summaries."""

    def register(function: StepView) -> StepView:
        STEP_VIEWS[kind] = function
        if shows_metrics:
            VIEWS_WITH_METRICS.add(kind)
        return function

    return register
