"""A recipe document as YAML text that the recipe reader reads back to the same document.

Used for the recipe "as run" (the file with its `--set` overrides applied) and for the recipe
`reproduce` writes with the data paths it found. PyYAML writes YAML 1.1, the recipe reader reads
YAML 1.2 (workbench/recipe/yaml_source.py): a string such as `1e-4` or `12e34` is plain text to
the writer and a number to the reader, so every string the reader would take for anything but
text is written in double quotes, and the result is read back and compared before it is trusted.
"""

from __future__ import annotations

from typing import Any

import yaml

from workbench.recipe.yaml_source import read_yaml_value, reads_as_number

# Plain scalars the 1.2 reader (or a human) would not read as text.
_NOT_TEXT = {"", "~", "null", "true", "false", "yes", "no", "on", "off", "y", "n"}


class _RecipeDumper(yaml.SafeDumper):
    pass


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    risky = value.strip().lower() in _NOT_TEXT or reads_as_number(value) or value != value.strip()
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"' if risky else None)


_RecipeDumper.add_representer(str, _represent_str)


def dump_recipe(document: dict[str, Any]) -> str:
    """YAML text of a plain recipe document; ValueError if the reader would not read it back the same."""
    text = yaml.dump(document, Dumper=_RecipeDumper, sort_keys=False, allow_unicode=True, width=120)
    again, _ = read_yaml_value(text, "<recipe as run>")
    if again != document:
        raise ValueError("the recipe does not read back as written")
    return text


def recipe_as_run(text: str, overrides: list[str]) -> str | None:
    """The recipe text with the overrides applied: the text itself without overrides; None if it
    cannot be written faithfully (the original text and the overrides are kept either way)."""
    if not overrides:
        return text
    from workbench.errors import WorkbenchError
    from workbench.recipe.loader import field_annotation, override_problem
    from workbench.recipe.overrides import apply_overrides

    try:
        document, _ = read_yaml_value(text, "<recipe>")
        document, _ = apply_overrides(document, list(overrides), field_annotation, override_problem)
        return dump_recipe(document)
    except (WorkbenchError, ValueError, yaml.YAMLError):
        return None


def recipe_document(text: str, overrides: list[str], file: str = "recipe.yaml") -> dict[str, Any]:
    """The plain document of a recipe text with overrides applied (errors as RecipeError)."""
    from workbench.errors import RecipeError
    from workbench.recipe.loader import field_annotation, override_problem
    from workbench.recipe.overrides import apply_overrides

    document, _ = read_yaml_value(text, file)
    if not isinstance(document, dict):
        raise RecipeError("a recipe must be a mapping", file=file)
    document, _ = apply_overrides(document, list(overrides), field_annotation, override_problem)
    return document
