"""Attention statistics as a user experiences them, against a plain eager transformers loop (issue 14).

Workload: the first --examples (default 3,000) SST-2 train sentences, MiniLM as a base model (no
task head, so no gradient panel), batch 32, max_length 128: the `attention` step's per-head
statistics with its defaults. Contenders, each its own fresh process (benchmarks/fresh.py):

    workbench run (fresh store)    `workbench run` on an empty store (`datasets` cache warm)
    workbench cached rerun         the same command again on that store
    plain eager loop               benchmarks/contenders/attention_loop.py: attn_implementation
                                   eager, output_attentions=True, the same length-sorted batches,
                                   the same statistics module folding the maps

The statistics of the last round are compared (tolerance 1e-5 of the largest value).
Target (whole process, fresh store): within 1.05x of the plain eager loop.

    .venv/bin/python benchmarks/bench_attention.py [--rounds 3] [--examples 3000]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import fresh

STEPS = """
attention:
  kind: attention
  dataset: data
  batch_size: {batch_size}
  gradients: false
"""
OURS = "workbench run (fresh store)"
PLAIN = "plain eager loop"
STATISTICS = ("entropy_smoothed", "self", "prev", "next", "first", "sep", "punct", "sep_to_sep", "other_to_sep", "cls_entropy_smoothed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    fresh.sst2_arguments(parser, examples=3000)
    args = parser.parse_args()
    recipe = fresh.sst2_recipe("bench-attention", STEPS, args)
    common = fresh.plain_arguments(args)
    with tempfile.TemporaryDirectory() as temporary:
        root = args.workdir or Path(temporary)
        env = fresh.datasets_cache(root / "hf-datasets")
        chosen = [
            fresh.workbench_contenders(recipe, "attention", env),
            fresh.Contender(PLAIN, lambda folder: fresh.plain_command("attention_loop.py", *common, "--out", folder / "statistics.safetensors"),
                            fresh.printed_step_time, env=env),
        ]
        measured = fresh.run_rounds(chosen, args.rounds, root, warmup=not args.no_warmup)
        last = root / str(args.rounds - 1)
        checks = fresh.compare_head_scores(last / fresh._slug(OURS) / "store", "attention",
                                           last / fresh._slug(PLAIN) / "statistics.safetensors", list(STATISTICS), 1e-5)
    print(f"\n== attention statistics: MiniLM 6x12 heads, {args.examples} SST-2 train sentences, batch {args.batch_size}; "
          f"{args.rounds} interleaved rounds, fresh processes\n")
    print(fresh.summary(measured, OURS, [PLAIN], {PLAIN: "<= 1.05"}))
    print("\nplain scripts' phases:\n" + fresh.phases(measured))
    print("\noutputs (last round), workbench vs plain eager loop:\n  " + "\n  ".join(checks))


if __name__ == "__main__":
    main()
