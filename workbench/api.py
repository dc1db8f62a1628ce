"""The workbench from Python: a store's runs as pandas and numpy, for notebooks.

    import workbench as wb
    store = wb.open_store()               # found as the CLI finds it; or a folder, or an SQLAlchemy URL
    store.runs()                          # DataFrame: id, recipe, status, started, duration_s, device, ...
    run = store.run("latest")             # or an id, or a recipe name (its latest run)
    run.metrics()                         # DataFrame: step, name, value
    run.head_scores("importance")         # numpy [layers, heads], NaN for pruned heads
    run.layer_scores("probe_upos")        # DataFrame: layer, name, value
    run.features("extract_dev")           # memory-mapped arrays from the cache shards
    run.model("prune")                    # the (pruned) model and its tokenizer, ready to use
    wb.run_recipe("recipes/x.yaml", overrides=["datasets.dev.limit=64"])  # -> Run

Everything here is plain objects, pandas and numpy: no ORM rows. Reading metadata imports neither
torch nor transformers (only `Run.model` and `run_recipe` do). Errors are the workbench's own
exceptions (`workbench.errors`), with the messages the CLI prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.db.records import RunDetail, StepRecord
from workbench.errors import WorkbenchError, did_you_mean
from workbench.feature_shards import FEATURES_FOLDER

if TYPE_CHECKING:
    import pandas as pd

    from workbench.db.store import Store as _Store
    from workbench.models.loading import LoadedModel
    from workbench.progress import Progress


def open_store(where: str | Path | None = None) -> "Store":
    """The store a CLI command would use; or the store folder `where`, or a database URL."""
    from workbench.store_location import locate_store

    if isinstance(where, str) and "://" in where:
        from workbench.db.store import Store as DbStore

        return Store(DbStore(where, create=False), None)
    location = locate_store(where)
    return Store(location.open(create=False), location.cache_dir)


class Store:
    """Read access to a store: its runs as a table, one run as a `Run`."""

    def __init__(self, db: "_Store", cache_dir: Path | None):
        self._db = db
        self.cache_dir = cache_dir

    def runs(self, limit: int | None = None) -> "pd.DataFrame":
        """One row per run, newest first."""
        import pandas as pd

        rows = [
            {
                "id": run.id,
                "recipe": run.name,
                "status": run.status,
                "started": run.started_at,
                "duration_s": run.duration_s,
                "device": run.device,
                "steps": run.steps_total,
                "cached": run.steps_cached,
                "failed": run.steps_failed,
            }
            for run in self._db.list_runs(limit)
        ]
        return pd.DataFrame(rows, columns=["id", "recipe", "status", "started", "duration_s", "device", "steps", "cached", "failed"])

    def run(self, reference: str | int = "latest") -> "Run":
        """A run by id, recipe name (its latest run) or 'latest'."""
        return Run(self._db.get_run(reference), self.cache_dir)


class Run:
    """One run: its steps' metrics, scores, data, cached features and models."""

    def __init__(self, detail: RunDetail, cache_dir: Path | None):
        self.detail = detail
        self.cache_dir = cache_dir

    @property
    def id(self) -> int:
        return self.detail.summary.id

    @property
    def recipe(self) -> str:
        return self.detail.recipe_name

    @property
    def status(self) -> str:
        return self.detail.summary.status

    @property
    def steps(self) -> list[str]:
        return [step.step_id for step in self.detail.steps]

    def __repr__(self) -> str:
        return f"Run({self.id}, {self.recipe!r}, {self.status}, steps={self.steps})"

    def step(self, step_id: str) -> StepRecord:
        found = self.detail.step(step_id)
        if found is None:
            raise WorkbenchError(f"run {self.id} has no step '{step_id}'", hint=_hint(step_id, self.steps))
        return found

    def metrics(self, step: str | None = None) -> "pd.DataFrame":
        """step, name, value of every metric (of one step, if given)."""
        import pandas as pd

        steps = [self.step(step)] if step else self.detail.steps
        rows = [{"step": s.step_id, "name": name, "value": _float(value)} for s in steps for name, value in s.metrics.items()]
        return pd.DataFrame(rows, columns=["step", "name", "value"])

    def head_scores(self, name: str, step: str | None = None) -> np.ndarray:
        """A head score as [layers, heads] float64, NaN where a head has no value (pruned).

        Without `step`, the score name must belong to exactly one step of the run.
        """
        holders = [s for s in self.detail.steps if (step is None or s.step_id == step) and any(g.name == name for g in s.head_scores)]
        if step is not None:
            self.step(step)
        known = sorted({g.name for s in self.detail.steps for g in s.head_scores})
        if not holders:
            raise WorkbenchError(f"run {self.id} has no head score '{name}'" + (f" in step '{step}'" if step else ""), hint=_hint(name, known))
        if len(holders) > 1:
            raise WorkbenchError(
                f"head score '{name}' is in several steps ({', '.join(s.step_id for s in holders)})",
                hint="name one: head_scores(name, step=...)",
            )
        grid = next(g for g in holders[0].head_scores if g.name == name)
        return np.array([[np.nan if v is None else v for v in row] for row in grid.values], dtype=np.float64)

    def layer_scores(self, step: str) -> "pd.DataFrame":
        """layer, name, value of every layer score of a step (index 0 = embeddings for extract and probe)."""
        import pandas as pd

        rows = [
            {"layer": layer, "name": line.name, "value": _float(value)}
            for line in self.step(step).layer_scores
            for layer, value in enumerate(line.values)
        ]
        return pd.DataFrame(rows, columns=["layer", "name", "value"])

    def data(self, step: str) -> dict[str, Any]:
        """The step's JSON data: curves, tables, iterations."""
        return self.step(step).data

    def features(self, step: str) -> "Features":
        """An extract step's features from its cache entry, memory-mapped (nothing is read until used)."""
        record = self.step(step)
        if record.kind != "extract":
            raise WorkbenchError(f"step '{step}' is a {record.kind} step; features come from extract steps")
        folder = self._files(record) / FEATURES_FOLDER
        shards = [read_safetensors(folder / name) for name in record.data.get("shards", [])]
        return Features(step, list(record.data.get("layers", [])), record.data.get("pooling", ""), shards)

    def model(self, step: str, device: str = "cpu") -> "LoadedModel":
        """The model a finetune or prune step produced (pruned heads removed for real), with its tokenizer."""
        from workbench.models.loading import load_model

        record = self.step(step)
        folder = self._files(record) / "model"
        if not (folder / "config.json").is_file():
            raise WorkbenchError(f"step '{step}' ({record.kind}) produced no model")
        return load_model(str(folder), head="base", device=device)

    def _files(self, record: StepRecord) -> Path:
        if self.cache_dir is None:
            raise WorkbenchError("this store was opened by URL: its cache folder is unknown", hint="open_store(<store folder>)")
        return self.cache_dir / record.key[:2] / record.key[2:] / "files"


