"""`workbench`: run recipes and browse their results.

The only module that prints errors and picks exit codes: a WorkbenchError becomes a red panel on
stderr and exit code 2. Browsing commands (runs, show, compare, export) never import torch.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.panel import Panel

from workbench.errors import RecipeErrors, RunInterrupted, WorkbenchError

if TYPE_CHECKING:
    from workbench.db.store import Store
    from workbench.store_location import StoreLocation

app = typer.Typer(
    name="workbench",
    help="BERTology Workbench: declarative probing of transformer models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Markup and emoji codes off: what this console prints comes from records, i.e. from data (a CoNLL-U
# relation can be "[/red]"); styling is done with Text objects.
out = Console(markup=False, emoji=False)
if not out.is_terminal:
    out.width = 160  # files and pipes: room for a 16-head heatmap without wrapping
err = Console(stderr=True)

def _print_version(value: bool) -> None:
    if value:
        from importlib import metadata

        try:
            version = metadata.version("bertology-workbench")
        except metadata.PackageNotFoundError:  # running from a checkout that is not installed
            version = "unknown (not installed)"
        print(f"workbench {version}")
        raise typer.Exit(0)


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """BERTology Workbench: declarative probing of transformer models."""


StoreOption = Annotated[
    Optional[Path],
    typer.Option(
        "--store",
        help="store folder (default: $WORKBENCH_HOME, else the nearest store/ above the recipe or the current "
        "folder, else the per-user store)",
        show_default=False,
    ),
]
SetOption = Annotated[
    Optional[list[str]],
    typer.Option("--set", help="override a recipe field: --set datasets.dev.limit=64 (repeatable)", show_default=False),
]


def _locate(store: Path | None, recipe: Path | None = None) -> "StoreLocation":
    """Where the store is (store_location.py), said on stderr so a run never lands somewhere unexpected."""
    from rich.text import Text

    from workbench.store_location import locate_store

    location = locate_store(store, recipe=recipe)
    if os.environ.get("RANK", "0") == "0":  # once per data-parallel run, not once per rank
        err.print(Text(location.describe(), style="dim"), soft_wrap=True)
    return location


def _reading(store: Path | None) -> tuple["Store", "StoreLocation"]:
    """The store for a browsing command: opened read-only, never created."""
    location = _locate(store)
    return location.open(create=False), location


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(metavar="RECIPE", help="the recipe YAML file")],
    set_: SetOption = None,
    force: Annotated[
        Optional[list[str]], typer.Option("--force", help="recompute this step even if cached ('*' for all)")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan and what is cached; run nothing")] = False,
    store: StoreOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no summary at the end")] = False,
    processes: Annotated[
        Optional[str],
        typer.Option("--processes", metavar="N|auto", help="data-parallel processes (torch.distributed; auto: one per GPU)"),
    ] = None,
    sweep: Annotated[
        Optional[list[str]],
        typer.Option(
            "--sweep",
            metavar="KEY=V1,V2",
            help="run the grid of these values (repeatable: the cartesian product), one run per point; "
            "commas inside [] {} or quotes do not split",
            show_default=False,
        ),
    ] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="with --sweep: points run at a time")] = 1,
    point: Annotated[
        Optional[int],
        typer.Option("--point", min=0, help="with --sweep: run only point I (0-based, as --dry-run lists them; a Slurm array index)"),
    ] = None,
) -> None:
    """Run a recipe, or resume it: cached steps are loaded, the rest are computed.

    With --sweep, every point of the grid is validated first, then each runs as its own `workbench run`.

    Points run --jobs at a time, each logging to STORE/sweeps/, named RECIPE--KEY_VALUE--... in the store.

    A failed point does not stop the others. Exit code: 0 if every point finished, 1 if any failed, 130 if interrupted.
    """
    from workbench.executor import dry_run as plan_only
    from workbench.executor import run_recipe
    from workbench.recipe.loader import load_recipe

    if sweep:
        from workbench.sweeps import build_grid

        grid = build_grid(recipe, set_ or [], sweep)  # every point validated before anything runs
        if point is None:
            raise typer.Exit(_run_sweep(grid, recipe, store, force or [], dry_run, quiet, processes, jobs))
        set_ = grid.point(point).overrides  # one point, run here as a plain `run --set ...` would
    elif point is not None or jobs != 1:
        raise WorkbenchError(f"{'--point' if point is not None else '--jobs'} needs --sweep", hint="e.g. --sweep seed=1,2,3 --jobs 2")
    loaded = load_recipe(recipe, set_ or [])
    if processes is not None and not dry_run:
        from workbench.launch import launch_processes, parse_processes

        count = parse_processes(processes)
        if count > 1:  # N copies of this very command, each told its rank by the launcher
            raise typer.Exit(launch_processes(count, _without_processes(sys.argv[1:])))
    location = _locate(store, recipe)
    if dry_run:
        from workbench.ui.views import plan_table

        out.print(plan_table(plan_only(loaded, location.store_dir, force or [])))
        return
    try:
        outcome = run_recipe(loaded, location.store_dir, force=force or [])
    finally:
        from workbench.distributed import leave

        leave()
    if not quiet and outcome.run_id is not None:  # ranks other than 0 of a data-parallel run record nothing
        from workbench.ui.views import run_summary

        out.print(run_summary(location.open(create=False).get_run(outcome.run_id)))  # type: ignore[arg-type]


def _without_processes(arguments: list[str]) -> list[str]:
    """The command line minus `--processes N` (the launched copies must not launch again)."""
    kept: list[str] = []
    skip = False
    for argument in arguments:
        if skip:
            skip = False
        elif argument == "--processes":
            skip = True
        elif not argument.startswith("--processes="):
            kept.append(argument)
    return kept


def _run_sweep(
    grid, recipe: Path, store: Path | None, force: list[str], dry_run: bool, quiet: bool, processes: str | None, jobs: int
) -> int:
    """Run every point of a validated grid (workbench/sweeps.py); the exit code of the sweep."""
    from rich.text import Text

    from workbench.sweeps import SweepRunner
    from workbench.ui.views import grid_table, sweep_failures, sweep_table

    location = _locate(store, recipe)
    if dry_run:
        out.print(grid_table(grid))
        return 0
    if processes is not None:
        from workbench.launch import parse_processes

        parse_processes(processes)  # a bad value fails once, here, not once per point
    display = _SweepDisplay(quiet)
    runner = SweepRunner(
        grid, location, jobs=jobs, force=force, processes=processes, on_change=display.update,
        poll_store_s=1.0 if display.live else None,
    )
    at_a_time = f", {jobs} at a time" if jobs > 1 else ""
    numbered = f"0-{len(grid.points) - 1}" if len(grid.points) > 1 else "0"
    err.print(
        Text(f"sweep: {len(grid.points)} points ({grid.shape}, numbered {numbered}){at_a_time}; logs in {runner.log_dir}", style="dim"),
        soft_wrap=True,
    )
    with display:
        outcome = runner.run()
    if not quiet:
        out.print(sweep_table(outcome))
        finished = [p.point.name for p in outcome.points if p.status == "finished"]
        if len(finished) >= 2:
            out.print(Text(f"compare two points: workbench compare {finished[0]} {finished[1]}", style="dim"), soft_wrap=True)
    for line in sweep_failures(outcome):
        err.print(line, soft_wrap=True)
    if outcome.interrupted:
        err.print(
            Text("sweep interrupted; finished steps are cached and the same command resumes every point", style="magenta"),
            soft_wrap=True,
        )
    return outcome.exit_code


class _SweepDisplay:
    """A sweep's progress on stderr: a live table on a terminal, one line per start and end elsewhere."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.live = err.is_terminal and not quiet
        self._live = None
        self._seen: dict[int, str] = {}

    def __enter__(self) -> "_SweepDisplay":
        if self.live:
            from rich.live import Live

            self._live = Live(console=err, refresh_per_second=4, transient=True)
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()

    def update(self, outcome) -> None:
        from rich.text import Text

        from workbench.ui.views import SWEEP_STATUS_STYLE, sweep_table

        if self._live is not None:
            self._live.update(sweep_table(outcome, live=True))
            return
        if self.quiet:
            return
        for point in outcome.points:
            if self._seen.get(point.point.index) == point.status or point.status == "queued":
                continue
            self._seen[point.point.index] = point.status
            line = Text(f"[{point.point.index}] ")  # numbered from 0, as in the tables and --point
            line.append("started" if point.status == "running" else point.status, style=SWEEP_STATUS_STYLE.get(point.status, ""))
            if point.run_id is not None:
                line.append(f" run {point.run_id}")
            if point.ended is not None and point.duration_s is not None:
                line.append(f" in {point.duration_s:.1f}s")
            line.append(f": {point.point.label}")
            err.print(line, soft_wrap=True)


