"""`workbench run RECIPE --sweep KEY=V1,V2 ... [--jobs K]`: a grid of runs on one store.

A sweep is the cartesian product of its axes (`--sweep model.id=a,b,c --sweep seed=1,2` is six
points, the last axis varying fastest). Each point is the recipe with one `--set KEY=VALUE` per axis,
after the command's own `--set`s. Every point is loaded and validated before any runs, so a typo in a
key or a value that does not fit its field fails at once (exit 2), blamed on the `--sweep` flag.

Each point then runs as its own `workbench run` process (K at a time), so a crash in one cannot take
the others down. Its output goes to a log file (`STORE/sweeps/<name>-<time>/NN.log`); the parent shows
a table of the points as they run and a summary at the end.

Runs are grouped by name, with no schema change: a point's run is named `<recipe name>--<point>`
(`sst2--id_bert-tiny--seed_1`), passed to the child as one more `--set name=...`. So `runs` and
`browse` can tell a point from an ordinary run and show which sweep it belongs to (`sweep_of`),
`show NAME` / `compare NAME_A NAME_B` address points by name, and re-running the sweep resumes every
point from the cache under the same names. The overrides of each run are stored as usual.

This module imports no torch; the UI imports `sweep_of` from it.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from workbench.errors import RecipeError, RecipeErrors, WorkbenchError
from workbench.processes import on_sigterm

if TYPE_CHECKING:
    from workbench.recipe.schema import LoadedRecipe
    from workbench.store_location import StoreLocation

SEPARATOR = "--"  # between the recipe name and the point, and between the point's settings
MAX_NAME = 100  # the recipe schema's limit on `name`
FLAG = "--sweep"
GRACE_S = 60.0  # after Ctrl-C, how long points get to record 'interrupted' before they are killed
POLL_S = 0.2


def sweep_of(name: str) -> tuple[str, str] | None:
    """('sst2', 'id_bert-tiny--seed_1') for a sweep point's run name, None for any other name."""
    base, separator, point = name.partition(SEPARATOR)
    return (base, point) if separator and base and point else None


# ---- axes -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Axis:
    text: str  # as typed: 'model.id=a,b'
    key: str  # 'model.id'
    values: tuple[str, ...]  # each value's text, read as --set reads it

    def error(self, message: str, hint: str | None = None) -> RecipeError:
        return RecipeError(message, file=FLAG, field=self.text.strip() or "''", hint=hint)


def parse_axis(text: str) -> Axis:
    """'seed=1,2' -> Axis('seed', ('1', '2')). Commas inside [], {}, () or quotes do not split:
    `steps.x.layers=[0,1],[2,3]` has two values and `description='a, b',c` has two."""
    if "=" not in text:
        raise RecipeError("expected KEY=VALUE,VALUE,...", file=FLAG, field=text.strip() or "''")
    key, raw = text.split("=", 1)
    key = key.strip()
    axis = Axis(text, key, ())
    if not key or any(not part for part in key.split(".")):
        raise axis.error(f"'{key}' is not a dotted field path")
    if not raw.strip():
        raise axis.error("no values", hint=f"give them after '=', separated by commas: {FLAG} {key}=1,2")
    values = tuple(value.strip() for value in _split_values(raw, axis))
    for number, value in enumerate(values, 1):
        if not value:
            raise axis.error(f"value {number} is empty", hint="write '' for an empty string")
    repeated = sorted({value for value in values if values.count(value) > 1})
    if repeated:
        raise axis.error(f"{', '.join(repeated)} is listed twice")
    return Axis(text, key, values)


_CLOSING = {"[": "]", "{": "}", "(": ")"}


def _split_values(raw: str, axis: Axis) -> list[str]:
    values, current, stack, quote = [], [], [], None
    for char in raw:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"" and _opens_quote(current):  # as YAML: `it's` is no quote, `'a, b'` is
            quote = char
        elif char in _CLOSING:
            stack.append(_CLOSING[char])
        elif char in _CLOSING.values():
            if not stack or stack.pop() != char:
                raise axis.error(f"unbalanced '{char}'")
        elif char == "," and not stack:
            values.append("".join(current))
            current = []
            continue
        current.append(char)
    if quote or stack:
        raise axis.error(f"unclosed {quote or stack[-1].translate(str.maketrans(']})', '[{('))}")
    values.append("".join(current))
    return values


def _opens_quote(before: list[str]) -> bool:
    """A quote starts a quoted scalar only at the start of a value or a flow item (YAML's rule)."""
    text = "".join(before).rstrip()
    return not text or text[-1] in "[{(,:"


# ---- the grid ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    index: int  # 0-based, in grid order (what `--point` and a Slurm array index take)
    settings: tuple[tuple[str, str], ...]  # (key, value text) per axis
    name: str  # the run's name in the store
    base_overrides: tuple[str, ...]  # the command's own --set
    renamed: bool = True  # False when the name is the point's own (only `name` is swept)

    @property
    def label(self) -> str:
        """'model.id=a seed=1': what the point sets."""
        return " ".join(f"{key}={value}" for key, value in self.settings)

    @property
    def overrides(self) -> list[str]:
        """The `--set`s of this point's run: the command's, the axes', then the name."""
        settings = [f"{key}={value}" for key, value in self.settings]
        return [*self.base_overrides, *settings, *([f"name={self.name}"] if self.renamed else [])]


@dataclass(frozen=True)
class Grid:
    recipe: Path
    axes: tuple[Axis, ...]
    points: tuple[Point, ...]
    steps: int  # steps in the recipe (the same in every point unless a step is swept in)

    @property
    def shape(self) -> str:
        return " x ".join(str(len(axis.values)) for axis in self.axes)

    def point(self, index: int) -> Point:
        if not 0 <= index < len(self.points):
            raise WorkbenchError(
                f"--point {index}: the sweep has {len(self.points)} points, numbered 0 to {len(self.points) - 1}",
                hint="`workbench run RECIPE --sweep ... --dry-run` lists them",
            )
        return self.points[index]


def build_grid(recipe: Path, overrides: Sequence[str], sweeps: Sequence[str]) -> Grid:
    """Every point of the sweep, each loaded and validated (nothing runs): a RecipeError names the flag."""
    from workbench.recipe.loader import load_recipe
    from workbench.recipe.overrides import parse_override

    axes = [parse_axis(text) for text in sweeps]
    keys: dict[str, Axis] = {}
    set_keys = {_dotted(parse_override(text)[0]): text for text in overrides if "=" in text}
    for axis in axes:
        if axis.key in keys:
            raise axis.error(f"'{axis.key}' is swept twice", hint=f"give all its values in one {FLAG}: {keys[axis.key].text}")
        if axis.key in set_keys:
            raise axis.error(f"'{axis.key}' is also set by --set {set_keys[axis.key]}", hint="drop one of the two")
        keys[axis.key] = axis
    combos = list(itertools.product(*(axis.values for axis in axes)))
    loaded: list[LoadedRecipe] = []
    for combo in combos:
        settings = [f"{axis.key}={value}" for axis, value in zip(axes, combo)]
        try:
            loaded.append(load_recipe(recipe, [*overrides, *settings]))
        except (RecipeError, RecipeErrors) as error:
            raise _blame_the_sweep(error, axes, combo) from None
    names = _point_names([point.name for point in loaded], axes, combos)
    points = tuple(
        Point(
            index,
            tuple((axis.key, value) for axis, value in zip(axes, combo)),
            name,
            tuple(overrides),
            renamed=name != loaded[index].name,
        )
        for index, (combo, name) in enumerate(zip(combos, names))
    )
    return Grid(Path(recipe), tuple(axes), points, max((len(item.steps) for item in loaded), default=0))


def _blame_the_sweep(error: RecipeError | RecipeErrors, axes: list[Axis], combo: tuple[str, ...]) -> WorkbenchError:
    """An error about a swept field names the --sweep flag (and the value), not an anonymous --set."""
    problems = error.errors if isinstance(error, RecipeErrors) else [error]
    blamed = [_blame_one(problem, axes, combo) for problem in problems]
    return RecipeErrors(blamed) if len(blamed) > 1 else blamed[0]


