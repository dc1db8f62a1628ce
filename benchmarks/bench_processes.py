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

from common import REPO, SST2_TRAIN, minilm_dir, report, write_recipe

RECIPE = """
version: 1
name: bench-processes
seed: 1
device: cpu
model:
  id: {model}
  head: sequence-classification
  num_labels: 2
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


def run_once(recipe: Path, store: Path, processes: int) -> dict[str, float]:
    """One fresh `workbench run`; wall seconds and each step's seconds as the store recorded them."""
    env = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    env["HF_HUB_OFFLINE"] = "1"
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
        recipe = write_recipe(root, RECIPE.format(model=minilm_dir(), data=SST2_TRAIN, examples=args.examples))
        measured: dict[int, list[dict[str, float]]] = {1: [], 2: []}
        for repeat in range(args.repeats):
            for processes in (1, 2):  # interleaved
                store = root / f"store-{processes}-{repeat}"
                measured[processes].append(run_once(recipe, store, processes))
                print(f"  repeat {repeat + 1}, {processes} process(es): " + ", ".join(f"{k} {v:.1f} s" for k, v in measured[processes][-1].items()), flush=True)
        difference, identical = same_outputs(root / f"store-1-{args.repeats - 1}", root / f"store-2-{args.repeats - 1}")
    rows = []
    for name in (*STEPS, "wall"):
        one = [timing[name] for timing in measured[1]]
        two = [timing[name] for timing in measured[2]]
        ratios = [a / b for a, b in zip(one, two)]  # per interleaved pair
        label = f"step {name}" if name != "wall" else "whole run (fresh process)"
        rows.append((f"{label}: 1 process, s", spread(one)))
        rows.append((f"{label}: 2 processes, s", spread(two)))
        rows.append((f"{label}: speed-up (1 / 2), per pair", spread(ratios) + ("  (target >= 1.7)" if name != "wall" else "")))
    rows.append(("normalised importance, max |1 - 2 processes|", f"{difference:.2e}  (target <= 1e-6)"))
    rows.append(("features bit-identical", str(identical)))
    report(f"--processes 2 vs 1 on {os.cpu_count()} cores, {args.examples} SST-2 sentences, {args.repeats} interleaved repeats", rows)


if __name__ == "__main__":
    main()
