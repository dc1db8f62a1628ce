"""Bundles that reproduce: a run as a zip with its recipe, results, provenance and (optionally) artifacts.

    export_bundle(run, store, output)      writer.py     the zip (layout.py says what is in it)
    import_bundle(path, store)             importing.py  the run into a store, its entries into the cache
    reproduce_bundle(path, store, ...)     reproduce.py  check the data, re-run, compare every value

What a run is made from is recorded when it starts (provenance.py, called by the executor). A bundle
from someone else is untrusted input: reader.py checks all of it before anything is written.

The names below are imported on first use: the executor imports provenance.py, which must not
import reproduce.py (and so the executor again).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "BundleError": "layout",
    "DataMismatch": "locate",
    "ExportedBundle": "writer",
    "ImportedBundle": "importing",
    "Verdict": "verdict",
    "export_bundle": "writer",
    "import_bundle": "importing",
    "reproduce_bundle": "reproduce",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'workbench.bundles' has no attribute {name!r}")
    return getattr(import_module(f"workbench.bundles.{_EXPORTS[name]}"), name)
