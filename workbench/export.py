"""`workbench export`: a zip with a run's recipe, results and provenance, to share or archive."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from workbench.db.records import RunDetail
from workbench.errors import StoreError
from workbench.ui.views import run_json


def export_run(run: RunDetail, output: Path, *, overwrite: bool = False) -> Path:
    """Write recipe.yaml, results.json (every metric and score) and README.txt into `output`.

    An existing file is kept unless `overwrite`: a bundle someone shared is not silently replaced.
    """
    if output.suffix != ".zip":
        output = output.with_suffix(".zip")
    if output.exists() and not overwrite:
        raise StoreError(f"{output} exists", hint="pass --force to overwrite it, or choose another -o")
    results = run_json(run)
    readme = (
        f"Run {run.summary.id} of recipe '{run.recipe_name}' ({run.summary.status}).\n"
        "recipe.yaml  the recipe exactly as run (overrides are listed in results.json)\n"
        "results.json every metric, head score and layer score, the environment and step keys\n"
        f"Reproduce with: {reproduce_command(run.overrides)}\n"
    )
    partial = output.with_name(output.name + ".partial")
    try:
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
            bundle.writestr("recipe.yaml", run.recipe_text)
            bundle.writestr("results.json", json.dumps(results, indent=1))
            bundle.writestr("README.txt", readme)
        partial.replace(output)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise StoreError(f"cannot write {output}: {error}") from None
    return output


def reproduce_command(overrides: list[str]) -> str:
    """`workbench run recipe.yaml --set ...` with every value quoted for a POSIX shell."""
    import shlex

    return shlex.join(["workbench", "run", "recipe.yaml", *(part for o in overrides for part in ("--set", o))])
