"""Python source as the leaves of its syntax tree, with tree distances between leaves (CAT-probing).

The leaves are the code's `tokenize` tokens without layout and comments (COMMENT, NL, NEWLINE,
INDENT, DEDENT, ENDMARKER, ENCODING); a docstring stays one STRING leaf. The inner nodes are the
`ast` nodes. A node's span is its own source range widened to cover its children and, for a
decorated function or class, the decorators' `@` signs. Nodes without positions of their own
(`arguments`, `comprehension`, `withitem`, ...) take the range of their children, and those with
neither (`Load`, `Add`, ...) are left out. Each leaf hangs from the smallest node whose span
contains it, the deepest one on ties, and from the Module root when no node contains it.

`ast` columns are UTF-8 byte offsets and `tokenize` columns are character offsets; spans are
converted to characters before they are compared, so non-ASCII source is placed correctly.
Standard library only, plus numpy and scipy for the distance matrices.
"""

from __future__ import annotations

import ast
import io
import json
import keyword
import logging
import tokenize
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from workbench.data.tree_distances import graph_distances, tree_distances, upgraded_edges
from workbench.errors import DataError, did_you_mean

logger = logging.getLogger(__name__)

LAYOUT_TOKENS = frozenset(
    {
        tokenize.COMMENT,
        tokenize.NL,
        tokenize.NEWLINE,
        tokenize.INDENT,
        tokenize.DEDENT,
        tokenize.ENDMARKER,
        tokenize.ENCODING,
    }
)
DEFAULT_MAX_LEAVES = 2048  # an [n, n] int32 matrix of 2048 leaves is 16 MB; no encoder reads that many tokens

Position = tuple[int, int]  # (1-based line, 0-based character column)
Span = tuple[Position, Position]  # (start, end); the end is exclusive


@dataclass
class CodeExample:
    """One piece of code as syntax-tree leaves; every list is indexed by leaf, in source order."""

    name: str
    tokens: list[str]  # the leaf strings
    distances: np.ndarray  # [n, n] int32, shortest-path lengths between leaves (0 on the diagonal)
    kinds: list[str]  # tokenize type of each leaf: NAME, OP, NUMBER, STRING, ...
    spans: list[tuple[int, int, int, int]]  # (start line, start column, end line, end column), characters
    parents: list[str]  # type of the AST node each leaf hangs from: "Name", "BinOp", "Module", ...
    source: str

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True)
class SkippedSource:
    """A source a reader could not turn into an example, and why."""

    name: str
    location: str  # "file:line" for JSONL rows, the file for .py files
    reason: str


class CodeExamples(list[CodeExample]):
    """The examples a reader produced, in file order; `skipped` lists the sources it left out."""

    def __init__(self, examples: list[CodeExample], skipped: list[SkippedSource]):
        super().__init__(examples)
        self.skipped = skipped


def parse_code(
    source: str,
    name: str = "",
    *,
    add_sequence_edges: bool = False,
    add_dataflow_edges: bool = False,
    max_leaves: int | None = None,
) -> CodeExample:
    """Parse Python source into leaves and their pairwise distances in the syntax tree.

    `add_sequence_edges` links consecutive leaves and `add_dataflow_edges` links each occurrence of
    an identifier (a NAME leaf that is not a keyword) to its previous occurrence, a chain, as the
    CAT-probing paper's upgraded tree does; distances are then shortest paths in that graph rather
    than in the tree.
    Raises DataError when the source is not valid Python or has more than `max_leaves` leaves.
    """
    source = source.replace("\r\n", "\n").replace("\r", "\n")  # ast and tokenize then agree on lines
    label = name or "<source>"
    try:
        module = ast.parse(source)
        all_tokens = tokenize.generate_tokens(io.StringIO(source).readline)
        tokens = [token for token in all_tokens if token.type not in LAYOUT_TOKENS]
        node_parent, node_label, node_span = _inner_nodes(module, source.split("\n"))
    except RecursionError:
        raise DataError(f"{label}: the syntax tree is nested too deeply to walk") from None
    except (SyntaxError, tokenize.TokenError, ValueError) as error:  # ValueError: NUL bytes in the source
        line = getattr(error, "lineno", None)
        where = f" at line {line}" if line else ""
        message = getattr(error, "msg", None) or str(error)
        raise DataError(f"{label}: not valid Python ({message}{where})") from None
    if max_leaves is not None and len(tokens) > max_leaves:
        raise DataError(f"{label}: {len(tokens)} leaves, more than max_leaves={max_leaves}")
    leaf_parent = _attach_leaves(node_span, [(token.start, token.end) for token in tokens])
    node_parent_array = np.asarray(node_parent, dtype=np.int64)
    leaf_parent_array = np.asarray(leaf_parent, dtype=np.int64)
    if add_sequence_edges or add_dataflow_edges:
        extra_edges = _extra_edges(tokens, add_sequence_edges, add_dataflow_edges)
        distances = graph_distances(node_parent_array, leaf_parent_array, extra_edges)
    else:
        distances = tree_distances(node_parent_array, leaf_parent_array)
    return CodeExample(
        name=name,
        tokens=[token.string for token in tokens],
        distances=distances,
        kinds=[tokenize.tok_name[token.type] for token in tokens],
        spans=[(*token.start, *token.end) for token in tokens],
        parents=[node_label[parent] for parent in leaf_parent],
        source=source,
    )


