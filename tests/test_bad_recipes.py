"""Broken recipes: every mistake is reported as file:line, field and a hint, exit 2, no traceback, no store.

Each file in tests/data/bad_recipes/ holds exactly one mistake and starts with a header

    # expect: line=14 field=steps.prune.batch_size keywords=batch_size,did you mean

(`field` is optional; keywords are comma-separated and must all appear in the message).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import REPO, CliResult, cli, cli_subprocess, plain, subprocess_env

BAD_RECIPES = REPO / "tests" / "data" / "bad_recipes"
GOOD_RECIPES = REPO / "tests" / "data" / "good_recipes"
HEADER = re.compile(r"^# expect: line=(?P<line>\d+)(?: field=(?P<field>\S+))? keywords=(?P<keywords>.+)$")


@dataclass(frozen=True)
class Expectation:
    line: int
    field: str | None
    keywords: tuple[str, ...]


def expectation(path: Path) -> Expectation:
    first = path.read_text().splitlines()[0]
    match = HEADER.match(first)
    assert match, f"{path.name}: the first line must be '# expect: line=N [field=F] keywords=a,b', got {first!r}"
    keywords = tuple(word.strip() for word in match["keywords"].split(",") if word.strip())
    return Expectation(int(match["line"]), match["field"], keywords)


def check_reported(text: str, relative: str, expected: Expectation) -> None:
    """The message names FILE:LINE, the field and every keyword, and is not a traceback."""
    assert "Traceback" not in text, text
    message = plain(text)
    assert f"{relative}:{expected.line}" in message, message
    # The located prefix is 'FILE:LINE' (no field) or 'FILE:LINE FIELD:'.
    assert re.search(rf"{re.escape(relative)}:{expected.line}[ :]", message), message
    if expected.field:
        assert f"{relative}:{expected.line} {expected.field}:" in message, message
    for keyword in expected.keywords:
        assert keyword in message, f"{keyword!r} not in: {message}"


def test_the_folder_covers_enough_mistakes():
    assert len(list(BAD_RECIPES.glob("*.yaml"))) >= 18


@pytest.fixture(scope="module")
def validated_in_child_processes() -> dict[str, CliResult]:
    """`workbench validate FILE` as a real subprocess for every bad recipe, a few at a time."""
    relatives = [str(path.relative_to(REPO)) for path in sorted(BAD_RECIPES.glob("*.yaml"))]
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(relatives, pool.map(lambda relative: cli_subprocess("validate", relative, cwd=REPO), relatives)))


@pytest.mark.parametrize("path", sorted(BAD_RECIPES.glob("*.yaml")), ids=lambda p: p.stem)
def test_bad_recipe_is_reported_and_writes_nothing(path, tmp_path, monkeypatch, validated_in_child_processes):
    expected = expectation(path)
    relative = str(path.relative_to(REPO))

    child = validated_in_child_processes[relative]
    assert child.code == 2, child.out + child.err
    assert "Traceback" not in child.out + child.err
    check_reported(child.err, relative, expected)

    monkeypatch.chdir(REPO)
    in_process = cli("validate", relative)
    assert in_process.code == 2
    check_reported(in_process.err, relative, expected)

    store = tmp_path / "store"
    run = cli("run", relative, "--store", store)
    assert run.code == 2
    check_reported(run.err, relative, expected)
    assert not store.exists(), "a recipe that does not validate must not create a store"


@pytest.mark.parametrize(
    "override, keywords",
    [
        ("steps.evaluate.batch_size=ten", ["steps.evaluate.batch_size", "integer", "ten"]),
        ("steps.evaluate.batch_sise=8", ["steps.evaluate.batch_sise", "did you mean 'batch_size'"]),
        ("datasets.dev.limit=-5", ["datasets.dev.limit", "greater than or equal to 1"]),
        ("steps.evaluate.dataset=deev", ["no dataset named 'deev'", "did you mean 'dev'"]),
        ("steps.evaluate.batch_size", ["expected PATH=VALUE"]),
    ],
)
def test_bad_override_points_at_set(override, keywords, tmp_path, monkeypatch):
    """A --set mistake is blamed on --set, not on a line of the (valid) recipe file."""
    monkeypatch.chdir(REPO)
    good = str((GOOD_RECIPES / "minimal.yaml").relative_to(REPO))
    assert cli("validate", good).code == 0
    result = cli("validate", good, "--set", override)
    assert result.code == 2
    assert "Traceback" not in result.text
    assert "--set" in result.text
    assert f"{good}:" not in result.text
    for keyword in keywords:
        assert keyword in result.text, result.text
    store = tmp_path / "store"
    assert cli("run", good, "--set", override, "--store", store).code == 2
    assert not store.exists()


CHECK_IMPORTS = """
import json, sys
sys.argv = ["workbench", "validate", *sys.argv[1:]]
from workbench.cli import main
try:
    main()
    code = 0
except SystemExit as exit_:
    code = exit_.code
heavy = sorted(name for name in ("torch", "transformers") if name in sys.modules)
print(json.dumps({"code": code, "heavy": heavy}))
"""


@pytest.mark.parametrize("recipe", ["recipes/quickstart.yaml", "tests/data/good_recipes/every_source.yaml"])
def test_valid_recipe_validates_without_torch(recipe):
    """`workbench validate` checks everything (files, builder options, references) without importing torch."""
    done = subprocess.run(
        [sys.executable, "-c", CHECK_IMPORTS, recipe], cwd=REPO, env=subprocess_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"code": 0, "heavy": []}, done.stdout + done.stderr
    assert "ok" in done.stdout


@pytest.mark.parametrize(
    "override, field, expected",
    [
        ("model.revision=12e34", ("model", "revision"), "12e34"),  # YAML would read a float here
        ("model.revision=12345", ("model", "revision"), "12345"),  # and an int here
        ("model.revision=null", ("model", "revision"), None),
        ("steps.evaluate.batch_size=1e1", ("steps", "evaluate", "batch_size"), 10),
        ("description=3.14", ("description",), "3.14"),
    ],
)
def test_an_override_is_read_as_the_type_of_its_field(override, field, expected):
    """Issue 7.7: string fields keep the override's text; number fields get the number."""
    from workbench.recipe.loader import load_recipe

    loaded = load_recipe(GOOD_RECIPES / "minimal.yaml", [override])
    if field[0] == "steps":
        value = getattr(loaded.steps[field[1]], field[2])
    else:
        value = loaded.recipe
        for part in field:
            value = getattr(value, part)
    assert value == expected and type(value) is type(expected)
