"""Plain functions the browser's screens share: what a run is called, how a value reads, which runs a
filter keeps, how they sort. No Textual here, so they are tested (and reused) without an app.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

from rich.text import Text

from workbench.db.records import RunDetail, RunSummary, StepRecord
from workbench.durations import duration_text
from workbench.sweeps import SEPARATOR as SWEEP_SEPARATOR
from workbench.sweeps import sweep_of
from workbench.ui.views import STATUS_STYLE

# ---- runs -------------------------------------------------------------------------------------------

SORT_COLUMNS = ("id", "recipe", "status", "started", "duration", "device", "steps")


def now_utc() -> datetime:
    """The store's clock: naive UTC (workbench.db.store.now)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def run_duration(run: RunSummary, clock: datetime | None = None) -> str:
    """A finished run's duration; a running one's time so far, with an ellipsis."""
    if run.duration_s is not None:
        return duration_text(run.duration_s, hours=True)
    if run.status == "running":
        elapsed = ((clock or now_utc()) - run.started_at).total_seconds()
        return duration_text(max(elapsed, 0.0), hours=True) + "…"
    return "-"


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


def imported_from(run: RunSummary) -> str | None:
    """Where an imported run came from (`workbench import`), or None. Older records lack the field."""
    return getattr(run, "imported_from", None) or None


def swept(run: RunSummary) -> str | None:
    """The sweep a run belongs to (the recipe name of `workbench run --sweep`'s points), else None.

    A sweep point's run is named `recipe--key_value--...` (workbench/sweeps.py); a store that
    records a sweep field of its own is read first.
    """
    for name in ("sweep", "sweep_id", "sweep_name"):
        value = getattr(run, name, None)
        if value not in (None, ""):
            return str(value)
    point = sweep_of(run.name)
    return point[0] if point else None


def sweep_point(run: RunSummary) -> str | None:
    """'id_bert-tiny--seed_1': which point of its sweep a run is, from its name; None for other runs."""
    point = sweep_of(run.name)
    return point[1] if point else None


def short_name(name: str, width: int) -> str:
    """A name that fits `width`; a sweep point's keeps its point and shortens its recipe name."""
    if len(name) <= width:
        return name
    point = sweep_of(name)
    if point is not None:
        base, rest = point
        room = width - len(SWEEP_SEPARATOR) - len(rest) - 1
        if room >= 3:
            return base[:room] + "…" + SWEEP_SEPARATOR + rest
        return "…" + (SWEEP_SEPARATOR + rest)[-(width - 1):]
    return name[: width - 1] + "…"


def run_flags(run: RunSummary) -> str:
    """'i' imported, 's' from a sweep: one letter each, so the mark survives NO_COLOR and 80 columns."""
    return ("i" if imported_from(run) else "") + ("s" if swept(run) else "")


def steps_text(run: RunSummary) -> Text:
    if run.steps_total and run.steps_cached == run.steps_total:
        return Text("all cached", style="dim")
    text = Text(str(run.steps_total))
    if run.steps_cached:
        text.append(f" ({run.steps_cached} cached)", style="dim")
    if run.steps_failed:
        text.append(f" {run.steps_failed} failed", style="red")
    if run.status == "running":
        text.append(" …")
    return text


def run_line(run: RunSummary) -> str:
    """One line about a run, for the status bar under the runs list."""
    parts = [f"run {run.id}", run.name, run.status, f"{run.steps_total} steps"]
    if run.steps_cached:
        parts.append(f"{run.steps_cached} cached")
    if run.steps_failed:
        parts.append(f"{run.steps_failed} failed")
    origin = imported_from(run)
    if origin:
        parts.append(f"imported from {origin}")
    sweep = swept(run)
    if sweep:
        point = sweep_point(run)
        parts.append(f"sweep {sweep}" + (f": {point}" if point else ""))
    return " · ".join(parts)


