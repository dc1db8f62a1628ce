"""Writing figures: one file, or a folder of `<name>.<format>` files; png, svg or pdf.

Each file is written to a temporary name beside it and moved into place, so a reader never sees
half a figure. Vector formats keep text as text (style.PAPER_RC); their dates are left out so the
same run writes the same bytes.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from pathlib import Path

from workbench.figures.errors import NothingToPlot, OutputError
from workbench.figures.named import NamedFigure
from workbench.figures.style import saving

FORMATS = ("png", "svg", "pdf")
OTHER_IMAGES = ("jpg", "jpeg", "tif", "tiff", "gif", "webp", "bmp", "eps", "ps")  # a typo'd format, not a folder name
METADATA = {"png": {}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}


def write_figures(figures: Sequence[NamedFigure], path: Path | str, fmt: str | None = None, *, dpi: int = 300) -> list[Path]:
    """Write `figures` to `path`: a file (with one figure) or a directory (one file per figure).

    `path` is a file when it ends in .png/.svg/.pdf and is not an existing directory; `fmt` defaults
    to that extension, else png. Returns the paths written, in the figures' order.
    """
    if not figures:
        raise NothingToPlot("no figures to write")
    path = Path(path)
    fmt = _format(fmt, path)
    if _is_file(path):
        if len(figures) != 1:
            names = ", ".join(item.name for item in figures)
            raise OutputError(
                f"{path}: {len(figures)} figures do not fit in one file",
                hint=f"give a directory, or pick one figure (--step, --score); the figures: {names}",
            )
        targets = [path]
    else:
        if path.exists() and not path.is_dir():
            raise OutputError(f"{path}: exists and is not a directory")
        targets = [path / f"{item.name}.{fmt}" for item in figures]
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
    for item, target in zip(figures, targets):
        _write(item, target, fmt, dpi)
    return targets


def _format(fmt: str | None, path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    if suffix in OTHER_IMAGES and not path.is_dir():
        raise OutputError(f"{path}: figures are written as {', '.join(FORMATS)}, not {suffix}")
    if fmt is not None:
        fmt = fmt.lower().lstrip(".")
        if fmt not in FORMATS:
            raise OutputError(f"format '{fmt}': figures are written as {', '.join(FORMATS)}")
        if _is_file(path) and suffix != fmt:
            raise OutputError(f"{path}: the file name says {suffix}, the format asked for is {fmt}")
        return fmt
    if _is_file(path):
        return suffix
    return "png"


def _is_file(path: Path) -> bool:
    """A path naming one figure file: a known extension, and not an existing folder."""
    return path.suffix.lower().lstrip(".") in FORMATS and not path.is_dir()


def _write(item: NamedFigure, target: Path, fmt: str, dpi: int) -> None:
    # open(..., "xb") rather than mkstemp: the file gets the umask's permissions, not mkstemp's 0600.
    temporary = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temporary, "xb") as handle, saving():
            item.figure.savefig(handle, format=fmt, dpi=dpi, metadata=METADATA[fmt])
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
