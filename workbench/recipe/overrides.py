"""`--set path.to.field=value` overrides, applied to the plain recipe before validation.

A mistake in an override is blamed on the override (`--set TEXT: ...`), never on a line of the
recipe file, which may be perfectly valid.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable

from workbench.errors import RecipeError
from workbench.recipe.yaml_source import INT64_MAX, FieldPath, read_yaml_value

# (document, path) -> the declared type of the field there, or None when unknown.
AnnotationOf = Callable[[dict[str, Any], FieldPath], Any]
# (document, path) -> why an override may not write there and a hint (e.g. "no step 'uppos'"), or None.
ProblemOf = Callable[[dict[str, Any], FieldPath], tuple[str, str | None] | None]


def override_error(text: str, message: str, hint: str | None = None) -> RecipeError:
    """`--set steps.x.lr=2: message`: the override as the user typed it says which one is wrong."""
    return RecipeError(message, file="--set", field=text.strip() or "''", hint=hint)


def parse_override(text: str) -> tuple[FieldPath, Any]:
    """'steps.train.lr=1e-4' -> (('steps', 'train', 'lr'), 0.0001). Values are read as YAML.

    The value is read by the recipe's own YAML reader (same limits, YAML 1.2 numbers); text that is
    not YAML (`--set description=a: b: c`) stays text. The loader then fits the value to the
    field's type (`fit_override`): a string field keeps the override's text, so
    `model.revision=12e34` stays '12e34' rather than becoming a float.
    """
    if "=" not in text:
        raise override_error(text, "expected PATH=VALUE")
    dotted, raw_value = text.split("=", 1)
    parts = dotted.strip().split(".")
    if not dotted.strip() or any(not part for part in parts):
        raise override_error(text, f"'{dotted}' is not a dotted field path")
    path = tuple(int(part) if re.fullmatch(r"[0-9]+", part) else part for part in parts)
    return path, _read_value(raw_value)


def _read_value(raw_value: str) -> Any:
    try:
        value, _ = read_yaml_value(raw_value, "--set")
    except RecipeError:  # not YAML, or YAML the recipe reader refuses: the text as typed
        return raw_value
    return value


def fit_override(text: str, value: Any, annotation: Any) -> Any:
    """The reading of an override's text that the field's type accepts: YAML's, the raw text, a number.

    A string field wants the text as written (`12345` and `12e34` are YAML numbers), a number field
    the number, and an integer field takes `1e1` as 10. The type is checked strictly, as the schema
    checks it. Unknown fields (builder options) keep YAML's reading.
    """
    if annotation is None:
        return value
    from pydantic import ConfigDict, TypeAdapter, ValidationError

    raw = text.split("=", 1)[1].strip() if "=" in text else text
    adapter = TypeAdapter(annotation, config=ConfigDict(strict=True))
    for candidate in [value, raw, *_numbers(raw)]:
        try:
            adapter.validate_python(candidate)
        except ValidationError:
            continue
        return candidate
    return value  # validation reports the problem in the usual words


def _numbers(raw: str) -> list[float | int]:
    """`raw` as a float, and as an int when it is a whole number that fits 64 bits."""
    try:
        number = float(raw)
    except ValueError:
        return []
    whole = math.isfinite(number) and number.is_integer() and abs(number) <= INT64_MAX
    return [number, int(number)] if whole else [number]


def apply_overrides(
    document: Any, overrides: list[str], annotation_of: AnnotationOf | None = None, problem_of: ProblemOf | None = None
) -> tuple[Any, set[FieldPath]]:
    """Set each override in the plain document (creating mappings as needed); returns the set paths.

    `problem_of(document, path)` says why a path may not be written (a section or id the recipe does
    not have) before anything is created there; `annotation_of(document, path)` gives the type of the
    field at a path (None if unknown), so that each value is read as that type (`fit_override`).
    """
    touched: set[FieldPath] = set()
    for text in overrides:
        path, value = parse_override(text)
        problem = problem_of(document, path) if problem_of is not None else None
        if problem:
            raise override_error(text, *problem)
        if annotation_of is not None:
            value = fit_override(text, value, annotation_of(document, path))
        _set(document, path, value, text)
        touched.add(path)
    return document, touched


def _set(document: Any, path: FieldPath, value: Any, text: str) -> None:
    target = document
    for depth, part in enumerate(path[:-1]):
        target = _child(target, part, path[: depth + 1], text)
    last = path[-1]
    if isinstance(target, dict):
        target[last] = value
    elif isinstance(target, list):
        _check_index(target, last, path, text)
        target[last] = value  # type: ignore[index]
    else:
        raise override_error(text, f"'{_dotted(path[:-1])}' is not a mapping")


def _child(target: Any, part: str | int, path: FieldPath, text: str) -> Any:
    """The mapping or list at `path` under `target`, creating a missing mapping."""
    if isinstance(target, dict):
        child = target.setdefault(part, {})
    elif isinstance(target, list):
        _check_index(target, part, path, text)
        child = target[part]  # type: ignore[index]
    else:
        raise override_error(text, f"'{_dotted(path[:-1])}' is not a mapping")
    if not isinstance(child, (dict, list)):
        raise override_error(text, f"'{_dotted(path)}' is not a mapping")
    return child


def _check_index(items: list[Any], part: str | int, path: FieldPath, text: str) -> None:
    if not isinstance(part, int):
        raise override_error(text, f"'{_dotted(path[:-1])}' is a list: give an item number, not '{part}'")
    if part >= len(items):
        message = f"'{_dotted(path[:-1])}' has {len(items)} items (numbered from 0); {part} is past the end"
        raise override_error(text, message)


def _dotted(path: FieldPath) -> str:
    return ".".join(str(part) for part in path)
