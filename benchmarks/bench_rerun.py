"""Re-running an unchanged recipe: at most 5% of the first run's time (issue 2).

Runs the quickstart recipe twice in a fresh store, in this process, and prints the ratio. The
second run verifies and loads every step from the cache (hashes included).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import REPO, report


def timed_run(recipe: Path, store: Path, overrides: list[str]) -> float:
    from workbench.executor import run_recipe
    from workbench.progress import ProgressReporter
    from workbench.recipe.loader import load_recipe

    started = time.perf_counter()
    run_recipe(load_recipe(recipe, overrides), store, progress=ProgressReporter(enabled=False))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipe", type=Path, default=REPO / "recipes" / "quickstart.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "store"
        first = timed_run(args.recipe, store, args.overrides)
        second = timed_run(args.recipe, store, args.overrides)
    report(
        f"re-run of {args.recipe.name}",
        [
            ("first run", f"{first:.2f} s"),
            ("second run (all cached)", f"{second:.2f} s"),
            ("second / first", f"{second / first:.4f}  (target <= 0.05)"),
        ],
    )


if __name__ == "__main__":
    main()
