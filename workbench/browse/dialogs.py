"""Modal dialogs: confirm, ask for a path, show a text (the reproduce command), help."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

DIALOG_CSS = """
{name} {{ align: center middle; }}
{name} > Vertical {{
    width: 76; max-width: 100%; height: auto; max-height: 100%;
    border: round $accent; background: $panel; padding: 0 1;
}}
{name} Static {{ width: 1fr; }}
{name} Horizontal {{ height: auto; align-horizontal: right; }}
{name} Button {{ margin: 0 0 0 1; min-width: 10; }}
{name} Input {{ margin: 1 0; }}
"""


class ConfirmDialog(ModalScreen[bool]):
    """Yes or no; y/enter confirms, n/escape cancels. The default button is Cancel."""

    DEFAULT_CSS = DIALOG_CSS.format(name="ConfirmDialog")
    BINDINGS = [Binding("y", "answer(True)", "yes"), Binding("n,escape", "answer(False)", "no")]

    def __init__(self, question: str | Text, *, confirm: str = "Yes", danger: bool = False) -> None:
        super().__init__()
        self.question = question
        self.confirm = confirm
        self.danger = danger

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text(self.question) if isinstance(self.question, str) else self.question, id="question")
            yield Static(Text(f"y: {self.confirm.lower()}   n or escape: cancel", style="dim"))
            with Horizontal():
                yield Button(self.confirm, id="yes", variant="error" if self.danger else "primary")
                yield Button("Cancel", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class PathDialog(ModalScreen["str | None"]):
    """A path, with a default to accept with enter; escape cancels."""

    DEFAULT_CSS = DIALOG_CSS.format(name="PathDialog")
    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, question: str, default: str) -> None:
        super().__init__()
        self.question = question
        self.default = default

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text(self.question, style="bold"))
            yield Input(self.default, id="path")
            yield Static(Text("enter: write   escape: cancel   (relative to the folder the browser started in)", style="dim"))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class TextDialog(ModalScreen[None]):
    """A text to read or copy (selectable with the mouse); any of escape, enter, q closes it."""

    DEFAULT_CSS = DIALOG_CSS.format(name="TextDialog")
    BINDINGS = [Binding("escape,enter,q", "close", "close")]

    def __init__(self, title: str, body: str, note: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.body = body
        self.note = note

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text(self.title_text, style="bold"))
            yield Static(Text(self.body), id="body")
            if self.note:
                yield Static(Text(self.note, style="dim"), id="note")
            yield Static(Text("escape or enter: close", style="dim"))

    def action_close(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 78; max-width: 100%; height: auto; max-height: 100%;
        border: round $accent; background: $panel; padding: 0 1; }
    """
    BINDINGS = [Binding("escape,question_mark,q,enter", "close", "close")]

    def __init__(self, title: str, sections: Sequence[tuple[str, Sequence[tuple[str, str]]]]) -> None:
        super().__init__()
        self.title_text = title
        self.sections = sections

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(Text(self.title_text, style="bold"))
            for heading, keys in self.sections:
                table = Table(title=heading, title_justify="left", show_header=False, box=None, padding=(0, 1))
                table.add_column("keys", style="bold", no_wrap=True)
                table.add_column("what")
                for key, what in keys:
                    table.add_row(key, what)
                yield Static(table)
            yield Static(Text("escape or ?: close", style="dim"))

    def action_close(self) -> None:
        self.dismiss(None)
