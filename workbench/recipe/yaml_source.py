"""YAML -> (plain value, source positions), safe against hostile files.

PyYAML's composer gives us nodes with line numbers; we walk them ourselves so that every field
of the recipe keeps the line it came from, and so that duplicate keys (which PyYAML silently
collapses) are reported instead of being lost.

Every file is untrusted. A real recipe is a few KiB, a few hundred values and six levels deep; the
limits below are far above that, and each one turns an attack into a file:line RecipeError in well
under a second, with memory bounded by the limits rather than by the input:

    MAX_BYTES = 1 MiB      read no further (a 10 GB file, or /dev/zero, is refused after 1 MiB)
    MAX_DEPTH = 32         nested mappings and lists; checked on the event stream before any node is
                           built, because both composers recurse (libyaml's would overflow the C stack)
    MAX_NODES = 50,000     values, counted once as written and again after aliases are expanded: an
                           alias bomb (billion laughs) stops at the limit instead of filling memory

Refused outright, at the line where they occur:

    bytes that are not UTF-8, and characters YAML forbids (NUL and the other control characters);
    recursive aliases; merge keys (`<<`); tags other than YAML's core scalar tags (!!str, !!int,
    !!float, !!bool, !!null), so `!!python/object:...`, `!!binary`, `!!set` or `!foo` are errors
    rather than silently dropped; keys that are not text or integers; integers beyond 64 bits
    (quote a long digit string that is text).

Plain scalars are read with YAML 1.2's core schema, not PyYAML's YAML 1.1: `1e-4` and `1E+3` are
floats (1.1 wants a dot and reads them as strings), only true/false are booleans (`yes`, `no`, `on`,
`off` stay text), `010` is ten, and dates stay text. The schema's types are strict, so a value is
whatever these rules say it is, never coerced later. Aliases (`*name`) to scalars and collections
are fine within the limits; the positions of an alias's contents are those of its anchor.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from workbench.errors import RecipeError

FieldPath = tuple[str | int, ...]

MAX_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_NODES = 50_000
INT64_MAX = 2**63 - 1

_CORE = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL = (_CORE + name for name in ("str", "int", "float", "bool", "null"))
MAP, SEQ, MERGE = _CORE + "map", _CORE + "seq", _CORE + "merge"

# Characters YAML allows (YAML 1.2, 5.1); everything else (NUL, ESC, DEL, C1 controls, lone surrogates)
# makes PyYAML stop with a position but no line, so we find them first and say where.
_FORBIDDEN_CHARACTER = re.compile("[^\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

_FLOAT = r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?"  # 1.2 wants no dot: 1e-4, 1E+3

# YAML 1.2 core schema (10.3.2), in resolution order: ints before floats, since `1` matches both.
_CORE_SCHEMA = (
    (NULL, r"~|null|Null|NULL|", ["~", "n", "N", ""]),  # "" is the empty value (`key:`)
    (BOOL, r"true|True|TRUE|false|False|FALSE", list("tTfF")),
    (INT, r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+", list("-+0123456789")),
    (FLOAT, _FLOAT + r"|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)", list("-+.0123456789")),
    (MERGE, r"<<", ["<"]),  # resolved only so that a merge key can be refused with a clear message
)

# libyaml's parser when PyYAML was built with it: fast, and the depth check below keeps it safe.
_BASE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _RecipeLoader(_BASE_LOADER):  # type: ignore[misc, valid-type]
    """PyYAML's parser and composer with YAML 1.2 core-schema resolution of plain scalars."""

    yaml_implicit_resolvers: dict[Any, list[tuple[str, re.Pattern[str]]]] = {}


for _tag, _pattern, _first in _CORE_SCHEMA:
    _RecipeLoader.add_implicit_resolver(_tag, re.compile(rf"(?:{_pattern})\Z"), _first)


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
    """Parse one YAML document; raise RecipeError with file:line on any problem (see the module's limits)."""
    value, source = read_yaml_value(text, file)
    if not source.lines:
        raise RecipeError("the recipe is empty", file=file, line=1)
    return value, source


def read_yaml_value(text: str, file: str) -> tuple[Any, SourceMap]:
    """Like load_yaml_with_positions, but an empty document is None (with an empty SourceMap)."""
    source = SourceMap(file=file)
    _check_characters(text, file)
    try:
        _check_shape(text, file)
        node = yaml.compose(text, Loader=_RecipeLoader)
    except yaml.MarkedYAMLError as error:
        raise _syntax_error(error, text, file) from None
    except yaml.YAMLError as error:  # a reader error the character check did not foresee
        raise RecipeError(f"cannot read the YAML: {error}", file=file, line=_line_at(text, error)) from None
    if node is None:
        return None, source
    return _Walk(source).plain(node, ()), source


