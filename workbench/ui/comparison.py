"""What differs between two runs, as plain data: `compare --json` prints it, `compare` draws it.

Steps are matched by id, in run A's order; metrics keep the order run A recorded them in (then
B's own), so two comparisons of the same runs read the same. Two steps with the same cache key
computed the same thing from the same inputs: they are reported as identical, and no heatmap of
zeros is drawn for them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from workbench.db.records import RunDetail, StepRecord

DEFAULT_TOLERANCE = 1e-9


@dataclass
class StepComparison:
    step_id: str
    kind: str
    same_key: bool  # one cache entry: identical by construction
    metrics: list[dict[str, Any]] = field(default_factory=list)  # name, a, b, delta, changed
    head_scores: list[dict[str, Any]] = field(default_factory=list)  # name, delta [layers][heads], max_abs_delta
    layer_scores: list[dict[str, Any]] = field(default_factory=list)  # name, a, b, delta [layers], max_abs_delta


@dataclass
class Comparison:
    a: int
    b: int
    tolerance: float
    steps: list[StepComparison]
    only_a: list[str]
    only_b: list[str]

    def as_json(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "tolerance": self.tolerance,
            "steps": [vars(step) for step in self.steps],
            "only_in_a": self.only_a,
            "only_in_b": self.only_b,
        }


def compare_runs(a: RunDetail, b: RunDetail, *, changed_only: bool = False, tolerance: float = DEFAULT_TOLERANCE) -> Comparison:
    """Metric, head-score and layer-score differences (b - a) of the steps both runs have."""
    steps = []
    for step_a in a.steps:
        step_b = b.step(step_a.step_id)
        if step_b is None:
            continue
        compared = _compare_step(step_a, step_b, tolerance)
        if changed_only:
            compared.metrics = [row for row in compared.metrics if row["changed"]]
            compared.head_scores = [row for row in compared.head_scores if row["max_abs_delta"] > tolerance]
            compared.layer_scores = [row for row in compared.layer_scores if row["max_abs_delta"] > tolerance]
            if not (compared.metrics or compared.head_scores or compared.layer_scores):
                continue
        steps.append(compared)
    return Comparison(
        a=a.summary.id,
        b=b.summary.id,
        tolerance=tolerance,
        steps=steps,
        only_a=[s.step_id for s in a.steps if b.step(s.step_id) is None],
        only_b=[s.step_id for s in b.steps if a.step(s.step_id) is None],
    )


def _compare_step(a: StepRecord, b: StepRecord, tolerance: float) -> StepComparison:
    compared = StepComparison(a.step_id, a.kind, same_key=a.key == b.key)
    names = list(a.metrics) + [name for name in b.metrics if name not in a.metrics]
    for name in names:
        left, right = a.metrics.get(name), b.metrics.get(name)
        delta = right - left if _number(left) and _number(right) else None
        changed = (delta is None and left != right) or (delta is not None and abs(delta) > tolerance)
        compared.metrics.append({"name": name, "a": left, "b": right, "delta": delta, "changed": bool(changed)})
    if compared.same_key:
        return compared  # the same cache entry: no score can differ
    grids_b = {grid.name: grid for grid in b.head_scores}
    for grid_a in a.head_scores:
        grid_b = grids_b.get(grid_a.name)
        if grid_b is None or grid_b.shape != grid_a.shape:
            continue
        delta = [[_difference(x, y) for x, y in zip(row_a, row_b)] for row_a, row_b in zip(grid_a.values, grid_b.values)]
        compared.head_scores.append({"name": grid_a.name, "delta": delta, "max_abs_delta": _max_abs(v for row in delta for v in row)})
    lines_b = {line.name: line for line in b.layer_scores}
    for line_a in a.layer_scores:
        line_b = lines_b.get(line_a.name)
        if line_b is None or len(line_b.values) != len(line_a.values):
            continue
        delta = [_difference(x, y) for x, y in zip(line_a.values, line_b.values)]
        compared.layer_scores.append(
            {"name": line_a.name, "a": line_a.values, "b": line_b.values, "delta": delta, "max_abs_delta": _max_abs(delta)}
        )
    return compared


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _difference(x: float | None, y: float | None) -> float | None:
    return y - x if _number(x) and _number(y) else None


def _max_abs(values: Any) -> float:
    return max((abs(v) for v in values if v is not None), default=0.0)
