"""Which store a command uses, found the way git finds a repository.

In order: `--store DIR`; `WORKBENCH_HOME`; the nearest `store/` folder that holds a store
(workbench.sqlite or cache/) in the recipe's folder or above it (`run`), or in the current folder
or above it (browsing commands); else a per-user folder under the platform's data directory
(~/.local/share/workbench on Linux). `WORKBENCH_DB` still names the database (the cache stays in
the folder). The CLI prints where the store came from, so a run never lands somewhere unexpected.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.db.health import DATABASE_FILE
from workbench.db.urls import mask_url
from workbench.errors import StoreError

if TYPE_CHECKING:
    from workbench.db.store import Store

FROM_OPTION = "from --store"
FROM_HOME = "from WORKBENCH_HOME"
FOUND_ABOVE_RECIPE = "found above the recipe"
FOUND_ABOVE_CWD = "found above the current folder"
USER_DEFAULT = "user default"
STORE_FOLDER = "store"


@dataclass(frozen=True)
class StoreLocation:
    store_dir: Path  # the folder: workbench.sqlite (unless WORKBENCH_DB) and cache/
    database_url: str  # may hold a password: print `describe()` or `mask_url`, never this
    how: str  # one of the FROM_* / FOUND_* / USER_DEFAULT phrases above
    database_from_env: bool = False  # WORKBENCH_DB named the database

    @property
    def cache_dir(self) -> Path:
        return self.store_dir / "cache"

    def open(self, *, create: bool) -> "Store":
        """The store here: create=True for `run` (made if new), create=False for browsing and maintenance."""
        from workbench.db.store import Store

        return Store(self.database_url, create=create, store_dir=self.store_dir)

    def describe(self) -> str:
        """"store: /path/store (found above the recipe)", plus the database when WORKBENCH_DB names it."""
        line = f"store: {self.store_dir} ({self.how})"
        if self.database_from_env:
            line += f"; database: {mask_url(self.database_url)} (from WORKBENCH_DB)"
        return line


def locate_store(
    option: Path | str | None = None,
    *,
    recipe: Path | str | None = None,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
) -> StoreLocation:
    """Where the store is, and how that was decided.

    `option` is the --store value; `recipe` the recipe file of `workbench run` (the search starts in
    its folder), else the search starts in `cwd` (default: the current folder). Nothing is created.
    """
    env = os.environ if env is None else env
    if option is not None:
        store_dir, how = Path(option).expanduser(), FROM_OPTION
    elif env.get("WORKBENCH_HOME"):
        store_dir, how = Path(env["WORKBENCH_HOME"]).expanduser(), FROM_HOME
    else:
        start = Path(recipe).resolve().parent if recipe is not None else Path(cwd or os.getcwd()).resolve()
        found = find_store_above(start)
        if found is not None:
            store_dir, how = found, FOUND_ABOVE_RECIPE if recipe is not None else FOUND_ABOVE_CWD
        else:
            store_dir, how = user_default_store(env), USER_DEFAULT
    if store_dir.exists() and not store_dir.is_dir():
        raise StoreError(f"the store {store_dir} ({how}) is a file, not a folder")
    store_dir = store_dir.absolute()
    url = env.get("WORKBENCH_DB")
    return StoreLocation(
        store_dir=store_dir,
        database_url=url or f"sqlite:///{store_dir / DATABASE_FILE}",
        how=how,
        database_from_env=bool(url),
    )


def find_store_above(start: Path) -> Path | None:
    """The nearest `store/` folder holding a store, in `start` or a folder above it."""
    for folder in (start, *start.parents):
        candidate = folder / STORE_FOLDER
        if (candidate / DATABASE_FILE).is_file() or (candidate / "cache").is_dir():
            return candidate
    return None


def user_default_store(env: Mapping[str, str] | None = None) -> Path:
    """The per-user store: platformdirs' data directory (XDG_DATA_HOME or ~/.local/share on Linux)."""
    env = os.environ if env is None else env
    try:
        import platformdirs
    except ImportError:  # a minimal install: follow the XDG convention by hand
        base = Path(env.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
        return base / "workbench"
    if env is not os.environ and env.get("XDG_DATA_HOME"):  # platformdirs reads os.environ only
        return Path(env["XDG_DATA_HOME"]) / "workbench"
    return platformdirs.user_data_path("workbench", appauthor=False)
