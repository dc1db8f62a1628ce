"""A fully cached rerun over a 1 GB checkpoint costs what it costs over a tiny one (issue 10).

Two models of the same shape but for the vocabulary: a small one (~9 MB of weights) and one whose
random embedding matrix makes model.safetensors ~1 GB. The same recipe (evaluate and attention on 64
SST-2 sentences from a local TSV) is run over each once to fill the cache; then both are rerun,
fully cached, each as a fresh `workbench run` process as a user types it, in alternating rounds
(small big, big small, ...) after a warm-up round. Without the state table of file hashes
(workbench/db/file_hashes.py) every rerun would read the whole checkpoint to fingerprint it: a
third contender reruns the big model with WORKBENCH_HASH_STATE=off to show that cost.

Target: the big rerun <= 2 s, and the per-round ratio big / small near 1. Everything is written in
a temporary folder (or --workdir) and removed at the end, the gigabyte included.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import SST2_DEV, classifier_recipe, minilm_dir, report, sst2_sentences, write_recipe

HIDDEN = 64
BODY = """
datasets:
  dev:
    path: tsv
    data_files: {data}
    text: sentence
    label: label
steps:
  evaluate:
    kind: evaluate
    dataset: dev
  attention:
    kind: attention
    dataset: dev
"""


def build_model(folder: Path, vocab_size: int) -> int:
    """A 2-layer BERT with random weights and MiniLM's tokenizer; returns the weights' size in bytes."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=vocab_size, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=4 * HIDDEN, num_labels=2,
    )
    transformers.BertForSequenceClassification(config).save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(minilm_dir()).save_pretrained(folder)
    return (folder / "model.safetensors").stat().st_size


def workbench_command() -> list[str]:
    script = Path(sys.executable).parent / "workbench"  # the console script, as a user runs it
    return [str(script)] if script.is_file() else [sys.executable, "-m", "workbench.cli"]


def timed_run(recipe: Path, store: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall-clock seconds of one `workbench run` process, and its CPU seconds (user + system): on a
    shared machine the second says what the process cost when the first waited for a core."""
    cpu_before = _children_cpu()
    started = time.perf_counter()
    done = subprocess.run([*workbench_command(), "run", str(recipe), "--store", str(store), "-q"],
                          cwd=recipe.parent, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"workbench run {recipe.name} failed:\n{done.stdout}\n{done.stderr}")
    return elapsed, _children_cpu() - cpu_before


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def uncached_runs(store: Path, env: dict[str, str]) -> list[str]:
    """Runs after the first two (the fills) that computed a step, with the step and its warnings."""
    def workbench(*args: str):  # type: ignore[no-untyped-def]
        command = [*workbench_command(), *args, "--store", str(store)]
        return json.loads(subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout)

    runs = sorted(workbench("runs", "--json"), key=lambda run: run["id"])[2:]
    found = []
    for run in runs:
        if run["cached"] != run["steps"]:
            steps = workbench("show", str(run["id"]), "--json")["steps"]
            computed = [
                f"{step['id']} {step['key'][:12]} {step['data'].get('warnings', '')}" for step in steps if step["status"] != "cached"
            ]
            found.append(f"run {run['id']} ({run['recipe']}): {'; '.join(computed)}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gigabytes", type=float, default=1.0, help="size of the big checkpoint")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds after the warm-up round")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the folder (models, store) to look into")
    args = parser.parse_args()

    from workbench.analysis.timing import Spread, ratio
    from workbench.hashing import read_sha256

    folder = Path(tempfile.mkdtemp(prefix="bench-cached-big-", dir=args.workdir))
    try:
        sentences, labels = sst2_sentences(SST2_DEV, 64)
        data = folder / "dev.tsv"
        data.write_text("sentence\tlabel\n" + "".join(f"{s}\t{l}\n" for s, l in zip(sentences, labels)))
        big_vocab = int(args.gigabytes * 1e9 / (HIDDEN * 4))  # float32 embedding rows
        sizes = {"small": build_model(folder / "small", 30522), "big": build_model(folder / "big", big_vocab)}
        recipes = {
            name: write_recipe(folder / name, classifier_recipe(f"cached-{name}", folder / name, BODY.format(data=data))) for name in sizes
        }
        store = folder / "store"
        # The state table in this folder, so that it goes with the rest; the code path is the default's.
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "WORKBENCH_HASH_STATE": str(folder / "file-hashes.sqlite")}

        fills = {name: timed_run(recipes[name], store, env)[0] for name in ("small", "big")}
        started = time.perf_counter()
        read_sha256(folder / "big" / "model.safetensors")  # what each rerun would cost without the memo
        hash_s = time.perf_counter() - started

        # The third contender reruns the big model with the state table off: what it saves.
        contenders = {"small": (recipes["small"], env), "big": (recipes["big"], env),
                      "big, no state": (recipes["big"], {**env, "WORKBENCH_HASH_STATE": "off"})}
        times: dict[str, list[float]] = {name: [] for name in contenders}
        cpu: dict[str, list[float]] = {name: [] for name in contenders}
        for recipe, run_env in contenders.values():  # warm-up round: page cache, .pyc files
            timed_run(recipe, store, run_env)
        for round_number in range(args.repeats):
            for name in list(contenders) if round_number % 2 == 0 else reversed(list(contenders)):
                recipe, run_env = contenders[name]
                wall, seconds = timed_run(recipe, store, run_env)
                times[name].append(wall)
                cpu[name].append(seconds)
        computed = uncached_runs(store, env)
        if computed:
            raise SystemExit("reruns that were not fully cached (the timings are void):\n  " + "\n  ".join(computed))
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)

    small, big, off = (Spread(tuple(times[name])) for name in ("small", "big", "big, no state"))
    per_round = ratio(big, small)
    small_cpu, big_cpu, off_cpu = (Spread(tuple(cpu[name])) for name in ("small", "big", "big, no state"))

    def spread(value: Spread, unit: str = " s") -> str:
        q1, q3 = value.quartiles
        return f"{value.median:.3f}{unit} (IQR {q1:.3f}-{q3:.3f}, median of {args.repeats})"

    report(
        f"fully cached rerun, fresh `workbench run` processes, interleaved ({args.repeats} rounds after a warm-up)",
        [
            ("weights", f"small {sizes['small'] / 1e6:.1f} MB, big {sizes['big'] / 1e9:.2f} GB"),
            ("first runs (fill the cache)", f"small {fills['small']:.2f} s, big {fills['big']:.2f} s"),
            ("sha256 of the big weights, read now", f"{hash_s:.2f} s  (what a rerun without the memo adds)"),
            ("rerun, small model", spread(small)),
            ("rerun, big model", spread(big) + ("  target <= 2 s: ok" if big.median <= 2 else "  target <= 2 s: MISSED")),
            ("big / small, per round", spread(per_round, "") + "  (target: near 1)"),
            ("rerun, big model, state table off", spread(off) + f"  ({ratio(off, small).median:.2f}x the small rerun)"),
            ("CPU time: small, big, big without state", f"{small_cpu.median:.3f} s, {big_cpu.median:.3f} s, "
             f"{off_cpu.median:.3f} s (big / small {ratio(big_cpu, small_cpu).median:.3f})"),
            ("load average (1 min) after the reruns", f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"),
        ],
    )


if __name__ == "__main__":
    main()
