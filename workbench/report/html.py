"""A run as one self-contained HTML page: `workbench report RUN -o report.html`.

    html = render_report(run, cache_dir)                        # str
    path = write_report(run, cache_dir, "report.html")          # refuses an existing file
    path = write_report(run, cache_dir, "report.html", overwrite=True)

The page holds the provenance the run recorded (model fingerprint, files and revision or hub
commit; dataset fingerprints and data files with their sha256; seed, device, threads, packages,
git commit: provenance.py), the recipe as run (with its --set overrides applied, and every
step's parameters with defaults filled in), then one <section id="step-ID"> per step: status,
error, warnings, metrics, the kind's own tables, per-layer and per-head scores, and every figure
of workbench.figures inline as SVG. No script, no stylesheet or font or image from elsewhere, no
http(s) address: it reads the same offline, years later, and prints a step per page.

Everything from the records is escaped (markup.py); nothing here imports torch or transformers.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from workbench.db.records import RunDetail, StepRecord
from workbench.durations import duration_text
from workbench.errors import WorkbenchError
from workbench.report.markup import Content, Html, anchor_id, element, join, number
from workbench.report.provenance import facts_list, provenance_section, recipe_section, value_text
from workbench.report.style import CSS
from workbench.report.svg import inline_svg
from workbench.report.tables import KIND_TABLES, head_scores_table, layer_scores_table, pairs, paragraph, table


class ReportError(WorkbenchError):
    """The report could not be written where it was asked to go."""


def render_report(run: RunDetail, cache_dir: Path | None = None) -> str:
    """The whole page. `cache_dir` (the store's cache/ folder) is where figures read saved
    attention maps; without it those figures are left out."""
    figure_counter = itertools.count(1)  # SVG id prefixes, unique in the page
    body = [
        _header(run),
        _contents(run),
        provenance_section(run),
        recipe_section(run),
        *(_step_section(run, step, cache_dir, figure_counter) for step in run.steps),
        element("footer", f"BERTology Workbench {_version()} · run {run.summary.id} · a self-contained report"),
    ]
    title = f"run {run.summary.id}: {run.recipe_name}"
    head = join(
        [
            Html('<meta charset="utf-8">'),
            Html('<meta name="viewport" content="width=device-width, initial-scale=1">'),
            element("meta", name="generator", content=f"BERTology Workbench {_version()}"),
            element("title", title),
            element("style", Html(CSS)),
        ]
    )
    return f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>{head}</head>\n<body>\n{join(body, chr(10))}\n</body>\n</html>\n"


def write_report(run: RunDetail, cache_dir: Path | None, path: Path | str, *, overwrite: bool = False) -> Path:
    """Render the report and write it to `path` atomically (a temporary file beside it, then a
    rename), so a reader never sees half a page. An existing file is kept unless `overwrite`."""
    path = Path(path)
    if path.is_dir():
        raise ReportError(f"{path}: is a folder", hint="give a file name, e.g. report.html")
    if path.exists() and not overwrite:
        raise _exists(path)
    page = render_report(run, cache_dir).encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(page, path, overwrite)
    except OSError as error:
        raise ReportError(f"{path}: cannot write the report: {error.strerror or error}") from None
    return path


def _exists(path: Path) -> ReportError:
    return ReportError(f"{path}: already exists", hint="pass --force to replace it")


def _write_atomically(page: bytes, path: Path, overwrite: bool) -> None:
    # open(..., "xb") rather than mkstemp: the file gets the umask's permissions, not 0600.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temporary, "xb") as handle:
            handle.write(page)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(temporary, path)
            return
        try:  # a hard link never replaces: a file that appeared meanwhile is still refused
            os.link(temporary, path)
        except FileExistsError:
            raise _exists(path) from None
        except OSError:  # a file system without hard links
            if path.exists():
                raise _exists(path) from None
            os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


# --- the run -------------------------------------------------------------------------------------------


def _header(run: RunDetail) -> Html:
    s = run.summary
    facts: list[tuple[Content, Content]] = [
        ("status", _status(s.status)),
        ("started", f"{s.started_at:%Y-%m-%d %H:%M:%S}"),
        ("finished", f"{s.finished_at:%Y-%m-%d %H:%M:%S}" if s.finished_at else "-"),
        ("duration", duration_text(s.duration_s, spaced=True)),
        ("device", s.device or "-"),
        ("seed", str(run.seed)),
        ("steps", f"{s.steps_total} ({s.steps_cached} from the cache, {s.steps_failed} failed)"),
    ]
    if run.overrides:
        facts.append(("overrides", element("code", " ".join(f"--set {o}" for o in run.overrides))))
    parts: list[Content] = [
        element("h1", f"run {s.id}: ", run.recipe_name),
        facts_list(facts),
    ]
    if run.error:
        parts += [element("h3", "run error"), element("pre", run.error, class_="error")]
    return element("header", parts)


def _contents(run: RunDetail) -> Html:
    rows = [
        [
            element("a", step.step_id, href=f"#{anchor_id('step', step.step_id)}"),
            step.kind,
            _status(step.status),
            duration_text(step.duration_s, spaced=True),
            element("span", step.key[:12], class_="key"),
        ]
        for step in run.steps
    ]
    return element(
        "nav",
        element("h2", "Steps"),
        table(["step", "kind", "status", "time", "cache key"], rows, text_columns=5),
        paragraph("also: ", element("a", "provenance", href="#provenance"), ", ", element("a", "recipe", href="#recipe")),
    )


# --- one step ------------------------------------------------------------------------------------------


def _step_section(run: RunDetail, step: StepRecord, cache_dir: Path | None, counter: Iterator[int]) -> Html:
    parts: list[Content] = [
        element("h2", step.step_id, " ", element("span", f"({step.kind})", class_="kind")),
        facts_list(
            [
                ("status", _status(step.status)),
                ("time", duration_text(step.duration_s, spaced=True)),
                ("cache key", element("code", step.key)),
            ]
        ),
    ]
    if step.error:
        parts += [element("h3", "error"), element("pre", step.error, class_="error")]
    warnings = step.data.get("warnings") or []
    warnings = [warnings] if isinstance(warnings, str) else warnings
    if warnings:
        parts += [element("h3", "warnings"), element("ul", (element("li", w) for w in warnings), class_="warnings")]
    if step.metrics:
        parts.append(pairs(((name, number(value)) for name, value in step.metrics.items()), caption="Metrics"))
    if step.kind in KIND_TABLES:
        parts.extend(KIND_TABLES[step.kind](step))
    parts.extend(block for block in (layer_scores_table(step), head_scores_table(step)) if block is not None)
    parts.append(_figures(run, step, cache_dir, counter))
    if step.params:
        parameters = ((name, value_text(value)) for name, value in step.params.items())
        parts.append(pairs(parameters, caption="Parameters (as run, defaults filled in)", numbers=False))
    if step.artifacts:
        rows = [[a.name, a.kind, f"{a.bytes:,}", element("code", a.sha256[:16])] for a in step.artifacts]
        parts.append(table(["artifact", "kind", "bytes", "sha256"], rows, caption="Artifacts in the cache", align="llrl"))
    return element("section", parts, id=anchor_id("step", step.step_id), class_="step")


def _figures(run: RunDetail, step: StepRecord, cache_dir: Path | None, counter: Iterator[int]) -> Html:
    """The step's figures, drawn one step at a time: a figure that cannot be drawn costs only its
    step's figures, and each Figure is dropped once it is SVG text."""
    from workbench.figures import NothingToPlot, run_figures

    try:
        figures = run_figures(run, cache_dir, steps=[step.step_id])
    except NothingToPlot:
        return Html("")
    except WorkbenchError as error:
        return paragraph(f"figures could not be drawn: {error}", class_="note")
    blocks = []
    for item in figures:
        prefix = f"f{next(counter)}"
        blocks.append(
            element(
                "figure",
                inline_svg(item.figure, prefix, label=item.name),
                element("figcaption", item.name),
                id=anchor_id("fig", item.name),
            )
        )
        item.figure.clear()  # the SVG text is all the page needs
    return join([element("h3", f"Figures ({len(blocks)})"), element("div", blocks, class_="figures")])


# --- helpers -------------------------------------------------------------------------------------------


def _status(status: str) -> Html:
    return element("span", status, class_=f"status status-{anchor_id('s', status)[2:]}")


def _version() -> str:
    try:
        return metadata.version("bertology-workbench")
    except metadata.PackageNotFoundError:
        return "(not installed)"
