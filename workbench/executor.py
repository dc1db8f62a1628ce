"""Walk the plan: load a cached step, or run it and cache it; record everything in the store.

A finished step is in the cache the moment it finishes, so a run that dies (even by SIGKILL)
loses only the step it was in; the next run of the recipe starts from the cache. The store marks
such a run 'interrupted' the next time anything opens it.
"""

from __future__ import annotations

import shutil
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from workbench.cache import Cache, CorruptEntry, EntryFile
from workbench.context import RunResources, StepContext
from workbench.db.store import Store, register_live_run, unregister_live_run
from workbench.environment import software_environment
from workbench.distributed import World, current_world
from workbench.errors import RankStopped, RecipeError, RunInterrupted, StoreError, WorkbenchError, did_you_mean
from workbench.hashing import value_sha256
from workbench.plan import Plan, PlannedStep, build_plan
from workbench.processes import on_sigterm
from workbench.progress import Progress, RichProgress, SilentProgress
from workbench.recipe.schema import LoadedRecipe
from workbench.scores import float_lists
from workbench.steps.registry import STEP_TYPES
from workbench.step_result import StepResult


@dataclass
class StepOutcome:
    step_id: str
    kind: str
    key: str
    status: str  # done | cached | failed | interrupted | pending (dry run)
    duration_s: float = 0.0
    result: StepResult | None = None
    note: str | None = None


@dataclass
class RunOutcome:
    run_id: int | None
    status: str
    steps: list[StepOutcome] = field(default_factory=list)
    device: str | None = None

    def step(self, step_id: str) -> StepOutcome:
        return next(step for step in self.steps if step.step_id == step_id)


def dry_run(loaded: LoadedRecipe, store_dir: Path, force: list[str] | None = None) -> RunOutcome:
    """Which steps would run and which come from the cache; writes nothing."""
    plan = build_plan(loaded)
    forced = _forced_steps(plan, force or [])
    cache = Cache(store_dir / "cache")
    steps = [
        StepOutcome(step.step_id, step.kind, step.key, "cached" if cache.has(step.key) and step.step_id not in forced else "pending")
        for step in plan.steps
    ]
    return RunOutcome(None, "planned", steps)


def run_recipe(
    loaded: LoadedRecipe,
    store_dir: Path,
    *,
    force: list[str] | None = None,
    progress: Progress | None = None,
) -> RunOutcome:
    """Run (or resume) a recipe. Raises WorkbenchError after recording a failed step.

    `progress` receives the run's bars, log lines and warnings (workbench/progress.py; default:
    RichProgress, bars on a terminal). Ranks other than 0 of a data-parallel run report nothing.
    Torch is imported only when a step has to run: a fully cached run reads everything as numpy.
    """
    plan = build_plan(loaded)
    forced = _forced_steps(plan, force or [])
    world = current_world(cpu=loaded.recipe.device == "cpu")
    if not world.is_main:
        return _follow(plan, forced, store_dir, world)
    if progress is None:
        progress = RichProgress()
    resources = RunResources(plan, progress, store_dir / "cache")
    if loaded.recipe.device not in ("auto", "cpu"):
        resources.device  # an explicitly requested accelerator that is missing fails before anything runs
    store = Store.open(store_dir)
    store.mark_dead_runs()
    cache = Cache(store_dir / "cache")
    cache.sweep_staging()
    cache.sweep_locks()
    run_id = store.start_run(
        name=loaded.name,
        recipe_text=loaded.text,
        recipe_path=str(loaded.path) if loaded.path else None,
        recipe_hash=value_sha256(loaded.text),
        seed=loaded.recipe.seed,
        device=loaded.recipe.device,
        overrides=loaded.overrides,
        environment={
            **software_environment(loaded.base_dir),
            "provenance": _provenance(loaded, plan),
            "world_size": world.size,  # not in any cache key: results must not depend on it
        },
    )
    register_live_run(run_id)
    outcome = RunOutcome(run_id, "running", device=loaded.recipe.device)
    try:
        with progress, _stop_on_sigterm(world):
            for step in plan.steps:
                outcome.steps.append(_run_step(step, step.step_id in forced, resources, cache, store, run_id))
    except KeyboardInterrupt:
        outcome.status = "interrupted"
        _finish_quietly(store, run_id, "interrupted", "stopped by the user", progress)
        raise RunInterrupted("run interrupted; finished steps are cached and the next run resumes from them") from None
    except BaseException as error:
        outcome.status = "failed"
        _finish_quietly(store, run_id, "failed", _describe(error), progress)
        raise
    finally:
        unregister_live_run(run_id)
        _record_what_was_used(store, run_id, resources, outcome)
    outcome.status = "finished"
    store.finish_run(run_id, "finished")
    return outcome


