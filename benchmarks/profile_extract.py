"""Where a fresh `workbench run` of the extract benchmark spends its time (issue 14).

Runs, each as its own fresh process on a fresh store (`datasets` cache warmed once first, as in
bench_extract.py; --cold: also a run with an empty `datasets` cache):

  1. `python -X importtime workbench run ...` and the plain length-sorted loop the same way: the
     imports of each, by top-level package, and what the workbench imports that the loop does not;
  2. `python -m cProfile -o ... workbench run ...`: the time of each phase of the run (inclusive
     of whatever it imports on first use), from a fixed list of workbench functions;
  3. the same run without a profiler, for its wall time and the step time its store recorded.

Profiler overhead inflates Python-heavy phases (imports especially); compare phases with each
other and with the un-profiled wall time, not with the plain loop's phases.

    .venv/bin/python benchmarks/profile_extract.py [--workdir DIR] [--cold] [--top 25]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import defaultdict
from pathlib import Path

import fresh
from bench_extract import RECIPE
from common import SST2_TRAIN, minilm_dir

_FOUND = importlib.util.find_spec("workbench")  # the workbench a run imports (PYTHONPATH may name a snapshot)
REPO = Path(list(_FOUND.submodule_search_locations)[0]).parent if _FOUND else Path(__file__).resolve().parents[1]
TIMELINE = Path(__file__).resolve().parent / "timeline.py"

# (label, function as module.qualname): inclusive time of each (first-use imports included).
# Indented labels are parts of the label above them. A function that no longer exists prints "-".
PHASES = [
    ("workbench.cli main (all but interpreter start-up and `import workbench.cli`)", "workbench.cli.main"),
    (" recipe: load + validate", "workbench.recipe.loader.load_recipe"),
    (" plan (step keys, dataset and model fingerprints)", "workbench.plan.build_plan"),
    (" store: open (schema created by alembic migrations)", "workbench.db.store.Store.open"),
    (" provenance", "workbench.executor._provenance"),
    ("  version of the pkg: model's package", "workbench.bundles.provenance._package_version"),
    (" run the step (executor._run_step)", "workbench.executor._run_step"),
    ("  before Extract.run: `import torch` (workbench.device), seeding", "workbench.executor._compute_result"),
    ("  Extract.run", "workbench.steps.extract.Extract.run"),
    ("   dataset (ctx.dataset)", "workbench.context.StepContext.dataset"),
    ("    scan the whole TSV by hand (_scan_local_files)", "workbench.data.text_loading._scan_local_files"),
    ("    `import datasets` + load_dataset (_load_with_datasets)", "workbench.data.text_loading._load_with_datasets"),
    ("   model (ctx.model)", "workbench.context.StepContext.model"),
    ("    register_workbench_attention (imports transformers.modeling_utils)", "workbench.models.attention.register_workbench_attention"),
    ("    from_pretrained (_from_pretrained)", "workbench.models.loading._from_pretrained"),
    ("    probe forward (number_attention_modules)", "workbench.models.attention.number_attention_modules"),
    ("   tokenise (encode_dataset)", "workbench.data.batching.encode_dataset"),
    ("    tokenizer fingerprint", "workbench.data.batching.tokenizer_fingerprint"),
    ("    datasets.map into the Arrow file (_write_tokenised)", "workbench.data.batching._write_tokenised"),
    ("   batches (collate)", "workbench.data.batching.collate"),
    ("   forward passes + stacking hidden states (HiddenStates.select)", "workbench.steps.extract.HiddenStates.select"),
    ("   pooling (features.pool)", "workbench.analysis.features.pool"),
    ("   layer statistics (LayerStatistics.add)", "workbench.analysis.features.LayerStatistics.add"),
    ("   write the shards (HiddenStates.save)", "workbench.steps.extract.HiddenStates.save"),
    ("  cache entry: Cache.commit (hash, manifest, rename)", "workbench.cache.Cache.commit"),
    ("  store: record the step (_record)", "workbench.executor._record"),
    (" store: finish the run", "workbench.db.store.Store.finish_run"),
]
BEFORE_RUN = "  before Extract.run: `import torch` (workbench.device), seeding"


def recipe_text(examples: int) -> str:
    return textwrap.dedent(RECIPE).lstrip().format(data=SST2_TRAIN, examples=examples, max_length=128, batch_size=32)


OTHERS: list[float] = []  # others' CPU seconds during each run


EDGES: list[tuple[float, float]] = []  # (interpreter start-up, exit after main) of each timeline run, s


def run(command: list[str], folder: Path, env: dict[str, str]) -> tuple[float, str]:
    fresh.wait_for_quiet()
    spawned = time.time()
    before, machine = resource.getrusage(resource.RUSAGE_CHILDREN), fresh.busy_cpu_seconds()
    started = time.perf_counter()
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    mine = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    OTHERS.append(max(fresh.busy_cpu_seconds() - machine - mine, 0.0))
    ended = time.time()
    timeline = next((Path(a) for a in command if a.endswith(".json")), None)
    if timeline is not None and timeline.exists():
        marks = json.loads(timeline.read_text())
        EDGES.append((marks["started_epoch"] - spawned, ended - marks["ended_epoch"]))
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return wall, done.stderr


def importtime(stderr: str) -> dict[str, float]:
    """Seconds spent executing each top-level package's modules while importing them (self time)."""
    packages: dict[str, float] = defaultdict(float)
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, own, _, name = line.replace("import time:", "|").split("|")
        packages[name.strip().split(".")[0]] += int(own) / 1e6
    return dict(packages)


