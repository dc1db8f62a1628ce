"""The registry of dataset kinds: a recipe dataset's `path:` -> the DatasetKind that reads it.

    text        tsv, and every other path (hub names, datasets builders, local folders)  kinds/text.py
    treebank    conllu                                                                  kinds/treebank.py
    code        python_code                                                             kinds/code.py
    agreement   agreement (generated; a text dataset to the steps)                      kinds/generated.py

A new dataset kind is one module here: a DatasetKind subclass (kinds/base.py says what to set:
its `kind` name, the `path:` names it reads, its capabilities, its `check` and `load`), plus its
instance in KINDS below. Nothing else names it: sources.py checks, fingerprints and loads through
`kind_for`, OWN_SOURCES is the union of the kinds' paths, and the steps ask for capabilities
(`kind_for(spec.path).supports("dependency_trees")` when a recipe is checked,
`ctx.dataset(name, needs="dependency_trees")` or `dataset.supports(...)` when it runs), so a new
kind with a capability is accepted by every step that needs that capability. A new capability is
one line in kinds/base.py's `Capability`.

Pre-split words, sentence pairs and labels are capabilities or spec fields, not kinds: a text
dataset with `text: [a, b]` is a sentence-pair dataset (data/batching.py).
"""

from __future__ import annotations

from workbench.data.kinds.base import CAPABILITIES, Capability, DatasetKind
from workbench.data.kinds.code import CodeKind
from workbench.data.kinds.generated import AgreementKind
from workbench.data.kinds.text import TextKind
from workbench.data.kinds.treebank import TreebankKind

TEXT = TextKind()  # the fallback: any path no kind names is read by datasets.load_dataset
KINDS: tuple[DatasetKind, ...] = (TEXT, TreebankKind(), CodeKind(), AgreementKind())

_BY_PATH: dict[str, DatasetKind] = {}
for _kind in KINDS:
    for _path in _kind.paths:
        if _path in _BY_PATH:
            raise TypeError(f"dataset path '{_path}' is claimed by {_BY_PATH[_path]!r} and {_kind!r}")
        _BY_PATH[_path] = _kind
del _kind, _path

OWN_PATHS: tuple[str, ...] = tuple(_BY_PATH)  # the `path:` names the workbench reads itself, in registry order

__all__ = ["CAPABILITIES", "KINDS", "OWN_PATHS", "Capability", "DatasetKind", "kind_description", "kind_for", "kind_named", "kinds_with", "paths_with"]


def kind_for(path: str) -> DatasetKind:
    """The kind that reads a recipe dataset's `path:` (the text kind for every path no kind names)."""
    return _BY_PATH.get(path, TEXT)


def kind_named(name: str) -> DatasetKind:
    """The first kind (in registry order) whose `kind` name is `name`: "text" gives the text kind."""
    for kind in KINDS:
        if kind.kind == name:
            return kind
    raise KeyError(name)


def kinds_with(capability: Capability) -> list[DatasetKind]:
    """The kinds whose loaded datasets have `capability`, in registry order."""
    return [kind for kind in KINDS if kind.supports(capability)]


def paths_with(capability: Capability) -> str:
    """The own `path:` names whose datasets have `capability`, for messages: 'conllu', 'conllu or python_code'."""
    return " or ".join(path for kind in kinds_with(capability) for path in kind.paths)


def kind_description(kind: str | None = None, *, capability: Capability | None = None) -> str:
    """How messages name a kind ('treebank (path: conllu)'), or the kinds with a capability ('... or ...')."""
    chosen = kinds_with(capability) if capability is not None else [k for k in KINDS if k.kind == kind]
    if not chosen:
        raise KeyError(kind)
    return " or ".join(dict.fromkeys(k.description for k in chosen))