def _blame_one(problem: RecipeError, axes: list[Axis], combo: tuple[str, ...]) -> RecipeError:
    if problem.file != "--set":
        return problem
    for axis, value in zip(axes, combo):
        setting = f"{axis.key}={value}"
        field = problem.field or ""
        if field == setting:  # about the key (`--set`'s own checks): the same for every value
            return axis.error(problem.detail, problem.hint)
        if field == axis.key or field.startswith(axis.key + "."):  # about this value (validation)
            detail = problem.detail if len(axis.values) == 1 else f"value {value}: {problem.detail}"
            return axis.error(detail, problem.hint)
    return problem


def _point_names(bases: list[str], axes: list[Axis], combos: list[tuple[str, ...]]) -> list[str]:
    """'recipe--key_value--key_value' per point: readable, unique in the grid, at most 100 characters."""
    named = [i for i, axis in enumerate(axes) if axis.key != "name"]
    key_labels = _unique([_slug(axes[i].key.split(".")[-1]) for i in named], [_slug(axes[i].key) for i in named])
    value_labels = {i: dict(zip(axes[i].values, _value_labels(axes[i].values))) for i in named}
    names = []
    for base, combo in zip(bases, combos):
        if not named:
            names.append(base)
            continue
        point = SEPARATOR.join(f"{key}_{value_labels[i][combo[i]]}" for key, i in zip(key_labels, named))
        name = f"{base}{SEPARATOR}{point}"
        if len(name) > MAX_NAME:
            digest = hashlib.sha256("\n".join(combo).encode()).hexdigest()[:8]
            name = f"{base[:60]}{SEPARATOR}{point}"[: MAX_NAME - 9].rstrip("-_") + "-" + digest
        names.append(name)
    return names


def _value_labels(values: tuple[str, ...]) -> list[str]:
    """A model id or path by its last part (bert-tiny), unless that is ambiguous; then the whole value."""
    short = [_slug(_last_part(value)) for value in values]
    full = [_slug(value) for value in values]
    numbered = [f"{label}{n}" for n, label in enumerate(full, 1)]
    return _unique(short, full, numbered)


def _unique(*candidates: list[str]) -> list[str]:
    """The first candidate list whose labels are all different (the last one always is)."""
    for labels in candidates:
        if len(set(labels)) == len(labels):
            return labels
    return candidates[-1]


def _last_part(value: str) -> str:
    text = value.strip().strip("'\"")
    parts = [part for part in re.split(r"[/\\]", text) if part not in ("", ".")]
    return parts[-1] if parts else text


