"""No import cycles between workbench's modules, hidden or not.

tests/test_layering.py checks the imports that run when a module is imported (module scope). An
import inside a function runs later, but it is a dependency all the same: two modules that reach
each other that way, even lazily, are one module split in two files, and the lazy import is what
keeps the cycle from failing at import time. So here every import of a workbench module counts,
at module scope and inside functions, classes and methods, read from the source with `ast`; only
those under `if TYPE_CHECKING:` (never run) are left out, and a module's import of a package it
lies in (its parent, already imported when it runs). Importing workbench.a.b also runs the package
workbench/a/__init__.py, so that counts as an import of workbench.a. `from workbench.x import name` is an import
of the module workbench.x.name where that is a module, else of workbench.x; relative imports are
resolved the same way. Imports by computed name (`importlib.import_module(variable)`) are not seen.

The graph of those imports must have no strongly connected component of more than one module.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_names(root: Path, package: str = "workbench") -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package below `root`."""
    names = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(nodes: list[ast.AST]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement among the nodes and below them, at any depth, except under `if TYPE_CHECKING:`."""
    for node in nodes:
        if isinstance(node, ast.If) and _type_checking(node.test):
            yield from _imports(list(node.orelse))  # the else branch runs
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from _imports(list(ast.iter_child_nodes(node)))


def _ancestors(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:end]) for end in range(1, len(parts))}


def import_graph(root: Path = ROOT, package: str = "workbench") -> dict[str, set[str]]:
    """Module -> the package's modules it imports, at any scope (TYPE_CHECKING blocks and its own parents aside)."""
    modules = module_names(root, package)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]  # the package it lies in
        targets: set[str] = set()
        for node in _imports([ast.parse(path.read_text(encoding="utf-8"), str(path))]):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
                continue
            if node.level:
                source = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                targets.add(submodule if submodule in modules else source)
        targets |= {package for target in targets for package in _ancestors(target)}  # importing a.b.c runs a/b/__init__
        graph[name] = {target for target in targets if target in modules and target != name and target not in _ancestors(name)}
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, without recursion)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in graph:
                    continue
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def describe(graph: dict[str, set[str]], components: list[list[str]]) -> str:
    """Each component with the imports between its modules, one `a -> b` a line."""
    lines = []
    for component in components:
        members = set(component)
        lines.append(f"import cycle among {len(component)} modules: {', '.join(component)}")
        lines += [f"    {source} -> {target}" for source in component for target in sorted(graph[source] & members)]
    return "\n".join(lines)


def test_workbench_has_no_import_cycle_at_any_scope():
    graph = import_graph()
    components = strongly_connected(graph)
    assert components == [], "\n" + describe(graph, components)


def test_the_graph_counts_imports_inside_functions_but_not_under_type_checking():
    graph = import_graph()
    assert "workbench.data.text_loading" in graph["workbench.data.kinds.text"]  # inside TextKind.load
    assert "workbench.data.kinds" in graph["workbench.data.sources"]  # module scope
    assert "workbench.steps.extract" in graph["workbench.steps.registry"]  # from workbench.steps.extract import Extract
    assert "workbench.data.loaded" not in graph["workbench.data.kinds.base"]  # only under TYPE_CHECKING
    assert "workbench.data.kinds" not in graph["workbench.data.kinds.code"]  # its own package: not an edge


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return tmp_path


def test_a_cycle_through_a_function_level_import_is_found_and_its_edges_named(tmp_path):
    root = _package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/low.py": """
                def helper():
                    from pkg import high  # runs when called: an edge
                    return high
            """,
            "pkg/high.py": "from .low import helper\n",
            "pkg/sub/__init__.py": "from pkg.sub.leaf import thing\n",
            "pkg/sub/leaf.py": "import pkg.sub\nthing = 1\n",  # its own package: no edge
            "pkg/alone.py": """
                import typing
                from pkg.low import helper
                if typing.TYPE_CHECKING:
                    from pkg.high import High  # never runs: no edge
                else:
                    from pkg import sub  # runs: an edge
            """,
        },
    )
    graph = import_graph(root, "pkg")
    assert graph["pkg.low"] == {"pkg.high"} and graph["pkg.high"] == {"pkg.low"}
    assert graph["pkg.sub.leaf"] == set() and graph["pkg.sub"] == {"pkg.sub.leaf"}
    assert graph["pkg.alone"] == {"pkg.low", "pkg.sub"}
    components = strongly_connected(graph)
    assert components == [["pkg.high", "pkg.low"]]
    assert describe(graph, components).splitlines()[1:] == ["    pkg.high -> pkg.low", "    pkg.low -> pkg.high"]


def test_strongly_connected_finds_every_component_bigger_than_one():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": {"d"}, "f": set(), "g": {"g"}}
    assert sorted(strongly_connected(graph)) == [["a", "b", "c"], ["d", "e"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []
