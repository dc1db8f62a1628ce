"""Reference tables of the recipe format and every step kind, generated from the pydantic models.

`python -m workbench.docs` prints the Markdown that README.md's reference section holds; a test
checks the README still lists every field, so the documentation cannot drift from the code.
README.md's model table is generated the same way from workbench/models/families_matrix.py, the
data tests/test_family_matrix.py checks (`python -m workbench.docs --write README.md` writes both).
"""

from __future__ import annotations

import sys
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from workbench.models.families_matrix import model_table_markdown
from workbench.recipe.schema import DatasetSpec, ModelSpec, Recipe
from workbench.steps.registry import STEP_TYPES
from workbench.steps.base import PresetParams

COMMON_STEP_FIELDS = {"kind", "description"}


def field_rows(model: type[BaseModel], skip: set[str] = frozenset()) -> list[tuple[str, str, str, str]]:
    """(name, type, default, description) for each field of a model; a preset's other default is noted."""
    rows = []
    paper = getattr(model, "PRESETS", {}).get("paper", {})
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        default = "required" if field.is_required() else _default(field)
        if name in paper and paper[name] != _value(field):
            default += f" (paper: `{paper[name]}`)"
        rows.append((name, _type_name(field.annotation), default, field.description or ""))
    return rows


def preset_markdown() -> str:
    """Per analysis: where `preset: workbench` (the default) differs from `preset: paper`, and why."""
    parts = [
        "### Presets: `workbench` and `paper`\n\n"
        "Every analysis step takes `preset: workbench | paper` (default `workbench`). `paper` gives the options the "
        "papers' own code uses (../shared/REFERENCE.md); options set in the recipe win over either preset. The "
        "resolved options, not the preset's name, enter the cache key."
    ]
    for kind, step in STEP_TYPES.items():
        params = step.Params
        if not issubclass(params, PresetParams):
            continue
        paper = params.PRESETS.get("paper", {})
        rows = [(name, value) for name, value in paper.items() if value != params.preset_default("workbench", name)]
        if not rows:
            parts.append(f"**`{kind}`**: both presets are the same; the workbench already follows the paper here.")
            continue
        lines = ["| option | workbench | paper | why the workbench differs |", "|---|---|---|---|"]
        for name, value in rows:
            why = params.PRESET_NOTES.get(name, "")
            lines.append(f"| `{name}` | `{params.preset_default('workbench', name)}` | `{value}` | {_cell(why)} |")
        parts.append(f"**`{kind}`**\n\n" + "\n".join(lines))
    return "\n\n".join(parts)


def markdown_table(rows: list[tuple[str, str, str, str]]) -> str:
    lines = ["| field | type | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{name}` | {_cell(kind)} | {_cell(default)} | {_cell(meaning)} |" for name, kind, default, meaning in rows]
    return "\n".join(lines)


def reference_markdown() -> str:
    parts = ["### Recipe", markdown_table(field_rows(Recipe, {"model", "datasets", "steps"}))]
    parts += ["### `model:`", markdown_table(field_rows(ModelSpec))]
    parts += ["### `datasets:` (each entry)", markdown_table(field_rows(DatasetSpec))]
    parts.append(preset_markdown())
    parts.append("### Step kinds\n\nEvery step also takes `kind` and `description` (free text, not part of the cache key).")
    for kind, step in STEP_TYPES.items():
        produces = f" Produces: {', '.join(sorted(step.produces))}." if step.produces else ""
        parts.append(f"#### `{kind}`\n\n{step.summary}{produces}\n\n" + markdown_table(field_rows(step.Params, COMMON_STEP_FIELDS)))
    return "\n\n".join(parts) + "\n"


def _cell(text: str) -> str:
    """Table cell text: a bare | would end the cell (GitHub Markdown reads an escaped one as text)."""
    return text.replace("|", "\\|")


def _value(field: typing.Any) -> typing.Any:
    return field.default_factory() if field.default_factory is not None else field.default


def _default(field: typing.Any) -> str:
    if field.default_factory is not None:
        return f"`{field.default_factory()}`"
    if field.default is PydanticUndefined:
        return "required"
    return f"`{field.default}`" if field.default is not None else "none"


def _type_name(annotation: typing.Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(f"`{value}`" for value in typing.get_args(annotation))
    text = str(annotation).replace("typing.", "").replace("NoneType", "None")
    if isinstance(annotation, type):
        text = annotation.__name__
    return text.replace("|", "or")


START, END = "<!-- reference:start -->", "<!-- reference:end -->"
MODELS_START, MODELS_END = "<!-- models:start -->", "<!-- models:end -->"


def write_into(readme: Path) -> None:
    """Replace the text between the reference markers and between the model-table markers of a README."""
    text = readme.read_text()
    for start, end, generated in ((START, END, reference_markdown()), (MODELS_START, MODELS_END, model_table_markdown())):
        if start not in text or end not in text:
            raise SystemExit(f"{readme} has no {start} ... {end} markers")
        head, _, rest = text.partition(start)
        _, _, tail = rest.partition(end)
        text = f"{head}{start}\n{generated}{end}{tail}"
    readme.write_text(text)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--write":
        write_into(Path(sys.argv[2]))
    else:
        print(reference_markdown())
