"""runs.pid_started: the start time of the run's process, so that a reused pid is not taken for it.

Revision ID: 0002
Revises: 0001

Idempotent: stores written before migrations existed may already have the column.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    columns = {column["name"] for column in sa.inspect(op.get_bind()).get_columns("runs")}
    if "pid_started" not in columns:
        op.add_column("runs", sa.Column("pid_started", sa.Float, nullable=True))
