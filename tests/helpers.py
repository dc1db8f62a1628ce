"""Helpers shared by the CLI, executor and step tests: running `workbench`, writing recipes, reading stores."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
BOX_CHARS = re.compile(r"[│╭╮╰╯─┃━┏┓┗┛┡┩╇┳┻╋┼]")


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        """stdout and stderr with rich's panel borders removed and line wraps joined by single spaces."""
        return plain(self.out + "\n" + self.err)

    def json(self) -> Any:
        return json.loads(self.out)


def plain(text: str) -> str:
    return " ".join(BOX_CHARS.sub(" ", text).split())


def cli(*args: object) -> CliResult:
    """Run `workbench ARGS` in this process through the real entry point (exit codes included)."""
    from workbench.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved_argv = sys.argv
    sys.argv = ["workbench", *map(str, args)]
    code = 0
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                main()
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv = saved_argv
    return CliResult(code, out.getvalue(), err.getvalue())


def subprocess_env(**overrides: str | None) -> dict[str, str]:
    """The environment for a `workbench` subprocess: no store variables unless given; wide, plain output."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORKBENCH_DB", "WORKBENCH_HOME")}
    env.update({"PYTHONPATH": str(REPO), "NO_COLOR": "1", "TERM": "dumb"})
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def cli_command(*args: object) -> list[str]:
    return [sys.executable, "-m", "workbench.cli", *map(str, args)]


def cli_subprocess(*args: object, cwd: Path = REPO, timeout: float = 300, **env: str | None) -> CliResult:
    """Run `workbench ARGS` as a real child process."""
    done = subprocess.run(
        cli_command(*args), cwd=cwd, env=subprocess_env(**env), capture_output=True, text=True, timeout=timeout
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


def start_cli(*args: object, cwd: Path = REPO, **env: str | None) -> subprocess.Popen:
    return subprocess.Popen(
        cli_command(*args), cwd=cwd, env=subprocess_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


# ---- recipes --------------------------------------------------------------------------------------


def agreement(size: int, seed: int, **extra: Any) -> dict[str, Any]:
    """A generated subject-verb agreement dataset (no files needed)."""
    return {"path": "agreement", "size": size, "seed": seed, "text": "sentence", "label": "label", **extra}


def pipeline_steps(finetune_steps: int = 3, batch_size: int = 16) -> dict[str, Any]:
    """finetune -> evaluate, attention, extract (the three read the fine-tuned model)."""
    return {
        "finetune": {"kind": "finetune", "dataset": "train", "max_steps": finetune_steps, "batch_size": batch_size},
        "evaluate": {"kind": "evaluate", "model": "finetune", "dataset": "dev", "batch_size": 32},
        "attention": {"kind": "attention", "model": "finetune", "dataset": "dev", "batch_size": 16},
        "extract": {"kind": "extract", "model": "finetune", "dataset": "dev", "pooling": "mean"},
    }


def recipe(
    model_dir: Path | str,
    *,
    name: str = "tiny",
    head: str = "sequence-classification",
    num_labels: int | None = 2,
    datasets: dict[str, Any] | None = None,
    steps: dict[str, Any] | None = None,
    seed: int = 3,
) -> dict[str, Any]:
    model: dict[str, Any] = {"id": str(model_dir), "head": head}
    if num_labels is not None:
        model["num_labels"] = num_labels
    return {
        "version": 1,
        "name": name,
        "seed": seed,
        "device": "cpu",
        "model": model,
        "datasets": datasets if datasets is not None else {"train": agreement(96, 1), "dev": agreement(64, 2)},
        "steps": steps if steps is not None else pipeline_steps(),
    }


def write_yaml(path: Path, document: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


# ---- reading results --------------------------------------------------------------------------------


def run_json(store: Path, run: object = "latest") -> dict[str, Any]:
    """`workbench show RUN --json`, parsed; fails the test if the command fails."""
    result = cli("show", run, "--store", store, "--json")
    assert result.code == 0, result.text
    return result.json()


def steps_by_id(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["id"]: step for step in run["steps"]}


def statuses(run: dict[str, Any]) -> dict[str, str]:
    return {step["id"]: step["status"] for step in run["steps"]}


def keys(run: dict[str, Any]) -> dict[str, str]:
    return {step["id"]: step["key"] for step in run["steps"]}


TIMINGS = ("examples_per_s", "speedup")


def results(run: dict[str, Any], *, skip_metrics: tuple[str, ...] = TIMINGS) -> dict[str, Any]:
    """What a run measured (metrics, head and layer scores), minus timings (metrics named like `skip_metrics`)."""
    return {
        step["id"]: {
            "metrics": {k: v for k, v in step["metrics"].items() if not k.startswith(skip_metrics) or not skip_metrics},
            "head_scores": step["head_scores"],
            "layer_scores": step["layer_scores"],
        }
        for step in run["steps"]
    }


def entry_dir(store: Path, key: str) -> Path:
    """The cache folder of a step key (store/cache/ab/cdef...)."""
    return store / "cache" / key[:2] / key[2:]
