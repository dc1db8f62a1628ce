"""Bundles that reproduce: a run as a zip with its recipe, results, provenance and (optionally) artifacts.

    export_bundle(run, store, output)      writer.py     the zip (layout.py says what is in it)
    import_bundle(path, store)             importing.py  the run into a store, its entries into the cache
    reproduce_bundle(path, store, ...)     reproduce.py  check the data, re-run, compare every value

What a run is made from is recorded when it starts (provenance.py, called by the executor). A bundle
from someone else is untrusted input: reader.py checks all of it before anything is written.
"""

from workbench.bundles.importing import ImportedBundle, import_bundle
from workbench.bundles.layout import BundleError
from workbench.bundles.locate import DataMismatch
from workbench.bundles.reproduce import reproduce_bundle
from workbench.bundles.verdict import Verdict
from workbench.bundles.writer import ExportedBundle, export_bundle

__all__ = [
    "BundleError",
    "DataMismatch",
    "ExportedBundle",
    "ImportedBundle",
    "Verdict",
    "export_bundle",
    "import_bundle",
    "reproduce_bundle",
]