def _subtract(rows: dict[str, float | None]) -> dict[str, float | None]:
    """The 'before Extract.run' row is _compute_result minus Extract.run."""
    whole, inner = rows.get(BEFORE_RUN), rows.get("  Extract.run")
    if whole is not None and inner is not None:
        rows[BEFORE_RUN] = whole - inner
    return rows


def profile_phases(profile: Path) -> dict[str, float | None]:
    """Inclusive times of PHASES from a cProfile file."""
    stats = pstats.Stats(str(profile)).stats  # type: ignore[attr-defined]
    rows: dict[str, float | None] = {}
    for label, target in PHASES:
        module, qualname = _split(target)
        suffix = module.replace(".", "/") + ".py"
        owner, _, name = qualname.rpartition(".")
        found = [
            value[3]
            for (file, line, function), value in stats.items()
            if file.endswith(suffix) and function == name and (not owner or _defines(file, line, owner))
        ]
        rows[label] = max(found) if found else None
    return _subtract(rows)


def timeline_phases(files: list[Path]) -> tuple[dict[str, float | None], float]:
    """Median over runs of each phase's inclusive time (benchmarks/timeline.py), and of the process time."""
    runs = [json.loads(path.read_text()) for path in files]
    rows: dict[str, float | None] = {}
    for label, target in PHASES:
        values = [run["phases"][target][0] for run in runs if target in run["phases"]]
        rows[label] = statistics.median(values) if values else None
    return _subtract(rows), statistics.median(run["process_s"] for run in runs)


def _split(target: str) -> tuple[str, str]:
    """'workbench.steps.extract.Extract.run' -> ('workbench.steps.extract', 'Extract.run')."""
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:cut])
        if (REPO / (module.replace(".", "/") + ".py")).exists():
            return module, ".".join(parts[cut:])
    return ".".join(parts[:-1]), parts[-1]