@app.command()
def validate(recipe: Annotated[Path, typer.Argument(metavar="RECIPE", help="the recipe YAML file")], set_: SetOption = None) -> None:
    """Check a recipe (schema, references, cycles, files) without loading any model."""
    from workbench.plan import build_plan
    from workbench.recipe.loader import load_recipe

    loaded = load_recipe(recipe, set_ or [])
    plan = build_plan(loaded)
    from rich.text import Text

    out.print(Text.assemble(("ok", "green"), f" {recipe}: {len(plan.steps)} steps ({', '.join(s.step_id for s in plan.steps)})"))


@app.command()
def runs(
    store: StoreOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    limit: Annotated[int, typer.Option(help="show at most this many runs")] = 50,
) -> None:
    """List the runs in the store, newest first."""
    from workbench.ui.views import runs_json, runs_table

    db, _ = _reading(store)
    db.mark_dead_runs()
    listed = db.list_runs(limit)
    if as_json:
        print(json.dumps(runs_json(listed), indent=1))
    else:
        out.print(runs_table(listed))


@app.command()
def show(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="run id, recipe name (its latest run) or 'latest'")] = "latest",
    store: StoreOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="every metric and score, machine-readable")] = False,
    step: Annotated[Optional[list[str]], typer.Option("--step", help="only these steps (repeatable)")] = None,
    score: Annotated[Optional[list[str]], typer.Option("--score", help="only these head/layer scores")] = None,
    map_: Annotated[
        Optional[list[str]], typer.Option("--map", help="saved attention maps to draw: LAYER (mean over heads) or LAYER:HEAD")
    ] = None,
) -> None:
    """Show a run: its steps, metrics, heatmaps, curves, tables and saved attention maps."""
    from workbench.ui.selection import check_selection
    from workbench.ui.views import run_json, run_view

    db, location = _reading(store)
    db.mark_dead_runs()
    detail = db.get_run(run_ref)
    check_selection(detail, step, score)
    if as_json:
        print(json.dumps(run_json(detail), indent=1))
    else:
        out.print(run_view(detail, step_ids=step, scores=score, cache_dir=location.cache_dir, maps=map_))


