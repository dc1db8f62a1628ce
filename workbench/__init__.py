"""BERTology Workbench: a declarative, YAML-driven workbench for looking inside transformer models.

`import workbench as wb` gives the Python API (workbench/api.py): `wb.open_store()`, `wb.run_recipe()`,
and, for your own loops, `wb.load_model()` and the head hooks `wb.head_gates()` / `wb.observe_attention()`.
Names are imported on first use, so reading a store never imports torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "open_store": "workbench.api",
    "run_recipe": "workbench.api",
    "Store": "workbench.api",
    "Run": "workbench.api",
    "Features": "workbench.api",
    "load_model": "workbench.models.loading",
    "head_gates": "workbench.models.hooks",
    "observe_attention": "workbench.models.hooks",
    "WorkbenchError": "workbench.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'workbench' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