def _provenance(loaded: LoadedRecipe, plan: Plan) -> dict[str, object]:
    """What the run is made from (workbench/bundles/provenance.py), for bundles that reproduce.

    A file that vanished since planning (the plan hashed it a moment ago) is recorded as a problem,
    not raised: the run itself will say what is wrong with its data.
    """
    from workbench.bundles.provenance import run_provenance

    try:
        return run_provenance(loaded, plan)
    except (OSError, WorkbenchError) as error:
        return {"error": f"provenance incomplete: {error}"}


def _finish_quietly(store: Store, run_id: int, status: str, error: str, progress: Progress) -> None:
    """Record how a run ended without letting a store problem hide the error that ended it."""
    try:
        store.finish_run(run_id, status, error)
    except StoreError as store_error:
        progress.warn(f"could not record run {run_id} as {status}: {store_error}")


def _record_what_was_used(store: Store, run_id: int, resources: RunResources, outcome: RunOutcome) -> None:
    """The device and hub commits, known only if some step ran."""
    extra: dict[str, object] = {}
    if resources.resolved_device is not None:
        from workbench.device import hardware

        extra.update(hardware(resources.resolved_device))
        outcome.device = str(resources.resolved_device)
        store.set_device(run_id, outcome.device)
    if resources.resolved_commits:
        extra["model_commits"] = resources.resolved_commits
    if extra:
        store.update_environment(run_id, extra)


def _run_step(
    step: PlannedStep, forced: bool, resources: RunResources, cache: Cache, store: Store, run_id: int
) -> StepOutcome:
    """Load the step from the cache, wait for another process computing it, or compute it.

    Problems with the cache (a damaged entry, a lost commit race) are logged, recorded on the step
    (data['warnings'], which `show` prints) and worked around; they never fail the run.
    """
    params_json = step.params.model_dump(mode="json")
    step_pk = store.start_step(run_id, step.step_id, step.kind, step.key, params_json)
    started = time.perf_counter()
    warnings: list[str] = []
    lock = None
    try:
        while True:
            if not forced:
                loaded = _load_cached(step, cache, resources, warnings)
                if loaded is not None:
                    result, manifest = loaded
                    resources.world.broadcast(_Decision("cached"))
                    return _cached(step, step_pk, store, resources, result, manifest, warnings, started)
            claim = cache.claim(step.key, on_wait=lambda holder: resources.progress.log(
                f"step '{step.step_id}': waiting for {holder.describe()}, which is computing the same step"
            ))
            if claim.lock is not None:
                lock = claim.lock
                if forced or not cache.has(step.key):
                    break
                # Committed by another process between our look and the lock: load it.
                lock.release()
                lock = None
            forced = False  # what the other process just computed is as fresh as a forced recompute
        if cache.has(step.key):  # forced
            cache.discard(step.key)
        return _compute(step, step_pk, store, resources, cache, warnings, started)
    finally:
        if lock is not None:
            lock.release()