@app.command()
def compare(
    run_a: Annotated[str, typer.Argument(metavar="A")],
    run_b: Annotated[str, typer.Argument(metavar="B")],
    store: StoreOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="the differences, machine-readable")] = False,
    changed: Annotated[bool, typer.Option("--changed", help="only what differs by more than --tolerance")] = False,
    tolerance: Annotated[float, typer.Option(help="differences at most this large count as equal", min=0)] = 1e-9,
) -> None:
    """Compare two runs: metric deltas, head- and layer-score differences (B - A)."""
    from workbench.ui.comparison import compare_runs
    from workbench.ui.views import compare_view

    db, _ = _reading(store)
    a, b = db.get_run(run_a), db.get_run(run_b)
    if as_json:
        print(json.dumps(compare_runs(a, b, changed_only=changed, tolerance=tolerance).as_json(), indent=1))
    else:
        out.print(compare_view(a, b, changed_only=changed, tolerance=tolerance))


@app.command()
def plot(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="run id, recipe name (its latest run) or 'latest'")] = "latest",
    output: Annotated[Path, typer.Option("--output", "-o", help="a file (one figure) or a folder (one file per figure)")] = Path("figures"),
    fmt: Annotated[Optional[str], typer.Option("--format", help="png, svg or pdf (default: the file's suffix, else png)")] = None,
    step: Annotated[Optional[list[str]], typer.Option("--step", help="only these steps (repeatable)")] = None,
    score: Annotated[Optional[list[str]], typer.Option("--score", help="only these head/layer scores")] = None,
    map_: Annotated[Optional[list[str]], typer.Option("--map", help="saved attention maps: LAYER or LAYER:HEAD")] = None,
    compare_with: Annotated[Optional[str], typer.Option("--compare", metavar="B", help="difference figures B - RUN")] = None,
    store: StoreOption = None,
) -> None:
    """Draw a run's figures (matplotlib): heatmaps, curves, probes, syntax, CAT, attention maps, speeds."""
    from workbench.figures import compare_figures, run_figures, write_figures

    db, location = _reading(store)
    detail = db.get_run(run_ref)
    if compare_with is not None:
        figures = compare_figures(detail, db.get_run(compare_with), step, score)
    else:
        figures = run_figures(detail, location.cache_dir, step, score, maps=map_)
    written = write_figures(figures, output, fmt)
    for path in written:
        out.print(f"wrote {path}")


