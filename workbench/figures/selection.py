"""Step ids and score names asked for, checked against a run: a typo is an error naming the valid ones."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from workbench.db.records import StepRecord
from workbench.errors import did_you_mean
from workbench.figures.errors import UnknownScore, UnknownStep


def chosen_steps(steps: Sequence[StepRecord], wanted: Iterable[str] | None, where: str) -> list[StepRecord]:
    """The steps named in `wanted` (all when None), in run order; `where` says whose steps they are."""
    if wanted is None:
        return list(steps)
    wanted = list(wanted)
    known = [step.step_id for step in steps]
    for name in wanted:
        if name not in known:
            raise UnknownStep(f"step '{name}': {where} has no such step", hint=_hint(name, known))
    return [step for step in steps if step.step_id in wanted]


def check_scores(steps: Sequence[StepRecord], wanted: Iterable[str] | None, where: str) -> None:
    """Every name in `wanted` is a head or layer score of at least one of `steps`."""
    if wanted is None:
        return
    known = sorted({score.name for step in steps for score in (*step.head_scores, *step.layer_scores)})
    for name in wanted:
        if name not in known:
            raise UnknownScore(f"score '{name}': no head or layer score of that name in {where}", hint=_hint(name, known))


def _hint(name: str, known: list[str]) -> str:
    close = did_you_mean(name, known)
    return f"{close + ' ' if close else ''}valid: {', '.join(known) if known else 'none'}"
