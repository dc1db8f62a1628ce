"""Tokenisation reuse: a second step on the same dataset spends at most 5% of the first's tokenisation time (issue 10).

In a run, a text dataset is tokenised once with `datasets.map` into an Arrow file in the store's
cache/tokenised and read back memory-mapped (workbench/data/batching.py). Every figure is the wall
time of `encode_dataset` (tokenizer fingerprint, texts' hash, lock, map and write, or the read),
each in a fresh process that has already imported everything and loaded the dataset and tokenizer:

    first              an empty tokenised folder: tokenise and write the Arrow file
    second step        a second step of the same run asks again (same process)
    another process    a fresh process reads the file: a second run, or another rank of the run
    in memory          the path outside a run, as before: tokenise into Python lists, nothing written

Rounds are interleaved (each round a new folder; the in-memory process before or after the pair,
alternately); figures are the median over rounds with the IQR, ratios the median of per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, SST2_TRAIN, minilm_dir, report

sys.path.insert(0, str(REPO))


def child(mode: str, examples: int, max_length: int, folder: str | None) -> dict[str, float]:
    """One measurement, in this (fresh) process."""
    import transformers

    from workbench.data.batching import encode_dataset
    from workbench.data.sources import load_dataset_spec
    from workbench.recipe.schema import DatasetSpec

    spec = DatasetSpec(path="tsv", data_files=str(SST2_TRAIN), text="sentence", label="label", limit=examples, max_length=max_length)
    dataset = load_dataset_spec("train", spec, REPO)
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir())
    dataset.tokenised_dir = Path(folder) if folder else None
    started = time.perf_counter()
    encodings = encode_dataset(tokenizer, dataset, token_types=False)
    first = time.perf_counter() - started
    started = time.perf_counter()
    again = encode_dataset(tokenizer, dataset, token_types=False)  # what the run's next step does
    second = time.perf_counter() - started
    assert again is encodings and len(encodings) == examples
    return {"seconds": first, "second_step": second, "tokens": encodings.num_tokens}


def measure(mode: str, examples: int, max_length: int, folder: Path | None) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", mode, "--examples", str(examples), "--max-length", str(max_length)]
    if folder is not None:
        command += ["--folder", str(folder)]
    done = subprocess.run(command, check=True, capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", **os.environ})
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, nargs="+", default=[2000, 20000], help="SST-2 train sentences")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds per size")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.examples[0], args.max_length, args.folder)))
        return

    from workbench.analysis.timing import Spread, ratio, spread_warning

    for examples in args.examples:
        first, second, other, memory = [], [], [], []
        tokens = 0
        for round_number in range(args.repeats + 1):  # round 0 warms the OS file cache and the datasets cache
            with tempfile.TemporaryDirectory() as folder:
                if round_number % 2:
                    baseline = measure("memory", examples, args.max_length, None)
                cold = measure("first", examples, args.max_length, Path(folder))
                warm = measure("other", examples, args.max_length, Path(folder))
                if not round_number % 2:
                    baseline = measure("memory", examples, args.max_length, None)
                files = sorted(Path(folder).glob("*.arrow"))
                assert len(files) == 1, files
                size = files[0].stat().st_size
            if round_number == 0:
                continue
            first.append(cold["seconds"])
            second.append(cold["second_step"])
            other.append(warm["seconds"])
            memory.append(baseline["seconds"])
            tokens = int(cold["tokens"])
        spreads = {name: Spread(tuple(values)) for name, values in (("first", first), ("second", second), ("other", other), ("memory", memory))}

        def line(spread: Spread) -> str:
            q1, q3 = spread.quartiles
            return f"{1000 * spread.median:9.2f} ms  (IQR {1000 * q1:.2f}-{1000 * q3:.2f})"

        def share(spread: Spread) -> str:
            q1, q3 = spread.quartiles
            return f"{100 * spread.median:6.2f}%  (IQR {100 * q1:.2f}-{100 * q3:.2f}%)"

        other_share = ratio(spreads["other"], spreads["first"])
        second_share = ratio(spreads["second"], spreads["first"])
        rows = [
            ("first step: tokenise + write Arrow", line(spreads["first"])),
            ("second step, same run", line(spreads["second"])),
            ("another process (next run, other rank)", line(spreads["other"])),
            ("in memory, no file (the path outside a run)", line(spreads["memory"])),
            ("second step / first", share(second_share) + "  (target <= 5%)"),
            ("another process / first", share(other_share) + "  (target <= 5%)"),
            ("first / in memory", f"{ratio(spreads['first'], spreads['memory']).median:.2f}x  (the cost of writing the file)"),
            ("Arrow file", f"{size / 1e6:.2f} MB for {tokens:,} tokens"),
        ]
        warnings = [spread_warning(name, spread) for name, spread in spreads.items()]
        rows += [("warning", text) for text in warnings if text]
        report(
            f"tokenisation reuse: MiniLM tokenizer, {examples} SST-2 train sentences, max_length {args.max_length}, "
            f"median of {args.repeats} rounds, fresh processes",
            rows,
        )


if __name__ == "__main__":
    main()
