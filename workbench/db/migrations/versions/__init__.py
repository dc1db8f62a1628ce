"""Alembic revisions of the store's schema, oldest first. A package so that wheels ship them."""
