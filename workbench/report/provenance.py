"""The report's provenance and recipe sections: what the run was made from.

Runs record `environment["provenance"]` (workbench/bundles/provenance.py, version 1): the recipe
as run, the model's fingerprint and files (or hub commit), every dataset's fingerprint and local
files with their sha256, seed, requested device, world size. Older runs lack it; for them the
model and datasets are read from the recipe text and the page says what was not recorded. Every
lookup tolerates a missing or oddly shaped value: a store is data, whatever version wrote it.
"""

from __future__ import annotations

from typing import Any

from workbench.db.records import RunDetail
from workbench.errors import WorkbenchError
from workbench.report.markup import Content, Html, element, join, text
from workbench.report.tables import pairs, paragraph, table

# Software-environment keys in the order a reader looks for them, with their labels.
ENVIRONMENT_LABELS = {
    "git_commit": "git commit (recipe folder)",
    "host": "host",
    "device": "device (ran on)",
    "device_name": "device name",
    "threads": "threads",
    "torch_cuda": "CUDA (torch build)",
    "python": "Python",
    "platform": "platform",
}
SHOWN_ELSEWHERE = {"packages", "model_commits", "provenance"}
MODEL_KEYS = ("id", "revision", "head", "num_labels", "dtype", "source", "package_version", "folder", "fingerprint", "resolved_commit")
PROVENANCE_SHOWN = {"version", "host", "recipe", "seed", "device_requested", "world_size", "model", "datasets", "dataset_fingerprints", "step_keys"}


def provenance_section(run: RunDetail) -> Html:
    environment = mapping(run.environment)
    recorded = mapping(environment.get("provenance"))
    recipe = recipe_document(run.recipe_text)
    parts: list[Content] = [element("h2", "Provenance")]
    if not recorded:
        parts.append(paragraph("This run was recorded before runs kept their provenance: the model and datasets below are "
                               "read from its recipe, without hashes.", class_="note"))
    parts.append(_model(mapping(recorded.get("model")) or mapping(recipe.get("model")), environment.get("model_commits")))
    parts.append(_datasets(recorded, mapping(recipe.get("datasets"))))
    parts.append(_run_facts(run, environment, recorded))
    packages = mapping(environment.get("packages"))
    if packages:
        versions = ((name, version or "not installed") for name, version in packages.items())
        parts.append(pairs(versions, caption="Packages", numbers=False))
    parts.append(
        paragraph(
            "Each step's cache key (in its section) covers its kind and version, its parameters, the seed, "
            "the model and dataset fingerprints and the keys of the steps it depends on: equal keys, equal inputs.",
            class_="note",
        )
    )
    return element("section", parts, id="provenance")


def recipe_section(run: RunDetail) -> Html:
    """The recipe as run: the file's text with the --set overrides applied where the run recorded it."""
    recorded = mapping(mapping(mapping(run.environment).get("provenance")).get("recipe"))
    as_run = recorded.get("as_run") if isinstance(recorded.get("as_run"), str) else None
    parts: list[Content] = [element("h2", "Recipe (as run)")]
    if run.overrides:
        parts.append(paragraph("overrides: ", element("code", " ".join(f"--set {o}" for o in run.overrides))))
    if as_run is not None and run.overrides:
        parts += [element("h3", "with the overrides applied"), element("pre", as_run)]
        parts += [element("h3", "the recipe file"), element("pre", run.recipe_text)]
    else:
        parts.append(element("pre", run.recipe_text))
        if run.overrides:
            parts.append(paragraph("this run did not record the recipe with its overrides applied; they are listed above", class_="note"))
    parts.append(paragraph("Every step's parameters, defaults filled in, are listed in its section.", class_="note"))
    return element("section", parts, id="recipe")


# --- the parts -----------------------------------------------------------------------------------------


def _model(model: dict[str, Any], commits: Any) -> Html:
    facts: list[tuple[Content, Content]] = [
        (f"model {key.replace('_', ' ')}", element("code", value_text(model[key]))) for key in MODEL_KEYS if model.get(key) is not None
    ]
    for model_id, commit in mapping(commits).items():
        facts.append((f"hub commit of {model_id}", element("code", value_text(commit))))
    if not any("fingerprint" in str(label) or "commit" in str(label) for label, _ in facts):
        facts.append(("model fingerprint", element("span", "not recorded by this run (every step's cache key covers it)", class_="muted")))
    parts: list[Content] = [element("h3", "Model"), facts_list(facts)]
    files = [item for item in model.get("files") or [] if isinstance(item, dict)]
    if files:
        rows = [[item.get("name"), _bytes(item.get("bytes")), element("code", item.get("sha256"))] for item in files]
        parts.append(table(["file", "bytes", "sha256"], rows, caption="Model files (the fingerprint covers them)", align="lrl"))
    return join(parts)


