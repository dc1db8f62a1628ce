"""YAML -> (plain value, source positions).

PyYAML's composer gives us nodes with line numbers; we walk them ourselves so that every field
of the recipe keeps the line it came from, and so that duplicate keys (which PyYAML silently
collapses) are reported instead of being lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from workbench.errors import RecipeError

FieldPath = tuple[str | int, ...]

# Turns scalar nodes into Python values with YAML 1.1 safe rules (ints, floats, bools, nulls).
_SCALARS = yaml.constructor.SafeConstructor()


@dataclass
class SourceMap:
    """Line numbers (1-based) of every field and list item of one YAML document."""

    file: str
    lines: dict[FieldPath, int] = field(default_factory=dict)
    key_lines: dict[FieldPath, int] = field(default_factory=dict)

    def line_of(self, path: FieldPath) -> int | None:
        """The line of `path`, or of its closest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)

    def key_line_of(self, path: FieldPath) -> int | None:
        """The line where the key of `path` (or of its closest written ancestor) is: for errors about a
        key or a whole mapping, better than the value's line (which is the line of its first child)."""
        probe = tuple(path)
        while probe:
            if probe in self.key_lines:
                return self.key_lines[probe]
            probe = probe[:-1]
        return self.line_of(path)


def load_yaml_with_positions(text: str, file: str) -> tuple[Any, SourceMap]:
    """Parse one YAML document; raise RecipeError with file:line on syntax errors or duplicate keys."""
    source = SourceMap(file=file)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = error.problem or str(error)
        if error.context and error.context_mark is not None and error.context_mark.line + 1 != line:
            problem += f" ({error.context} started on line {error.context_mark.line + 1})"
        raise RecipeError(f"YAML syntax error: {problem}", file=file, line=line) from None
    if node is None:
        raise RecipeError("the recipe is empty", file=file, line=1)
    return _to_plain(node, (), source), source


def load_yaml_file(path: Path) -> tuple[str, Any, SourceMap]:
    """Read a recipe file; returns (text, plain value, positions)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError("recipe file not found", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as error:
        raise RecipeError(f"cannot read the recipe: {error}", file=str(path)) from None
    value, source = load_yaml_with_positions(text, str(path))
    return text, value, source


def _to_plain(node: yaml.Node, path: FieldPath, source: SourceMap) -> Any:
    source.lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node, source.file)
            if key == "<<":
                raise RecipeError(
                    "YAML merge keys (<<) are not supported in recipes",
                    file=source.file,
                    line=key_node.start_mark.line + 1,
                )
            if key in result:
                raise RecipeError(
                    f"duplicate key '{key}' (first defined on line {source.key_lines[path + (key,)]})",
                    file=source.file,
                    line=key_node.start_mark.line + 1,
                    field=".".join(str(part) for part in path + (key,)),
                )
            source.key_lines[path + (key,)] = key_node.start_mark.line + 1
            result[key] = _to_plain(value_node, path + (key,), source)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_to_plain(item, path + (index,), source) for index, item in enumerate(node.value)]
    return _scalar(node, source.file)


def _scalar(node: yaml.Node, file: str) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        raise RecipeError("mapping keys must be plain scalars", file=file, line=node.start_mark.line + 1)
    try:
        return _SCALARS.construct_object(node, deep=True)
    except yaml.constructor.ConstructorError as error:
        raise RecipeError(f"cannot read value: {error.problem}", file=file, line=node.start_mark.line + 1) from None
