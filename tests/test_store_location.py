"""Which store a command uses (workbench.store_location): --store, WORKBENCH_HOME, the nearest store/
above the recipe or the current folder, else the per-user default; and what the CLI prints about it."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.db.store import Store
from workbench.errors import StoreError
from workbench.store_location import (
    FOUND_ABOVE_CWD,
    FOUND_ABOVE_RECIPE,
    FROM_HOME,
    FROM_OPTION,
    USER_DEFAULT,
    locate_store,
)


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """project/store holds a store; project/recipes/deep/r.yaml is a recipe; the user data dir is private."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    root = tmp_path / "project"
    Store.open(root / "store").close()
    recipe = root / "recipes" / "deep" / "r.yaml"
    recipe.parent.mkdir(parents=True)
    recipe.write_text("version: 1\n")
    return root


def test_a_store_above_the_recipe_is_found(project, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # the current folder plays no part for `run`
    found = locate_store(recipe=project / "recipes" / "deep" / "r.yaml")
    assert found.store_dir == project / "store" and found.how == FOUND_ABOVE_RECIPE
    assert found.database_url == f"sqlite:///{project / 'store' / 'workbench.sqlite'}"
    assert found.describe() == f"store: {project / 'store'} (found above the recipe)"


def test_browsing_finds_the_store_above_the_current_folder(project, monkeypatch):
    monkeypatch.chdir(project / "recipes" / "deep")
    found = locate_store()
    assert found.store_dir == project / "store" and found.how == FOUND_ABOVE_CWD


def test_a_store_folder_with_only_a_readme_is_not_a_store(project, tmp_path):
    inner = project / "recipes" / "store"
    inner.mkdir()
    (inner / "README.md").write_text("results go here")
    assert locate_store(recipe=project / "recipes" / "deep" / "r.yaml").store_dir == project / "store"
    (inner / "cache").mkdir()  # a cache makes it one, even before its first database write
    assert locate_store(recipe=project / "recipes" / "deep" / "r.yaml").store_dir == inner


def test_the_option_wins_then_workbench_home(project, monkeypatch, tmp_path):
    recipe = project / "recipes" / "deep" / "r.yaml"
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    assert locate_store(recipe=recipe).how == FROM_HOME
    assert locate_store(recipe=recipe).store_dir == tmp_path / "home"
    chosen = locate_store(tmp_path / "chosen", recipe=recipe)
    assert chosen.store_dir == tmp_path / "chosen" and chosen.how == FROM_OPTION
    assert chosen.describe() == f"store: {tmp_path / 'chosen'} (from --store)"


def test_the_user_default_when_nothing_is_found(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    found = locate_store()
    assert found.store_dir == tmp_path / "xdg" / "workbench" and found.how == USER_DEFAULT
    assert not found.store_dir.exists()  # locating creates nothing
    with pytest.raises(StoreError, match="no store at .*; run a recipe first or pass --store"):
        found.open(create=False)
    assert not found.store_dir.exists()
    found.open(create=True).close()
    assert (found.store_dir / "workbench.sqlite").is_file()
    assert locate_store().how == USER_DEFAULT  # and is used again


def test_workbench_db_is_named_with_its_password_masked(project, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DB", "postgresql://team:s3cret@db.lab:5432/results")
    found = locate_store(recipe=project / "recipes" / "deep" / "r.yaml")
    assert found.database_url == "postgresql://team:s3cret@db.lab:5432/results" and found.database_from_env
    described = found.describe()
    assert "s3cret" not in described
    assert described.endswith("database: postgresql://team:***@db.lab:5432/results (from WORKBENCH_DB)")


def test_a_store_option_naming_a_file_is_an_error(tmp_path):
    (tmp_path / "oops").write_text("")
    with pytest.raises(StoreError, match="is a file, not a folder"):
        locate_store(tmp_path / "oops")


def test_a_relative_option_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert locate_store("somewhere").store_dir == tmp_path / "somewhere"