def _datasets(recorded: dict[str, Any], from_recipe: dict[str, Any]) -> Html:
    described = mapping(recorded.get("datasets"))
    fingerprints = mapping(recorded.get("dataset_fingerprints"))
    names = list(described) or list(from_recipe)
    if not names:
        return Html("")
    rows, files = [], []
    for name in names:
        spec = mapping(described.get(name)) or mapping(from_recipe.get(name))
        source = ", ".join(
            f"{key} {value_text(spec[key])}" for key in ("name", "revision", "split", "resolved_commit") if spec.get(key) is not None
        )
        options = {k: v for k, v in mapping(from_recipe.get(name)).items() if k not in ("path", "data_files", "name", "revision", "split")}
        rows.append(
            [
                name,
                spec.get("path", "-"),
                source or ("generated from the options" if spec.get("generated") else "-"),
                value_text(options) if options else "-",
                element("code", value_text(fingerprints[name])) if name in fingerprints else "-",
            ]
        )
        for item in spec.get("inputs") or []:
            if isinstance(item, dict):
                files.append(_input_row(name, item))
    parts: list[Content] = [
        element("h3", "Datasets"),
        table(["dataset", "source", "name, revision, split", "options", "fingerprint"], rows, align="lllll"),
    ]
    if files:
        parts.append(table(["dataset", "file", "bytes", "sha256", "path"], files, caption="Data files read", align="llrll"))
    elif not described:
        parts.append(paragraph("data file hashes: not recorded by this run", class_="note"))
    return join(parts)


def _input_row(dataset: str, item: dict[str, Any]) -> list[Content]:
    kind = item.get("kind")
    if kind == "folder":
        inner = [f for f in item.get("files") or [] if isinstance(f, dict)]
        size: Content = _bytes(sum(f.get("bytes") or 0 for f in inner))
        digest: Content = f"a folder of {len(inner)} files"
    elif kind == "file":
        size, digest = _bytes(item.get("bytes")), element("code", item.get("sha256"))
    else:
        size, digest = "-", f"{kind or 'unresolved'}: resolved by the datasets library"
    return [dataset, item.get("name") or item.get("written"), size, digest, element("code", item.get("resolved") or item.get("written"))]


def _run_facts(run: RunDetail, environment: dict[str, Any], recorded: dict[str, Any]) -> Html:
    facts: list[tuple[Content, Content]] = [("seed", str(run.seed))]
    for key, label in (("device_requested", "device (requested)"), ("world_size", "processes (world size)")):
        if recorded.get(key) is not None:
            facts.append((label, value_text(recorded[key])))
    if run.recipe_path:
        facts.append(("recipe file", element("code", run.recipe_path)))
    facts.append(("recipe hash", element("code", run.summary.recipe_hash)))
    merged = {**{k: v for k, v in recorded.items() if k == "host"}, **environment}
    for key, label in ENVIRONMENT_LABELS.items():
        if key in merged:
            facts.append((label, value_text(merged[key]) if merged[key] not in (None, "") else "-"))
    extra = {k: v for k, v in environment.items() if k not in ENVIRONMENT_LABELS and k not in SHOWN_ELSEWHERE}
    extra.update({f"provenance {k}": v for k, v in recorded.items() if k not in PROVENANCE_SHOWN})
    facts += [(key, value_text(value)) for key, value in extra.items()]  # recorded by a newer workbench: shown as is
    return join([element("h3", "Run and software"), facts_list(facts)])


# --- helpers -------------------------------------------------------------------------------------------


def facts_list(items: list[tuple[Content, Content]]) -> Html:
    return element("dl", (join([element("dt", name), element("dd", value)]) for name, value in items), class_="facts")


def mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def value_text(value: Any) -> Html:
    """A recorded value as text: mappings as `key: value`, lists in brackets; never markup."""
    if isinstance(value, dict):
        return text(", ".join(f"{key}: {_plain(item)}" for key, item in value.items()) or "{}")
    return text(_plain(value))


def _plain(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_plain(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_plain(item)}" for key, item in value.items()) + "}"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _bytes(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else "-"


def recipe_document(recipe_text: str) -> dict[str, Any]:
    """The recipe as data, for runs that recorded no provenance; the text itself is shown whole.
    It was validated when the run started; a text that no longer parses just leaves the tables out."""
    from workbench.recipe.yaml_source import read_yaml_value  # YAML 1.2 and the bounds the run read it with

    try:
        document, _ = read_yaml_value(recipe_text, "recipe")
    except WorkbenchError:
        return {}
    return mapping(document)

