"""Recipe file -> LoadedRecipe, with every problem reported as file:line field: message.

Two passes of pydantic: the recipe's own shape, then each step's parameters against the model of
its kind. All problems of a pass are collected so the author can fix them in one go.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from workbench.errors import RecipeError, RecipeErrors, did_you_mean
from workbench.recipe.overrides import apply_overrides
from workbench.recipe.schema import LoadedRecipe, Recipe
from workbench.recipe.yaml_source import FieldPath, SourceMap, load_yaml_file, reads_as_number


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> LoadedRecipe:
    """Read, override and validate a recipe (schema, step parameters, references, files)."""
    from workbench.recipe.checks import check_semantics

    path = Path(path)
    overrides = list(overrides or [])
    text, document, source = load_yaml_file(path)
    if not isinstance(document, dict):
        raise RecipeError(
            "a recipe must be a mapping (version:, name:, model:, steps:, ...)", file=str(path), line=source.line_of(()) or 1
        )
    document, overridden = apply_overrides(document, overrides, field_annotation, override_problem)
    locate = _Locator(source, overridden)

    _check_ids(document, locate)
    recipe = _validate(Recipe, document, (), locate)
    _check_generated_sizes(recipe, locate)
    steps = _validate_steps(recipe.steps, locate)
    steps = {step_id: params.with_defaults_from(steps) for step_id, params in steps.items()}
    loaded = LoadedRecipe(recipe, steps, path=path, text=text, source=source, overrides=overrides)
    check_semantics(loaded, locate)
    return loaded


def field_annotation(document: dict[str, Any], path: FieldPath) -> Any:
    """The declared type of the recipe field at `path` (None for unknown or pass-through fields)."""
    from workbench.recipe.schema import DatasetSpec, ModelSpec
    from workbench.steps.registry import STEP_TYPES

    model: type[BaseModel] | None
    if len(path) == 1:
        model, name = Recipe, path[0]
    elif len(path) == 2 and path[0] == "model":
        model, name = ModelSpec, path[1]
    elif len(path) == 3 and path[0] == "datasets":
        model, name = DatasetSpec, path[2]
    elif len(path) == 3 and path[0] == "steps":
        step = (document.get("steps") or {}).get(path[1]) if isinstance(document.get("steps"), dict) else None
        kind = step.get("kind") if isinstance(step, dict) else None
        model, name = (STEP_TYPES[kind].Params if kind in STEP_TYPES else None), path[2]
    else:
        return None
    field = model.model_fields.get(str(name)) if model is not None else None
    return field.annotation if field is not None else None


def override_problem(document: dict[str, Any], path: FieldPath) -> tuple[str, str | None] | None:
    """Why `--set` may not write at `path` (and a hint): a top-level section, dataset or step the
    recipe does not have.

    Writing there would silently create it (`steps.uppos.probe=mlp` would add a step 'uppos' and then
    complain that it has no kind); naming the typo is what helps. A whole new dataset or step
    (`steps.extra={kind: ...}`) may still be added.
    """
    section = path[0]
    if section not in Recipe.model_fields:
        return _no_such("section" if len(path) > 1 else "field", section, Recipe.model_fields), None
    if section in _ID_SECTIONS and len(path) > 2:
        present = document.get(section)
        ids = present if isinstance(present, dict) else {}
        if path[1] not in ids:
            noun = _ID_SECTIONS[section]
            return _no_such(noun, path[1], ids), f"to add a {noun}, set it whole: --set '{section}.{path[1]}={{...}}'"
    return None


_ID_SECTIONS = {"datasets": "dataset", "steps": "step"}


def _no_such(noun: str, name: Any, known: Any) -> str:
    suggestion = did_you_mean(str(name), known)
    return f"no {noun} '{name}'" + (f" ({suggestion})" if suggestion else "")


class _Locator:
    """Turns a field path into a RecipeError at the right file and line."""

    def __init__(self, source: SourceMap, overridden: set[FieldPath]):
        self.source = source
        self.overridden = overridden

    def error(self, path: FieldPath, message: str, *, hint: str | None = None, key: bool = False) -> RecipeError:
        field = ".".join(str(part) for part in path) or None
        if self._from_override(path):
            return RecipeError(message, file="--set", field=field, hint=hint)
        line = self.source.key_line_of(path) if key else self.source.line_of(path)
        return RecipeError(message, file=self.source.file, line=line, field=field, hint=hint)

    def _from_override(self, path: FieldPath) -> bool:
        """The field was set by an override, or exists only because an override created it."""
        written = any(path[: len(touched)] == touched for touched in self.overridden)
        created = path not in self.source.lines and any(touched[: len(path)] == path for touched in self.overridden)
        return written or created


def _validate(model: type[BaseModel], value: Any, prefix: FieldPath, locate: _Locator) -> Any:
    try:
        return model.model_validate(value)
    except ValidationError as error:
        problems = _merge_alternatives([_explain(item, model, value, prefix, locate) for item in error.errors()])
        raise RecipeErrors(problems) if len(problems) > 1 else problems[0] from None


def _merge_alternatives(problems: list[RecipeError]) -> list[RecipeError]:
    """A value that fits no member of a union yields one error per member: say it once, with 'or'."""
    merged: dict[tuple[Any, ...], RecipeError] = {}
    for problem in problems:
        where = (problem.file, problem.line, problem.field)
        if where in merged and problem.detail != merged[where].detail:
            first = merged[where]
            got = first.detail.rsplit(", got ", 1)
            alternative = problem.detail.rsplit(", got ", 1)[0]
            detail = f"{got[0]} or {alternative}" + (f", got {got[1]}" if len(got) == 2 else "")
            merged[where] = RecipeError(detail, file=first.file, line=first.line, field=first.field, hint=first.hint)
        else:
            merged.setdefault(where, problem)
    return list(merged.values())


def _validate_steps(steps: dict[str, Any], locate: _Locator) -> dict[str, Any]:
    from workbench.steps.registry import STEP_TYPES

    validated: dict[str, Any] = {}
    problems: list[RecipeError] = []
    for step_id, spec in steps.items():
        path: FieldPath = ("steps", step_id)
        if not isinstance(spec, dict):
            problems.append(locate.error(path, "a step must be a mapping with a 'kind'", key=True))
            continue
        kind = spec.get("kind")
        if kind is None:
            problems.append(
                locate.error(path, "missing 'kind'", hint=f"known kinds: {', '.join(sorted(STEP_TYPES))}", key=True)
            )
            continue
        if kind not in STEP_TYPES:
            problems.append(
                locate.error(path + ("kind",), f"unknown step kind '{kind}'", hint=did_you_mean(str(kind), STEP_TYPES))
            )
            continue
        try:
            validated[step_id] = _validate(STEP_TYPES[kind].Params, spec, path, locate)
        except RecipeErrors as many:
            problems.extend(many.errors)
        except RecipeError as one:
            problems.append(one)
    if problems:
        raise RecipeErrors(problems) if len(problems) > 1 else problems[0]
    return validated


def _check_ids(document: dict[str, Any], locate: _Locator) -> None:
    """Dataset and step ids must be identifiers, and no step may share a dataset's id; reported at the
    line of the offending key."""
    import re

    from workbench.recipe.schema import IDENTIFIER

    problems = [
        locate.error(
            (section, key), f"'{key}' is not a valid id (letters, digits, _ and -, not starting with a digit)", key=True
        )
        for section in _ID_SECTIONS
        for key in _ids(document, section)
        if not isinstance(key, str) or not re.fullmatch(IDENTIFIER, key)
    ]
    problems += [
        locate.error(
            ("steps", key),
            f"step '{key}' has the id of a dataset",
            hint=f"rename the step: `dataset: {key}` and `model: {key}` would read alike but mean different things",
            key=True,
        )
        for key in _ids(document, "steps")
        if key in _ids(document, "datasets")
    ]
    if problems:
        raise RecipeErrors(problems) if len(problems) > 1 else problems[0]


def _ids(document: dict[str, Any], section: str) -> list[Any]:
    return list(document[section]) if isinstance(document.get(section), dict) else []


def _check_generated_sizes(recipe: Recipe, locate: _Locator) -> None:
    """The `size` of a generated dataset (agreement) within its kind's `size_bounds` (workbench/data/kinds/).

    The schema passes builder options through unchecked and the kind's check refuses only the lower
    bound; a million sentences take seconds to generate, more is a typo that would hang the run.
    """
    from workbench.data.kinds import kind_for

    problems = []
    for name, spec in recipe.datasets.items():
        bounds = kind_for(spec.path).size_bounds
        if bounds is None:
            continue
        low, high = bounds
        size = spec.builder_options.get("size")
        if isinstance(size, bool) or (isinstance(size, int) and not low <= size <= high):
            message = f"expected an integer of at least {low} and at most {high:,}, got {size!r}"
            problems.append(locate.error(("datasets", name, "size"), message))
    if problems:
        raise RecipeErrors(problems) if len(problems) > 1 else problems[0]


def _explain(item: dict[str, Any], model: type[BaseModel], value: Any, prefix: FieldPath, locate: _Locator) -> RecipeError:
    """One pydantic error -> one RecipeError in the recipe author's words."""
    location = tuple(part for part in item["loc"] if not _is_union_tag(part))
    path = prefix + location
    kind = item["type"]
    if kind == "extra_forbidden":
        name = str(location[-1])
        known = _known_fields(model, location[:-1])
        return locate.error(path, f"unknown field '{name}'", hint=did_you_mean(name, known), key=True)
    if kind == "missing":
        return locate.error(path, "missing required field", key=True)  # the line of the enclosing key
    given = item.get("input")
    message = item["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    shown = repr(given)
    if len(shown) > 60:  # a whole mapping or list says little; the line points at it anyway
        shown = shown[:57] + "..."
    return locate.error(path, f"{message[0].lower()}{message[1:]}, got {shown}", hint=_strict_type_hint(kind, given))


YAML11_BOOLEANS = {"yes", "no", "on", "off", "y", "n"}


def _strict_type_hint(kind: str, given: Any) -> str | None:
    """Why a value that looks right is refused: types are strict, nothing is converted."""
    if kind in ("int_type", "float_type") and isinstance(given, str) and reads_as_number(given):
        return "the quotes make it text: write the number without them"
    if kind == "int_type" and isinstance(given, float) and given.is_integer() and abs(given) < 2**63:
        return f"an integer field takes no decimal point: write {int(given)}"
    if kind == "string_type" and isinstance(given, (bool, int, float)):
        return "quote it to make it text"
    if kind == "bool_type" and isinstance(given, str) and given.lower() in YAML11_BOOLEANS:
        return "write true or false (recipes read YAML 1.2, where yes, no, on and off are text)"
    return None


def _is_union_tag(part: Any) -> bool:
    # pydantic adds the tried member type to the location of union errors ("str", "list[str]", ...)
    return isinstance(part, str) and ("[" in part or part in {"str", "int", "float", "bool", "none", "dict"})


def _known_fields(model: type[BaseModel], location: tuple[Any, ...]) -> list[str]:
    """Field names of the (nested) model at `location`, for suggestions."""
    current: Any = model
    for part in location:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            continue
        field = current.model_fields.get(part)
        if field is None:
            return []
        annotation = field.annotation
        current = annotation if isinstance(annotation, type) else getattr(annotation, "__args__", [None])[-1]
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []

