"""Recipe -> ordered steps with cache keys, computed before any model is loaded.

A step's key covers everything that changes its outputs (CONVENTIONS.md, 4): its kind and version,
its parameters minus cosmetic ones, the recipe seed, the fingerprints of the model and datasets it
reads, and the keys of the steps it depends on. Editing one step changes its key and the keys of
everything downstream, and nothing else.
"""

from __future__ import annotations

import graphlib
from dataclasses import dataclass
from typing import Any

from workbench.data.sources import dataset_fingerprint
from workbench.errors import RecipeError
from workbench.hashing import value_sha256
from workbench.models.sources import model_fingerprint
from workbench.recipe.schema import LoadedRecipe
from workbench.steps.registry import STEP_TYPES
from workbench.steps.base import StepParams


@dataclass(frozen=True)
class PlannedStep:
    step_id: str
    kind: str
    params: StepParams
    key: str
    depends_on: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    recipe: LoadedRecipe
    steps: tuple[PlannedStep, ...]  # in execution order
    model_fingerprint: str
    dataset_fingerprints: dict[str, str]

    def step(self, step_id: str) -> PlannedStep:
        return next(step for step in self.steps if step.step_id == step_id)

    def training_dataset(self) -> str | None:
        """The dataset the recipe's model is first fine-tuned on: where its class names come from."""
        return training_dataset(self.recipe)

    def downstream_of(self, step_ids: set[str]) -> set[str]:
        """The given steps and every step that depends on them."""
        selected = set(step_ids)
        for step in self.steps:
            if selected.intersection(step.depends_on):
                selected.add(step.step_id)
        return selected


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle in the dependency graph as [a, b, ..., a], or None."""
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        return list(reversed(error.args[1]))
    return None


def build_plan(loaded: LoadedRecipe) -> Plan:
    """Order the steps (recipe order where the dependencies allow) and compute their keys."""
    recipe = loaded.recipe
    graph = {step_id: set(params.referenced_steps().values()) for step_id, params in loaded.steps.items()}
    cycle = find_cycle(graph)
    if cycle:
        raise RecipeError(f"steps refer to each other in a cycle: {' -> '.join(cycle)}", file=str(loaded.path))

    model_print = value_sha256(
        {
            "weights": model_fingerprint(recipe.model.id, recipe.model.revision, loaded.base_dir),
            "head": recipe.model.head,
            "num_labels": recipe.model.num_labels,
            "labels": _label_source(loaded),
            "dtype": recipe.model.dtype,
        }
    )
    used = {name for params in loaded.steps.values() for name in params.used_datasets().values()}
    dataset_prints = {name: dataset_fingerprint(recipe.datasets[name], loaded.base_dir) for name in sorted(used)}

    keys: dict[str, str] = {}
    ordered: list[PlannedStep] = []
    for step_id in _recipe_ordered(graph, list(loaded.steps)):
        params = loaded.steps[step_id]
        step_type = STEP_TYPES[params.kind]
        depends_on = tuple(sorted(graph[step_id]))
        keys[step_id] = value_sha256(
            {
                "kind": f"{params.kind}@{step_type.version}",
                "params": _key_params(params, keys),
                "seed": recipe.seed,
                "model": model_print if params.uses_recipe_model() else None,
                "datasets": {field: dataset_prints[name] for field, name in params.used_datasets().items()},
                "upstream": {step: keys[step] for step in depends_on},
            }
        )
        ordered.append(PlannedStep(step_id, params.kind, params, keys[step_id], depends_on))
    return Plan(loaded, tuple(ordered), model_print, dataset_prints)


def training_dataset(loaded: LoadedRecipe) -> str | None:
    """The dataset of the first finetune step that trains the recipe's own model, if any."""
    for params in loaded.steps.values():
        if params.kind == "finetune" and params.model is None:  # type: ignore[attr-defined]
            return params.dataset  # type: ignore[attr-defined]
    return None


def _label_source(loaded: LoadedRecipe) -> Any:
    """What fixes the class names of the recipe model's head (data/labels.py), for the model's key.

    The recipe's `labels`, or else the WHOLE training dataset (its fingerprint without `limit`):
    names taken from the checkpoint are covered by the weights' fingerprint already.
    """
    spec = loaded.recipe.model
    if spec.head != "sequence-classification" or spec.num_labels == 1:
        return None
    if spec.labels is not None:
        return list(spec.labels)
    training = training_dataset(loaded)
    if training is None or training not in loaded.recipe.datasets:
        return None
    whole = loaded.recipe.datasets[training].model_copy(update={"limit": None})
    return {"training_dataset": dataset_fingerprint(whole, loaded.base_dir)}


def _key_params(params: StepParams, keys: dict[str, str]) -> dict[str, Any]:
    """Parameters that change the result; references become the referenced step's key."""
    values = params.model_dump(mode="json", exclude=set(params.cosmetic_fields))
    for field, before in params.added_options.items():
        if values.get(field) == before:
            values.pop(field)
    for field, target in params.referenced_steps().items():
        values[field] = keys[target]
    for field in params.dataset_fields:
        values.pop(field, None)  # the dataset's fingerprint stands in for its name
    try:
        value_sha256(values)
    except TypeError as error:
        raise RecipeError(f"step parameters cannot be hashed: {error}") from None
    return values


def _recipe_ordered(graph: dict[str, set[str]], recipe_order: list[str]) -> list[str]:
    """A topological order that keeps the recipe's own order wherever the dependencies allow."""
    done: set[str] = set()
    order: list[str] = []
    while len(order) < len(recipe_order):
        # The earliest step in the recipe whose dependencies have all run (the graph is acyclic).
        step_id = next(s for s in recipe_order if s not in done and graph[s] <= done)
        order.append(step_id)
        done.add(step_id)
    return order
