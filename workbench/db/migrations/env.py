"""Alembic's entry point, run by workbench.db.migrations (never by an alembic.ini at run time).

The caller passes an open connection, already inside the transaction that holds the schema lock,
in `config.attributes["connection"]`; every migration runs inside that one transaction.
"""

from alembic import context

context.configure(
    connection=context.config.attributes["connection"],
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
