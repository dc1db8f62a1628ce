"""Python source as the leaves of tree-sitter's concrete syntax tree: CAT-probing's own tree.

Chen et al. (2022) parse code with tree-sitter and take its leaves as the code tokens: keywords,
punctuation and operators are leaves of their own, typed by their text (`def`, `)`, `:`), names are
`identifier`, literals `integer`, `float`, `true`, `none`, ... Comments are not tokens (they are
dead ends in the tree, so distances do not change either). The inner nodes are tree-sitter's named
and anonymous nodes, so distances run through `parameters`, `argument_list`, `block` and the like,
which Python's `ast` does not have.

One deliberate difference: the paper's 2022 Python grammar made only a string's quotes leaves, and
its content no token at all; current grammars split a string into string_start / string_content /
string_end. Here a whole string literal is ONE leaf of type `string` (as CodeSearchNet's code_tokens,
which the paper's models read, have it), so the model sees the literal and every sub-token of it
belongs to a leaf.

Uses the `tree-sitter` and `tree-sitter-python` wheels (a dependency of the workbench); imported only
when a step asks for this parser.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from workbench.data.python_code import CodeExample
from workbench.data.tree_distances import graph_distances, tree_distances, upgraded_edges
from workbench.errors import DataError

COLLAPSED = frozenset({"string"})  # nodes taken as one leaf, children and all
SKIPPED = frozenset({"comment"})


@lru_cache(maxsize=1)
def _parser():  # type: ignore[no-untyped-def]
    import tree_sitter_python
    from tree_sitter import Language, Parser

    return Parser(Language(tree_sitter_python.language()))


def parse_with_tree_sitter(
    source: str, name: str = "", *, upgraded: bool = False, max_leaves: int | None = None
) -> CodeExample:
    """Leaves of the tree-sitter tree and their distances (in the upgraded tree when `upgraded`).

    The upgraded tree (the paper's default, configs.py upgraded_ast=1) adds an edge between every
    two consecutive leaves and from each `identifier` to the previous identifier with the same text.
    Raises DataError for source tree-sitter cannot parse without errors.
    """
    label = name or "<source>"
    source = source.replace("\r\n", "\n").replace("\r", "\n")
    data = source.encode("utf-8")
    tree = _parser().parse(data)
    root = tree.root_node
    if root.has_error:
        line = _first_error_line(root)
        raise DataError(f"{label}: not valid Python for tree-sitter" + (f" (at line {line})" if line else ""))

    node_parent: list[int] = []  # inner nodes, pre-order
    node_type: list[str] = []
    leaves: list = []  # tree-sitter nodes taken as leaves, source order
    leaf_parent: list[int] = []
    stack = [(root, -1)]
    while stack:  # iterative pre-order: deep code must not hit Python's recursion limit
        node, parent = stack.pop()
        if node.type in SKIPPED:
            continue
        if node.child_count == 0 or node.type in COLLAPSED:
            if parent < 0:  # a module that is a single token: give it its root
                node_parent.append(-1)
                node_type.append("module")
                parent = 0
            leaves.append(node)
            leaf_parent.append(parent)
            continue
        node_parent.append(parent)
        node_type.append(node.type)
        index = len(node_parent) - 1
        stack.extend((child, index) for child in reversed(node.children))
    if max_leaves is not None and len(leaves) > max_leaves:
        raise DataError(f"{label}: {len(leaves)} leaves, more than max_leaves={max_leaves}")
    if not leaves:
        raise DataError(f"{label}: no code tokens")

    lines = source.split("\n")
    texts = [data[leaf.start_byte : leaf.end_byte].decode("utf-8") for leaf in leaves]
    kinds = ["string" if leaf.type in COLLAPSED else leaf.type for leaf in leaves]
    parents_array = np.asarray(node_parent, dtype=np.int64)
    leaf_parent_array = np.asarray(leaf_parent, dtype=np.int64)
    if upgraded:
        extra = upgraded_edges(texts, [kind == "identifier" for kind in kinds])
        distances = graph_distances(parents_array, leaf_parent_array, extra)
    else:
        distances = tree_distances(parents_array, leaf_parent_array)
    return CodeExample(
        name=name,
        tokens=texts,
        distances=distances,
        kinds=kinds,
        spans=[(*_position(lines, leaf.start_point), *_position(lines, leaf.end_point)) for leaf in leaves],
        parents=[node_type[parent] for parent in leaf_parent],
        source=source,
    )


def _position(lines: list[str], point) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """tree-sitter's (row, byte column) as (1-based line, character column), as tokenize gives them."""
    row, column = point
    text = lines[row] if row < len(lines) else ""
    return row + 1, len(text.encode("utf-8")[:column].decode("utf-8", errors="ignore"))


def _first_error_line(node) -> int | None:  # type: ignore[no-untyped-def]
    stack = [node]
    while stack:
        current = stack.pop()
        if current.type == "ERROR" or current.is_missing:
            return current.start_point[0] + 1
        stack.extend(reversed(current.children))
    return None