def _load_cached(
    step: PlannedStep, cache: Cache, resources: RunResources, warnings: list[str]
) -> tuple[StepResult, list[EntryFile]] | None:
    """The cached result, or None; a damaged entry is discarded (so it is recomputed) and noted."""
    if cache.has(step.key):
        try:
            return cache.load(step.key)
        except CorruptEntry as error:
            note = f"{error}; recomputing"
        cache.discard(step.key)
    elif cache.entry_dir(step.key).exists():
        note = f"cache entry {step.key[:12]} is incomplete (no manifest); recomputing"
        cache.discard(step.key)
    else:
        return None
    if note not in warnings:
        resources.progress.warn(note)
        warnings.append(note)
    return None


def _cached(
    step: PlannedStep,
    step_pk: int,
    store: Store,
    resources: RunResources,
    result: StepResult,
    manifest: list[EntryFile],
    warnings: list[str],
    started: float,
) -> StepOutcome:
    if "torch" in sys.modules:  # tensors for callers that use torch anyway; numpy otherwise
        result.to_torch()
    resources.results[step.step_id] = result
    _record(store, step_pk, "cached", time.perf_counter() - started, result, manifest, step.key, warnings)
    return StepOutcome(step.step_id, step.kind, step.key, "cached", time.perf_counter() - started, result)


def _compute(
    step: PlannedStep, step_pk: int, store: Store, resources: RunResources, cache: Cache, warnings: list[str], started: float
) -> StepOutcome:
    staging = cache.staging_dir(step.key)
    world = resources.world
    try:
        world.broadcast(_Decision("compute", str(staging / "files")))
        result = _compute_result(step, resources, staging / "files", staging / "files")
        world.barrier()  # every rank's files are written before rank 0 commits the entry
        committed = cache.commit(step.key, staging, result)
        world.broadcast(_Decision("committed"))
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        failure = _disk_problem(error, cache) or error
        if isinstance(failure, WorkbenchError):  # say which step failed; the message alone may not
            failure.message = f"step '{step.step_id}' ({step.kind}) failed: {failure.message}"
        status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        store.finish_step(step_pk, status=status, duration_s=time.perf_counter() - started, error=_describe(failure))
        if failure is not error:
            raise failure from None
        raise
    result = committed.result
    if not committed.won:
        note = "another process cached this step first; its result is the one recorded"
        resources.progress.warn(f"step '{step.step_id}': {note}")
        warnings.append(note)
        if "torch" in sys.modules:
            result.to_torch()
    entry_files = cache.entry_dir(step.key) / "files"
    result.files_dir = entry_files if entry_files.is_dir() else None
    resources.results[step.step_id] = result
    duration = time.perf_counter() - started
    _record(store, step_pk, "done", duration, result, committed.manifest, step.key, warnings)
    return StepOutcome(step.step_id, step.kind, step.key, "done", duration, result, "; ".join(warnings) or None)


def _compute_result(step: PlannedStep, resources: RunResources, output_dir: Path, shared_output_dir: Path) -> StepResult:
    from contextlib import nullcontext

    from workbench.device import seed_everything
    from workbench.distributed import alone

    seed_everything(resources.plan.recipe.recipe.seed)
    kind = STEP_TYPES[step.kind]
    with nullcontext() if kind.data_parallel else alone():
        context = StepContext(resources, step, output_dir, shared_output_dir)
        return kind().run(context, step.params)


@dataclass(frozen=True)
class _Decision:
    """What rank 0 tells the other ranks about a step: load it (cached), compute it, or it is committed."""

    action: str  # cached | compute | committed
    shared_output_dir: str | None = None


def _follow(plan: Plan, forced: set[str], store_dir: Path, world: "World") -> RunOutcome:
    """A rank other than 0: compute what rank 0 computes, load what it loads; write no store or cache.

    Rank 0 decides each step (it holds the cache locks and the store) and says so by broadcast;
    after a computed step this rank reads rank 0's committed entry, so every rank goes on with the
    same upstream results.
    """
    import tempfile

    resources = RunResources(plan, SilentProgress(), store_dir / "cache")  # rank 0 reports for the run
    cache = Cache(store_dir / "cache")
    outcome = RunOutcome(None, "running")
    with _stop_on_sigterm(world):
        for step in plan.steps:
            started = time.perf_counter()
            decision = world.broadcast(_Decision(""))
            status = "cached"
            if decision.action == "compute":
                with tempfile.TemporaryDirectory(prefix=f"workbench-rank{world.rank}-") as scratch:
                    if STEP_TYPES[step.kind].data_parallel:  # else rank 0 computes it alone (a probe: cheap)
                        _compute_result(step, resources, Path(scratch), Path(decision.shared_output_dir or scratch))
                    world.barrier()
                world.broadcast(_Decision(""))  # rank 0 committed
                status = "done"
            result, _ = cache.load(step.key)
            if "torch" in sys.modules:
                result.to_torch()
            resources.results[step.step_id] = result
            outcome.steps.append(StepOutcome(step.step_id, step.kind, step.key, status, time.perf_counter() - started, result))
    outcome.status = "finished"
    return outcome


def _disk_problem(error: BaseException, cache: Cache) -> StoreError | None:
    """A step's own write that failed for lack of space or a read-only disk, as a StoreError naming it."""
    import errno

    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        from workbench.db.health import folder_error

        return folder_error(error, cache.root, "cache folder")
    return None


def _record(
    store: Store,
    step_pk: int,
    status: str,
    duration: float,
    result: StepResult,
    manifest: list[EntryFile],
    key: str,
    warnings: list[str] | None = None,
) -> None:
    data = result.data
    if warnings:  # about this run's use of the cache, so recorded on the step, not stored in the entry
        data = {**data, "warnings": [*(data.get("warnings") or []), *warnings]}
    store.finish_step(
        step_pk,
        status=status,
        duration_s=duration,
        metrics={name: float(value) for name, value in result.metrics.items()},
        head_scores={name: float_lists(grid) for name, grid in result.head_scores.items()},
        layer_scores=result.layer_lines(),
        data=data,
        artifacts=[
            {"name": f.path, "kind": _artifact_kind(f.path), "cache_key": key, "sha256": f.sha256, "bytes": f.bytes}
            for f in manifest
        ],
    )


def _artifact_kind(path: str) -> str:
    if path.startswith("files/model/"):
        return "model"
    if path.startswith("files/"):
        return "file"
    return "tensors" if path.endswith(".safetensors") else "result"


def _forced_steps(plan: Plan, force: list[str]) -> set[str]:
    """The forced steps and everything downstream of them: a recomputed output invalidates its readers.

    Keys are content addresses of the inputs, not of the outputs, so a recomputed step keeps its key
    and so do its readers; without this, a cached `evaluate` would keep describing the old model.
    """
    if "*" in force or "all" in force:
        return {step.step_id for step in plan.steps}
    known = {step.step_id for step in plan.steps}
    for step_id in force:
        if step_id not in known:
            raise RecipeError(f"--force {step_id}: no step with that id", hint=did_you_mean(step_id, known))
    return plan.downstream_of(set(force))


def _describe(error: BaseException) -> str:
    if isinstance(error, WorkbenchError):
        return str(error)
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    return "".join(traceback.format_exception(error)).strip()


@contextmanager
def _stop_on_sigterm(world: "World") -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C so the run is recorded as interrupted.

    In a data-parallel run the launcher sends SIGTERM to every rank when one of them failed: the
    run then failed (that rank printed why), it was not stopped by the user.
    """

    def interrupt(_signum: int, _frame: object) -> None:
        if world.distributed:
            raise RankStopped("stopped by the launcher: another process of this run failed (its message says why)")
        raise KeyboardInterrupt

    with on_sigterm(interrupt):
        yield
