"""The browser app: screens on a stack (runs -> run -> ...), one store, a poll every second.

The poll runs in a worker thread (a database that is busy must not freeze the keyboard) and
costs nothing while the store is idle (source.StoreSource.poll looks at the SQLite file's stamp
first). Each screen says which runs it shows (`watched`) and takes what the poll found
(`apply_poll`); `tick` lets it redraw a running run's clock. A poll that takes long pushes the
next one back (at most a fifth of the time is spent polling).
"""

from __future__ import annotations

import time
from pathlib import Path

from textual import work
from textual.app import App
from textual.binding import Binding

from workbench.browse.actions import ACTIONS, ActionContext, RunAction, reproduce_command, reproduce_note
from workbench.browse.dialogs import ConfirmDialog, HelpScreen, PathDialog, TextDialog
from workbench.browse.live import LiveScreen
from workbench.browse.runs_screen import RunsScreen
from workbench.browse.source import Poll, StoreSource
from workbench.db.records import RunDetail, RunSummary
from workbench.errors import WorkbenchError

POLL_INTERVAL_S = 1.0
GLOBAL_HELP = [("?", "this help"), ("q", "quit"), ("tab  shift+tab", "next / previous pane"), ("ctrl+p", "command palette")]


class BrowseApp(App):
    TITLE = "workbench browse"
    BINDINGS = [
        Binding("q", "quit", "quit"),
        Binding("question_mark", "help", "help"),
    ]
    CSS = """
    Screen { layout: vertical; }
    """

    def __init__(self, source: StoreSource, *, poll_interval: float = POLL_INTERVAL_S) -> None:
        super().__init__()
        self.source = source
        self.poll_interval = poll_interval
        self.messages: list[str] = []  # everything said to the user, oldest first (tests read it)
        self._polling = False
        self._next_poll = 0.0
        self.polls = 0  # polls applied (tests wait on it)

    # ---- start and stop -----------------------------------------------------------------------

    def on_mount(self) -> None:
        try:
            self.source.mark_dead()
        except WorkbenchError as error:
            self.say(str(error), "error")
        self.source.load_runs()
        self.push_screen(RunsScreen())
        self.set_interval(self.poll_interval, self._tick)

    def on_unmount(self) -> None:
        self.source.close()

    def say(self, message: str, severity: str = "information") -> None:
        self.messages.append(message)
        self.notify(message, severity=severity, timeout=6 if severity == "information" else 10)  # type: ignore[arg-type]

    # ---- polling ------------------------------------------------------------------------------

    def _screens(self) -> list[LiveScreen]:
        return [screen for screen in self.screen_stack if isinstance(screen, LiveScreen)]

    def _tick(self) -> None:
        for screen in self._screens():
            screen.tick()
        if self._polling or time.monotonic() < self._next_poll:
            return
        watched: dict[int, RunSummary | None] = {}
        for screen in self._screens():
            watched.update(screen.watched())
        self._polling = True
        self._poll(watched)

    @work(thread=True, group="poll", exit_on_error=False)
    def _poll(self, watched: dict[int, RunSummary | None]) -> None:
        try:
            poll = self.source.poll(watched)
        except Exception as error:  # never let a poll take the app down; say it instead
            poll = Poll(None, error=f"cannot read the store: {error}")
        try:
            self.call_from_thread(self._apply_poll, poll)
        except RuntimeError:  # the app is shutting down
            pass

    async def _apply_poll(self, poll: Poll) -> None:
        self._polling = False
        self._next_poll = time.monotonic() + max(0.0, 4 * poll.seconds - self.poll_interval)
        if poll.error:
            if not self.messages or self.messages[-1] != poll.error:
                self.say(poll.error, "error")
        else:
            for screen in self._screens():
                result = screen.apply_poll(poll)
                if result is not None:
                    await result
        self.polls += 1

    # ---- navigation ---------------------------------------------------------------------------

    def _detail(self, run_id: int) -> RunDetail | None:
        try:
            return self.source.run(run_id)
        except WorkbenchError as error:
            self.say(str(error), "error")
            return None

    def open_run(self, run_id: int) -> None:
        from workbench.browse.run_screen import RunScreen

        detail = self._detail(run_id)
        if detail is not None:
            self.push_screen(RunScreen(detail))

    def open_compare(self, a: int, b: int) -> None:
        from workbench.browse.compare_screen import CompareScreen

        first, second = self._detail(a), self._detail(b)
        if first is not None and second is not None:
            self.push_screen(CompareScreen(first, second))

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        sections = [(type(self.screen).__name__.replace("Screen", " screen").lower(), getattr(self.screen, "HELP", [])), ("everywhere", GLOBAL_HELP)]
        hidden = [key for key, action in ACTIONS.items() if not action.available()]
        if hidden:
            sections.append(("not available here", [(key, f"{ACTIONS[key].name}: its module is not installed") for key in hidden]))
        self.push_screen(HelpScreen("workbench browse: keys", sections))

    # ---- actions on a run ---------------------------------------------------------------------

    def start_action(self, key: str, run_id: int) -> None:
        action = ACTIONS.get(key)
        if action is None or not action.available():
            return  # hidden: e.g. no workbench.report in this install
        run = self._detail(run_id)
        if run is None:
            return

        def chosen(target: str | None) -> None:
            if not target:
                return
            path = Path(target).expanduser()
            if action.target_in_use(path):
                self.push_screen(
                    ConfirmDialog(f"{path} exists. Replace it?", confirm="Replace", danger=True),
                    lambda yes: self._perform(action, run, path, True) if yes else None,
                )
            else:
                self._perform(action, run, path, False)

        self.push_screen(PathDialog(action.title.format(id=run_id), action.default_target(run)), chosen)

    @work(thread=True, group="actions", exit_on_error=False)
    def _perform(self, action: RunAction, run: RunDetail, path: Path, overwrite: bool) -> None:
        self.call_from_thread(self.say, f"{action.name}: run {run.summary.id} -> {path} ...")
        try:
            message, severity = action.perform(run, ActionContext(self.source.cache_dir, path, overwrite)), "information"
        except WorkbenchError as error:
            message, severity = f"{action.name} failed: {error}", "error"
        except OSError as error:
            message, severity = f"{action.name} failed: {path}: {error.strerror or error}", "error"
        self.call_from_thread(self.say, message, severity)

    def show_reproduce(self, run_id: int) -> None:
        run = self._detail(run_id)
        if run is None:
            return
        command = reproduce_command(run)
        self.copy_to_clipboard(command)  # OSC 52: the terminal (and tmux, with set-clipboard on) may take it
        note = f"{reproduce_note(run)}\ncopied to the clipboard (OSC 52), if your terminal allows it; else select it with the mouse"
        self.push_screen(TextDialog(f"Reproduce run {run_id}", command, note))

    def confirm_delete(self, run_ids: list[int]) -> None:
        runs = {run.id: run for run in self.source.runs}
        named = ", ".join(f"{run_id} ({runs[run_id].name}, {runs[run_id].status})" if run_id in runs else str(run_id) for run_id in run_ids)
        question = (
            f"Delete run{'s' if len(run_ids) > 1 else ''} {named}?\n"
            "Its steps, metrics and scores leave the store; cache entries stay until `workbench gc`."
        )

        def answer(yes: bool | None) -> None:
            if yes:
                self.delete_runs(run_ids)

        self.push_screen(ConfirmDialog(question, confirm="Delete", danger=True), answer)

    def delete_runs(self, run_ids: list[int]) -> None:
        from workbench.browse.run_screen import RunScreen

        try:
            report = self.source.remove(run_ids)
        except WorkbenchError as error:
            self.say(f"delete failed: {error}", "error")
            return
        self.say("; ".join(report.lines()), "warning" if report.still_running else "information")
        self.source.load_runs()
        while isinstance(self.screen, RunScreen) and self.screen.run.summary.id in report.removed:
            self.pop_screen()
        for screen in self._screens():
            if isinstance(screen, RunsScreen):
                screen.marked = [run_id for run_id in screen.marked if run_id not in report.removed]
                screen.fill()
