"""Baseline: the schema the store had before it recorded a version (before runs.pid_started).

Revision ID: 0001
Revises: -

The tables are written out here, not imported from workbench.db.orm: a migration describes the
schema of its day and must not change when the models do. Tables are created only if missing, so
a store written before migrations existed (tables, but no version) can be upgraded through here.
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

metadata = sa.MetaData()

sa.Table(
    "recipes", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("content_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("path", sa.Text),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
)
sa.Table(
    "runs", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("recipe_id", sa.Integer, sa.ForeignKey("recipes.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("started_at", sa.DateTime, nullable=False),
    sa.Column("finished_at", sa.DateTime),
    sa.Column("host", sa.String(200), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("device", sa.String(50)),
    sa.Column("seed", sa.Integer, nullable=False),
    sa.Column("overrides", sa.Text, nullable=False),
    sa.Column("environment", sa.Text, nullable=False),
    sa.Column("error", sa.Text),
)
sa.Table(
    "steps", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("step_id", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(50), nullable=False),
    sa.Column("key", sa.String(64), nullable=False, index=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("started_at", sa.DateTime, nullable=False),
    sa.Column("finished_at", sa.DateTime),
    sa.Column("duration_s", sa.Float),
    sa.Column("params", sa.Text, nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("error", sa.Text),
)
sa.Table(
    "metrics", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("step_pk", sa.Integer, sa.ForeignKey("steps.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("value", sa.Float),
)
sa.Table(
    "head_scores", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("step_pk", sa.Integer, sa.ForeignKey("steps.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("layer", sa.Integer, nullable=False),
    sa.Column("head", sa.Integer, nullable=False),
    sa.Column("value", sa.Float),
    sa.Index("ix_head_scores_step_name", "step_pk", "name"),
)
sa.Table(
    "layer_scores", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("step_pk", sa.Integer, sa.ForeignKey("steps.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("layer", sa.Integer, nullable=False),
    sa.Column("value", sa.Float),
    sa.Index("ix_layer_scores_step_name", "step_pk", "name"),
)
sa.Table(
    "artifacts", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("step_pk", sa.Integer, sa.ForeignKey("steps.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("kind", sa.String(50), nullable=False),
    sa.Column("cache_key", sa.String(64), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("bytes", sa.Integer, nullable=False),
)


def upgrade() -> None:
    metadata.create_all(op.get_bind(), checkfirst=True)
