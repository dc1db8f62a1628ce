"""What can go wrong when asking for figures; each is a WorkbenchError (exit code 2 in the CLI)."""

from __future__ import annotations

from workbench.errors import WorkbenchError


class FigureError(WorkbenchError):
    """A figure request that cannot be met."""


class UnknownStep(FigureError):
    """A step id the run does not have."""


class UnknownScore(FigureError):
    """A head or layer score name the chosen steps do not have."""


class NothingToPlot(FigureError):
    """The selection leaves no figure to draw."""


class OutputError(FigureError):
    """An output path or format that cannot be written."""