@dataclass
class Features:
    """An extract step's features: per shard, `layer_<l>` [rows, dim] and (words) `offsets`, `word_ids`."""

    step: str
    layers: list[int]  # hidden-state indices, 0 = embeddings
    pooling: str
    shards: list[dict[str, np.ndarray]]

    def layer(self, layer: int) -> np.ndarray:
        """Every row of one hidden-state index, in dataset order (concatenating the shards copies them)."""
        if layer not in self.layers:
            raise WorkbenchError(f"layer {layer} was not extracted by '{self.step}' (it has {self.layers})")
        parts = [shard[f"layer_{layer}"] for shard in self.shards]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """A safetensors file as read-only numpy memory maps: its header is checked, no tensor is loaded."""
    import json

    dtypes = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32, "U8": np.uint8, "BOOL": np.bool_}
    size = path.stat().st_size
    with open(path, "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        if not 0 < length <= min(size - 8, 100_000_000):
            raise WorkbenchError(f"{path}: not a safetensors file (bad header length)")
        header = json.loads(handle.read(length))
    arrays = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = dtypes.get(entry.get("dtype"))
        start, end = entry["data_offsets"]
        shape = tuple(entry["shape"])
        if dtype is None or 8 + length + end > size or end - start != int(np.prod(shape)) * np.dtype(dtype).itemsize:
            raise WorkbenchError(f"{path}: tensor '{name}' does not fit the file")
        arrays[name] = np.memmap(path, dtype=dtype, mode="r", offset=8 + length + start, shape=shape)
    return arrays


def run_recipe(
    recipe: str | Path,
    overrides: list[str] | None = None,
    *,
    store: str | Path | None = None,
    force: list[str] | None = None,
    progress: "Progress | None" = None,
) -> Run:
    """Run (or resume) a recipe as `workbench run` does, quietly; the finished run.

    `progress` receives the run's bars, log lines and warnings: any `workbench.progress.Progress`
    (RichProgress for bars, SilentProgress for nothing, or your own). By default there are no bars
    and the steps' log lines and warnings go to stderr as plain lines (LoggingProgress).
    """
    from workbench.executor import run_recipe as execute
    from workbench.progress import LoggingProgress
    from workbench.recipe.loader import load_recipe
    from workbench.store_location import locate_store

    loaded = load_recipe(Path(recipe), overrides or [])
    location = locate_store(store, recipe=Path(recipe))
    outcome = execute(loaded, location.store_dir, force=force or [], progress=progress if progress is not None else LoggingProgress())
    return Run(location.open(create=False).get_run(outcome.run_id), location.cache_dir)  # type: ignore[arg-type]


def _float(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _hint(name: str, known: list[str]) -> str:
    close = did_you_mean(name, known)
    return (close + " " if close else "") + f"known: {', '.join(known) or 'none'}"