def _slug(text: str) -> str:
    """Only what a recipe name may hold (letters, digits, _ and -), no '--' (it separates settings)."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", text)
    slug = re.sub(r"-{2,}", "-", slug).strip("_-")
    return slug or "_"


def _dotted(path: tuple) -> str:
    return ".".join(str(part) for part in path)


# ---- running ----------------------------------------------------------------------------------------

QUEUED, RUNNING, FINISHED, FAILED, INTERRUPTED, NOT_STARTED = (
    "queued", "running", "finished", "failed", "interrupted", "not started",
)


@dataclass
class PointRun:
    """One point as the sweep runs it."""

    point: Point
    log: Path
    status: str = QUEUED
    run_id: int | None = None
    returncode: int | None = None
    started: float | None = None
    ended: float | None = None
    steps_done: int = 0
    error: str | None = None  # the child's error lines, for failed points
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def index(self) -> int:
        return self.point.index

    @property
    def ending(self) -> str:
        """How the process ended: 'exit code 3', 'killed by SIGKILL'."""
        return _how_it_died(self.returncode)

    @property
    def duration_s(self) -> float | None:
        if self.started is None:
            return None
        return (self.ended if self.ended is not None else time.monotonic()) - self.started


@dataclass
class SweepOutcome:
    grid: Grid
    points: list[PointRun]
    log_dir: Path
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        """0 every point finished, 130 the sweep was interrupted, 1 any point failed."""
        if self.interrupted:
            return 130
        return 0 if all(point.status == FINISHED for point in self.points) else 1


def point_command(grid: Grid, point: Point, store_dir: Path, force: Sequence[str], processes: str | None) -> list[str]:
    """The `workbench run` of one point: a fresh interpreter, the point's --sets, the sweep's store."""
    command = [sys.executable, "-m", "workbench.cli", "run", str(grid.recipe), "--store", str(store_dir)]
    for text in point.overrides:
        command += ["--set", text]
    for step in force:
        command += ["--force", step]
    if processes is not None:
        command += ["--processes", processes]
    return command


class SweepRunner:
    """Runs the points K at a time, each in its own process group, and records how each ended.

    A point's process group gets exactly what a terminal's Ctrl-C would give a foreground
    `workbench run` (one SIGINT to every process in it, launcher and ranks alike), so it records its
    run as 'interrupted' the usual way; the terminal's own Ctrl-C reaches only this process.
    """

    def __init__(
        self,
        grid: Grid,
        location: "StoreLocation",
        *,
        jobs: int = 1,
        force: Sequence[str] = (),
        processes: str | None = None,
        on_change: Callable[["SweepOutcome"], None] | None = None,
        poll_store_s: float | None = None,
    ):
        self.grid = grid
        self.location = location
        self.jobs = max(1, jobs)
        self.force = list(force)
        self.processes = processes
        self.on_change = on_change or (lambda outcome: None)
        self.poll_store_s = poll_store_s  # how often to read each running point's progress (None: never)
        self.stop_signal = signal.SIGINT  # passed on to the running points when the sweep is stopped
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        base = sweep_of(grid.points[0].name)[0] if grid.points and sweep_of(grid.points[0].name) else "sweep"
        self.log_dir = _fresh_dir(location.store_dir / "sweeps" / f"{base}-{stamp}")
        width = len(str(len(grid.points)))
        self.outcome = SweepOutcome(
            grid,
            [PointRun(point, self.log_dir / f"{point.index:0{width}d}.log") for point in grid.points],
            self.log_dir,
        )

    def run(self) -> SweepOutcome:
        store = self.location.open(create=True)  # made (and migrated) once, here, not by K children at once
        try:
            newest = store.list_runs(1)
            self.first_id = (newest[0].id + 1) if newest else 1
            with _sigterm_as_interrupt(self):
                try:
                    self._schedule(store)
                except KeyboardInterrupt:
                    self.outcome.interrupted = True
                    self._stop_all()
            self._read_runs(store, final=True)
        finally:
            store.close()
        self.on_change(self.outcome)
        return self.outcome

    # ---- scheduling ---------------------------------------------------------------------------

    def _schedule(self, store) -> None:
        queue = list(self.outcome.points)
        running: list[PointRun] = []
        last_read = 0.0
        while queue or running:
            while queue and len(running) < self.jobs:
                point = queue.pop(0)
                self._start(point)
                running.append(point)
                self.on_change(self.outcome)
            for point in list(running):
                if point.process is not None and point.process.poll() is not None:
                    self._ended(point)
                    running.remove(point)
                    self._read_runs(store, final=False)
                    self.on_change(self.outcome)
            if self.poll_store_s is not None and time.monotonic() - last_read >= self.poll_store_s:
                last_read = time.monotonic()
                self._read_runs(store, final=False)
                self.on_change(self.outcome)
            if queue or running:
                time.sleep(POLL_S)

    def _start(self, point: PointRun) -> None:
        command = point_command(self.grid, point.point, self.location.store_dir, self.force, self.processes)
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[1])  # the children run this very workbench
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"  # the log fills as the point runs (`tail -f` works)
        with open(point.log, "w", encoding="utf-8") as log:
            log.write("$ " + " ".join(_quote(part) for part in command) + "\n\n")
            log.flush()
            point.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                **_own_process_group(),
            )
        point.status, point.started = RUNNING, time.monotonic()

    def _ended(self, point: PointRun) -> None:
        assert point.process is not None
        point.returncode = point.process.returncode
        point.ended = time.monotonic()
        point.process = None
        code = point.returncode
        stopped = code in (130, -signal.SIGINT) or (self.outcome.interrupted and code is not None and code < 0)
        point.status = FINISHED if code == 0 else INTERRUPTED if stopped else FAILED
        if point.status == FAILED:
            point.error = _error_lines(point.log) or _how_it_died(code)

    def _stop_all(self) -> None:
        """Ctrl-C (or SIGTERM): no new points; the running ones are interrupted and waited for."""
        for point in self.outcome.points:
            if point.status == QUEUED:
                point.status = NOT_STARTED
        running = [point for point in self.outcome.points if point.process is not None]
        for point in running:  # what this process got: SIGINT (Ctrl-C), or SIGTERM (kill, scancel; never ignored)
            _signal_group(point.process, self.stop_signal)  # type: ignore[arg-type]
        self.on_change(self.outcome)
        deadline = time.monotonic() + GRACE_S
        while running:
            try:
                for point in list(running):
                    if point.process is not None and point.process.poll() is not None:
                        self._ended(point)
                        running.remove(point)
                        self.on_change(self.outcome)
                if running and time.monotonic() > deadline:
                    self._kill(running)
                time.sleep(POLL_S)
            except KeyboardInterrupt:  # a second Ctrl-C: no more waiting
                self._kill(running)

    @staticmethod
    def _kill(running: list[PointRun]) -> None:
        for point in running:
            if point.process is not None:
                _signal_group(point.process, signal.SIGKILL)

    # ---- the store ----------------------------------------------------------------------------

    def _read_runs(self, store, *, final: bool) -> None:
        """Each started point's run (found by its name, newer than the sweep) and how far it got."""
        started = {point.point.name: point for point in self.outcome.points if point.started is not None}
        if not started:
            return
        try:
            if final:
                store.mark_dead_runs()  # a point that was killed left its run 'running'
            runs = store.list_runs(len(self.outcome.points) * 2 + 50)
        except WorkbenchError:
            return  # progress is best effort; the summary says what the children said
        for run in sorted(runs, key=lambda r: r.id):  # the newest run of a name wins
            point = started.get(run.name)
            if point is not None and run.id >= self.first_id:
                point.run_id = run.id
                point.steps_done = run.steps_total - (1 if run.status == "running" and run.steps_total else 0)
                if final and point.status == FINISHED:
                    point.steps_done = run.steps_total


