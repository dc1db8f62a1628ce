"""Checks that need the whole recipe: references, datasets, files, the model source, cycles.

Nothing here loads a model or a dataset, and nothing imports torch or transformers. What can be
read cheaply is read: the header and first rows of local data files (workbench/data/peek.py), and
the config.json, weight headers and tokenizer files of a local or pkg: model (workbench/models/
folder.py). Each mistake found there is reported at the recipe field that has to change:

    datasets.X.data_files / text / label   a broken file, a missing column, labels the head refuses
    datasets.X.max_length                  longer than the model's position table
    steps.S.layers                         an extract layer the model does not have,
                                           a probe layer its extract steps do not extract
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workbench.errors import RecipeError, RecipeErrors, did_you_mean

if TYPE_CHECKING:
    from workbench.data.peek import LabelHead
    from workbench.recipe.loader import _Locator
    from workbench.recipe.schema import LoadedRecipe

# Steps that map a dataset's labels through the recipe model's head (workbench/analysis/tasks.py's
# prepare_task). A ClassVar on the step's Params would say this better; steps/ is not ours to edit.
HEAD_TASK_KINDS = frozenset(
    {"finetune", "evaluate", "importance", "mask_search", "prune", "prune_curve", "head_ablation", "attention"}
)


def check_semantics(loaded: "LoadedRecipe", locate: "_Locator") -> None:
    from workbench.data.sources import check_dataset_spec
    from workbench.models.sources import check_model_source
    from workbench.plan import find_cycle
    from workbench.steps.registry import STEP_TYPES

    recipe = loaded.recipe
    problems: list[RecipeError] = []

    readable: list[str] = []  # datasets whose spec is sound: their files are worth reading
    for name, spec in recipe.datasets.items():
        spec_problems = check_dataset_spec(spec, loaded.base_dir)
        for field, message in spec_problems:
            problems.append(locate.error(("datasets", name, field), message, key=True))
        if not spec_problems:
            readable.append(name)

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

    config = None if model_problem else _model_config(loaded)
    problems += _content_problems(loaded, locate, readable, config)

    if not problems:
        cycle = find_cycle({step_id: set(p.referenced_steps().values()) for step_id, p in loaded.steps.items()})
        if cycle:
            problems.append(
                locate.error(("steps", cycle[0]), f"steps refer to each other in a cycle: {' -> '.join(cycle)}", key=True)
            )
    if problems:
        raise RecipeErrors(problems) if len(problems) > 1 else problems[0]


def _model_config(loaded: "LoadedRecipe") -> dict[str, Any] | None:
    from workbench.models.sources import local_model_config

    return local_model_config(loaded.recipe.model.id, loaded.base_dir)


def _content_problems(
    loaded: "LoadedRecipe", locate: "_Locator", readable: list[str], config: dict[str, Any] | None
) -> list[RecipeError]:
    """What the data files and the model's config.json say about the recipe."""
    problems = _data_file_problems(loaded, locate, readable, config)
    if config is not None:
        problems += _length_problems(loaded, locate, config)
    problems += _layer_problems(loaded, locate, config)
    return problems


# --- data files -------------------------------------------------------------------------------------


def _data_file_problems(
    loaded: "LoadedRecipe", locate: "_Locator", readable: list[str], config: dict[str, Any] | None
) -> list[RecipeError]:
    from workbench.data.peek import check_dataset_contents

    head = _label_head(loaded, config)
    labelled = _datasets_read_by_the_head(loaded)
    problems = []
    for name in readable:
        spec = loaded.recipe.datasets[name]
        for problem in check_dataset_contents(name, spec, loaded.base_dir, head if name in labelled else None):
            problems.append(locate.error(("datasets", name) + problem.field, problem.message, hint=problem.hint))
    return problems


def _label_head(loaded: "LoadedRecipe", config: dict[str, Any] | None) -> "LabelHead | None":
    """What labels the recipe model's head takes, when that is known before loading it."""
    from workbench.data.labels import DEFAULT_LABEL
    from workbench.data.peek import LabelHead
    from workbench.models.folder import config_num_labels

    spec = loaded.recipe.model
    if spec.head != "sequence-classification":
        return None
    if spec.labels is not None:
        return LabelHead(len(spec.labels), tuple(spec.labels))
    names = _config_label_names(config, DEFAULT_LABEL)
    if spec.num_labels is not None:
        return LabelHead(spec.num_labels, names)
    if config is None:
        return None  # a hub model: its config (and so its num_labels) is known once it is loaded
    return LabelHead(config_num_labels(config), names)


