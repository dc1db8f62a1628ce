"""results.json (`workbench show --json` of the run) read back into a RunDetail, every field checked.

The file comes from someone else: a value of the wrong type would otherwise surface as a crash
in `show`, or as a number in a comparison that was never a number. Everything here is plain JSON;
NaN becomes None, as the store keeps it.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any

from workbench.bundles.layout import RESULTS, BundleError
from workbench.db.records import ArtifactRecord, HeadScores, LayerScores, RunDetail, RunSummary, StepRecord

RUN_STATUSES = ("finished", "failed", "interrupted")
STEP_STATUSES = ("done", "cached", "failed", "interrupted", "running", "pending")
KEY = re.compile(r"^[0-9a-f]{64}$")
MAX_GRID = 10_000  # layers, heads, or cells of a row: far beyond any model


def run_from_results(results: Any, recipe_text: str) -> RunDetail:
    """The run a bundle's results.json describes (its id is the exporter's)."""
    top = _object(results, "")
    steps = [_step(item, f"steps[{index}]") for index, item in enumerate(_list(top.get("steps"), "steps"))]
    ids = [step.step_id for step in steps]
    if len(set(ids)) != len(ids):
        raise _bad("steps", "names a step twice")
    status = _choice(top.get("status"), RUN_STATUSES, "status")
    summary = RunSummary(
        id=_int(top.get("id"), "id"),
        # The run's own name (a sweep point's `recipe--key_value`); bundles written before it had the recipe's.
        name=_text(top.get("name", top.get("recipe")), "name" if "name" in top else "recipe"),
        status=status,
        started_at=_time(top.get("started_at"), "started_at"),
        finished_at=None if top.get("finished_at") is None else _time(top.get("finished_at"), "finished_at"),
        device=_optional_text(top.get("device"), "device"),
        steps_total=len(steps),
        steps_cached=sum(step.status == "cached" for step in steps),
        steps_failed=sum(step.status == "failed" for step in steps),
        recipe_hash="",
    )
    return RunDetail(
        summary=summary,
        recipe_name=summary.name,
        recipe_path=_optional_text(top.get("recipe_path"), "recipe_path"),
        recipe_text=recipe_text,
        seed=_int(top.get("seed"), "seed"),
        overrides=[_text(item, "overrides") for item in _list(top.get("overrides", []), "overrides")],
        environment=_object(top.get("environment", {}), "environment"),
        error=_optional_text(top.get("error"), "error"),
        steps=steps,
    )


def _step(value: Any, where: str) -> StepRecord:
    item = _object(value, where)
    key = item.get("key")
    if not isinstance(key, str) or not KEY.match(key):
        raise _bad(f"{where}.key", "is not a 64-digit cache key")
    duration = item.get("duration_s")
    return StepRecord(
        step_id=_text(item.get("id"), f"{where}.id"),
        kind=_text(item.get("kind"), f"{where}.kind"),
        key=key,
        status=_choice(item.get("status"), STEP_STATUSES, f"{where}.status"),
        duration_s=None if duration is None else _number(duration, f"{where}.duration_s"),
        error=_optional_text(item.get("error"), f"{where}.error"),
        params=_object(item.get("params", {}), f"{where}.params"),
        data=_object(item.get("data", {}), f"{where}.data"),
        metrics={_text(n, f"{where}.metrics"): _value(v, f"{where}.metrics.{n}") for n, v in _object(item.get("metrics", {}), f"{where}.metrics").items()},
        head_scores=[
            HeadScores(name, [_row(row, f"{where}.head_scores.{name}") for row in _list(grid, f"{where}.head_scores.{name}", MAX_GRID)])
            for name, grid in _object(item.get("head_scores", {}), f"{where}.head_scores").items()
        ],
        layer_scores=[
            LayerScores(name, _row(line, f"{where}.layer_scores.{name}"))
            for name, line in _object(item.get("layer_scores", {}), f"{where}.layer_scores").items()
        ],
        artifacts=[_artifact(a, f"{where}.artifacts") for a in _list(item.get("artifacts", []), f"{where}.artifacts")],
    )


def _artifact(value: Any, where: str) -> ArtifactRecord:
    item = _object(value, where)
    for field in ("cache_key", "sha256"):
        if not isinstance(item.get(field), str) or not KEY.match(item[field]):
            raise _bad(f"{where}.{field}", "is not a 64-digit hash")
    size = _int(item.get("bytes"), f"{where}.bytes")
    if size < 0:
        raise _bad(f"{where}.bytes", "is negative")
    return ArtifactRecord(_text(item.get("name"), f"{where}.name"), _text(item.get("kind"), f"{where}.kind"), item["cache_key"], item["sha256"], size)


def _row(value: Any, where: str) -> list[float | None]:
    return [_value(cell, where) for cell in _list(value, where, MAX_GRID)]


def _value(value: Any, where: str) -> float | None:
    if value is None:
        return None
    number = _number(value, where)
    return None if math.isnan(number) else number


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(where, f"is not a number ({type(value).__name__})")
    return float(value)


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(where, "is not an integer")
    return value


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise _bad(where, "is not a non-empty text")
    return value


def _optional_text(value: Any, where: str) -> str | None:
    return None if value is None else _text(value, where)


def _choice(value: Any, choices: tuple[str, ...], where: str) -> str:
    if value not in choices:
        raise _bad(where, f"is not one of {', '.join(choices)}")
    return value


def _time(value: Any, where: str) -> datetime:
    try:
        return datetime.fromisoformat(_text(value, where)).replace(tzinfo=None)
    except ValueError:
        raise _bad(where, "is not an ISO date and time") from None


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(where or "the top level", "is not an object")
    return value


def _list(value: Any, where: str, limit: int | None = None) -> list[Any]:
    if not isinstance(value, list):
        raise _bad(where, "is not a list")
    if limit is not None and len(value) > limit:
        raise _bad(where, f"has more than {limit} items")
    return value


def _bad(where: str, problem: str) -> BundleError:
    return BundleError(f"bundle member {RESULTS}: {where} {problem}")