def read_code_jsonl(
    path: str | Path,
    code_field: str = "code",
    name_field: str = "func_name",
    partition: str | None = None,
    limit: int | None = None,
    *,
    max_leaves: int | None = DEFAULT_MAX_LEAVES,
    add_sequence_edges: bool = False,
    add_dataflow_edges: bool = False,
) -> CodeExamples:
    """Read code examples from a JSONL file, one JSON object per line.

    `partition` keeps the rows whose "partition" field equals it. Rows whose code does not parse,
    or has more than `max_leaves` leaves, are skipped and listed in the result's `skipped`.
    Raises DataError (file:line) for a missing file, bad JSON or a missing field.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such JSONL file")
    options = dict(max_leaves=max_leaves, add_sequence_edges=add_sequence_edges, add_dataflow_edges=add_dataflow_edges)
    examples: list[CodeExample] = []
    skipped: list[SkippedSource] = []
    partitions_seen: set[str] = set()
    for line_number, line in _jsonl_lines(path):
        if limit is not None and len(examples) >= limit:
            break
        if not line.strip():
            continue
        where = f"{path}:{line_number}"
        row = _json_row(line, where)
        if partition is not None:
            partitions_seen.add(str(_field(row, "partition", where)))
            if row["partition"] != partition:
                continue
        code, name = _field(row, code_field, where), str(_field(row, name_field, where))
        if not isinstance(code, str):
            raise DataError(f"{where}: field '{code_field}' should be a string, got {type(code).__name__}")
        _add_example(examples, skipped, code, name, where, options)
    if partition is not None and partition not in partitions_seen and (limit is None or limit > 0):
        known = sorted(partitions_seen)
        raise DataError(
            f"{path}: no row has partition '{partition}' (partitions present: {', '.join(known) or 'none'})",
            hint=did_you_mean(partition, known),
        )
    return _finish(path, examples, skipped)


def read_code_dir(
    directory: str | Path,
    limit: int | None = None,
    *,
    max_leaves: int | None = DEFAULT_MAX_LEAVES,
    add_sequence_edges: bool = False,
    add_dataflow_edges: bool = False,
) -> CodeExamples:
    """One example per .py file under `directory` (recursively, in sorted path order).

    The example's name is the file's path relative to `directory`. Files that cannot be decoded
    or parsed, or have more than `max_leaves` leaves, are skipped and listed in `skipped`.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: no such directory of Python files")
    files = sorted(directory.rglob("*.py"))
    if not files:
        raise DataError(f"{directory}: contains no .py files")
    options = dict(max_leaves=max_leaves, add_sequence_edges=add_sequence_edges, add_dataflow_edges=add_dataflow_edges)
    examples: list[CodeExample] = []
    skipped: list[SkippedSource] = []
    for file in files:
        if limit is not None and len(examples) >= limit:
            break
        name = file.relative_to(directory).as_posix()
        try:
            with tokenize.open(file) as handle:  # honours a coding cookie and a BOM
                source = handle.read()
        except (SyntaxError, UnicodeDecodeError) as error:  # SyntaxError: unknown encoding in the cookie
            skipped.append(SkippedSource(name, str(file), f"cannot decode ({error})"))
            continue
        _add_example(examples, skipped, source, name, str(file), options)
    return _finish(directory, examples, skipped)


