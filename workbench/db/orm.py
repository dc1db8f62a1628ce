"""SQLAlchemy 2.0 tables of the results store. Rows of these classes never leave workbench.db.

The tables are created and changed by the migrations in workbench/db/migrations, never by
`create_all`: a change here needs a new revision there (tests compare the two on PostgreSQL).

Free text is `Text`, not `String(n)`: SQLite never enforced the lengths, PostgreSQL does, and a
step id or score name longer than 200 characters is not an error worth failing a run for. Hashes
keep their exact width. Seeds and byte counts are 64-bit: seeds >= 2**31 and files >= 2 GiB are real.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Float, ForeignKey, Index, Integer, String, Text, TypeDecorator
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class SafeText(TypeDecorator):
    """Text that PostgreSQL accepts: NUL characters (possible in a step's error message) become U+FFFD."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


class Base(DeclarativeBase):
    pass


class SqlRecipe(Base):
    __tablename__ = "recipes"

    id: Mapped[int] = mapped_column(primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(SafeText)
    path: Mapped[str | None] = mapped_column(SafeText)
    text: Mapped[str] = mapped_column(SafeText)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class SqlRun(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    recipe_id: Mapped[int] = mapped_column(ForeignKey("recipes.id"))
    name: Mapped[str] = mapped_column(SafeText)
    status: Mapped[str] = mapped_column(String(20))  # running | finished | failed | interrupted
    started_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    host: Mapped[str] = mapped_column(SafeText)
    pid: Mapped[int] = mapped_column(Integer)
    pid_started: Mapped[float | None] = mapped_column(Float)  # the process's start time: pids are reused
    device: Mapped[str | None] = mapped_column(SafeText)
    seed: Mapped[int] = mapped_column(BigInteger)
    overrides: Mapped[str] = mapped_column(SafeText, default="[]")  # JSON list of --set arguments
    environment: Mapped[str] = mapped_column(SafeText, default="{}")  # JSON: versions, device, git commit
    error: Mapped[str | None] = mapped_column(SafeText)
    imported_from: Mapped[str | None] = mapped_column(SafeText)  # set by `workbench import`: the bundle and its run

    recipe: Mapped[SqlRecipe] = relationship()
    steps: Mapped[list[SqlStep]] = relationship(back_populates="run", order_by="SqlStep.id")


class SqlStep(Base):
    __tablename__ = "steps"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    step_id: Mapped[str] = mapped_column(SafeText)
    kind: Mapped[str] = mapped_column(SafeText)
    key: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(20))  # running | done | cached | failed | interrupted
    started_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    duration_s: Mapped[float | None] = mapped_column(Float)
    params: Mapped[str] = mapped_column(SafeText, default="{}")  # JSON
    data: Mapped[str] = mapped_column(SafeText, default="{}")  # JSON: curves, tables, iterations
    error: Mapped[str | None] = mapped_column(SafeText)

    run: Mapped[SqlRun] = relationship(back_populates="steps")


class SqlMetric(Base):
    __tablename__ = "metrics"

    id: Mapped[int] = mapped_column(primary_key=True)
    step_pk: Mapped[int] = mapped_column(ForeignKey("steps.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(SafeText)
    value: Mapped[float | None] = mapped_column(Float)


class SqlHeadScore(Base):
    __tablename__ = "head_scores"
    __table_args__ = (Index("ix_head_scores_step_name", "step_pk", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    step_pk: Mapped[int] = mapped_column(ForeignKey("steps.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(SafeText)
    layer: Mapped[int] = mapped_column(Integer)
    head: Mapped[int] = mapped_column(Integer)
    value: Mapped[float | None] = mapped_column(Float)


class SqlLayerScore(Base):
    __tablename__ = "layer_scores"
    __table_args__ = (Index("ix_layer_scores_step_name", "step_pk", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    step_pk: Mapped[int] = mapped_column(ForeignKey("steps.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(SafeText)
    layer: Mapped[int] = mapped_column(Integer)
    value: Mapped[float | None] = mapped_column(Float)


class SqlArtifact(Base):
    __tablename__ = "artifacts"

    id: Mapped[int] = mapped_column(primary_key=True)
    step_pk: Mapped[int] = mapped_column(ForeignKey("steps.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(SafeText)  # path inside the cache entry
    kind: Mapped[str] = mapped_column(SafeText)  # tensors | result | model | file
    cache_key: Mapped[str] = mapped_column(String(64))
    sha256: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(BigInteger)
