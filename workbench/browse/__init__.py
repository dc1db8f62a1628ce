"""`workbench browse`: a full-screen terminal browser for the store (Textual).

    from workbench.browse import run_browser
    run_browser(locate_store(option))        # what the CLI calls; returns when the user quits

    source.py          the store through the CLI's read API, polled for changes
    app.py             the app: the screen stack, the poll timer, actions on runs
    runs_screen.py     the runs, filtered as you type, sorted, marked for compare
    run_screen.py      one run: its steps, and the selected step (step_view.py)
    step_view.py       a step's heatmaps (grid.py), its kind's views, metrics and layer charts
    compare_screen.py  metric deltas and difference heatmaps of two runs
    grid.py            the interactive heatmap widget; pages.py builds its pages and readout
    dialogs.py         confirm, path, text and help dialogs
    actions.py         export, figures, report, reproduce: a table others can extend
    formatting.py      plain helpers (filter, sort, durations, ranks, pruned heads)

Reading a store here never imports torch or transformers (tests/test_browse.py checks it in a
fresh process); figures and the report import matplotlib only when asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workbench.browse.app import BrowseApp
    from workbench.store_location import StoreLocation


def make_app(location: "StoreLocation", *, poll_interval: float = 1.0) -> "BrowseApp":
    """The app for the store at `location`, opened read-only (never created: a missing store raises
    StoreError 'no store at ...' here, before the screen is taken over)."""
    from workbench.browse.app import BrowseApp
    from workbench.browse.source import StoreSource

    return BrowseApp(StoreSource(location), poll_interval=poll_interval)


def run_browser(location: "StoreLocation") -> None:
    """Run the browser until the user quits (q).

    Raises WorkbenchError before touching the screen when the output is not a terminal, and
    StoreError when there is no store at `location` (nothing is created).
    """
    import sys

    from workbench.errors import WorkbenchError

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise WorkbenchError(
            "workbench browse needs a terminal", hint="in scripts, use `workbench runs`, `workbench show RUN --json`"
        )
    app = make_app(location)
    app.run()
    if app.return_code not in (0, None):
        raise SystemExit(app.return_code)
