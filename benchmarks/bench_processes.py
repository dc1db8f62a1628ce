"""`--processes 2` against one process: importance and extract over 2,000 SST-2 sentences (issue 10).

Each contender is a fresh `workbench run` process in a fresh store, as a user runs it, and the
two are interleaved (1, 2, 1, 2, ...) so that a noisy neighbour slows both alike. One process uses
every core (torch's default); each of the two processes gets half of them (OMP_NUM_THREADS, as
`--processes` sets it), so the comparison is fair. Step times come from the store (the time each
step took inside the run); wall times include start-up, model loading and the launcher.

After the timings, the outputs of the last pair are compared: normalised importance within 1e-6,
features bit-identical. Target: speed-up >= 1.7 on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, SST2_TRAIN, classifier_recipe, minilm_dir, report, write_recipe

BODY = """
datasets:
  sst2:
    path: tsv
    data_files: {data}
    text: sentence
    label: label
    limit: {examples}
    max_length: 66
steps:
  importance:
    kind: importance
    dataset: sst2
    batch_size: 32
  extract:
    kind: extract
    dataset: sst2
    pooling: mean
    batch_size: 64
"""
STEPS = ("importance", "extract")


def run_once(recipe: Path, store: Path, processes: int, threads: int | None = None) -> dict[str, float]:
    """One fresh `workbench run`; wall seconds and each step's seconds as the store recorded them.

    `threads`: OMP_NUM_THREADS for a one-process run (None: torch's default, every core).
    """
    env = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    env["HF_HUB_OFFLINE"] = "1"
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable, "-m", "workbench", "run", str(recipe), "--store", str(store), "-q"]
    if processes > 1:
        command += ["--processes", str(processes)]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env, cwd=REPO)
    timings = {"wall": time.perf_counter() - started}
    from workbench.db.store import Store

    db = Store.open(store)
    run = db.get_run(db.list_runs(1)[0].id)
    timings.update({step.step_id: step.duration_s for step in run.steps})
    return timings


def spread(values: list[float]) -> str:
    """median [IQR low - high]"""
    if len(values) < 2:
        return f"{values[0]:.2f}"
    quartiles = statistics.quantiles(values, n=4, method="inclusive")
    return f"{statistics.median(values):.2f} [{quartiles[0]:.2f}-{quartiles[2]:.2f}]"


def same_outputs(one: Path, two: Path) -> tuple[float, bool]:
    """(max |difference| of normalised importance, features bit-identical) between two stores."""
    import numpy as np

    import workbench as wb

    a, b = wb.open_store(one).run("latest"), wb.open_store(two).run("latest")
    importance = float(np.nanmax(np.abs(a.head_scores("importance", step="importance") - b.head_scores("importance", step="importance"))))
    fa, fb = a.features("extract"), b.features("extract")
    identical = all(np.array_equal(fa.layer(layer), fb.layer(layer)) for layer in fa.layers)
    return importance, identical


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        recipe = write_recipe(root, classifier_recipe("bench-processes", minilm_dir(), BODY.format(data=SST2_TRAIN, examples=args.examples)))
        # 1: one process on every core (the fair baseline: the same cores); "1x1": one process on one
        # core (what each of the two ranks gets: the parallel efficiency); 2: --processes 2.
        contenders = {"1": (1, None), "1x1": (1, 1), "2": (2, None)}
        measured: dict[str, list[dict[str, float]]] = {name: [] for name in contenders}
        for repeat in range(args.repeats):
            for name, (processes, threads) in contenders.items():  # interleaved
                store = root / f"store-{name}-{repeat}"
                measured[name].append(run_once(recipe, store, processes, threads))
                print(f"  repeat {repeat + 1}, {name}: " + ", ".join(f"{k} {v:.1f} s" for k, v in measured[name][-1].items()), flush=True)
        difference, identical = same_outputs(root / f"store-1-{args.repeats - 1}", root / f"store-2-{args.repeats - 1}")
    rows = []
    labels = {"1": "1 process, all cores", "1x1": "1 process, 1 thread", "2": "2 processes"}
    for name in (*STEPS, "wall"):
        label = f"step {name}" if name != "wall" else "whole run (fresh process)"
        for contender in contenders:
            rows.append((f"{label}: {labels[contender]}, s", spread([timing[name] for timing in measured[contender]])))
        for baseline in ("1", "1x1"):
            ratios = [a[name] / b[name] for a, b in zip(measured[baseline], measured["2"])]  # per interleaved round
            target = "  (target >= 1.7)" if name != "wall" and baseline == "1" else ""
            rows.append((f"{label}: speed-up vs {labels[baseline]}", spread(ratios) + target))
    rows.append(("normalised importance, max |1 - 2 processes|", f"{difference:.2e}  (target <= 1e-6)"))
    rows.append(("features bit-identical", str(identical)))
    report(f"--processes 2 vs 1 on {os.cpu_count()} cores, {args.examples} SST-2 sentences, {args.repeats} interleaved repeats", rows)


if __name__ == "__main__":
    main()