def matches(run: RunSummary, query: str) -> bool:
    """Every word of the query is in the run's recipe name, status, device, id or marks (any case).

    `status:running` and `recipe:quick` restrict a word to one field; `imported` and `sweep` match
    runs so marked.
    """
    fields = {
        "id": str(run.id),
        "recipe": run.name.lower(),
        "status": run.status.lower(),
        "device": (run.device or "").lower(),
        "marks": " ".join(m for m, on in (("imported", imported_from(run)), ("sweep", swept(run))) if on),
    }
    for word in query.lower().split():
        field, colon, wanted = word.partition(":")
        if colon and field in fields:
            if wanted not in fields[field]:
                return False
        elif not any(word in value for value in fields.values()):
            return False
    return True


def sort_key(column: str) -> Callable[[RunSummary], Any]:
    keys: dict[str, Callable[[RunSummary], Any]] = {
        "id": lambda run: run.id,
        "recipe": lambda run: (run.name.lower(), run.id),
        "status": lambda run: (run.status, run.id),
        "started": lambda run: (run.started_at, run.id),
        "duration": lambda run: (run.duration_s if run.duration_s is not None else math.inf, run.id),
        "device": lambda run: (run.device or "", run.id),
        "steps": lambda run: (run.steps_total, run.id),
    }
    return keys[column]


def sorted_runs(runs: Sequence[RunSummary], column: str, descending: bool) -> list[RunSummary]:
    return sorted(runs, key=sort_key(column), reverse=descending)


# ---- steps ------------------------------------------------------------------------------------------


def planned_steps(run: RunDetail) -> list[str]:
    """The step ids the recipe names, in its order (for the steps not started yet); [] if unreadable."""
    import yaml

    try:
        document = yaml.safe_load(run.recipe_text)
    except yaml.YAMLError:
        return []
    steps = document.get("steps") if isinstance(document, dict) else None
    return [str(step_id) for step_id in steps] if isinstance(steps, dict) else []


def pending_steps(run: RunDetail) -> list[str]:
    """Planned steps that have no record yet: only a running run has them."""
    if run.summary.status != "running":
        return []
    started = {step.step_id for step in run.steps}
    return [step_id for step_id in planned_steps(run) if step_id not in started]


def pruned_heads(run: RunDetail, step: StepRecord) -> set[tuple[int, int]]:
    """(layer, head) pairs the step's model no longer has: its own record, else the prune step its
    model came from, following `model:` (as workbench.figures.run.pruned_heads, without matplotlib)."""
    seen: set[str] = set()
    current: StepRecord | None = step
    while current is not None and current.step_id not in seen:
        heads = current.data.get("pruned_heads")
        if heads or current.kind == "prune":
            return {(int(layer), int(head)) for layer, ids in (heads or {}).items() for head in ids}
        seen.add(current.step_id)
        model = current.params.get("model")
        current = run.step(model) if isinstance(model, str) else None
    return set()


def params_text(params: dict[str, Any], limit: int = 12) -> str:
    shown = [f"{key}={value}" for key, value in params.items() if value is not None][:limit]
    return ", ".join(shown)


# ---- values in grids --------------------------------------------------------------------------------


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def exact(value: float | None) -> str:
    """A value in full enough precision to tell heads apart (the cells show 2-3 digits)."""
    if not finite(value):
        return "-"
    assert value is not None
    if float(value).is_integer() and abs(value) < 1e12:
        return str(int(value))
    return f"{value:.6g}"


def rank_of(grid: Sequence[Sequence[float | None]], row: int, column: int) -> tuple[int, int] | None:
    """(rank, count) of a cell among the grid's finite values, 1 = the highest; ties share a rank."""
    value = grid[row][column] if column < len(grid[row]) else None
    if not finite(value):
        return None
    values = [v for line in grid for v in line if finite(v)]
    return 1 + sum(1 for v in values if v > value), len(values)  # type: ignore[operator]


def is_binary(grid: Sequence[Sequence[float | None]]) -> bool:
    """A mask (0/1 per head): ranks mean nothing there."""
    return all(v in (0, 1) for line in grid for v in line if finite(v))


def signed(value: float | None) -> str:
    return "-" if not finite(value) else f"{value:+.6g}"

