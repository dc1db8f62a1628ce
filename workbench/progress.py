"""How a run reports its progress: a small interface the executor and the steps call, and three implementations.

`Progress` is all they use (a step reaches it through `StepContext.track / bar / log`):

    with progress:                                   # around the run: start / stop the display
        for item in progress.track(items, total, "importance"): ...
        with progress.bar(total, "train") as advance: advance(1)
        progress.log("placed on cuda:0", step="extract")   # a line from a step (or from the run: step=None)
        progress.warn("cache entry ab12 is damaged; recomputing")

Messages are plain text (each implementation quotes them as its output needs). Implementations:

    RichProgress     bars on a terminal, lines on stderr (rich, imported when one is made): `workbench run`
    LoggingProgress  no bars, one plain line per log and warning on a stream: the Python API's default
    SilentProgress   nothing at all: the ranks other than 0 of a data-parallel run (rank 0 reports)

Any object with these methods will do (`workbench.api.run_recipe(..., progress=...)`); subclassing
SilentProgress gives no-op defaults for the methods one does not care about.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import IO, TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:
    from rich.console import Console

T = TypeVar("T")
Advance = Callable[[int], None]  # advance(steps=1)


@runtime_checkable
class Progress(Protocol):
    """What the executor and the steps call to report progress."""

    def __enter__(self) -> "Progress": ...

    def __exit__(self, *exc: object) -> None: ...

    def track(self, items: Iterable[T], total: int | None = None, description: str = "") -> Iterator[T]:
        """Yield from `items`, advancing a bar of `total` (len(items) when None and it has one)."""
        ...

    def bar(self, total: int | None, description: str = "") -> AbstractContextManager[Advance]:
        """A bar advanced by hand: `with progress.bar(n, "train") as advance: advance(1)`."""
        ...

    def log(self, message: str, step: str | None = None) -> None:
        """A line of information, from step `step` (None: from the run itself)."""
        ...

    def warn(self, message: str) -> None:
        """A warning: something was worked around (a damaged cache entry, a lost commit race)."""
        ...


class SilentProgress:
    """Reports nothing; every method is a no-op (a base for implementations that want only some calls)."""

    def __enter__(self) -> "SilentProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def track(self, items: Iterable[T], total: int | None = None, description: str = "") -> Iterator[T]:
        yield from items

    @contextmanager
    def bar(self, total: int | None, description: str = "") -> Iterator[Advance]:
        yield lambda steps=1: None

    def log(self, message: str, step: str | None = None) -> None:
        return None

    def warn(self, message: str) -> None:
        return None


class LoggingProgress(SilentProgress):
    """No bars; each log line and warning as one plain line on `stream` (default: sys.stderr at the time)."""

    def __init__(self, stream: IO[str] | None = None):
        self._stream = stream

    def _write(self, line: str) -> None:
        stream = self._stream if self._stream is not None else sys.stderr
        stream.write(line + "\n")
        stream.flush()

    def log(self, message: str, step: str | None = None) -> None:
        self._write(f"{step}: {message}" if step else message)

    def warn(self, message: str) -> None:
        self._write(f"warning: {message}")


class RichProgress:
    """Bars (rich) on a terminal, transient; log lines and warnings on the console (stderr by default).

    `enabled=False` hides the bars wherever the console is (lines are still printed).
    """

    def __init__(self, console: "Console | None" = None, enabled: bool | None = None):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as Bars

        self.console = console or Console(stderr=True)
        enabled = self.console.is_terminal if enabled is None else enabled
        self._progress = Bars(
            TextColumn("[bold blue]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
            disable=not enabled,
        )

    def __enter__(self) -> "RichProgress":
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
    def bar(self, total: int | None, description: str = "") -> Iterator[Advance]:
        """A bar advanced by hand: `with reporter.bar(n, "train") as advance: advance(1)`."""
        task = self._progress.add_task(description, total=total)
        try:
            yield lambda steps=1: self._progress.advance(task, steps)
        finally:
            self._progress.remove_task(task)

    def log(self, message: str, step: str | None = None) -> None:
        """The message as plain text (it may quote data), after the step id in dim."""
        from rich.markup import escape

        self.console.print(f"[dim]{escape(step)}:[/dim] {escape(message)}" if step else escape(message))

    def warn(self, message: str) -> None:
        """'warning: <message>', the message shown as plain text (it may quote paths or data)."""
        from rich.text import Text

        self.console.print(Text.assemble(("warning:", "yellow"), " ", message))


