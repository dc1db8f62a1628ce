"""Distances between the leaves of a syntax tree, and the CAT-probing paper's extra edges.

A tree is given as two parent arrays: `node_parent[i]` for the inner nodes in pre-order (node 0 is
the root, its parent -1) and `leaf_parent[j]` for the leaves in source order (the inner node each
hangs from). Used by both parsers of Python code (stdlib `ast` + `tokenize`, and tree-sitter).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import shortest_path


def tree_distances(node_parent: np.ndarray, leaf_parent: np.ndarray) -> np.ndarray:
    """[n, n] path lengths between leaves: depth_i + depth_j - 2 * depth(lowest common ancestor)."""
    node_depth = np.zeros(len(node_parent), dtype=np.int64)
    for node in range(1, len(node_parent)):  # pre-order: a parent's depth is known before its children's
        node_depth[node] = node_depth[node_parent[node]] + 1
    n = len(leaf_parent)
    leaf_depth = node_depth[leaf_parent] + 1  # [n]
    levels = int(leaf_depth.max(initial=1))
    # ancestors[k, i] = the ancestor of leaf i at depth k; a padding value of its own per leaf elsewhere
    ancestors = np.tile(-1 - np.arange(n), (levels, 1))  # [levels, n]
    leaves = np.arange(n)
    node = leaf_parent.copy()
    while len(leaves):
        ancestors[node_depth[node], leaves] = node
        keep = node > 0  # stop once the root is written
        leaves, node = leaves[keep], node_parent[node[keep]]
    # Two leaves share exactly the ancestors down to their lowest common one: count equal levels.
    shared = np.zeros((n, n), dtype=np.int32)  # [n, n], = depth(lca) + 1
    for level in ancestors:
        shared += level[:, None] == level[None, :]
    distances = (leaf_depth[:, None] + leaf_depth[None, :] - 2 * (shared - 1)).astype(np.int32)  # [n, n]
    np.fill_diagonal(distances, 0)
    return distances


def upgraded_edges(
    texts: Sequence[str], identifiers: Sequence[bool], *, sequence: bool = True, dataflow: bool = True
) -> list[tuple[int, int]]:
    """The upgraded tree's leaf-to-leaf edges (CAT-probing, configs.py upgraded_ast=1), by leaf index.

    `sequence`: an edge between every two consecutive leaves. `dataflow`: an edge from each
    identifier leaf to the PREVIOUS leaf with the same text (a chain per name, not a clique).
    """
    edges: list[tuple[int, int]] = []
    if sequence:
        edges += [(leaf, leaf + 1) for leaf in range(len(texts) - 1)]
    if dataflow:
        last: dict[str, int] = {}
        for leaf, (text, is_identifier) in enumerate(zip(texts, identifiers)):
            if is_identifier:
                if text in last:
                    edges.append((last[text], leaf))
                last[text] = leaf
    return edges


def graph_distances(
    node_parent: np.ndarray, leaf_parent: np.ndarray, extra_edges: list[tuple[int, int]]
) -> np.ndarray:
    """[n, n] shortest-path lengths between leaves in the tree plus the extra leaf-to-leaf edges."""
    inner, n = len(node_parent), len(leaf_parent)
    leaf_ids = inner + np.arange(n)  # leaves are numbered after the inner nodes
    extra = np.asarray(extra_edges, dtype=np.int64).reshape(-1, 2) + inner
    sources = np.concatenate([np.arange(1, inner), leaf_ids, extra[:, 0]])
    targets = np.concatenate([node_parent[1:], leaf_parent, extra[:, 1]])
    graph = coo_matrix((np.ones(len(sources)), (sources, targets)), shape=(inner + n, inner + n)).tocsr()
    paths = shortest_path(graph, directed=False, unweighted=True, indices=leaf_ids)  # [n, inner + n]
    return paths[:, leaf_ids].astype(np.int32)
