"""Free text as TEXT, seeds and byte counts as BIGINT.

Revision ID: 0003
Revises: 0002

PostgreSQL enforced what SQLite never did: VARCHAR(200) rejected a long step id or score name,
and INTEGER overflowed on seeds >= 2**31 and files >= 2 GiB. SQLite stores any text length and
64-bit integers in the columns as they are, so it is left alone (a rebuild of every table would
change nothing it stores). Idempotent: altering a column to the type it has is a no-op.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TO_TEXT = {
    "recipes": ("name",),
    "runs": ("name", "host", "device"),
    "steps": ("step_id", "kind"),
    "metrics": ("name",),
    "head_scores": ("name",),
    "layer_scores": ("name",),
    "artifacts": ("kind",),
}
TO_BIGINT = {"runs": ("seed",), "artifacts": ("bytes",)}


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    for table, columns in TO_TEXT.items():
        for column in columns:
            op.alter_column(table, column, type_=sa.Text)
    for table, columns in TO_BIGINT.items():
        for column in columns:
            op.alter_column(table, column, type_=sa.BigInteger)