def _defines(file: str, line: int, owner: str) -> bool:
    """Whether the function at file:line is a method of class `owner` (the nearest class above it)."""
    try:
        source = Path(file).read_text().splitlines()[: line - 1]
    except OSError:
        return False
    for text in reversed(source):
        if text.startswith("class "):
            return text[6:].split("(")[0].split(":")[0].strip() == owner
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3, help="timed (un-profiled) runs of each side")
    parser.add_argument("--workdir", type=Path, help="keep the stores and profiles here (default: a temporary folder)")
    parser.add_argument("--cold", action="store_true", help="also profile a run with an empty datasets cache")
    parser.add_argument("--top", type=int, default=25, help="import rows to print")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        root = args.workdir or Path(temporary)
        root.mkdir(parents=True, exist_ok=True)
        (root / "recipe.yaml").write_text(recipe_text(args.examples))
        env = fresh.datasets_cache(root / "hf-datasets")(root)
        script = fresh.workbench_command()[-1]  # the console script

        def wb(store: str, *python_options: str, program: str = script) -> list[str]:
            return [sys.executable, *python_options, program, *([str(root / f"{store}.json")] if program != script else []),
                    "run", str(root / "recipe.yaml"), "--store", str(root / store), "-q"]

        run(wb("warm-up"), root, env)  # fills the datasets cache and the page cache
        plain = fresh.plain_command("extract_loop.py", "--model", minilm_dir(), "--data", SST2_TRAIN,
                                    "--examples", args.examples, "--order", "length", "--out", root / "plain.safetensors")
        walls, plain_walls, steps = [], [], []
        for number in range(args.runs):  # interleaved, un-profiled
            wall, _ = run(wb(f"timeline-{number}", program=str(TIMELINE)), root, env)
            walls.append(wall)
            steps.append(_step(root / f"timeline-{number}"))
            plain_walls.append(run(plain, root, env)[0])
        timeline, process = timeline_phases([root / f"timeline-{n}.json" for n in range(args.runs)])
        _, ours_log = run(wb("importtime", "-X", "importtime"), root, env)
        _, plain_log = run([sys.executable, "-X", "importtime", *plain[1:]], root, env)
        profiled_wall, _ = run(wb("profiled", "-m", "cProfile", "-o", str(root / "warm.prof")), root, env)
        warm = profile_phases(root / "warm.prof")
        cold: dict[str, float | None] = {}
        if args.cold:
            cold_env = {**env, "HF_DATASETS_CACHE": str(root / "hf-datasets-cold")}
            run(wb("profiled-cold", "-m", "cProfile", "-o", str(root / "cold.prof")), root, cold_env)
            cold = profile_phases(root / "cold.prof")

    median = statistics.median
    print(f"\n== a fresh `workbench run` of the extract benchmark ({args.examples} sentences); workbench at {REPO}")
    print(f"others' CPU during each process (s): {' '.join(f'{o:.1f}' for o in OTHERS)}\n")
    print(f"un-profiled, median of {args.runs}: whole process {median(walls):.2f} s (timeline's own clock {process:.2f} s), "
          f"extract step as the store recorded it {median(steps):.2f} s; plain length-sorted loop {median(plain_walls):.2f} s "
          f"(ratio {median(walls) / median(plain_walls):.3f}); profiled (cProfile) run {profiled_wall:.2f} s")
    if EDGES:
        print(f"outside the timeline script, median: interpreter start-up to its first line {median(e[0] for e in EDGES):.2f} s, "
              f"from main's return to the process's exit {median(e[1] for e in EDGES):.2f} s\n")
    print("| phase (inclusive of first-use imports), s | un-profiled (timeline.py), median | cProfile, warm datasets cache |"
          + (" cProfile, cold datasets cache |" if cold else ""))
    print("|---|---|---|" + ("---|" if cold else ""))
    for label, _ in PHASES:
        cells = [_cell(timeline.get(label)), _cell(warm.get(label))] + ([_cell(cold.get(label))] if cold else [])
        print(f"| {'. ' * (len(label) - len(label.lstrip()))}{label.strip()} | " + " | ".join(cells) + " |")
    ours, theirs = importtime(ours_log), importtime(plain_log)
    print(f"\nimports (python -X importtime, self time of each package's modules): "
          f"workbench run {sum(ours.values()):.2f} s, plain loop {sum(theirs.values()):.2f} s\n")
    print("| package | workbench run, s | plain loop, s |")
    print("|---|---|---|")
    for name in sorted(set(ours) | set(theirs), key=lambda n: -ours.get(n, 0.0))[: args.top]:
        print(f"| {name} | {ours.get(name, 0.0):.3f} | {theirs.get(name, 0.0):.3f} |")


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _step(store: Path) -> float:
    from workbench.db.store import Store

    db = Store.open(store, create=False)
    detail = db.get_run(db.list_runs(1)[0].id)
    return float(next(s.duration_s for s in detail.steps if s.step_id == "extract"))


if __name__ == "__main__":
    main()