def _config_label_names(config: dict[str, Any] | None, placeholder: Any) -> tuple[str, ...] | None:
    """A checkpoint's class names in id order, unless they are transformers' LABEL_0, LABEL_1, ..."""
    id2label = (config or {}).get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        return None
    try:
        names = tuple(str(id2label[key]) for key in sorted(id2label, key=int))
    except (TypeError, ValueError):
        return None
    return None if all(placeholder.fullmatch(name) for name in names) else names


def _datasets_read_by_the_head(loaded: "LoadedRecipe") -> set[str]:
    return {
        dataset
        for params in loaded.steps.values()
        if params.kind in HEAD_TASK_KINDS
        for dataset in params.used_datasets().values()
    }


# --- the model's config -----------------------------------------------------------------------------


def _length_problems(loaded: "LoadedRecipe", locate: "_Locator", config: dict[str, Any]) -> list[RecipeError]:
    """max_length beyond the position table fails in the embeddings, in the middle of a step."""
    from workbench.models.folder import max_positions

    limit = max_positions(config)
    if limit is None:
        return []
    used = {dataset for params in loaded.steps.values() for dataset in params.used_datasets().values()}
    problems = []
    for name in sorted(used & set(loaded.recipe.datasets)):
        spec = loaded.recipe.datasets[name]
        if spec.max_length <= limit:
            continue
        given = "max_length" in spec.model_fields_set
        where = ("datasets", name, "max_length") if given else ("datasets", name)
        problems.append(
            locate.error(
                where,
                f"max_length is {spec.max_length}{'' if given else ' (the default)'}, but model "
                f"{loaded.recipe.model.id} reads at most {limit} tokens (its config.json)",
                hint=f"set datasets.{name}.max_length: {limit} or less",
                key=not given,
            )
        )
    return problems


def _layer_problems(loaded: "LoadedRecipe", locate: "_Locator", config: dict[str, Any] | None) -> list[RecipeError]:
    """extract.layers the model lacks; probe.layers its extract steps do not extract."""
    from workbench.models.folder import num_hidden_layers

    layers = num_hidden_layers(config) if config is not None else None
    problems = []
    for step_id, params in loaded.steps.items():
        if params.kind == "extract" and layers is not None and isinstance(params.layers, list):
            problems += _extract_layer_problems(step_id, params.layers, layers, locate)
        elif params.kind == "probe" and isinstance(params.layers, list):
            problems += _probe_layer_problems(loaded, step_id, params, layers, locate)
    return problems


def _extract_layer_problems(step_id: str, requested: list[int], layers: int, locate: "_Locator") -> list[RecipeError]:
    return [
        locate.error(
            ("steps", step_id, "layers", index),
            f"layer {layer} does not exist: the model has hidden states 0..{layers} "
            f"(0 = embeddings, {layers} = the last layer, -1 counts back from it)",
        )
        for index, layer in enumerate(requested)
        if _hidden_state_index(layer, layers) is None
    ]


def _probe_layer_problems(
    loaded: "LoadedRecipe", step_id: str, params: Any, layers: int | None, locate: "_Locator"
) -> list[RecipeError]:
    sources = []  # (field, extract step, the layers it keeps) for each extract step the probe reads
    for field, target in params.referenced_steps().items():
        upstream = loaded.steps.get(target)
        if upstream is None or upstream.kind != "extract":
            continue  # a dangling or wrong reference is reported by the reference check
        extracted = _extracted_layers(upstream.layers, layers)
        if extracted is not None:  # None: it depends on the depth of a model not loaded yet
            sources.append((field, target, extracted))
    problems = []
    for index, layer in enumerate(params.layers):
        lacking = next(((f, t, e) for f, t, e in sources if layer not in e), None)
        if lacking is not None:
            field, target, extracted = lacking
            problems.append(
                locate.error(
                    ("steps", step_id, "layers", index),
                    f"layer {layer} is not among the layers '{target}' ({field}) extracts: "
                    f"{', '.join(map(str, sorted(extracted))) or 'none'}",
                    hint=f"add it to steps.{target}.layers, or probe only those",
                )
            )
    return problems


def _extracted_layers(requested: Any, layers: int | None) -> set[int] | None:
    """The hidden-state indices an extract step keeps, or None when that depends on an unknown depth."""
    if requested == "all":
        return set(range(layers + 1)) if layers is not None else None
    if layers is None:
        return None if any(layer < 0 for layer in requested) else set(requested)
    resolved = {_hidden_state_index(layer, layers) for layer in requested}
    return {index for index in resolved if index is not None}


def _hidden_state_index(layer: int, layers: int) -> int | None:
    """extract's numbering (workbench/steps/extract.py resolve_layers): 0..layers, negatives count back."""
    index = layer + layers + 1 if layer < 0 else layer
    return index if 0 <= index <= layers else None
