"""Head importance as users run it: a fresh `workbench run` against the reference's loop and a
forward-only pass over the same tokens, each in its own fresh process, interleaved (issue 10).

Workload: the reference configuration, one group of 256 SST-2 training sentences (batch
granularity, batch_size 256), max_length 128, MiniLM.

Contenders (every one a new Python process; its own compute time and its whole wall time):
  workbench  `workbench run` of a one-step recipe on a fresh store; the step accumulates the
             group's signed gradient over length-sorted micro-batches of 32, gates only
  reference  the reference script's loop (run_bertology.py's compute_heads_importance): the
             whole group as one forward padded to max_length, every parameter requiring grad,
             eager attention, one backward. The unmodified script needs transformers 4.x
             (head_mask), which this project does not run on, so this is its loop on our model
             (analysis.importance.head_importance(naive=True)).
  forward    a forward pass alone (inference mode, length-sorted batches of 32, sdpa): the floor.

Prints medians with IQR over the interleaved rounds and the per-round ratios; checks that the
workbench's normalised scores match the reference loop's within 1e-5. Target: workbench <= 0.25x
the reference.
"""

from __future__ import annotations

import argparse
import json
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
    max_length: {max_length}
steps:
  importance:
    kind: importance
    dataset: sst2
    granularity: batch
    batch_size: {examples}
    micro_batch_size: 32
"""

# The other contenders: the same tokens, the same model, timed around the computation.
CONTENDER = r"""
import json, sys, time
import torch
sys.path.insert(0, {benchmarks!r})
from common import SST2_TRAIN, minilm_dir, sst2_sentences
from workbench.analysis.importance import head_importance
from workbench.analysis.tasks import TaskData
from workbench.data.batching import batch_order, collate, encode_texts
from workbench.device import seed_everything
from workbench.models.loading import load_model

seed_everything(1)  # the recipe's seed, as the executor seeds a step: the same new classifier head
loaded = load_model(str(minilm_dir()), head="sequence-classification", num_labels=2)
sentences, labels = sst2_sentences(SST2_TRAIN, {examples})
encodings = encode_texts(loaded.tokenizer, [(s,) for s in sentences], {max_length}, token_types=False)
task = TaskData(encodings, torch.tensor(labels), "classification")
started = time.perf_counter()
if {mode!r} == "reference":
    result = head_importance(loaded, task, {examples}, granularity="batch", naive=True)
    scores = result.importance.tolist()
else:
    with torch.inference_mode():
        for indices in batch_order(encodings.lengths, 32):
            loaded.model(**collate(encodings, indices).model_inputs())
    scores = None
print(json.dumps({{"seconds": time.perf_counter() - started, "scores": scores}}))
"""


def _env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    env["HF_HUB_OFFLINE"] = "1"
    return env


def workbench_round(recipe: Path, store: Path) -> tuple[float, float, list]:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "workbench", "run", str(recipe), "--store", str(store), "-q"], check=True, capture_output=True, env=_env(), cwd=REPO)
    wall = time.perf_counter() - started
    import workbench as wb

    run = wb.open_store(store).run("latest")
    step = run.step("importance")
    return step.duration_s, wall, run.head_scores("importance", step="importance").tolist()


def contender_round(mode: str, examples: int, max_length: int) -> tuple[float, float, list | None]:
    code = CONTENDER.format(benchmarks=str(Path(__file__).parent), examples=examples, max_length=max_length, mode=mode)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=_env(), cwd=REPO)
    wall = time.perf_counter() - started
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    return answer["seconds"], wall, answer["scores"]


def spread(values: list[float]) -> str:
    quartiles = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    return f"{statistics.median(values):.2f} [IQR {quartiles[0]:.2f}-{quartiles[2]:.2f}]"


def main() -> None:
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, list[tuple[float, float]]] = {"workbench": [], "reference": [], "forward": []}
    difference = float("nan")
    with tempfile.TemporaryDirectory() as folder:
        recipe = write_recipe(Path(folder), classifier_recipe("bench-importance", minilm_dir(), BODY.format(data=SST2_TRAIN, examples=args.examples, max_length=args.max_length)))
        for round_ in range(args.rounds):
            compute, wall, ours = workbench_round(recipe, Path(folder) / f"store-{round_}")
            times["workbench"].append((compute, wall))
            compute, wall, reference = contender_round("reference", args.examples, args.max_length)
            times["reference"].append((compute, wall))
            compute, wall, _ = contender_round("forward", args.examples, args.max_length)
            times["forward"].append((compute, wall))
            difference = float(np.nanmax(np.abs(np.asarray(ours) - np.asarray(reference))))
            print(f"  round {round_ + 1}: " + ", ".join(f"{name} {values[-1][0]:.2f} s ({values[-1][1]:.2f} s whole)" for name, values in times.items()), flush=True)
    rows = []
    for name, values in times.items():
        rows.append((f"{name}: compute s", spread([c for c, _ in values])))
        rows.append((f"{name}: whole process s", spread([w for _, w in values])))
    for other in ("reference", "forward"):
        ratios = [ours[0] / theirs[0] for ours, theirs in zip(times["workbench"], times[other])]
        whole = [ours[1] / theirs[1] for ours, theirs in zip(times["workbench"], times[other])]
        target = "  (target <= 0.25)" if other == "reference" else ""
        rows.append((f"workbench / {other}, compute", spread(ratios) + target))
        rows.append((f"workbench / {other}, whole process", spread(whole)))
    rows.append(("max |normalised difference| workbench vs reference", f"{difference:.2e}  (target <= 1e-5)"))
    report(f"importance, one group of {args.examples} SST-2 sentences, max_length {args.max_length}, {args.rounds} interleaved rounds of fresh processes", rows)


if __name__ == "__main__":
    main()
