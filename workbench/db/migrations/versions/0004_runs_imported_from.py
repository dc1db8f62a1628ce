"""runs.imported_from: where a run that came in through `workbench import` was made.

Revision ID: 0004
Revises: 0003

NULL for runs made by this store. For an imported run, a line naming the bundle and the run it
holds ("quickstart-7.zip: run 7 of 'quickstart' on host gpu-2, exported 2025-01-31T10:00:00");
the full origin (the bundle's sha256, the exporting workbench) is in the run's environment JSON.
Idempotent, as every revision: a store that already has the column is left alone.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    columns = {column["name"] for column in sa.inspect(op.get_bind()).get_columns("runs")}
    if "imported_from" not in columns:
        op.add_column("runs", sa.Column("imported_from", sa.Text, nullable=True))
