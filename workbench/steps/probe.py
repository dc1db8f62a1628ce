"""`probe`: what each layer encodes (Tenney, Das & Pavlick 2019; Hewitt & Liang 2019).

Probes train on features another step cached: `train`, `dev` and (optionally) `test` each name an
`extract` step, and the labels come from the dataset that step read, lined up with the words it
kept (words cut by `max_length` are not probed). Nothing runs the model again, so probes train in
seconds, and editing a probe option re-trains only the probes.

Tasks (`task:`):

    upos, xpos, deprel   one example per word of a treebank (deprel without subtypes unless
                         `subtypes: true`)
    edge                 one example per dependency arc of a treebank, root arcs excluded: the
                         relation of (head word, dependent word) from the features [h_head; h_dep]
    leaf_kind            one example per syntax-tree leaf of a python_code dataset: its tokenize
    leaf_parent          type (NAME, OP, ...) or the AST node type it hangs from
    label                one example per text example: the dataset's `label:` column (sentence
                         features, extract `pooling: mean | first | last`)

Per layer a probe (linear or a one-hidden-layer MLP) is trained on `train` with mini-batch AdamW
(`batch_size: null` for full batch), early-stopped on `dev` accuracy and scored on `test`.
`scalar_mix` adds a probe on a learned softmax mix of all layers (center of gravity =
sum_l l * s_l); `cumulative` adds scalar-mix probes P(l) over layers 0..l with Delta(l) and the
expected layer (P(L) is then the scalar-mix probe, trained once). `control` trains the per-layer
probes again on Hewitt & Liang's control task (every word type gets one random label drawn from
the label distribution) for the selectivity = accuracy - control accuracy. For edge tasks the type
is the dependent's (`edge_control: dependent`, the default) or the (head, dependent) pair's; pairs
seldom repeat between train and test, so a pair control sits near chance and makes any probe look
selective.

Probes train on one CPU thread: they are small, and more threads only contend. Layer scores are
indexed by hidden-state index (0 = embeddings); layers not probed are NaN. The center of gravity and
the expected layer are hidden-state indices too, also when `layers:` picks a subset. The
best layer is chosen on dev accuracy and reported with its test accuracy.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator

from workbench.data.kinds import Capability, kind_for, kinds_with, paths_with
from workbench.steps.base import PresetParams, Step, StepResult

if TYPE_CHECKING:
    import torch

    from workbench.context import StepContext
    from workbench.data.loaded import LoadedDataset
    from workbench.feature_shards import WordFeatures

Task = Literal["upos", "xpos", "deprel", "edge", "leaf_kind", "leaf_parent", "label"]
TASK_NEEDS: dict[str, Capability] = {  # task -> what its dataset's kind must have (workbench/data/kinds/)
    "upos": "dependency_trees",
    "xpos": "dependency_trees",
    "deprel": "dependency_trees",
    "edge": "dependency_trees",
    "leaf_kind": "code_trees",
    "leaf_parent": "code_trees",
    "label": "labels",  # and a `label:` column named: sentence features of a text dataset
}
SPLITS = ("train", "dev", "test")


class ProbeParams(PresetParams):
    train: str = Field(description="an extract step whose features train the probes")
    dev: str = Field(description="an extract step whose features early-stop the probes and pick the best layer")
    test: str | None = Field(
        None, description="an extract step whose features score the probes; without one, dev scores them (and says so)"
    )
    task: Task = Field(
        "upos", description="upos, xpos, deprel, edge (treebanks); leaf_kind, leaf_parent (code); label (text)"
    )
    subtypes: bool = Field(False, description="deprel/edge: keep subtypes such as nsubj:pass")
    layers: Literal["all"] | list[int] = Field("all", description="hidden-state indices to probe, among those extracted")
    probe: Literal["linear", "mlp"] = Field("linear", description="linear, or an MLP with one ReLU hidden layer")
    hidden: int = Field(256, ge=1, le=65536, description="MLP hidden width")
    lr: float = Field(1e-2, gt=0, le=10, description="AdamW learning rate (0.03 suits full batch)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW decay of the weight matrices")
    epochs: int = Field(50, ge=1, le=100_000, description="most epochs per probe")
    patience: int = Field(3, ge=1, description="epochs without a better dev accuracy before stopping")
    batch_size: int | None = Field(512, ge=1, description="examples per optimiser step; null: full batch")
    scalar_mix: bool = Field(True, description="a probe on a learned softmax mix of all layers")
    mix_standardize: bool = Field(
        True, description="standardise each layer before the scalar mix (false: mix the raw layers, as jiant)"
    )
    objective: Literal["softmax", "sigmoid"] = Field(
        "softmax", description="softmax cross-entropy, or jiant's sigmoid (one-vs-rest) cross-entropy"
    )
    cumulative: bool = Field(False, description="scalar-mix probes over layers 0..l, Delta(l), expected layer")
    cumulative_metric: Literal["accuracy", "macro_f1", "micro_f1"] = Field(
        "accuracy", description="the score Delta(l) is taken of (micro_f1 of sigmoid probes: jiant's 0.5 threshold)"
    )
    cumulative_split: Literal["dev", "test"] = Field("test", description="the split Delta(l) is scored on (Tenney: dev)")
    control: bool = Field(False, description="Hewitt & Liang control task and selectivity")
    control_key: Literal["form", "lower"] = Field("form", description="what a word type is: its form, or lower-cased")
    edge_control: Literal["dependent", "pair"] = Field(
        "dependent", description="edge tasks: control labels follow the dependent's type, or the (head, dependent) pair's"
    )

    references: ClassVar[dict[str, str]] = {"train": "features", "dev": "features", "test": "features"}
    # Tenney et al. through jiant: scalar mix of raw layers, cumulative probes scored on dev micro-F1.
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {
            "scalar_mix": True,
            "mix_standardize": False,
            "objective": "sigmoid",
            "cumulative": True,
            "cumulative_metric": "micro_f1",
            "cumulative_split": "dev",
        },
    }
    PRESET_NOTES: ClassVar[dict[str, str]] = {
        "mix_standardize": "standardised layers make the mix weights compare what layers hold, not their norms "
        "(which grow with depth in BERT)",
        "objective": "every task here has one label per example, which softmax models directly",
        "cumulative": "off by default: L + 1 extra scalar-mix probes",
        "cumulative_metric": "for single-label softmax probes micro-F1 is the accuracy",
        "cumulative_split": "a test split keeps Delta(l) apart from the dev data that early-stops the probes",
    }

    @field_validator("layers")
    @classmethod
    def _distinct(cls, value: str | list[int]) -> str | list[int]:
        if isinstance(value, list) and (not value or len(set(value)) != len(value) or min(value) < 0):
            raise ValueError("give a non-empty list of distinct hidden-state indices (0 = embeddings)")
        return value

    def check(self, recipe):  # type: ignore[no-untyped-def]
        problems = []
        needs = TASK_NEEDS[self.task]
        for field, step_id in self.referenced_steps().items():
            step = recipe.steps.get(step_id)
            if not isinstance(step, dict) or step.get("kind") != "extract":
                continue  # a missing or wrong reference is reported by the reference check
            dataset = step.get("dataset")
            spec = recipe.datasets.get(dataset) if isinstance(dataset, str) else None
            if spec is None:
                continue
            supported = kind_for(spec.path).supports(needs)
            if needs != "labels" and not supported:
                problems.append((field, f"task '{self.task}' needs a {paths_with(needs)} dataset; '{step_id}' reads {spec.path}"))
            elif needs == "labels" and (not supported or not spec.label):
                message = f"task 'label' needs a text dataset with a label column; '{step_id}' reads {spec.path}"
                problems.append((field, message))
            if step.get("pooling") == "none":
                problems.append((field, f"'{step_id}' keeps every token (pooling: none); probes need pooled features"))
        return problems


@dataclass
class ProbeExamples:
    """The examples one extract step gives a task: feature rows, labels and control-task keys."""

    rows: "torch.Tensor"  # [n] feature rows, or [n, 2] (head row, dependent row) for edge tasks
    labels: list[str]
    keys: list[Hashable]  # word types for the control task
    dropped: int  # examples lost because their words were cut by max_length or had no sub-tokens


class Probe(Step):
    kind = "probe"
    version = 2  # presets; control labels from the training distribution; micro-F1; dev named as dev
    Params = ProbeParams
    data_parallel = False  # small models on cached features: rank 0 trains them while the others wait
    summary = (
        "Per-layer probes (linear or MLP) on cached word features for POS, dependency labels, edges or "
        "any label; scalar mix and center of gravity, cumulative probes and expected layer, control tasks "
        "and selectivity."
    )

    def run(self, ctx: "StepContext", params: ProbeParams) -> StepResult:  # type: ignore[override]
        import torch

        from workbench.analysis.probing import (
            ProbeConfig,
            Splits,
            control_labels,
            cumulative_probes,
            layerwise_probes,
            scalar_mix_probe,
        )
        from workbench.errors import StepError
        from workbench.feature_shards import read_features

        sources = {"train": params.train, "dev": params.dev, "test": params.test or params.dev}
        requested = None if params.layers == "all" else list(params.layers)
        parts: dict[str, tuple[torch.Tensor, ProbeExamples]] = {}
        layers: list[int] | None = None
        for split, step_id in sources.items():
            if split == "test" and params.test is None:
                parts["test"] = parts["dev"]
                continue
            features = read_features(ctx.upstream(step_id), requested)
            if layers is not None and features.layers != layers:
                raise StepError(f"'{step_id}' extracted layers {features.layers}, '{params.train}' extracted {layers}")
            layers = features.layers
            dataset = ctx.dataset(extract_dataset_name(ctx, step_id))
            examples = task_examples(params, dataset, features)
            if not examples.labels:
                raise StepError(f"'{step_id}' gives no example for task '{params.task}'")
            parts[split] = (_example_features(features, examples.rows), examples)
        assert layers is not None
        dims = {part[0].shape[-1] for part in parts.values()}
        if len(dims) > 1:
            raise StepError(f"the extract steps have different feature sizes {sorted(dims)}; use one model")

        # Labels: ids by train frequency; a label seen only in dev/test gets an id the probe never learns.
        frequency = Counter(parts["train"][1].labels)
        names = [label for label, _ in frequency.most_common()]
        names += sorted({label for split in ("dev", "test") for label in parts[split][1].labels} - set(frequency))
        label_id = {name: index for index, name in enumerate(names)}
        unique = {split: parts[split] for split in SPLITS if split != "test" or params.test is not None}
        order = list(unique)
        features = torch.cat([unique[split][0] for split in order], dim=1)  # [layers, N, dim]
        labels = torch.tensor([label_id[label] for split in order for label in unique[split][1].labels])  # [N]
        keys = [key for split in order for key in unique[split][1].keys]
        bounds, start = {}, 0
        for split in order:
            bounds[split] = torch.arange(start, start + len(unique[split][1].labels))
            start += len(unique[split][1].labels)
        splits = Splits(train=bounds["train"], dev=bounds["dev"], test=bounds.get("test", bounds["dev"]))

        config = ProbeConfig(
            kind=params.probe,
            hidden=params.hidden,
            lr=params.lr,
            weight_decay=params.weight_decay,
            max_epochs=params.epochs,
            batch_size=params.batch_size,
            patience=params.patience,
            seed=ctx.seed,
            objective=params.objective,
            standardize_mix=params.mix_standardize,
        )
        count = len(layers)
        separate_mix = params.scalar_mix and not params.cumulative  # else P(L) of the cumulative probes is the mix
        total = count * (1 + params.control) + separate_mix + count * params.cumulative
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # probes are small: one thread is fastest, and never oversubscribes
        try:
            with ctx.bar(total, f"{params.task} probes") as advance:
                scores = layerwise_probes(features, labels, splits, config, on_progress=lambda _: advance(1))
                control = None
                if params.control:
                    fake = control_labels(keys, labels, seed=ctx.seed, train=splits.train)  # [N], train distribution
                    control = layerwise_probes(features, fake, splits, config, on_progress=lambda _: advance(1))
                mix = cumulative = None
                if separate_mix:
                    mix = scalar_mix_probe(features, labels, splits, config, layers=layers)
                    advance(1)
                if params.cumulative:
                    cumulative = cumulative_probes(
                        features,
                        labels,
                        splits,
                        config,
                        metric=params.cumulative_metric,
                        split=params.cumulative_split,
                        on_progress=lambda _: advance(1),
                        layers=layers,
                    )
                    if params.scalar_mix:
                        mix = cumulative.mixes[-1]  # the probe on a mix of every layer
        finally:
            torch.set_num_threads(threads)

        return _result(params, layers, names, labels, splits, parts, scores, control, mix, cumulative)


# --- examples -------------------------------------------------------------------------------------


def extract_dataset_name(ctx: "StepContext", step_id: str) -> str:
    """The recipe dataset an extract step read.

    Taken from the plan rather than from the step's cached data: a cache entry is shared by every
    recipe whose dataset has the same content, whatever that recipe calls it.
    """
    return ctx.upstream_params(step_id).dataset  # type: ignore[attr-defined]


def task_examples(params: ProbeParams, dataset: "LoadedDataset", features: "WordFeatures") -> ProbeExamples:
    """Examples of `params.task` from the words an extract step kept, lined up with its feature rows."""
    import torch

    from workbench.errors import StepError

    if params.task == "label":
        return _label_examples(dataset, features)
    needs = TASK_NEEDS[params.task]
    if not dataset.supports(needs):
        expected = " or ".join(dict.fromkeys(kind.kind for kind in kinds_with(needs)))
        raise StepError(f"task '{params.task}' needs a {expected} dataset; '{dataset.name}' is a {dataset.kind} dataset")
    items = dataset.items()
    if len(features) and features.sentence.max() >= len(items):
        raise StepError(f"the features cover more examples than dataset '{dataset.name}' has")
    total_words = sum(len(item) for item in items)

    def key(form: str) -> str:
        return form.lower() if params.control_key == "lower" else form

    def relation(deprel: str) -> str:
        return deprel if params.subtypes else deprel.split(":", 1)[0]

    if params.task == "edge":
        lookup = features.row_lookup()
        rows, labels, keys = [], [], []
        arcs = 0
        for index, sentence in enumerate(items):
            for dependent, (head, deprel) in enumerate(zip(sentence.heads, sentence.deprels)):
                if head == 0:
                    continue  # root arcs have no head word
                arcs += 1
                head_row, dependent_row = lookup.get((index, head - 1)), lookup.get((index, dependent))
                if head_row is None or dependent_row is None:
                    continue
                rows.append((head_row, dependent_row))
                labels.append(relation(deprel))
                dependent_type = key(sentence.words[dependent])
                pair = (key(sentence.words[head - 1]), dependent_type)
                keys.append(dependent_type if params.edge_control == "dependent" else pair)
        return ProbeExamples(torch.tensor(rows, dtype=torch.long).reshape(-1, 2), labels, keys, arcs - len(rows))

    column = {
        "upos": lambda item, word: item.upos[word],
        "xpos": lambda item, word: item.xpos[word],
        "deprel": lambda item, word: relation(item.deprels[word]),
        "leaf_kind": lambda item, word: item.kinds[word],
        "leaf_parent": lambda item, word: item.parents[word],
    }[params.task]
    words_of = dataset.dataset_kind.item_words  # the forms the control task keys on
    labels, keys = [], []
    for index, word in zip(features.sentence.tolist(), features.word.tolist()):
        item = items[index]
        if word >= len(item):
            raise StepError(f"the features name word {word} of example {index}, which has {len(item)} words")
        labels.append(column(item, word))
        keys.append(key(words_of(item)[word]))
    return ProbeExamples(torch.arange(len(features)), labels, keys, total_words - len(features))


def _label_examples(dataset: "LoadedDataset", features: "WordFeatures") -> ProbeExamples:
    """Sentence-level probing: one pooled vector per text example, its label column as the target."""
    import torch

    from workbench.errors import StepError

    values = dataset.labels() if dataset.supports("labels") else None
    if values is None:
        raise StepError(f"task 'label' needs a text dataset with a label column; '{dataset.name}' has none")
    if len(features) != len(values) or not torch.equal(features.sentence, torch.arange(len(values))):
        raise StepError(f"the features hold {len(features)} vectors for the {len(values)} examples of '{dataset.name}'")
    from workbench.data.labels import check_no_missing

    check_no_missing(values, dataset.name)
    names = dataset.class_names  # ClassLabel columns: their names; else the raw values, as text
    labels = [names[value] if names and isinstance(value, int) else str(value) for value in values]
    keys = [" ".join(text) for text in dataset.texts()]  # the control "type" of a sentence is its text
    return ProbeExamples(torch.arange(len(values)), labels, keys, 0)


def _example_features(features: "WordFeatures", rows: "torch.Tensor") -> "torch.Tensor":
    """[layers, n, dim] for token tasks, [layers, n, 2 * dim] ([h_head; h_dep]) for edge tasks."""
    import torch

    if rows.dim() == 1:
        return features.features.index_select(1, rows)
    heads = features.features.index_select(1, rows[:, 0])
    dependents = features.features.index_select(1, rows[:, 1])
    return torch.cat([heads, dependents], dim=-1)


# --- results --------------------------------------------------------------------------------------


def _result(params, layers, names, labels, splits, parts, scores, control, mix, cumulative) -> StepResult:  # type: ignore[no-untyped-def]
    import torch

    from workbench.analysis.probing import selectivity

    size = max(layers) + 1

    def by_layer(values: list[float], where: list[int] = layers) -> "torch.Tensor":
        line = torch.full((size,), math.nan, dtype=torch.float64)
        line[where] = torch.tensor(values, dtype=torch.float64)
        return line

    scored_on = "test" if params.test else "dev"  # without a test split, dev both selects and scores
    splits_used = SPLITS if params.test else ("train", "dev")
    layer_scores = {"accuracy": by_layer(scores.accuracy), "macro_f1": by_layer(scores.macro_f1)}
    best = max(range(len(layers)), key=lambda slot: (scores.dev_accuracy[slot], -slot))
    metrics: dict[str, float] = {
        "best_layer": layers[best],
        "best_accuracy": scores.accuracy[best],
        "best_macro_f1": scores.macro_f1[best],
        "classes": len(names),
        "majority_accuracy": _majority_accuracy(labels, splits),
        **{f"{split}_examples": len(parts[split][1].labels) for split in splits_used},
    }
    data: dict[str, Any] = {
        "task": params.task,
        "probe": params.probe,
        "layers": layers,
        "labels": names,
        "selection": "best layer by dev accuracy; scores on " + ("test" if params.test else "dev (no test split)"),
        "scored_on": scored_on,
        "accuracy": scores.accuracy,
        "macro_f1": scores.macro_f1,
        "dev_accuracy": scores.dev_accuracy,
        "examples": {split: len(parts[split][1].labels) for split in splits_used},
        "dropped": {split: parts[split][1].dropped for split in splits_used},
    }
    if not params.test:
        data["warnings"] = [
            "no test split: the best layer was chosen on dev and scored on the same dev data, so its score is "
            "optimistic; give `test:` an extract step of held-out data"
        ]
    if control is not None:
        gap = selectivity(scores, control)
        layer_scores["control_accuracy"] = by_layer(control.accuracy)
        layer_scores["selectivity"] = by_layer(gap)
        metrics["control_accuracy_at_best"] = control.accuracy[best]
        metrics["selectivity_at_best"] = gap[best]
        metrics["max_selectivity"] = max(gap)
        data["control_accuracy"] = control.accuracy
        data["selectivity"] = gap
        data["control_key"] = params.control_key if params.task != "edge" else f"{params.control_key}, {params.edge_control}"
    if mix is not None:
        layer_scores["mix_weight"] = by_layer(mix.weights)
        metrics["center_of_gravity"] = mix.center_of_gravity  # in hidden-state indices, whatever `layers:`
        metrics["mix_accuracy"] = mix.accuracy
        metrics["mix_macro_f1"] = mix.macro_f1
        data["mix"] = {
            "weights": mix.weights,
            "gamma": mix.gamma,
            "center_of_gravity": metrics["center_of_gravity"],
            "accuracy": mix.accuracy,
            "macro_f1": mix.macro_f1,
        }
    if cumulative is not None:
        deltas = [math.nan, *cumulative.deltas]
        expected = cumulative.expected_layer  # in hidden-state indices
        layer_scores["cumulative_score"] = by_layer(cumulative.scores)
        layer_scores["delta"] = by_layer(deltas)
        metrics["expected_layer"] = expected
        metrics["cumulative_final"] = cumulative.scores[-1]
        data["cumulative"] = {
            "scores": cumulative.scores,
            "deltas": cumulative.deltas,
            "expected_layer": _finite(expected),
            "metric": cumulative.metric,
            "split": cumulative.split if params.test else "dev",
        }
    return StepResult(metrics=metrics, layer_scores={k: v.float() for k, v in layer_scores.items()}, data=data)


def _majority_accuracy(labels: "torch.Tensor", splits: Any) -> float:
    """Test accuracy of always answering the most frequent train label."""
    majority = int(labels[splits.train].bincount().argmax())
    return float((labels[splits.test] == majority).double().mean())


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
