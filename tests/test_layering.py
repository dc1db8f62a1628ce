"""The package's layering (issue 11): which modules a module may pull in, and no import cycles.

Each module is imported alone in a fresh interpreter and the modules it loaded are checked: the
browsing and bookkeeping layers (ui, db, cache, api, browse, ...) load neither torch nor
transformers nor datasets, the layers below the steps (cache, db, data, ...) load no step, and
the dataset kinds' registry loads none of the loaders. No module of workbench.data imports the
steps, the step context, the executor, the models or the analyses, at any scope. Then the
graph of top-level imports between workbench's own modules, read from the source with `ast`
(module scope only: imports inside functions and under `if TYPE_CHECKING:` run later or never),
must have no cycle.
"""

from __future__ import annotations

import ast
import graphlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_import_cycles import _type_checking, module_names

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "workbench"

MODEL_STACK = ("torch", "transformers", "datasets")
STEPS = ("workbench.steps", "workbench.executor", "workbench.context", "workbench.models")
ABOVE_DB = (*STEPS, "workbench.cache", "workbench.plan", "workbench.ui", "workbench.browse", "workbench.cli")
DATA_LOADERS = tuple(
    f"workbench.data.{name}"
    for name in ("sources", "loaded", "spec_files", "text_loading", "files", "columns", "batching", "treebank", "python_code", "agreement")
)

# module -> what importing it alone must not load (a name covers its submodules)
LAYERS: dict[str, tuple[str, ...]] = {
    "workbench.errors": (*MODEL_STACK, "workbench.db", *ABOVE_DB),
    "workbench.step_result": (*MODEL_STACK, *ABOVE_DB),
    "workbench.scores": (*MODEL_STACK, "workbench.db", *ABOVE_DB),
    "workbench.feature_shards": (*MODEL_STACK, *ABOVE_DB),
    "workbench.db.store": (*MODEL_STACK, *ABOVE_DB),
    "workbench.db.orm": (*MODEL_STACK, *ABOVE_DB),
    "workbench.cache": (*MODEL_STACK, *STEPS, "workbench.db.store", "workbench.plan", "workbench.ui", "workbench.cli"),
    "workbench.maintenance": (*MODEL_STACK, *STEPS, "workbench.plan", "workbench.ui", "workbench.cli"),
    "workbench.store_location": (*MODEL_STACK, *STEPS, "workbench.cache", "workbench.ui", "workbench.cli"),
    "workbench.saved_maps": (*MODEL_STACK, *STEPS, "workbench.cache", "workbench.cli"),
    "workbench.ui.views": (*MODEL_STACK, *STEPS, "workbench.cache", "workbench.plan", "workbench.browse", "workbench.cli"),
    "workbench.browse.app": (*MODEL_STACK, *STEPS, "workbench.cache", "workbench.plan", "workbench.cli"),
    "workbench.api": (*MODEL_STACK, *STEPS, "workbench.cache", "workbench.ui", "workbench.cli", "rich"),
    "workbench.bundles.writer": (*MODEL_STACK, *STEPS, "workbench.cli"),
    "workbench.report.html": (*MODEL_STACK, *STEPS, "workbench.cli"),
    "workbench.recipe.loader": (*MODEL_STACK, *STEPS, "workbench.db", "workbench.cache", "workbench.ui", "workbench.cli"),
    # datasets sit below the steps; the kinds' registry (asked by step modules while a recipe is checked)
    # loads only the kinds' declarations: their check/load import the loaders when called
    "workbench.data.sources": (*MODEL_STACK, "workbench.db", *ABOVE_DB),
    "workbench.data.kinds": (*MODEL_STACK, *DATA_LOADERS, "workbench.recipe", "workbench.db", *ABOVE_DB),
    # the plan and the steps import only pydantic at the top (`workbench validate` stays light)
    "workbench.plan": (*MODEL_STACK, "workbench.executor", "workbench.db", "workbench.cache", "workbench.ui", "workbench.cli"),
    "workbench.steps.registry": (*MODEL_STACK, "workbench.executor", "workbench.db", "workbench.cache", "workbench.ui", "workbench.cli"),
    "workbench.executor": (*MODEL_STACK, "workbench.ui", "workbench.browse", "workbench.cli", "rich"),
    # rich is the terminal's: only RichProgress (and the ui, browse, cli) import it, when used
    "workbench.progress": (*MODEL_STACK, "workbench.db", *ABOVE_DB, "rich"),
    "workbench.cli": MODEL_STACK,
}


