"""Checks that need the whole recipe: references, datasets, files, the model source, cycles.

Nothing here loads a model or a dataset.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.errors import RecipeError, RecipeErrors, did_you_mean

if TYPE_CHECKING:
    from workbench.recipe.loader import _Locator
    from workbench.recipe.schema import LoadedRecipe


def check_semantics(loaded: "LoadedRecipe", locate: "_Locator") -> None:
    from workbench.data.sources import check_dataset_spec
    from workbench.models.sources import check_model_source
    from workbench.plan import find_cycle
    from workbench.steps import STEP_TYPES

    recipe = loaded.recipe
    problems: list[RecipeError] = []

    for name, spec in recipe.datasets.items():
        for field, message in check_dataset_spec(spec, loaded.base_dir):
            problems.append(locate.error(("datasets", name, field), message, key=True))

    model_problem = check_model_source(recipe.model.id, loaded.base_dir)
    if model_problem:
        problems.append(locate.error(("model", "id"), model_problem))

    for step_id, params in loaded.steps.items():
        where = ("steps", step_id)
        for field, dataset in params.used_datasets().items():
            if dataset not in recipe.datasets:
                problems.append(
                    locate.error(where + (field,), f"no dataset named '{dataset}'", hint=did_you_mean(dataset, recipe.datasets))
                )
        for field, target in params.referenced_steps().items():
            needed = params.references[field]
            if target == step_id:
                problems.append(locate.error(where + (field,), f"step '{step_id}' refers to itself"))
            elif target not in loaded.steps:
                problems.append(
                    locate.error(where + (field,), f"no step named '{target}'", hint=did_you_mean(target, loaded.steps))
                )
            elif needed not in STEP_TYPES[loaded.steps[target].kind].produces:
                kind = loaded.steps[target].kind
                makers = sorted(k for k, t in STEP_TYPES.items() if needed in t.produces)
                problems.append(
                    locate.error(
                        where + (field,),
                        f"step '{target}' ({kind}) produces no {needed}",
                        hint=f"steps of kind {', '.join(makers)} do" if makers else None,
                    )
                )
        for field, message in params.check(recipe):
            problems.append(locate.error(where + ((field,) if field else ()), message, key=not field))

    if not problems:
        cycle = find_cycle({step_id: set(p.referenced_steps().values()) for step_id, p in loaded.steps.items()})
        if cycle:
            problems.append(
                locate.error(("steps", cycle[0]), f"steps refer to each other in a cycle: {' -> '.join(cycle)}", key=True)
            )
    if problems:
        raise RecipeErrors(problems) if len(problems) > 1 else problems[0]

