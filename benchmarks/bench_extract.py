"""extract as a user experiences it, against a plain transformers loop and nnsight (issue 14).

Workload: the first 2,000 SST-2 train sentences, MiniLM (all-MiniLM-L6-v2), batch 32, max_length
128, all 7 hidden states (embeddings + 6 layers) mean-pooled over real tokens, saved to disk.

Contenders, each its own fresh process (benchmarks/fresh.py says how they are timed and interleaved):

    workbench run (fresh store)          `workbench run recipe.yaml` on an empty store; `datasets`'
                                         own cache is warm (shared by the rounds, filled by the warm-up)
    workbench cached rerun               the same command again on that store (everything cached)
    workbench run (fresh store, cold datasets cache)   (--cold) also an empty `datasets` cache: a first run ever
    plain loop, dataset order            benchmarks/contenders/extract_loop.py --order dataset
    plain loop, length-sorted            benchmarks/contenders/extract_loop.py --order length (the
                                         workbench's batches: same padding, bit-identical features)
    nnsight                              benchmarks/contenders/extract_nnsight.py (layer outputs saved
                                         in a trace, length-sorted); skipped with a message without nnsight

After the rounds, the features of the last round are compared with the workbench's: bit-identical,
or the max |difference| is printed. Targets (whole process, fresh store): <= 1.0x the length-sorted
loop and <= 1.0x nnsight.

    .venv/bin/python benchmarks/bench_extract.py [--rounds 3] [--nnsight-python /path/to/venv/bin/python]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import fresh

STEPS = """
extract:
  kind: extract
  dataset: data
  layers: all
  pooling: mean
  batch_size: {batch_size}
"""
OURS = "workbench run (fresh store)"


def contenders(args: argparse.Namespace, root: Path) -> tuple[list[fresh.Contender], list[str]]:
    recipe = fresh.sst2_recipe("bench-extract", STEPS, args)
    common = fresh.plain_arguments(args)
    env = fresh.datasets_cache(root / "hf-datasets")
    chosen = [fresh.workbench_contenders(recipe, "extract", env)]
    if args.cold:
        chosen.append(fresh.workbench_contenders(recipe, "extract", fresh.fresh_datasets_cache, ", cold datasets cache"))
    for order, label in (("dataset", "plain loop, dataset order"), ("length", "plain loop, length-sorted")):
        chosen.append(fresh.Contender(
            label,
            lambda folder, order=order: fresh.plain_command("extract_loop.py", *common, "--order", order, "--out", folder / "features.safetensors"),
            fresh.printed_step_time, env=env,
        ))
    notes = []
    python = args.nnsight_python or sys.executable
    if fresh.python_has(python, "nnsight"):
        chosen.append(fresh.Contender(
            "nnsight",
            lambda folder: fresh.plain_command("extract_nnsight.py", *common, "--out", folder / "features.safetensors", python=python),
            fresh.printed_step_time, env=env,
        ))
    else:
        notes.append(fresh.NNSIGHT_SKIPPED)
        print(fresh.NNSIGHT_SKIPPED, flush=True)
    return chosen, notes


def compare(root: Path, last_round: int, names: list[str]) -> list[str]:
    """Each plain contender's features of the last round against the workbench's."""
    import numpy as np
    from safetensors.numpy import load_file

    import workbench as wb

    round_dir = root / str(last_round)
    features = wb.open_store(round_dir / fresh._slug(OURS) / "store").run("latest").features("extract")
    lines = []
    for name in names:
        path = round_dir / fresh._slug(name) / "features.safetensors"
        if not path.exists():
            continue
        theirs = load_file(str(path))
        identical, worst = True, 0.0
        for layer in features.layers:
            a, b = np.asarray(features.layer(layer)), theirs[f"layer_{layer}"]
            identical &= a.shape == b.shape and np.array_equal(a, b)
            worst = max(worst, float(np.abs(a.astype(np.float64) - b).max()))
        lines.append(f"{name}: {'bit-identical' if identical else 'NOT bit-identical'}, max |difference| {worst:.3e}"
                     f" over {len(features.layers)} layers x {features.layer(0).shape}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    fresh.sst2_arguments(parser, examples=2000)
    parser.add_argument("--cold", action="store_true", help="also a workbench run with an empty datasets cache")
    parser.add_argument("--nnsight-python", help="a Python that has nnsight (default: this one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        root = args.workdir or Path(temporary)
        chosen, notes = contenders(args, root)
        measured = fresh.run_rounds(chosen, args.rounds, root, warmup=not args.no_warmup)
        others = [c.name for c in chosen if c.name != OURS]
        checks = compare(root, args.rounds - 1, [name for name in others if not name.startswith("workbench")])
    print(f"\n== extract: MiniLM, {args.examples} SST-2 train sentences, batch {args.batch_size}, "
          f"all 7 hidden states mean-pooled; {args.rounds} interleaved rounds, fresh processes\n")
    targets = {"plain loop, length-sorted": "<= 1.0", "nnsight": "<= 1.0"}
    print(fresh.summary(measured, OURS, [name for name in others if not name.startswith("workbench")], targets))
    print("\nplain scripts' phases:\n" + fresh.phases(measured))
    print("\noutputs (last round):\n  " + "\n  ".join(checks + notes))


if __name__ == "__main__":
    main()
