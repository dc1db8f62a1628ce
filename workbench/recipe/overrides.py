"""`--set path.to.field=value` overrides, applied to the plain recipe before validation."""

from __future__ import annotations

from typing import Any

import yaml

from workbench.errors import RecipeError
from workbench.recipe.yaml_source import FieldPath


def parse_override(text: str) -> tuple[FieldPath, Any]:
    """'steps.train.lr=1e-4' -> (('steps', 'train', 'lr'), 0.0001). Values are read as YAML."""
    if "=" not in text:
        raise RecipeError(f"expected PATH=VALUE, got '{text}'", file="--set")
    dotted, raw_value = text.split("=", 1)
    parts = [part for part in dotted.strip().split(".")]
    if not dotted.strip() or any(not part for part in parts):
        raise RecipeError(f"'{dotted}' is not a dotted field path", file="--set")
    try:
        value = yaml.safe_load(raw_value) if raw_value.strip() else None
    except yaml.YAMLError:
        value = raw_value
    # YAML reads "1e-4" as a string (YAML 1.1 wants a dot); users mean a number.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in ".eE") else value
        except ValueError:
            pass
    path = tuple(int(part) if part.isdigit() else part for part in parts)
    return path, value


def apply_overrides(document: Any, overrides: list[str]) -> tuple[Any, set[FieldPath]]:
    """Set each override in the plain document (creating mappings as needed); returns the set paths."""
    touched: set[FieldPath] = set()
    for text in overrides:
        path, value = parse_override(text)
        target = document
        for depth, part in enumerate(path[:-1]):
            if isinstance(target, dict):
                target = target.setdefault(part, {})
            elif isinstance(target, list) and isinstance(part, int) and part < len(target):
                target = target[part]
            else:
                where = ".".join(str(p) for p in path[: depth + 1])
                raise RecipeError(f"cannot set '{text}': '{where}' is not a mapping", file="--set")
        last = path[-1]
        if isinstance(target, dict):
            target[last] = value
        elif isinstance(target, list) and isinstance(last, int) and last < len(target):
            target[last] = value
        else:
            raise RecipeError(f"cannot set '{text}': the parent is not a mapping", file="--set")
        touched.add(path)
    return document, touched