@app.command()
def report(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="run id, recipe name (its latest run) or 'latest'")] = "latest",
    output: Annotated[Path, typer.Option("--output", "-o", help="the HTML file to write")] = Path("report.html"),
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing file")] = False,
    store: StoreOption = None,
) -> None:
    """One self-contained HTML page of a run: recipe, provenance, every step's metrics, tables and figures."""
    from workbench.report import write_report

    db, location = _reading(store)
    path = write_report(db.get_run(run_ref), location.cache_dir, output, overwrite=force)
    out.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


@app.command()
def export(
    run_ref: Annotated[str, typer.Argument(metavar="RUN")],
    output: Annotated[Path, typer.Option("--output", "-o", help="the zip file to write")],
    store: StoreOption = None,
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing file")] = False,
    with_artifacts: Annotated[
        bool, typer.Option("--with-artifacts", help="include the run's cache entries (models, masks, features)")
    ] = False,
) -> None:
    """Bundle a run to share: the recipe as run, results, provenance, a manifest of hashes (and its artifacts)."""
    from workbench.bundles import export_bundle

    db, location = _reading(store)
    bundle = export_bundle(db.get_run(run_ref), location, output, with_artifacts=with_artifacts, overwrite=force)
    entries = f", {len(bundle.entries)} cache entries" if bundle.entries else ""
    out.print(f"wrote {bundle.path} ({bundle.members} members, {bundle.bytes / 1e6:.1f} MB{entries})")


@app.command(name="import")
def import_(
    bundle: Annotated[Path, typer.Argument(metavar="FILE", help="a bundle written by `workbench export`")],
    store: StoreOption = None,
) -> None:
    """Add a bundle's run to the store (marked imported); its artifacts seed the cache."""
    from workbench.bundles import import_bundle

    _print_lines(import_bundle(bundle, _locate(store)).lines())


@app.command()
def reproduce(
    bundle: Annotated[Path, typer.Argument(metavar="FILE", help="a bundle written by `workbench export`")],
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="where the bundle's data files are")] = None,
    model: Annotated[Optional[Path], typer.Option("--model", help="a local copy of the bundle's model")] = None,
    rtol: Annotated[float, typer.Option(min=0, help="relative tolerance")] = 1e-4,
    atol: Annotated[float, typer.Option(min=0, help="absolute tolerance")] = 1e-6,
    as_json: Annotated[bool, typer.Option("--json", help="the verdict, machine-readable")] = False,
    store: StoreOption = None,
) -> None:
    """Check a bundle's data, re-run its recipe here and compare every value: exit 0 if it reproduces, 1 if not."""
    from workbench.bundles import reproduce_bundle

    verdict = reproduce_bundle(bundle, _locate(store), data_dir=data_dir, model_dir=model, rtol=rtol, atol=atol)
    if as_json:
        print(json.dumps(verdict.as_json(), indent=1))
    else:
        out.print(verdict.table())
        _print_lines(verdict.summary_lines())
    raise typer.Exit(0 if verdict.reproduced else 1)


@app.command(name="export-model")
def export_model(
    run_ref: Annotated[str, typer.Argument(metavar="RUN")],
    step: Annotated[str, typer.Argument(metavar="STEP", help="the finetune or prune step whose model to write")],
    output: Annotated[Path, typer.Option("--output", "-o", help="the folder to write")],
    dense: Annotated[bool, typer.Option("--dense", help="a plain checkpoint: pruned heads zeroed, full shapes")] = False,
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing folder")] = False,
    store: StoreOption = None,
) -> None:
    """Write a step's model as a plain Hugging Face checkpoint that loads without the workbench."""
    from workbench.errors import WorkbenchError

    if not dense:
        raise WorkbenchError("only --dense is supported", hint="the compact pruned form loads with workbench.load_model")
    from workbench.models.dense import export_dense_model

    db, location = _reading(store)
    written = export_dense_model(db.get_run(run_ref), step, output, store=location, overwrite=force)
    zeroed = sum(map(len, written.pruned_heads.values()))
    out.print(
        f"wrote {written.path}: dense {written.family} checkpoint, {zeroed} pruned heads zeroed "
        f"(max |difference| on a probe batch {written.max_abs_difference:.2g}); load it with transformers' from_pretrained"
    )


@app.command()
def browse(store: StoreOption = None) -> None:
    """Browse the store full-screen: runs, steps, heatmaps with a cursor, compare; live while runs run."""
    from workbench.browse import run_browser

    run_browser(_locate(store))


