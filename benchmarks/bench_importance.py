"""Head importance as a user experiences it, against a plain gate-only backward loop (issues 3, 14).

Workload: the first --examples (default 1,500) SST-2 train sentences with their labels, MiniLM with a
new 2-class head (seed 1), batch 32, max_length 128: the `importance` step with its defaults
(granularity example: one gate per example, attention entropy in the same pass, the reference
normalisation). Contenders, each its own fresh process (benchmarks/fresh.py):

    workbench run (fresh store)    `workbench run` on an empty store (`datasets` cache warm)
    workbench cached rerun         the same command again on that store
    plain gate-only loop           benchmarks/contenders/importance_loop.py: gates on each head's
                                   output by a forward pre-hook, parameters frozen, one
                                   torch.autograd.grad to the gates per length-sorted batch, eager
                                   attention (output_attentions) for the entropy
    plain naive loop               (--naive) the same with every parameter requiring grad and every
                                   batch padded to max_length: issue 3's baseline (target >= 5x)

Scores of the last round are compared (tolerance 1e-5 of the largest value). Target (whole
process, fresh store): within 1.05x of the plain gate-only loop.

    .venv/bin/python benchmarks/bench_importance.py [--rounds 3] [--examples 1500] [--naive]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import fresh

STEPS = """
importance:
  kind: importance
  dataset: data
  batch_size: {batch_size}
"""
OURS = "workbench run (fresh store)"
PLAIN = "plain gate-only loop"
NAIVE = "plain naive loop"
SCORES = ("importance", "importance_raw", "entropy_per_token")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    fresh.sst2_arguments(parser, examples=1500)
    parser.add_argument("--naive", action="store_true", help="also the naive baseline (slow: full backward, padded)")
    args = parser.parse_args()
    recipe = fresh.sst2_recipe("bench-importance", STEPS, args, classifier=True)
    common = fresh.plain_arguments(args) + ["--seed", 1]
    with tempfile.TemporaryDirectory() as temporary:
        root = args.workdir or Path(temporary)
        env = fresh.datasets_cache(root / "hf-datasets")
        chosen = [
            fresh.workbench_contenders(recipe, "importance", env),
            fresh.Contender(PLAIN, lambda folder: fresh.plain_command("importance_loop.py", *common, "--out", folder / "scores.safetensors"),
                            fresh.printed_step_time, env=env),
        ]
        if args.naive:
            chosen.append(fresh.Contender(
                NAIVE, lambda folder: fresh.plain_command("importance_loop.py", *common, "--naive", "--out", folder / "scores.safetensors"),
                fresh.printed_step_time, env=env))
        measured = fresh.run_rounds(chosen, args.rounds, root, warmup=not args.no_warmup)
        last = root / str(args.rounds - 1)
        checks = []
        for name in [PLAIN] + ([NAIVE] if args.naive else []):
            found = fresh.compare_head_scores(last / fresh._slug(OURS) / "store", "importance",
                                              last / fresh._slug(name) / "scores.safetensors", list(SCORES), 1e-5)
            checks += [f"vs {name}: {line}" for line in found]
    print(f"\n== importance: MiniLM 6x12 heads, {args.examples} SST-2 train sentences, batch {args.batch_size}, "
          f"granularity example + entropy; {args.rounds} interleaved rounds, fresh processes\n")
    print(fresh.summary(measured, OURS, [PLAIN] + ([NAIVE] if args.naive else []), {PLAIN: "<= 1.05", NAIVE: "<= 0.2 (>= 5x)"}))
    print("\nplain scripts' phases:\n" + fresh.phases(measured))
    print("\noutputs (last round):\n  " + "\n  ".join(checks))


if __name__ == "__main__":
    main()
