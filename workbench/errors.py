"""The workbench's error family.

Everything a user can cause (a bad recipe, a missing file, a model we cannot gate) raises a
WorkbenchError. The CLI turns these into a red panel and exit code 2; anything else is a bug.
"""

from __future__ import annotations


class WorkbenchError(Exception):
    """An error the user can fix. `hint` is an optional second line ("did you mean ...?")."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n{self.hint}"


class RecipeError(WorkbenchError):
    """A problem in a recipe, located at file:line and a dotted field path."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
        hint: str | None = None,
    ):
        self.file = file
        self.line = line
        self.field = field
        self.detail = message
        where = ":".join(str(part) for part in (file, line) if part is not None)
        prefix = " ".join(part for part in (where, field) if part)
        super().__init__(f"{prefix}: {message}" if prefix else message, hint)


class RecipeErrors(WorkbenchError):
    """Several recipe problems found in one pass; all are reported together."""

    def __init__(self, errors: list[RecipeError]):
        self.errors = errors
        lines = [str(error) for error in errors]
        super().__init__("\n".join(lines))


class DataError(WorkbenchError):
    """A dataset could not be found, read or understood."""


class ModelError(WorkbenchError):
    """A model could not be loaded, or does not support what a step asks of it."""


class StoreError(WorkbenchError):
    """The results store or the tensor cache could not be used."""


class RunInterrupted(WorkbenchError):
    """The run was stopped by Ctrl-C or SIGTERM; finished steps are cached (exit code 130)."""


class RankStopped(WorkbenchError):
    """A data-parallel run's launcher stopped this rank because another one failed."""


class StepError(WorkbenchError):
    """A step was asked to do something that cannot be done with its inputs."""


def did_you_mean(name: str, options: object) -> str | None:
    """'did you mean 'batch_size'?' for the closest option, or None when nothing is close."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(option) for option in options], n=1, cutoff=0.6)  # type: ignore[attr-defined]
    return f"did you mean '{close[0]}'?" if close else None