@app.command()
def rm(
    run_ids: Annotated[list[int], typer.Argument(metavar="RUN...", help="ids of the runs to remove")],
    store: StoreOption = None,
) -> None:
    """Remove runs from the store (their cache entries stay until `workbench gc`)."""
    from workbench.maintenance import remove_runs

    db, _ = _reading(store)
    report = remove_runs(db, run_ids)
    _print_lines(report.lines())
    if report.not_found:
        raise typer.Exit(2)


@app.command()
def gc(
    store: StoreOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="say what would be removed; remove nothing")] = False,
) -> None:
    """Remove the cache entries no run in the store uses, and what dead processes left behind."""
    from workbench.maintenance import garbage_collect

    location = _locate(store)
    _print_lines(garbage_collect(location.store_dir, dry_run=dry_run).lines())


@app.command()
def verify(
    store: StoreOption = None,
    no_repair: Annotated[bool, typer.Option("--no-repair", help="only report: keep damaged cache entries")] = False,
) -> None:
    """Re-hash every cache entry and check the database; discard damaged entries (exit 1 if damage was found)."""
    from workbench.maintenance import verify as verify_store

    location = _locate(store)
    report = verify_store(location.store_dir, repair=not no_repair)
    _print_lines(report.lines())
    if not report.ok:
        raise typer.Exit(1)


def _print_lines(lines: list[str]) -> None:
    from rich.text import Text

    for line in lines:
        out.print(Text(line), soft_wrap=True)


def main() -> None:
    """Entry point: run the app, turning user errors into a message and exit code 2."""
    try:
        # Outside standalone mode click *returns* the code of a `typer.Exit(code)` (and of a Ctrl-C,
        # as 130) instead of exiting with it: exit with it here, or `rm`, `verify`, `reproduce` and
        # `run --sweep` would all exit 0.
        code = app(standalone_mode=False)
        if isinstance(code, int) and not isinstance(code, bool) and code != 0:
            sys.exit(code)
    except RunInterrupted as error:
        err.print(f"[magenta]{_escape(str(error))}[/magenta]")
        sys.exit(130)
    except WorkbenchError as error:
        _print_error(error)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("[magenta]interrupted[/magenta]")
        sys.exit(130)
    except (typer.Exit, SystemExit) as exit_:
        code = getattr(exit_, "exit_code", None)
        sys.exit(code if code is not None else getattr(exit_, "code", 0))
    except typer.Abort:
        sys.exit(130)
    except typer.TyperException as error:  # usage errors: typer >= 0.2x raises its bundled click's
        if not hasattr(error, "show"):
            raise
        error.show()  # the usage line, "Try 'workbench run --help'", and what was wrong
        sys.exit(2)


def _print_error(error: WorkbenchError) -> None:
    """A red panel on a terminal; plain unwrapped lines in logs, so file:line stays greppable."""
    problems = error.errors if isinstance(error, RecipeErrors) else [error]
    lines = []
    if os.environ.get("RANK", "0") != "0" and os.environ.get("WORLD_SIZE", "1") != "1":
        lines.append(f"rank {os.environ['RANK']} of a data-parallel run:")
    for problem in problems:
        lines.append(f"[bold]{_escape(problem.message)}[/bold]")
        if problem.hint:
            lines.append(f"  [italic]{_escape(problem.hint)}[/italic]")
    if not err.is_terminal:
        for line in lines:
            err.print(f"[red]error:[/red] {line}" if not line.startswith("  ") else line, soft_wrap=True)
        return
    title = f"{len(problems)} problems" if len(problems) > 1 else "error"
    err.print(Panel("\n".join(lines), title=title, title_align="left", border_style="red"))


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def entry() -> None:
    """The console script (and `python -m workbench`): `main()`, then leave without tearing the interpreter down.

    A process that loaded torch, transformers and datasets spends a second or more after its work is
    done freeing every module and object one by one (measured: issue 14). Nothing the workbench
    writes waits for that: the store has committed, cache entries were renamed into place. So the
    exit functions registered with atexit run (temporary folders, logging), output is flushed,
    and the process ends with the code main() chose.
    """
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = _exit_code(exit_.code)
    import atexit
    import logging

    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            code = code or 1
    os._exit(code)


def _exit_code(code: object) -> int:
    """What sys.exit(code) would exit with: None 0, an int itself, anything else printed and 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


if __name__ == "__main__":
    entry()
