"""Plain records the store hands out. The UI and the CLI see only these, never ORM rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from workbench.scores import LayerScores as LayerScores  # the one per-layer line type (workbench/scores.py)


@dataclass(frozen=True)
class RunSummary:
    id: int
    name: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    device: str | None
    steps_total: int
    steps_cached: int
    steps_failed: int
    recipe_hash: str
    imported_from: str | None = None  # a run from `workbench import`: the bundle and the run it holds

    @property
    def duration_s(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class HeadScores:
    """One named per-head score as a dense grid; missing cells (pruned heads) are None."""

    name: str
    values: list[list[float | None]]  # [layers][heads]

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.values), max((len(row) for row in self.values), default=0)


@dataclass(frozen=True)
class ArtifactRecord:
    name: str
    kind: str
    cache_key: str
    sha256: str
    bytes: int


@dataclass(frozen=True)
class StepRecord:
    step_id: str
    kind: str
    key: str
    status: str
    duration_s: float | None
    error: str | None
    params: dict[str, Any]
    data: dict[str, Any]
    metrics: dict[str, float | None] = field(default_factory=dict)
    head_scores: list[HeadScores] = field(default_factory=list)
    layer_scores: list[LayerScores] = field(default_factory=list)
    artifacts: list[ArtifactRecord] = field(default_factory=list)


@dataclass(frozen=True)
class RunDetail:
    summary: RunSummary
    recipe_name: str
    recipe_path: str | None
    recipe_text: str
    seed: int
    overrides: list[str]
    environment: dict[str, Any]
    error: str | None
    steps: list[StepRecord]

    def step(self, step_id: str) -> StepRecord | None:
        return next((step for step in self.steps if step.step_id == step_id), None)


@dataclass(frozen=True)
class RemovedRuns:
    """What Store.delete_runs did."""

    removed: list[int]
    not_found: list[int]
    still_running: list[int]  # kept: a live process is writing them
    steps: int  # step rows removed with the runs
