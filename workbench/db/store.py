"""The results store: runs, steps, metrics and scores in any SQLAlchemy database (SQLite by default).

Every write is one short transaction, so several `workbench run` processes can share a store:
SQLite runs in WAL mode with a busy timeout, and writers wait for each other instead of failing.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from workbench.db.orm import (
    Base,
    SqlArtifact,
    SqlHeadScore,
    SqlLayerScore,
    SqlMetric,
    SqlRecipe,
    SqlRun,
    SqlStep,
)
from workbench.db.records import (
    ArtifactRecord,
    HeadScores,
    LayerScores,
    RunDetail,
    RunSummary,
    StepRecord,
)
from workbench.errors import StoreError
from workbench.processes import HOST, process_alive, process_start_time

BUSY_TIMEOUT_S = 60


def now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def default_store_dir() -> Path:
    return Path(os.environ.get("WORKBENCH_HOME", "store"))


def database_url(store_dir: Path) -> str:
    """`WORKBENCH_DB` wins (any SQLAlchemy URL); else SQLite inside the store folder."""
    return os.environ.get("WORKBENCH_DB") or f"sqlite:///{(store_dir / 'workbench.sqlite').resolve()}"


class Store:
    def __init__(self, url: str):
        self.url = url
        if url.startswith("sqlite:///"):
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.engine = _make_engine(url)
            self._create_tables()
        except SQLAlchemyError as error:
            raise StoreError(f"cannot open the store at {url}: {error}") from None
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def open(cls, store_dir: Path | None = None) -> "Store":
        return cls(database_url(store_dir or default_store_dir()))

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: commits on success, rolls back on any error."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except SQLAlchemyError as error:
            session.rollback()
            raise StoreError(f"store write failed: {error}") from None
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def _create_tables(self) -> None:
        # Two processes may create a fresh store at once; the loser finds the tables already there.
        for attempt in range(5):
            try:
                Base.metadata.create_all(self.engine)
                _add_missing_columns(self.engine)
                return
            except OperationalError:
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    # ---- writing -------------------------------------------------------------------------------

    def start_run(
        self,
        *,
        name: str,
        recipe_text: str,
        recipe_path: str | None,
        recipe_hash: str,
        seed: int,
        device: str,
        overrides: list[str],
        environment: dict[str, Any],
    ) -> int:
        with self.session() as session:
            recipe = self._recipe_row(session, recipe_hash, name, recipe_path, recipe_text)
            run = SqlRun(
                recipe_id=recipe.id,
                name=name,
                status="running",
                started_at=now(),
                host=HOST,
                pid=os.getpid(),
                pid_started=process_start_time(),
                device=device,
                seed=seed,
                overrides=json.dumps(overrides),
                environment=json.dumps(environment, default=str),
            )
            session.add(run)
            session.flush()
            return run.id

    @staticmethod
    def _recipe_row(session: Session, content_hash: str, name: str, path: str | None, text: str) -> SqlRecipe:
        """The recipe's row, created if new. Two processes may create it at once: the loser re-reads."""
        query = select(SqlRecipe).where(SqlRecipe.content_hash == content_hash)
        recipe = session.scalar(query)
        if recipe is not None:
            return recipe
        try:
            with session.begin_nested():
                recipe = SqlRecipe(content_hash=content_hash, name=name, path=path, text=text, created_at=now())
                session.add(recipe)
            return recipe
        except IntegrityError:
            return session.scalars(query).one()

    def update_environment(self, run_id: int, extra: dict[str, Any]) -> None:
        with self.session() as session:
            run = session.get_one(SqlRun, run_id)
            run.environment = json.dumps({**json.loads(run.environment), **extra}, default=str)

    def set_device(self, run_id: int, device: str) -> None:
        with self.session() as session:
            session.get_one(SqlRun, run_id).device = device

    def finish_run(self, run_id: int, status: str, error: str | None = None) -> None:
        with self.session() as session:
            run = session.get_one(SqlRun, run_id)
            run.status, run.error, run.finished_at = status, error, now()
            for step in run.steps:
                if step.status == "running":
                    step.status, step.finished_at = status if status != "finished" else "failed", now()

    def start_step(self, run_id: int, step_id: str, kind: str, key: str, params: dict[str, Any]) -> int:
        with self.session() as session:
            step = SqlStep(
                run_id=run_id,
                step_id=step_id,
                kind=kind,
                key=key,
                status="running",
                started_at=now(),
                params=json.dumps(params, default=str),
            )
            session.add(step)
            session.flush()
            return step.id

    def finish_step(
        self,
        step_pk: int,
        *,
        status: str,
        duration_s: float,
        metrics: dict[str, float] | None = None,
        head_scores: dict[str, list[list[float]]] | None = None,
        layer_scores: dict[str, list[float]] | None = None,
        data: dict[str, Any] | None = None,
        artifacts: list[dict[str, Any]] | None = None,
        error: str | None = None,
    ) -> None:
        """Record a step's outcome and everything it measured, in one transaction."""
        with self.session() as session:
            step = session.get_one(SqlStep, step_pk)
            step.status, step.duration_s, step.error, step.finished_at = status, duration_s, error, now()
            step.data = json.dumps(data or {}, default=str)
            session.add_all(SqlMetric(step_pk=step_pk, name=n, value=_number(v)) for n, v in (metrics or {}).items())
            session.add_all(
                SqlHeadScore(step_pk=step_pk, name=name, layer=layer, head=head, value=_number(value))
                for name, grid in (head_scores or {}).items()
                for layer, row in enumerate(grid)
                for head, value in enumerate(row)
            )
            session.add_all(
                SqlLayerScore(step_pk=step_pk, name=name, layer=layer, value=_number(value))
                for name, values in (layer_scores or {}).items()
                for layer, value in enumerate(values)
            )
            session.add_all(SqlArtifact(step_pk=step_pk, **artifact) for artifact in artifacts or [])

    def mark_dead_runs(self) -> list[int]:
        """Runs left 'running' by a process of this host that no longer exists become 'interrupted'."""
        host = HOST
        marked = []
        with self.session() as session:
            for run in session.scalars(select(SqlRun).where(SqlRun.status == "running", SqlRun.host == host)):
                if not process_alive(run.pid, run.pid_started) or (run.pid == os.getpid() and run.id not in _LIVE_RUNS):
                    run.status, run.finished_at = "interrupted", run.finished_at or now()
                    run.error = run.error or "the process ended without finishing the run (killed?)"
                    for step in run.steps:
                        if step.status == "running":
                            step.status = "interrupted"
                    marked.append(run.id)
        return marked

    # ---- reading -------------------------------------------------------------------------------

    def list_runs(self, limit: int | None = None) -> list[RunSummary]:
        with self.session() as session:
            query = select(SqlRun).order_by(SqlRun.id.desc())
            if limit:
                query = query.limit(limit)
            return [_summary(run) for run in session.scalars(query)]

    def resolve_run(self, reference: str) -> int:
        """A run id, 'latest', or a recipe name (its latest run) -> run id."""
        with self.session() as session:
            if reference.isdigit():
                if session.get(SqlRun, int(reference)) is None:
                    raise StoreError(f"no run with id {reference}", hint="`workbench runs` lists the runs")
                return int(reference)
            query = select(func.max(SqlRun.id))
            if reference != "latest":
                query = query.where(SqlRun.name == reference)
            run_id = session.scalar(query)
        if run_id is None:
            raise StoreError(
                "no runs in the store yet" if reference == "latest" else f"no run with id or name '{reference}'",
                hint="`workbench runs` lists the runs",
            )
        return run_id

    def get_run(self, reference: str | int) -> RunDetail:
        run_id = self.resolve_run(str(reference))
        with self.session() as session:
            run = session.get_one(SqlRun, run_id)
            steps = [_step_record(session, step) for step in run.steps]
            return RunDetail(
                summary=_summary(run),
                recipe_name=run.recipe.name,
                recipe_path=run.recipe.path,
                recipe_text=run.recipe.text,
                seed=run.seed,
                overrides=json.loads(run.overrides),
                environment=json.loads(run.environment),
                error=run.error,
                steps=steps,
            )


