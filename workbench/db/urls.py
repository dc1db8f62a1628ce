"""Database URLs: which ones the store supports, which driver serves them, and how to print them.

A URL can carry a password (`postgresql://user:secret@host/db`); every message that names a URL
goes through `mask_url` (or `mask_urls_in` for text that may contain one, such as a driver's error).
"""

from __future__ import annotations

import importlib.util
import re

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from workbench.errors import StoreError

SUPPORTED = ("sqlite", "postgresql")
POSTGRES_DRIVERS = ("psycopg", "psycopg2")  # the first one installed serves a plain postgresql:// URL
INSTALL_POSTGRES = "pip install 'bertology-workbench[postgres]' (installs psycopg)"

# scheme://user:password@ -> scheme://user:***@ ; also inside longer text (error messages).
_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)(\S*)@")


def mask_url(url: str | URL) -> str:
    """The URL with its password replaced by ***, for messages."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    return _PASSWORD.sub(r"\1***@", url)


def mask_urls_in(text: str) -> str:
    """Any URL inside a text (a driver's error message) with its password masked."""
    return _PASSWORD.sub(r"\1***@", text)


def checked_url(url: str) -> URL:
    """Parse a database URL, pick its driver, and refuse what the store does not support.

    Raises StoreError naming the URL (password masked): a malformed URL, a database other than
    SQLite or PostgreSQL, or a PostgreSQL URL whose driver is not installed.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise StoreError(
            f"not a database URL: {mask_url(url)}",
            hint="WORKBENCH_DB takes a SQLAlchemy URL, e.g. sqlite:////abs/path/workbench.sqlite or postgresql://user@host/db",
        ) from None
    backend = parsed.get_backend_name()
    if backend not in SUPPORTED:
        raise StoreError(
            f"unsupported database URL {mask_url(url)}: the store works with SQLite and PostgreSQL",
            hint="use sqlite:///PATH or postgresql://user@host/db",
        )
    if backend == "postgresql":
        driver = parsed.get_driver_name() if "+" in parsed.drivername else None
        if driver is None:  # SQLAlchemy's default is psycopg2; use whichever driver is installed
            driver = next((d for d in POSTGRES_DRIVERS if importlib.util.find_spec(d) is not None), None)
            if driver is None:
                raise StoreError(f"cannot use {mask_url(url)}: no PostgreSQL driver is installed", hint=INSTALL_POSTGRES)
            parsed = parsed.set(drivername=f"postgresql+{driver}")
        elif importlib.util.find_spec(driver) is None:
            raise StoreError(f"cannot use {mask_url(url)}: its driver '{driver}' is not installed", hint=INSTALL_POSTGRES)
    return parsed


def sqlite_path(url: URL) -> str | None:
    """The database file of a SQLite URL; None for in-memory databases and other backends."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return url.database