def _fresh_dir(path: Path) -> Path:
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    candidate.mkdir(parents=True)
    return candidate


def _own_process_group() -> dict[str, object]:
    if os.name == "posix":
        return {"process_group": 0}
    return {"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)}


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        if os.name == "posix":
            os.killpg(process.pid, signum)
        elif signum == signal.SIGINT:
            process.send_signal(getattr(signal, "CTRL_BREAK_EVENT", signal.SIGINT))
        else:
            process.kill()
    except (ProcessLookupError, PermissionError, OSError):
        pass  # already gone


@contextmanager
def _sigterm_as_interrupt(runner: SweepRunner) -> Iterator[None]:
    """SIGTERM (scancel, kill) stops the sweep as Ctrl-C does, and is passed on to the points (a
    process started in the background by a shell ignores SIGINT, and so do its children)."""

    def interrupt(_signum: int, _frame: object) -> None:
        runner.stop_signal = signal.SIGTERM
        raise KeyboardInterrupt

    with on_sigterm(interrupt):
        yield


def _error_lines(log: Path, limit: int = 6) -> str | None:
    """What the child said was wrong: its `error:` lines (and their hints), else its last line."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    picked: list[str] = []
    for number, line in enumerate(lines):
        if line.startswith("error: "):
            picked.append(line[len("error: "):])
            picked.extend(hint.strip() for hint in itertools.takewhile(lambda l: l.startswith("  "), lines[number + 1:]))
    if not picked:
        tail = [line for line in lines if line.strip()]
        picked = tail[-1:]
    return "\n".join(picked[:limit]) or None


def _how_it_died(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)