def _add_example(
    examples: list[CodeExample], skipped: list[SkippedSource], source: str, name: str, where: str, options: dict
) -> None:
    """Parse one source into `examples` (`options` go to parse_code), or record in `skipped` why not."""
    try:
        examples.append(parse_code(source, name, **options))
    except DataError as error:  # the reason without parse_code's "name: " prefix: the name is data from the file
        skipped.append(SkippedSource(name, where, error.message.removeprefix(f"{name or '<source>'}: ")))


def _finish(origin: Path, examples: list[CodeExample], skipped: list[SkippedSource]) -> CodeExamples:
    if skipped:
        first = skipped[0]
        logger.warning("%s: skipped %d sources; the first, %s: %s", origin, len(skipped), first.location, first.reason)
    return CodeExamples(examples, skipped)


def _jsonl_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 file (a byte order mark is dropped); bad bytes are a DataError at their line."""
    from workbench.data.files import FileProblem, decoded_lines

    try:
        yield from decoded_lines(path, "utf-8")
    except FileProblem as problem:
        raise DataError(f"{path}:{problem.line}: {problem.message}") from None


def _json_row(line: str, where: str) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise DataError(f"{where}: not valid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    return row


def _field(row: dict, field: str, where: str) -> object:
    if field not in row:
        raise DataError(f"{where}: the row has no field '{field}'", hint=did_you_mean(field, row))
    return row[field]


# --- the tree -------------------------------------------------------------------------------------


def _inner_nodes(module: ast.Module, lines: list[str]) -> tuple[list[int], list[str], list[Span]]:
    """The AST nodes kept as inner nodes, in pre-order: (parent id, type name, span) per node.

    Node 0 is the Module root, whose parent is -1 and whose span covers everything.
    """
    spans: dict[int, Span] = {}  # id(ast node) -> span in characters

    def char_column(line: int, byte_column: int) -> int:
        text = lines[line - 1]
        return byte_column if text.isascii() else len(text.encode("utf-8")[:byte_column].decode("utf-8"))

    def widen(node: ast.AST) -> Span | None:
        ranges = [span for child in ast.iter_child_nodes(node) if (span := widen(child)) is not None]
        if getattr(node, "end_lineno", None) is not None:
            start = (node.lineno, char_column(node.lineno, node.col_offset))
            end = (node.end_lineno, char_column(node.end_lineno, node.end_col_offset))
            ranges.append((start, end))
        for decorator in getattr(node, "decorator_list", ()):  # the "@" belongs to the decorated node
            line, column = spans[id(decorator)][0]
            at = lines[line - 1].rfind("@", 0, column)
            ranges.append(((line, max(at, 0)), (line, column)))
        if not ranges:
            return None
        spans[id(node)] = (min(start for start, _ in ranges), max(end for _, end in ranges))
        return spans[id(node)]

    for child in ast.iter_child_nodes(module):
        widen(child)

    parent_of: list[int] = [-1]
    labels: list[str] = ["Module"]
    node_spans: list[Span] = [((0, 0), (len(lines) + 1, 0))]

    def visit(node: ast.AST, parent: int) -> None:
        for child in ast.iter_child_nodes(node):
            if id(child) not in spans:
                continue  # no position and no positioned descendants
            parent_of.append(parent)
            labels.append(type(child).__name__)
            node_spans.append(spans[id(child)])
            visit(child, len(parent_of) - 1)

    visit(module, 0)
    return parent_of, labels, node_spans


def _attach_leaves(node_spans: list[Span], token_spans: list[Span]) -> list[int]:
    """For each token, the id of the smallest (then deepest) node whose span contains it.

    Nodes come in pre-order and children lie inside their parents, so assigning every node's tokens
    in that order leaves each token with its deepest container. Tokens do not overlap, so their
    starts and ends are both sorted and the tokens inside a span form one contiguous run.
    """
    starts = [start for start, _ in token_spans]
    ends = [end for _, end in token_spans]
    leaf_parent = [0] * len(token_spans)
    for node, (start, end) in enumerate(node_spans):
        for leaf in range(bisect_left(starts, start), bisect_right(ends, end)):
            leaf_parent[leaf] = node
    return leaf_parent


def _extra_edges(tokens: list[tokenize.TokenInfo], sequence: bool, dataflow: bool) -> list[tuple[int, int]]:
    """Leaf-to-leaf edges (by leaf index) added to the tree for the graph variants."""
    identifiers = [token.type == tokenize.NAME and not keyword.iskeyword(token.string) for token in tokens]
    return upgraded_edges([token.string for token in tokens], identifiers, sequence=sequence, dataflow=dataflow)
