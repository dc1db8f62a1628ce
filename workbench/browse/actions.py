"""What the browser can do with a run besides showing it: export, figures, report, reproduce.

Each action is a `RunAction` in `ACTIONS`, keyed by the key that starts it. An action that writes
asks for a target (a file or a folder, with a default), confirms before replacing one, and runs
in a worker thread; `perform` returns the line the browser shows. The export is a bundle of
workbench/bundles without artifacts (`workbench export --with-artifacts` adds them); other actions
plug in with `register(RunAction(...))`: the screens only read this table. Nothing here imports Textual, torch or transformers.
"""

from __future__ import annotations

import importlib.util
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from workbench.db.records import RunDetail


@dataclass(frozen=True)
class ActionContext:
    cache_dir: Path
    target: Path
    overwrite: bool


@dataclass(frozen=True)
class RunAction:
    key: str  # the key that starts it, in the runs list and the run view
    name: str  # one word, for the footer
    title: str  # the dialog's question
    target: str  # "file" or "folder": what is asked for
    default_target: Callable[[RunDetail], str]
    perform: Callable[[RunDetail, ActionContext], str]
    available: Callable[[], bool] = lambda: True

    def target_in_use(self, path: Path) -> bool:
        """Something would be replaced: an existing file, or a folder that is not empty."""
        if self.target == "folder":
            return path.is_dir() and any(path.iterdir())
        return path.exists()


def _export(run: RunDetail, context: ActionContext) -> str:
    from workbench.bundles import export_bundle

    written = export_bundle(run, None, context.target, overwrite=context.overwrite)  # results and provenance
    return f"exported run {run.summary.id} to {written.path}"


def _figures(run: RunDetail, context: ActionContext) -> str:
    from workbench.figures import run_figures, write_figures

    written = write_figures(run_figures(run, context.cache_dir), context.target, "png")
    return f"wrote {len(written)} figures of run {run.summary.id} to {context.target}"


def _report_available() -> bool:
    try:
        return importlib.util.find_spec("workbench.report") is not None
    except (ImportError, ValueError):
        return False


def _report(run: RunDetail, context: ActionContext) -> str:
    from workbench.report import write_report

    written = write_report(run, context.cache_dir, context.target, overwrite=context.overwrite)
    return f"wrote the report of run {run.summary.id} to {written}"


ACTIONS: dict[str, RunAction] = {}


def register(action: RunAction) -> RunAction:
    ACTIONS[action.key] = action
    return action


register(RunAction("e", "export", "Export run {id} as a zip to", "file", lambda run: f"run-{run.summary.id}.zip", _export))
register(RunAction("f", "figures", "Write the figures of run {id} (PNG) into the folder", "folder", lambda run: f"figures-run-{run.summary.id}", _figures))
register(
    RunAction(
        "r", "report", "Write the HTML report of run {id} to", "file", lambda run: f"report-run-{run.summary.id}.html", _report, _report_available
    )
)


def available_actions() -> list[RunAction]:
    return [action for action in ACTIONS.values() if action.available()]


# ---- reproduce --------------------------------------------------------------------------------------


def reproduce_command(run: RunDetail) -> str:
    """`workbench run RECIPE --set ...` for this run: its recipe file when the store knows it, else
    `recipe.yaml` as in an exported bundle (workbench.bundles.writer.reproduce_command)."""
    from workbench.bundles.writer import reproduce_command as bundle_command

    if not run.recipe_path:
        return bundle_command(run.overrides)
    return shlex.join(["workbench", "run", run.recipe_path, *(part for item in run.overrides for part in ("--set", item))])


def reproduce_note(run: RunDetail) -> str:
    """Whether the recipe file still holds the recipe the run used."""
    if not run.recipe_path:
        return "the recipe as run is recipe.yaml in an exported bundle (e)"
    path = Path(run.recipe_path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return f"{path} is not readable here; the recipe as run is in an exported bundle (e)"
    if text != run.recipe_text:
        return f"{path} has changed since this run; the recipe as run is in an exported bundle (e)"
    return f"{path} is unchanged since this run"
