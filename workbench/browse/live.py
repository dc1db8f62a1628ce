"""The contract between the app's poll and its screens (workbench/browse/app.py)."""

from __future__ import annotations

from collections.abc import Awaitable

from textual.screen import Screen

from workbench.browse.source import Poll
from workbench.db.records import RunSummary


class LiveScreen(Screen):
    """A screen that shows store contents and follows them as they change."""

    HELP: list[tuple[str, str]] = []

    def watched(self) -> dict[int, RunSummary | None]:
        """The runs whose details this screen shows, with the summary it last saw (None: not yet)."""
        return {}

    def apply_poll(self, poll: Poll) -> Awaitable[None] | None:
        """What the poll found (runs: None when unchanged; details: None for a removed run)."""
        return None

    def tick(self) -> None:
        """Once a second, between polls: redraw what changes with the clock (a running run's time)."""
