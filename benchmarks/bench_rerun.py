"""Re-running an unchanged recipe: at most 5% of the first run's time (issue 2).

Runs the quickstart recipe twice in a fresh store, in this process, and prints the ratio. The
second run verifies and loads every step from the cache (hashes included). A third run as a
`workbench run` process adds interpreter start-up and imports (no torch: see StepResult.to_torch).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, report, run_silently


def timed_run(recipe: Path, store: Path, overrides: list[str]) -> float:
    started = time.perf_counter()
    run_silently(recipe, store, overrides)
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
        command = [sys.executable, "-m", "workbench.cli", "run", str(args.recipe), "--store", str(store), "-q"]
        command += [item for override in args.overrides for item in ("--set", override)]
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        from_cli = time.perf_counter() - started
    report(
        f"re-run of {args.recipe.name}",
        [
            ("first run", f"{first:.2f} s"),
            ("second run (all cached)", f"{second:.2f} s"),
            ("second / first", f"{second / first:.4f}  (target <= 0.05)"),
            ("`workbench run` again, whole process", f"{from_cli:.2f} s  ({from_cli / first:.4f} of the first run)"),
        ],
    )


if __name__ == "__main__":
    main()
