"""The results store: runs, steps, metrics and scores in SQLite (the default) or PostgreSQL.

Every write is one short transaction, so several `workbench run` processes can share a store:
SQLite runs in WAL mode with a busy timeout, and writers wait for each other instead of failing.
Opening a store checks it (a damaged SQLite file, a database gone from beside its cache, a
read-only folder) and brings an older schema up to date (workbench/db/migrations).
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, delete, event, func, select
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from workbench.db import health, migrations
from workbench.db.orm import (
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
    RemovedRuns,
    RunDetail,
    RunSummary,
    StepRecord,
)
from workbench.db.urls import checked_url, mask_url, sqlite_path
from workbench.errors import StoreError
from workbench.processes import HOST, process_alive, process_start_time
from workbench.scores import layer_lines

BUSY_TIMEOUT_S = 60
INT64 = (-(2**63), 2**63 - 1)


def now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def default_store_dir() -> Path:
    """`WORKBENCH_HOME`, else ./store: the CLI's rule before workbench.store_location.locate_store,
    kept until the CLI calls that instead."""
    return Path(os.environ.get("WORKBENCH_HOME", "store"))


def database_url(store_dir: Path) -> str:
    """`WORKBENCH_DB` wins (any SQLAlchemy URL); else SQLite inside the store folder."""
    return os.environ.get("WORKBENCH_DB") or f"sqlite:///{(store_dir / health.DATABASE_FILE).resolve()}"


class Store:
    """The store at a database URL.

    `create=False` opens an existing store only (browsing): it never creates a file, a folder or a
    table, and raises StoreError "no store at ..." instead. `store_dir`, when given, is the folder
    whose cache belongs with the database: a SQLite file of that folder that has gone missing or
    empty while the cache still has entries is an error, not a fresh start.
    """

    def __init__(self, url: str, *, create: bool = True, store_dir: Path | None = None):
        self.url: URL = checked_url(url)
        self.display_url = mask_url(self.url)
        path = sqlite_path(self.url)
        self.database_path: Path | None = Path(path).resolve() if path else None
        own_cache = None
        if self.database_path is not None and store_dir is not None:
            if self.database_path.parent == Path(store_dir).resolve():
                own_cache = Path(store_dir) / "cache"
        self._own_cache = own_cache
        if self.database_path is not None:
            self._check_sqlite_file(create)
        try:
            self.engine = _make_engine(self.url)
        except SQLAlchemyError as error:  # e.g. a driver that fails to load
            raise health.explain(error, doing="cannot open the store", database=self.display_url, path=self.database_path) from None
        try:
            self._prepare_schema_patiently(create)
        except BaseException:
            self.engine.dispose()
            raise
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def _prepare_schema_patiently(self, create: bool, attempts: int = 5) -> None:
        """`_prepare_schema`, tried again when SQLite refuses a lock at once.

        Processes opening a fresh file together race on its first lock upgrades (rollback journal
        until one of them switches it to WAL); SQLite answers one of a would-be deadlock with
        "database is locked" without waiting for the busy timeout. A later attempt finds the schema
        made or being made by the winner, under the migration lock.
        """
        for attempt in range(attempts):
            try:
                self._prepare_schema(create)
                return
            except health.DatabaseLocked:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.2 * (attempt + 1))

    @classmethod
    def open(cls, store_dir: Path | str, *, create: bool = True) -> "Store":
        """The store of a folder (its SQLite file, or `WORKBENCH_DB`), created if new unless create=False.

        To find the folder from the current one, use workbench.store_location.locate_store (which
        opens stores through this class: the dependency goes that way only).
        """
        store_dir = Path(store_dir)
        if not create and not os.environ.get("WORKBENCH_DB") and not store_dir.is_dir():
            raise StoreError(f"no store at {store_dir}; {health.NO_STORE_HINT}")
        return cls(database_url(store_dir), create=create, store_dir=store_dir)

    def close(self) -> None:
        """Release the connections (a PostgreSQL database can only be dropped once nobody holds one)."""
        self.engine.dispose()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def schema_revision(self) -> str | None:
        with self._connection("read the schema version") as connection:
            return migrations.read_state(connection).revision

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: commits on success, rolls back on any error."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except SQLAlchemyError as error:
            session.rollback()
            raise self._explain(error, "the store failed") from None
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    # ---- opening -------------------------------------------------------------------------------

    def _check_sqlite_file(self, create: bool) -> None:
        path = self.database_path
        assert path is not None
        health.check_database_file(path, create=create, cache_dir=self._own_cache)
        if create:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise health.folder_error(error, path.parent) from None
        health.check_folder_writable(path.parent)

    def _prepare_schema(self, create: bool) -> None:
        """Check the file, then create or upgrade the schema as needed (one query when it is current)."""
        if self.database_path is not None:
            self._quick_check()
        with self._connection("cannot open the store") as connection:
            state = migrations.read_state(connection)
        if state.empty:
            entries = health.cache_entry_count(self._own_cache) if self._own_cache else 0
            if entries and self._own_cache is not None and self.database_path is not None:
                raise health.orphaned_cache(entries, "empty", self.database_path, self._own_cache)
            if not create:
                where = self.database_path.parent if self.database_path else self.display_url
                raise StoreError(f"no store at {where}; {health.NO_STORE_HINT}")
        if not state.current:
            try:
                migrations.upgrade(self.engine)
            except SQLAlchemyError as error:
                raise self._explain(error, "cannot bring the store's schema up to date") from None

    def _quick_check(self) -> None:
        """PRAGMA quick_check, once per process for each state of the file (it reads every page)."""
        path = self.database_path
        assert path is not None
        try:
            stat = path.stat()
        except OSError:
            return
        seen = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
        if seen in _CHECKED_FILES:
            return
        with self._connection("cannot open the store") as connection:
            try:
                problems = health.check_rows(connection.connection.driver_connection, "quick_check", 5)
            except sqlite3.Error as error:  # the driver's own error: a lock held too long
                raise health.explain(error, doing="cannot open the store", database=self.display_url, path=path) from None
        if problems != ["ok"]:
            raise health.damaged(path, "; ".join(problems))
        _CHECKED_FILES.add(seen)

    @contextmanager
    def _connection(self, doing: str) -> Iterator[Any]:
        try:
            with self.engine.connect() as connection:
                yield connection
        except SQLAlchemyError as error:
            raise self._explain(error, doing) from None

    def _explain(self, error: SQLAlchemyError, doing: str) -> StoreError:
        return health.explain(error, doing=doing, database=self.display_url, path=self.database_path)

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
        if not INT64[0] <= seed <= INT64[1]:
            raise StoreError(f"seed {seed} does not fit the store's 64-bit seed column", hint="use a seed below 2**63")
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
        """The recipe's row, created if new. Two processes may create it at once: the loser's insert does nothing.

        INSERT ... ON CONFLICT DO NOTHING rather than a savepoint: when SQLite aborts a transaction
        (a full disk), a savepoint's rollback fails with "no such savepoint" and hides the cause.
        """
        query = select(SqlRecipe).where(SqlRecipe.content_hash == content_hash)
        recipe = session.scalar(query)
        if recipe is not None:
            return recipe
        dialect = session.get_bind().dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        session.execute(
            insert(SqlRecipe)
            .values(content_hash=content_hash, name=name, path=path, text=text, created_at=now())
            .on_conflict_do_nothing(index_elements=["content_hash"])
        )
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
        layer_scores: "Iterable[LayerScores] | Mapping[str, Sequence[float]] | None" = None,
        data: dict[str, Any] | None = None,
        artifacts: list[dict[str, Any]] | None = None,
        error: str | None = None,
    ) -> None:
        """Record a step's outcome and everything it measured, in one transaction.

        `layer_scores`: LayerScores lines (StepResult.layer_lines()) or {name: values}.
        """
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
            session.add_all(_layer_rows(step_pk, layer_lines(layer_scores)))
            session.add_all(SqlArtifact(step_pk=step_pk, **artifact) for artifact in artifacts or [])

    def import_run(self, run: RunDetail, *, recipe_hash: str, imported_from: str, host: str) -> int:
        """Record a run made elsewhere (workbench/bundles/importing.py), all of it in one transaction.

        `run` is the bundle's run, already checked; its id is the exporter's and is not kept (this
        store numbers its own runs). The run keeps its status, times, steps and every value; it is
        never 'running', so `mark_dead_runs` leaves it alone whatever `host` says.
        """
        if not INT64[0] <= run.seed <= INT64[1]:
            raise StoreError(f"seed {run.seed} does not fit the store's 64-bit seed column")
        summary = run.summary
        with self.session() as session:
            recipe = self._recipe_row(session, recipe_hash, run.recipe_name, run.recipe_path, run.recipe_text)
            row = SqlRun(
                recipe_id=recipe.id,
                name=summary.name,
                status=summary.status,
                started_at=summary.started_at,
                finished_at=summary.finished_at,
                host=host,
                pid=0,
                pid_started=None,
                device=summary.device,
                seed=run.seed,
                overrides=json.dumps(run.overrides),
                environment=json.dumps(run.environment, default=str),
                error=run.error,
                imported_from=imported_from,
            )
            session.add(row)
            session.flush()
            for step in run.steps:
                step_row = SqlStep(
                    run_id=row.id,
                    step_id=step.step_id,
                    kind=step.kind,
                    key=step.key,
                    status=step.status,
                    started_at=summary.started_at,
                    finished_at=summary.finished_at,
                    duration_s=step.duration_s,
                    params=json.dumps(step.params, default=str),
                    data=json.dumps(step.data, default=str),
                    error=step.error,
                )
                session.add(step_row)
                session.flush()
                pk = step_row.id
                session.add_all(SqlMetric(step_pk=pk, name=n, value=_number(v)) for n, v in step.metrics.items())
                session.add_all(
                    SqlHeadScore(step_pk=pk, name=grid.name, layer=layer, head=head, value=_number(value))
                    for grid in step.head_scores
                    for layer, cells in enumerate(grid.values)
                    for head, value in enumerate(cells)
                )
                session.add_all(_layer_rows(pk, step.layer_scores))
                session.add_all(
                    SqlArtifact(step_pk=pk, name=a.name, kind=a.kind, cache_key=a.cache_key, sha256=a.sha256, bytes=a.bytes)
                    for a in step.artifacts
                )
            return row.id

    def imported_runs(self) -> dict[int, dict[str, Any]]:
        """{run id: its environment} of the runs that came from bundles (to find a bundle imported twice)."""
        with self.session() as session:
            query = select(SqlRun.id, SqlRun.environment).where(SqlRun.imported_from.is_not(None))
            return {run_id: json.loads(environment) for run_id, environment in session.execute(query)}

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

    def delete_runs(self, run_ids: Iterable[int]) -> RemovedRuns:
        """Delete runs with their steps, metrics, scores and artifact rows; a run still running is kept.

        Cache entries are left alone (`workbench gc` removes those no run refers to any more), and
        so are recipes other runs still use.
        """
        wanted = sorted(set(run_ids))
        self.mark_dead_runs()  # a run whose process is gone is not 'running'
        with self.session() as session:
            rows = {run.id: run for run in session.scalars(select(SqlRun).where(SqlRun.id.in_(wanted)))} if wanted else {}
            live = [run_id for run_id, run in rows.items() if run.status == "running"]
            doomed = [run_id for run_id in rows if run_id not in live]
            steps = session.scalar(select(func.count(SqlStep.id)).where(SqlStep.run_id.in_(doomed))) if doomed else 0
            if doomed:
                # The database cascades to metrics, scores and artifacts (foreign keys with ON DELETE CASCADE).
                session.execute(delete(SqlStep).where(SqlStep.run_id.in_(doomed)))
                session.execute(delete(SqlRun).where(SqlRun.id.in_(doomed)))
                used = select(SqlRun.recipe_id)
                session.execute(delete(SqlRecipe).where(SqlRecipe.id.not_in(used)))
        return RemovedRuns(
            removed=sorted(doomed),
            not_found=[run_id for run_id in wanted if run_id not in rows],
            still_running=sorted(live),
            steps=steps or 0,
        )

    # ---- reading -------------------------------------------------------------------------------

    def cache_keys_in_use(self) -> set[str]:
        """Every cache key a step of some run has (the entries `workbench gc` must keep)."""
        with self.session() as session:
            keys = set(session.scalars(select(SqlStep.key).distinct()))
            keys.update(session.scalars(select(SqlArtifact.cache_key).distinct()))
        return keys

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
                if int(reference) > INT64[1] or session.get(SqlRun, int(reference)) is None:
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


# Runs this process is executing now (so mark_dead_runs never interrupts its own live run).
_LIVE_RUNS: set[int] = set()


def register_live_run(run_id: int) -> None:
    _LIVE_RUNS.add(run_id)


def unregister_live_run(run_id: int) -> None:
    _LIVE_RUNS.discard(run_id)


# Database files that passed quick_check in this process, as (path, size, mtime_ns, inode).
_CHECKED_FILES: set[tuple[str, int, int, int]] = set()


def _make_engine(url: URL) -> Engine:
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(connection: Any, _record: Any) -> None:
        connection.isolation_level = None  # pysqlite must not begin transactions itself: see _begin_immediate
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        # A deferred transaction that reads, then writes, cannot wait for the write lock: when another
        # process committed meanwhile SQLite answers SQLITE_BUSY at once (its snapshot is stale), and
        # the busy timeout never applies. Taking the write lock up front makes writers queue instead.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _layer_rows(step_pk: int, lines: Iterable[LayerScores]) -> Iterator[SqlLayerScore]:
    """One layer_scores row per layer of each line (the inverse of `_step_record`'s lines)."""
    for line in lines:
        for layer, value in enumerate(line.values):
            yield SqlLayerScore(step_pk=step_pk, name=line.name, layer=layer, value=_number(value))


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
        imported_from=run.imported_from,
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
