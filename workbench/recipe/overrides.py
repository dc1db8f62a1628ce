"""`--set path.to.field=value` overrides, applied to the plain recipe before validation."""

from __future__ import annotations

from typing import Any

import yaml

from workbench.errors import RecipeError
from workbench.recipe.yaml_source import FieldPath


def parse_override(text: str) -> tuple[FieldPath, Any]:
    """'steps.train.lr=1e-4' -> (('steps', 'train', 'lr'), '1e-4'). Values are read as YAML.

    The loader then fits the value to the field's type (`fit_override`): a string field keeps the
    override's text, so `model.revision=12e34` stays '12e34' rather than becoming a float.
    """
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
    path = tuple(int(part) if part.isdigit() else part for part in parts)
    return path, value


def fit_override(text: str, value: Any, annotation: Any) -> Any:
    """The reading of an override's text that the field's type accepts: YAML's, the raw text, a number.

    YAML reads `12345` as an int and `1e-4` as a string (YAML 1.1 wants a dot); a string field wants
    the text as written, a number field the number. Unknown fields (builder options) keep YAML's reading.
    """
    if annotation is None:
        return value
    from pydantic import TypeAdapter, ValidationError

    raw = text.split("=", 1)[1].strip() if "=" in text else text
    candidates = [value, raw]
    try:
        candidates.append(float(raw))
    except ValueError:
        pass
    adapter = TypeAdapter(annotation)
    for candidate in candidates:
        try:
            adapter.validate_python(candidate)
        except ValidationError:
            continue
        return candidate
    return value  # validation reports the problem in the usual words


def apply_overrides(
    document: Any, overrides: list[str], annotation_of: Any = None
) -> tuple[Any, set[FieldPath]]:
    """Set each override in the plain document (creating mappings as needed); returns the set paths.

    `annotation_of(document, path)` gives the type of the field at a path (None if unknown), so
    that each value is read as that type (`fit_override`).
    """
    touched: set[FieldPath] = set()
    for text in overrides:
        path, value = parse_override(text)
        if annotation_of is not None:
            value = fit_override(text, value, annotation_of(document, path))
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
