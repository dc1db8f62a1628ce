"""Run `workbench` with a stopwatch on chosen functions, without a profiler's overhead (issue 14).

    python benchmarks/timeline.py OUT.json run recipe.yaml --store STORE -q

Each function in PHASES is wrapped (as its module finishes importing, so lazy imports inside the
workbench get the wrapped one) and its inclusive wall time and call count are added up; at exit
OUT.json holds {"process_s": since this script started, "phases": {name: [seconds, calls]}}.
Inclusive: a phase contains the imports it triggers on first use. Only Python-level wrappers are
added (one perf_counter pair per call), so the run's own timing is not disturbed.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()
STARTED_EPOCH = time.time()  # with "ended_epoch": the parent tells start-up and exit from the rest

import functools  # noqa: E402
import importlib.abc  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from collections import defaultdict  # noqa: E402

PHASES: dict[str, list[str]] = {
    "workbench.cli": ["main"],
    "workbench.recipe.loader": ["load_recipe"],
    "workbench.plan": ["build_plan"],
    "workbench.db.store": ["Store.open", "Store.start_run", "Store.start_step", "Store.finish_step", "Store.finish_run"],
    "workbench.executor": ["run_recipe", "_provenance", "_run_step", "_compute_result", "_record"],
    "workbench.bundles.provenance": ["run_provenance", "_package_version", "model_provenance"],
    "workbench.device": ["seed_everything"],
    "workbench.steps.extract": ["Extract.run", "HiddenStates.prepare", "HiddenStates.select", "HiddenStates.save", "HiddenStates.finish"],
    "workbench.steps.attention": ["Attention.run"],
    "workbench.steps.importance": ["Importance.run"],
    "workbench.context": ["StepContext.dataset", "StepContext.model"],
    "workbench.data.sources": ["load_dataset_spec"],
    "workbench.data.text_loading": ["_scan_local_files", "_load_with_datasets", "text_dataset"],
    "workbench.analysis.attention_stats": ["HeadStatistics.observe", "HeadStatistics.set_batch"],
    "workbench.models.loading": ["load_model", "_from_pretrained"],
    "workbench.models.attention": ["register_workbench_attention", "number_attention_modules"],
    "workbench.data.batching": ["encode_dataset", "tokenizer_fingerprint", "tokenised_key", "_write_tokenised", "_read_tokenised", "collate"],
    "workbench.analysis.features": ["pool", "LayerStatistics.add"],
    "workbench.analysis.importance": ["head_importance"],
    "workbench.cache": ["Cache.commit"],
}
TOTALS: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])


def _timed(function, name: str):  # type: ignore[no-untyped-def]
    @functools.wraps(function)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            entry = TOTALS[name]
            entry[0] += time.perf_counter() - started
            entry[1] += 1

    return wrapper


def _patch(module, names: list[str]) -> None:  # type: ignore[no-untyped-def]
    for dotted in names:
        owner_name, _, attribute = dotted.rpartition(".")
        owner = getattr(module, owner_name) if owner_name else module
        raw = owner.__dict__.get(attribute) if owner_name else getattr(module, attribute, None)
        if raw is None:
            continue
        label = f"{module.__name__}.{dotted}"
        if isinstance(raw, classmethod):
            setattr(owner, attribute, classmethod(_timed(raw.__func__, label)))
        elif isinstance(raw, staticmethod):
            setattr(owner, attribute, staticmethod(_timed(raw.__func__, label)))
        else:
            setattr(owner, attribute, _timed(raw, label))


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):  # type: ignore[no-untyped-def]
        if name not in PHASES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        original = loader.exec_module

        def exec_module(module):  # type: ignore[no-untyped-def]
            original(module)
            _patch(module, PHASES[name])

        loader.exec_module = exec_module
        return spec


def _write(path: str) -> None:
    with open(path, "w") as handle:
        json.dump({"process_s": time.perf_counter() - STARTED, "started_epoch": STARTED_EPOCH, "ended_epoch": time.time(),
                   "phases": dict(TOTALS)}, handle, indent=1)


def main() -> None:
    out, arguments = sys.argv[1], sys.argv[2:]
    sys.meta_path.insert(0, _Finder())
    sys.argv = ["workbench", *arguments]
    try:
        from workbench.cli import main as workbench_main

        workbench_main()
    except SystemExit as done:
        if done.code not in (0, None):
            _write(out)
            raise
    _write(out)


if __name__ == "__main__":
    main()
