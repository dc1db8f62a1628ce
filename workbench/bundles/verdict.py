"""Did a re-run reproduce a bundle's run? Every metric, head score and layer score, within tolerance.

A value reproduces when |here - bundle| <= atol + rtol * |bundle| (numpy.isclose's rule, the
bundle's value as the reference), cell by cell for head and layer scores; missing cells (pruned
heads, NaN) must be missing in both. Timings (examples_per_s*, speedup*, ...) measure the machine,
not the analysis: they are left out and listed as excluded. Step data (curves, tables) is not
compared: every number in it that matters is also a metric or a score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from workbench.db.records import RunDetail, StepRecord

TIMING_PREFIXES = ("examples_per_s", "speedup", "tokens_per_s", "seconds", "duration")
TIMING_SUFFIXES = ("_seconds", "_per_s")
DEFAULT_RTOL = 1e-4
DEFAULT_ATOL = 1e-6


def is_timing(name: str) -> bool:
    return name.startswith(TIMING_PREFIXES) or name.endswith(TIMING_SUFFIXES)


@dataclass(frozen=True)
class Check:
    step: str
    kind: str  # metric | head score | layer score | step
    name: str
    ok: bool
    max_abs_diff: float | None  # None when nothing numeric could be compared
    bundle: float | None = None  # metrics only
    here: float | None = None
    note: str | None = None  # where the largest difference is, or why it failed


@dataclass
class Verdict:
    run_id: int | None  # the re-run in this store
    rtol: float
    atol: float
    checks: list[Check] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)  # "step.metric" timings left out
    differing_keys: list[str] = field(default_factory=list)  # steps whose cache key differs from the bundle's
    inputs: list[str] = field(default_factory=list)  # where each data file was found

    @property
    def reproduced(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]

    def as_json(self) -> dict[str, Any]:
        return {
            "reproduced": self.reproduced,
            "run_id": self.run_id,
            "rtol": self.rtol,
            "atol": self.atol,
            "checks": [vars(check) for check in self.checks],
            "excluded": self.excluded,
            "differing_keys": self.differing_keys,
            "inputs": self.inputs,
        }

    def table(self) -> Any:
        """A rich Table, one row per step and value: ✓ within tolerance, ✗ with the largest difference."""
        from rich.table import Table
        from rich.text import Text

        table = Table(title=f"reproduce: rtol {self.rtol:g}, atol {self.atol:g}", title_justify="left")
        for column in ("step", "value", "", "largest |diff|", "bundle", "here", "note"):
            table.add_column(column, justify="right" if column in ("largest |diff|", "bundle", "here") else "left")
        for check in self.checks:
            table.add_row(
                check.step,
                f"{check.name} ({check.kind})" if check.kind != "metric" else check.name,
                Text("✓", style="green") if check.ok else Text("✗", style="bold red"),
                _number(check.max_abs_diff),
                _number(check.bundle),
                _number(check.here),
                check.note or "",
            )
        return table

    def summary_lines(self) -> list[str]:
        """The lines under the table: the verdict, what was excluded and why keys differ."""
        failed = self.failures
        lines = [
            f"reproduced: all {len(self.checks)} values within tolerance (run {self.run_id})"
            if not failed
            else f"NOT reproduced: {len(failed)} of {len(self.checks)} values differ (run {self.run_id})"
        ]
        if self.excluded:
            lines.append(f"excluded (timings): {', '.join(self.excluded)}")
        if self.differing_keys:
            lines.append(f"cache keys differ from the bundle's for: {', '.join(self.differing_keys)}")
        return lines


def compare_to_bundle(bundle: RunDetail, here: RunDetail, *, rtol: float, atol: float) -> Verdict:
    """Every value of every step of the bundle's run, checked against the re-run."""
    verdict = Verdict(here.summary.id, rtol, atol)
    for step in bundle.steps:
        mine = here.step(step.step_id)
        if mine is None or mine.status not in ("done", "cached"):
            status = "missing" if mine is None else mine.status
            verdict.checks.append(Check(step.step_id, "step", step.kind, False, None, note=f"step {status} here"))
            continue
        _compare_step(step, mine, verdict)
    return verdict


def _compare_step(bundle: StepRecord, here: StepRecord, verdict: Verdict) -> None:
    rtol, atol = verdict.rtol, verdict.atol
    for name, value in bundle.metrics.items():
        if is_timing(name):
            verdict.excluded.append(f"{bundle.step_id}.{name}")
            continue
        if name not in here.metrics:
            verdict.checks.append(Check(bundle.step_id, "metric", name, False, None, value, None, "not measured here"))
            continue
        other = here.metrics[name]
        ok, diff = _close(value, other, rtol, atol)
        verdict.checks.append(Check(bundle.step_id, "metric", name, ok, diff, value, other, None if ok or diff is not None else "missing in one"))
    grids = {grid.name: grid.values for grid in here.head_scores}
    for grid in bundle.head_scores:
        verdict.checks.append(_compare_cells(bundle.step_id, "head score", grid.name, grid.values, grids.get(grid.name), rtol, atol))
    lines = {line.name: [line.values] for line in here.layer_scores}
    for line in bundle.layer_scores:
        verdict.checks.append(_compare_cells(bundle.step_id, "layer score", line.name, [line.values], lines.get(line.name), rtol, atol))


def _compare_cells(
    step: str, kind: str, name: str, bundle: list[list[float | None]], here: list[list[float | None]] | None, rtol: float, atol: float
) -> Check:
    if here is None:
        return Check(step, kind, name, False, None, note="not computed here")
    shape_a = [len(row) for row in bundle]
    shape_b = [len(row) for row in here]
    if shape_a != shape_b:
        return Check(step, kind, name, False, None, note=f"shape differs ({len(bundle)}x{max(shape_a, default=0)} vs {len(here)}x{max(shape_b, default=0)})")
    ok, largest, where, missing_differs = True, None, None, False
    for i, (row_a, row_b) in enumerate(zip(bundle, here)):
        for j, (a, b) in enumerate(zip(row_a, row_b)):
            close, diff = _close(a, b, rtol, atol)
            ok = ok and close
            missing_differs = missing_differs or (not close and diff is None)
            if diff is not None and (largest is None or diff > largest):
                largest, where = diff, (i, j)
    note = None
    if not ok:
        notes = []
        if where is not None:
            notes.append(f"largest at layer {where[0]}, head {where[1]}" if kind == "head score" else f"largest at layer {where[1]}")
        if missing_differs:
            notes.append("a missing (pruned or NaN) cell is present on one side")
        note = "; ".join(notes)
    return Check(step, kind, name, ok, largest, note=note)


def _close(a: float | None, b: float | None, rtol: float, atol: float) -> tuple[bool, float | None]:
    """(within tolerance, |b - a| or None when one side is missing)."""
    missing_a = a is None or (isinstance(a, float) and math.isnan(a))
    missing_b = b is None or (isinstance(b, float) and math.isnan(b))
    if missing_a or missing_b:
        return missing_a and missing_b, None
    diff = abs(float(b) - float(a))  # type: ignore[arg-type]
    return diff <= atol + rtol * abs(float(a)), diff  # type: ignore[arg-type]


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"