def loaded_by(module: str) -> list[str]:
    """Every module in sys.modules after importing `module` alone in a fresh interpreter."""
    code = f"import json, sys\nimport {module}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


@pytest.mark.parametrize("module", sorted(LAYERS))
def test_a_module_loads_nothing_from_the_layers_above_it(module):
    loaded = loaded_by(module)
    assert module in loaded
    forbidden = [name for name in loaded if within(name, LAYERS[module]) and not within(module, (name,))]
    assert forbidden == [], f"importing {module} loads {forbidden}"


def test_data_imports_nothing_above_it_at_any_scope():
    """Data flows one way: the steps ask workbench.data; workbench.data never asks the steps (not even lazily)."""
    above = ("workbench.steps", "workbench.context", "workbench.executor", "workbench.models", "workbench.analysis", "workbench.plan")
    found = []
    for path in sorted((PACKAGE / "data").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            found += [f"{path.relative_to(ROOT)}: {name}" for name in names if within(name, above)]
    assert found == []


# --- import cycles ---------------------------------------------------------------------------------

# module_names and _type_checking are tests/test_import_cycles.py's (which counts every import, at any scope)


def _module_scope(body: list[ast.stmt]):  # type: ignore[no-untyped-def]
    """The statements that run when the module is imported (class bodies, if/try/with blocks included)."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(node, ast.If):
            if not _type_checking(node.test):
                yield from _module_scope(node.body)
            yield from _module_scope(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(handler.body for handler in node.handlers)):
                yield from _module_scope(block)
        elif isinstance(node, (ast.With, ast.ClassDef)):
            yield from _module_scope(node.body)
        else:
            yield node


def top_level_imports() -> dict[str, set[str]]:
    """workbench module -> the workbench modules it imports at module scope."""
    modules = module_names(ROOT)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        targets: set[str] = set()
        for node in _module_scope(ast.parse(path.read_text(), str(path)).body):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - node.level + 1] + ([node.module] if node.module else [])
                    source = ".".join(base)
                else:
                    source = node.module or ""
                submodules = {f"{source}.{alias.name}" for alias in node.names} & modules.keys()
                targets.update(submodules)
                if len(submodules) < len(node.names):
                    targets.add(source)  # a name defined in the module (or its package's __init__) itself
        graph[name] = {target for target in targets if target in modules and target != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        return list(error.args[1])
    return None


def test_the_import_graph_is_read_from_module_scope_only():
    graph = top_level_imports()
    assert "workbench.steps.extract" in graph["workbench.steps.registry"]  # from workbench.steps.extract import Extract
    assert "workbench.step_result" in graph["workbench.cache"]
    assert "workbench.errors" in graph["workbench.db.store"]
    assert "workbench.context" not in graph["workbench.steps.base"]  # only under TYPE_CHECKING
    assert "workbench.executor" not in graph["workbench.cli"]  # imported inside the commands


def test_find_cycle_names_the_modules_of_a_cycle():
    cycle = find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
    assert cycle is not None and set(cycle) == {"a", "b", "c"} and cycle[0] == cycle[-1]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_workbench_has_no_top_level_import_cycle():
    cycle = find_cycle(top_level_imports())
    assert cycle is None, "top-level import cycle: " + " -> ".join(cycle or [])
