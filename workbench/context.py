"""What a running step can reach: its datasets, models, upstream results, device and progress bars."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager as ContextManager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from workbench.data.kinds import Capability, kind_description
from workbench.data.loaded import LoadedDataset
from workbench.data.sources import load_dataset_spec
from workbench.distributed import World, current_world
from workbench.errors import ModelError, StepError
from workbench.progress import Progress
from workbench.step_result import StepResult
from workbench.steps.base import StepParams

if TYPE_CHECKING:
    import torch

    from workbench.data.labels import LabelVocabulary
    from workbench.models.loading import LoadedModel
    from workbench.plan import Plan, PlannedStep

T = TypeVar("T")
MODEL_FOLDER = "model"  # where steps that output a model save it, inside their files folder


class RunResources:
    """Shared by the steps of one run: loaded datasets and the results of finished steps."""

    def __init__(self, plan: "Plan", progress: Progress, cache_dir: Path | None = None):
        self.plan = plan
        self.progress = progress
        self.cache_dir = cache_dir  # the store's cache folder: where derived data (tokenisations) may live
        self.world = current_world()  # this process's rank in a data-parallel run (one process: rank 0 of 1)
        self.resolved_device: "torch.device | None" = None
        self.datasets: dict[str, LoadedDataset] = {}
        self.results: dict[str, StepResult] = {}
        self.resolved_commits: dict[str, str] = {}
        self._labels: tuple["LabelVocabulary | None"] | None = None  # resolved once: (vocabulary,)

    def recipe_labels(self, source: str, revision: str | None) -> "LabelVocabulary | None":
        """The class names of the recipe model's classification head (data/labels.py says from where)."""
        if self._labels is None:
            self._labels = (self._resolve_labels(source, revision),)
        return self._labels[0]

    def _resolve_labels(self, source: str, revision: str | None) -> "LabelVocabulary | None":
        from workbench.data.labels import LabelVocabulary, vocabulary_from_config, vocabulary_from_values

        recipe = self.plan.recipe
        spec = recipe.recipe.model
        if spec.labels is not None:
            return LabelVocabulary(tuple(spec.labels), "the recipe (model.labels)")
        if spec.num_labels == 1:
            return None  # regression
        vocabulary = vocabulary_from_config(_read_config(source, revision))
        if vocabulary is None:
            training = self.plan.training_dataset()
            if training is None:
                return None
            spec_of_training = recipe.recipe.datasets[training]
            # The whole training set names the classes; a stream is read only as far as its limit.
            whole_spec = spec_of_training if spec_of_training.streaming else spec_of_training.model_copy(update={"limit": None})
            whole = load_dataset_spec(training, whole_spec, recipe.base_dir)
            labels = whole.labels() or []
            if whole.class_names:
                vocabulary = LabelVocabulary(tuple(whole.class_names), f"dataset '{training}' (its ClassLabel names)")
            else:
                vocabulary = vocabulary_from_values(labels, training)
        if vocabulary is not None and spec.num_labels is not None and spec.num_labels != len(vocabulary):
            raise ModelError(
                f"model.num_labels is {spec.num_labels}, but {len(vocabulary)} labels come from {vocabulary.source}: "
                + ", ".join(vocabulary.names),
                hint="set num_labels to match, or name the classes with model.labels",
            )
        return vocabulary

    @property
    def device(self) -> "torch.device":
        """The device of the recipe, picked when a step first needs it (a cached run needs none)."""
        if self.resolved_device is None:
            from workbench.device import pick_device

            requested = self.plan.recipe.recipe.device
            if self.world.backend == "nccl" and requested in ("auto", "cuda"):
                requested = f"cuda:{self.world.local_rank}"  # one GPU per process
            self.resolved_device = pick_device(requested)
        return self.resolved_device


class StepContext:
    def __init__(self, resources: RunResources, step: "PlannedStep", output_dir: Path, shared_output_dir: Path | None = None):
        self._resources = resources
        self.step = step
        # Files written here become the step's files artifact. On ranks other than 0 it is a private
        # scratch folder (thrown away), so a step that is not data-parallel may write as it likes.
        self.output_dir = output_dir
        # Rank 0's output folder, on every rank: for steps whose ranks write disjoint files (extract).
        self.shared_output_dir = shared_output_dir or output_dir

    @property
    def world(self) -> "World":
        """Which process of the run this is; steps split their batches with world.shard.

        (A step that is not data-parallel runs on rank 0 in a world of its own: workbench.distributed.alone.)
        """
        return current_world()

    @property
    def params(self) -> StepParams:
        return self.step.params

    @property
    def device(self) -> "torch.device":
        return self._resources.device

    @property
    def seed(self) -> int:
        return self._resources.plan.recipe.recipe.seed

    @property
    def recipe_dtype(self) -> str:
        """The recipe's model.dtype: float32, float16 or bfloat16 (`auto`: the checkpoint's)."""
        spec = self._resources.plan.recipe.recipe.model
        if spec.dtype != "auto":
            return spec.dtype
        from workbench.models.loading import checkpoint_dtype
        from workbench.models.sources import resolve_model_source

        _, folder = resolve_model_source(spec.id, self.recipe_dir)
        return checkpoint_dtype(str(folder) if folder is not None else spec.id, spec.revision)

    @property
    def recipe_dir(self) -> Path:
        return self._resources.plan.recipe.base_dir

    def dataset(self, name: str, *kinds: str, needs: Capability | None = None) -> LoadedDataset:
        """A recipe dataset, loaded once per run, or a StepError when it is not what the step reads.

        `needs`: a capability its kind must have (workbench/data/kinds/base.py: "texts", "words",
        "dependency_trees", "code_trees", ...), so a new kind with it is accepted without naming it here.
        `kinds`: kind names ("text", "treebank", "code"), one of which it must be.
        """
        loaded = self._resources.datasets.get(name)
        if loaded is None:
            recipe = self._resources.plan.recipe
            loaded = load_dataset_spec(name, recipe.recipe.datasets[name], recipe.base_dir)
            if len(loaded) == 0:
                raise StepError(f"dataset '{name}' is empty")
            if self._resources.cache_dir is not None:
                loaded.tokenised_dir = self._resources.cache_dir / "tokenised"
            self._resources.datasets[name] = loaded
        if (kinds and loaded.kind not in kinds) or (needs is not None and not loaded.supports(needs)):
            wanted = [kind_description(kind) for kind in kinds] + ([kind_description(capability=needs)] if needs else [])
            raise StepError(f"{self.step.kind} reads {' or '.join(wanted)} datasets; '{name}' is a {loaded.dataset_kind.description} dataset")
        return loaded

    def upstream(self, step_id: str) -> StepResult:
        return self._resources.results[step_id].to_torch()

    def upstream_params(self, step_id: str) -> StepParams:
        """The parameters another step of this recipe was given (e.g. which dataset it read)."""
        return self._resources.plan.step(step_id).params

    def model(
        self,
        reference: str | None = None,
        *,
        head: str | None = None,
        dtype: str | None = None,
        head_access: bool = True,
        changes_weights: bool = False,
    ) -> "LoadedModel":
        """A fresh copy of the recipe's model, or of the model another step produced.

        `dtype` overrides the recipe's (finetune keeps float32 master weights under autocast);
        `dtype: auto` is the recipe checkpoint's dtype, for fine-tuned copies too.
        `head_access=False`: the step gates and observes no heads, so the recipe's
        `model.attn_implementation` (if any) is used; with head access the workbench attention
        stays, and the step says so once. `changes_weights`: the step trains or slices the
        weights, so a `model.device_map` that offloads modules to cpu/disk is refused.
        The recipe's `model.device_map` / `max_memory` place every model the step loads.
        """
        from workbench.errors import RecipeError
        from workbench.models.loading import checkpoint_dtype, load_model
        from workbench.models.placement import describe
        from workbench.models.sources import resolve_model_source

        spec = self._resources.plan.recipe.recipe.model
        head = head or spec.head
        labels, num_labels = None, spec.num_labels

        def recipe_source() -> str:
            _, folder = resolve_model_source(spec.id, self.recipe_dir)
            return str(folder) if folder is not None else spec.id

        if reference is None:
            source = recipe_source()
            revision = spec.revision
            if head == "sequence-classification":
                labels = self._resources.recipe_labels(source, revision)
                num_labels = num_labels or (len(labels) if labels is not None else None)
        else:
            try:
                source = str(self.upstream(reference).file(MODEL_FOLDER))
            except FileNotFoundError:
                raise StepError(f"step '{reference}' produced no model") from None
            revision = None
        dtype = dtype or spec.dtype
        if dtype == "auto":  # the recipe checkpoint's: a fine-tuned copy is saved in float32
            dtype = checkpoint_dtype(source if reference is None else recipe_source(), spec.revision)
        attention = spec.attn_implementation if not head_access else None
        if head_access and spec.attn_implementation and not getattr(self, "_said_attention", False):
            self._said_attention = True
            self.log(
                f"model.attn_implementation '{spec.attn_implementation}' is not used here: {self.step.kind} "
                "reads the heads, so it keeps the workbench attention function"
            )
        try:
            loaded = load_model(
                source,
                head=head,
                num_labels=num_labels,
                labels=labels,
                revision=revision,
                dtype=dtype,
                device=self.device,
                device_map=spec.device_map,
                max_memory=spec.max_memory,
                attn_implementation=attention,
                changes_weights=changes_weights,
            )
        except RecipeError as error:  # about model.device_map: point at the recipe's line
            if error.file is not None or not (error.field or "").startswith("model."):
                raise
            recipe = self._resources.plan.recipe
            path = tuple(error.field.split(".", 2))  # type: ignore[union-attr]  # a map key may hold dots
            raise RecipeError(
                error.detail, file=recipe.source.file, line=recipe.source.key_line_of(path), field=error.field, hint=error.hint
            ) from None
        if loaded.device_map:
            self.log(f"model placed by model.device_map on {describe(loaded.device_map)}; inputs go to {loaded.device}")
        if reference is None and loaded.resolved_commit:
            self._resources.resolved_commits[spec.id] = loaded.resolved_commit
        return loaded

    def track(self, items: Iterable[T], total: int | None = None, description: str = "") -> Iterator[T]:
        """Iterate with a progress bar labelled with the step id."""
        label = f"{self.step.step_id}: {description}" if description else self.step.step_id
        return self._resources.progress.track(items, total=total, description=label)

    def bar(self, total: int | None, description: str = "") -> ContextManager[Callable[[int], None]]:
        """A progress bar advanced by hand, for loops that are not a single iterable."""
        return self._resources.progress.bar(total, f"{self.step.step_id}: {description}")

    def log(self, message: str) -> None:
        """A line of information from this step (plain text: it may quote data)."""
        self._resources.progress.log(message, step=self.step.step_id)

    def reseed(self, offset: int = 0) -> None:
        """Seed torch, numpy and random from the recipe seed (plus an offset) for a reproducible block."""
        from workbench.device import seed_everything

        seed_everything(self.seed + offset)


def _read_config(source: str, revision: str | None) -> object:
    """A model's config, without its weights (for the class names of a checkpoint)."""
    import transformers

    try:
        return transformers.AutoConfig.from_pretrained(source, revision=revision)
    except Exception as error:  # noqa: BLE001 -- any failure here means the model cannot be loaded either
        # The exception's type only: transformers' messages quote the config's values.
        raise ModelError(f"cannot read the config of model '{source}' ({type(error).__name__})") from None