def load_yaml_file(path: Path) -> tuple[str, Any, SourceMap]:
    """Read a recipe file; returns (text, plain value, positions)."""
    file = str(path)
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_BYTES + 1)  # never more: the file may be endless (/dev/zero)
    except FileNotFoundError:
        raise RecipeError("recipe file not found", file=file) from None
    except OSError as error:
        raise RecipeError(f"cannot read the recipe: {error.strerror or error}", file=file) from None
    if len(data) > MAX_BYTES:
        raise RecipeError(
            f"the recipe is larger than {MAX_BYTES // 1024} KiB; a recipe names data, it does not hold it",
            file=file,
            line=data.count(b"\n", 0, MAX_BYTES) + 1,  # where the limit is crossed
        )
    text = _decode(data, file)
    value, source = load_yaml_with_positions(text, file)
    return text, value, source


def _decode(data: bytes, file: str) -> str:
    """UTF-8 (a leading byte-order mark is fine: YAML skips it), or an error at the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        looks_utf16 = data[:2] in (b"\xff\xfe", b"\xfe\xff")
        raise RecipeError(
            f"the recipe is not UTF-8 text (byte 0x{data[error.start]:02x} is not valid UTF-8 here)",
            file=file,
            line=line,
            hint="it looks like UTF-16: save it as UTF-8" if looks_utf16 else "save the recipe as UTF-8 text",
        ) from None


def reads_as_number(text: str) -> bool:
    """Whether `text`, written without quotes, would be an int or a float (for hints about quotes)."""
    resolvers = _RecipeLoader.yaml_implicit_resolvers.get(text[:1], [])
    return any(tag in (INT, FLOAT) and pattern.match(text) for tag, pattern in resolvers)


def _check_characters(text: str, file: str) -> None:
    found = _FORBIDDEN_CHARACTER.search(text)
    if found:
        code = ord(found.group())
        raise RecipeError(
            f"character U+{code:04X} is not allowed in YAML" + (" (is this a binary file?)" if code == 0 else ""),
            file=file,
            line=text.count("\n", 0, found.start()) + 1,
        )


def _check_shape(text: str, file: str) -> None:
    """Depth, size and aliases from the parser's events, before the (recursive) composer builds anything."""
    shape = _Shape(file)
    for event in yaml.parse(text, Loader=_RecipeLoader):
        shape.see(event)


class _Shape:
    """The size and depth the document will have once its aliases are expanded, event by event.

    An anchor remembers how many values it stands for and how deeply it nests, so an alias costs
    what its expansion would, and the error names the line of the alias that crosses a limit.
    Memory follows the number of anchors, not the size of the expansion.
    """

    def __init__(self, file: str):
        self.file = file
        self.values = 0  # so far, aliases expanded
        self.open: list[list[Any]] = []  # per open collection: [anchor, values before it, its height]
        self.anchors: dict[str, tuple[int, int]] = {}  # anchor -> (values, height) of what it names

    def see(self, event: yaml.Event) -> None:
        if isinstance(event, yaml.AliasEvent):
            self.alias(event)
        elif isinstance(event, yaml.ScalarEvent):
            self.add(event, values=1, height=0)
            if event.anchor:
                self.anchors[event.anchor] = (1, 0)
        elif isinstance(event, yaml.CollectionStartEvent):
            self.add(event, values=1, height=1)
            self.open.append([event.anchor, self.values - 1, 1])
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, before, height = self.open.pop()
            if anchor:
                self.anchors[anchor] = (self.values - before, height)
            self.grow(height)

    def alias(self, event: yaml.AliasEvent) -> None:
        if any(anchor == event.anchor for anchor, _, _ in self.open):
            message = f"the alias *{event.anchor} is inside the value it names (a recursive alias)"
            raise RecipeError(message, file=self.file, line=event.start_mark.line + 1)
        values, height = self.anchors.get(event.anchor, (1, 0))  # undefined: the composer says so
        self.add(event, values=values, height=height, expanded=True)
        self.grow(height)

    def add(self, event: yaml.NodeEvent, *, values: int, height: int, expanded: bool = False) -> None:
        self.values += values
        aliased = " once aliases are expanded" if expanded else ""
        if self.values > MAX_NODES:
            bomb = " (an alias bomb?)" if expanded else ""
            raise self.error(f"the recipe has more than {MAX_NODES:,} values{aliased}{bomb}", event)
        if len(self.open) + height > MAX_DEPTH:
            raise self.error(f"the recipe nests more than {MAX_DEPTH} levels deep{aliased}", event)

    def grow(self, height: int) -> None:
        """A child of this height ended inside the innermost open collection."""
        if self.open:
            self.open[-1][2] = max(self.open[-1][2], height + 1)

    def error(self, message: str, event: yaml.Event) -> RecipeError:
        return RecipeError(f"{message}; no recipe needs that", file=self.file, line=event.start_mark.line + 1)