def _add_missing_columns(engine: Engine) -> None:
    """Give a store written by an earlier version the nullable columns added since (e.g. runs.pid_started)."""
    from sqlalchemy import inspect, text

    inspector = inspect(engine)
    for table in Base.metadata.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present and column.nullable:
                kind = column.type.compile(dialect=engine.dialect)
                with engine.begin() as connection:
                    connection.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))


# Runs this process is executing now (so mark_dead_runs never interrupts its own live run).
_LIVE_RUNS: set[int] = set()


def register_live_run(run_id: int) -> None:
    _LIVE_RUNS.add(run_id)


def unregister_live_run(run_id: int) -> None:
    _LIVE_RUNS.discard(run_id)


def _make_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def _number(value: Any) -> float | None:
    """Floats for the database; NaN (e.g. a pruned head) becomes NULL."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _summary(run: SqlRun) -> RunSummary:
    statuses = [step.status for step in run.steps]
    return RunSummary(
        id=run.id,
        name=run.name,
        status=run.status,
        started_at=run.started_at,
        finished_at=run.finished_at,
        device=run.device,
        steps_total=len(statuses),
        steps_cached=statuses.count("cached"),
        steps_failed=statuses.count("failed"),
        recipe_hash=run.recipe.content_hash,
    )


def _step_record(session: Session, step: SqlStep) -> StepRecord:
    metrics = {m.name: m.value for m in session.scalars(select(SqlMetric).where(SqlMetric.step_pk == step.id).order_by(SqlMetric.id))}
    grids: dict[str, dict[tuple[int, int], float | None]] = {}
    for row in session.scalars(select(SqlHeadScore).where(SqlHeadScore.step_pk == step.id).order_by(SqlHeadScore.id)):
        grids.setdefault(row.name, {})[(row.layer, row.head)] = row.value
    head_scores = [HeadScores(name, _dense(cells)) for name, cells in grids.items()]
    lines: dict[str, dict[int, float | None]] = {}
    for row in session.scalars(select(SqlLayerScore).where(SqlLayerScore.step_pk == step.id).order_by(SqlLayerScore.id)):
        lines.setdefault(row.name, {})[row.layer] = row.value
    layer_scores = [LayerScores(name, [cells.get(i) for i in range(max(cells) + 1)]) for name, cells in lines.items()]
    artifacts = [
        ArtifactRecord(a.name, a.kind, a.cache_key, a.sha256, a.bytes)
        for a in session.scalars(select(SqlArtifact).where(SqlArtifact.step_pk == step.id))
    ]
    return StepRecord(
        step_id=step.step_id,
        kind=step.kind,
        key=step.key,
        status=step.status,
        duration_s=step.duration_s,
        error=step.error,
        params=json.loads(step.params),
        data=json.loads(step.data),
        metrics=metrics,
        head_scores=head_scores,
        layer_scores=layer_scores,
        artifacts=artifacts,
    )


def _dense(cells: dict[tuple[int, int], float | None]) -> list[list[float | None]]:
    layers = max(layer for layer, _ in cells) + 1
    heads = max(head for _, head in cells) + 1
    return [[cells.get((layer, head)) for head in range(heads)] for layer in range(layers)]
