"""`--step` and `--score` values checked against the run, so a typo is an error, not an empty page."""

from __future__ import annotations

from workbench.db.records import RunDetail
from workbench.errors import WorkbenchError, did_you_mean


def check_selection(run: RunDetail, steps: list[str] | None, scores: list[str] | None) -> None:
    """Raise a WorkbenchError naming every unknown step id or score name, with the valid ones."""
    known_steps = [step.step_id for step in run.steps]
    chosen = [step for step in run.steps if not steps or step.step_id in steps]
    known_scores = sorted({score.name for step in chosen for score in (*step.head_scores, *step.layer_scores)})
    for option, given, known in (("--step", steps, known_steps), ("--score", scores, known_scores)):
        for name in given or []:
            if name not in known:
                listed = ", ".join(known) if known else "none"
                hint = did_you_mean(name, known)
                raise WorkbenchError(
                    f"{option} {name}: run {run.summary.id} has no such {option[2:]}",
                    hint=f"{hint + ' ' if hint else ''}valid: {listed}",
                )
