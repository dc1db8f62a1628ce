"""Progress bars for long loops (rich), shown on a terminal and silent elsewhere."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")


class ProgressReporter:
    def __init__(self, console: Console | None = None, enabled: bool | None = None):
        self.console = console or Console(stderr=True)
        enabled = self.console.is_terminal if enabled is None else enabled
        self._progress = Progress(
            TextColumn("[bold blue]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
            disable=not enabled,
        )

    def __enter__(self) -> "ProgressReporter":
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def track(self, items: Iterable[T], total: int | None = None, description: str = "") -> Iterator[T]:
        """Yield from `items`, advancing a bar; the bar disappears when the loop ends."""
        if total is None and hasattr(items, "__len__"):
            total = len(items)  # type: ignore[arg-type]
        task = self._progress.add_task(description, total=total)
        try:
            for item in items:
                yield item
                self._progress.advance(task)
        finally:
            self._progress.remove_task(task)

    @contextmanager
    def bar(self, total: int | None, description: str = "") -> Iterator[Callable[[int], None]]:
        """A bar advanced by hand: `with reporter.bar(n, "train") as advance: advance(1)`."""
        task = self._progress.add_task(description, total=total)
        try:
            yield lambda steps=1: self._progress.advance(task, steps)
        finally:
            self._progress.remove_task(task)

    def log(self, message: str) -> None:
        """A line of the reporter's own markup (callers escape what they quote: rich.markup.escape)."""
        self.console.print(message)

    def warn(self, message: str) -> None:
        """'warning: <message>', the message shown as plain text (it may quote paths or data)."""
        from rich.text import Text

        self.console.print(Text.assemble(("warning:", "yellow"), " ", message))