class _Walk:
    """Nodes -> plain values, recording positions. `_Shape` has bounded the size and depth already."""

    def __init__(self, source: SourceMap):
        self.source = source

    def plain(self, node: yaml.Node, path: FieldPath) -> Any:
        self.source.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path)
        if isinstance(node, yaml.MappingNode) and node.tag == MAP:
            return self.mapping(node, path)
        if isinstance(node, yaml.SequenceNode) and node.tag == SEQ:
            return [self.plain(item, path + (index,)) for index, item in enumerate(node.value)]
        raise self.unsupported_tag(node, path)

    def mapping(self, node: yaml.MappingNode, path: FieldPath) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = self.key(key_node, path)
            if key in result:
                first = self.source.key_lines[path + (key,)]
                raise self.error(f"duplicate key '{key}' (first defined on line {first})", key_node, path + (key,))
            self.source.key_lines[path + (key,)] = key_node.start_mark.line + 1
            result[key] = self.plain(value_node, path + (key,))
        return result

    def key(self, node: yaml.Node, path: FieldPath) -> str | int:
        if isinstance(node, yaml.ScalarNode) and node.tag == MERGE:
            raise self.error("YAML merge keys (<<) are not supported in recipes; write the keys out", node, path)
        if not isinstance(node, yaml.ScalarNode):
            raise self.error("mapping keys must be plain scalars", node, path)
        key = self.scalar(node, path)
        if not isinstance(key, (str, int)) or isinstance(key, bool):
            raise self.error(f"a key must be a name or an integer, got {key!r} (quote it if it is a name)", node, path)
        return key

    def scalar(self, node: yaml.ScalarNode, path: FieldPath) -> Any:
        reader = _SCALAR_READERS.get(node.tag)
        if reader is None:
            raise self.unsupported_tag(node, path)
        try:
            return reader(node.value)
        except ValueError as problem:
            raise self.error(str(problem), node, path) from None

    def unsupported_tag(self, node: yaml.Node, path: FieldPath) -> RecipeError:
        tag = node.tag.replace(_CORE, "!!")
        message = f"the YAML tag '{tag}' is not supported in recipes (only plain values, lists and mappings)"
        return self.error(message, node, path)

    def error(self, message: str, node: yaml.Node, path: FieldPath) -> RecipeError:
        field = ".".join(str(part) for part in path) or None
        return RecipeError(message, file=self.source.file, line=node.start_mark.line + 1, field=field)


def _read_null(text: str) -> None:
    if text not in ("", "~", "null", "Null", "NULL"):
        raise ValueError(f"'{text}' is not null")
    return None


def _read_bool(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise ValueError(f"'{text}' is not a boolean (true or false)")
    return text.lower() == "true"


def _read_int(text: str) -> int:
    match = re.fullmatch(r"([-+]?)(?:0o([0-7]+)|0x([0-9a-fA-F]+)|([0-9]+))", text)
    if match is None:
        raise ValueError(f"'{text}' is not an integer")
    sign, octal, hexadecimal, decimal = match.groups()
    too_big = ValueError(f"the integer {_shorten(text)} does not fit in 64 bits (quote it if it is text)")
    if decimal is not None and len(decimal.lstrip("0")) > 19:  # also spares int() a million-digit string
        raise too_big
    value = int(octal, 8) if octal else int(hexadecimal, 16) if hexadecimal else int(decimal)
    if value > INT64_MAX + (sign == "-"):  # a signed 64-bit integer: -2**63 .. 2**63 - 1
        raise too_big
    return -value if sign == "-" else value


def _read_float(text: str) -> float:
    special = {".inf": math.inf, "+.inf": math.inf, "-.inf": -math.inf, ".nan": math.nan}
    if text.lower() in special:
        return special[text.lower()]
    if not re.fullmatch(_FLOAT, text):
        raise ValueError(f"'{text}' is not a number")
    return float(text)  # out of range is inf, which the schema refuses by field name


# A plain `<<` that is not a key is just text.
_SCALAR_READERS = {STR: str, MERGE: str, NULL: _read_null, BOOL: _read_bool, INT: _read_int, FLOAT: _read_float}


def _shorten(text: str) -> str:
    return text if len(text) <= 30 else f"{text[:12]}...{text[-6:]} ({len(text)} characters)"


def _syntax_error(error: yaml.MarkedYAMLError, text: str, file: str) -> RecipeError:
    mark = error.problem_mark or error.context_mark
    line = mark.line + 1 if mark is not None else None
    problem = error.problem or str(error)
    if error.context and error.context_mark is not None and error.context_mark.line + 1 != line:
        problem += f" ({error.context} started on line {error.context_mark.line + 1})"
    # libyaml does not name the character it stopped at; a tab is by far the most common one.
    tab = mark is not None and "\t" in text[mark.index - mark.column : mark.index + 1]
    hint = "YAML indents with spaces, not tabs" if tab else None
    return RecipeError(f"YAML syntax error: {problem}", file=file, line=line, hint=hint)


def _line_at(text: str, error: yaml.YAMLError) -> int | None:
    position = getattr(error, "position", None)
    return text.count("\n", 0, position) + 1 if isinstance(position, int) else None
