"""Pruned models as dense checkpoints (issue 9): zeros where the pruned heads were, full shapes, no
workbench metadata, loadable by plain `transformers` in a process that cannot import the workbench,
with the pruned model's outputs (atol 1e-5). BERT, RoBERTa, GPT-2 and Llama with grouped-query
attention under both GQA policies; architectures the pruner does not know are refused."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import HEAD_CLASSES
from workbench.errors import ModelError
from workbench.models.dense import write_dense_model
from workbench.models.loading import load_model, save_model
from workbench.models.pruning import prune_heads

CASES = {  # family, head, heads to prune (layer 1 of BERT and GPT-2 loses every head), GQA policy
    "bert": ("bert", "sequence-classification", {0: [1], 1: [0, 1, 2, 3]}, "groups"),
    "roberta": ("roberta", "base", {0: [1, 3]}, "groups"),
    "gpt2": ("gpt2", "causal-lm", {0: [0, 2], 1: [0, 1, 2, 3]}, "groups"),
    "llama-groups": ("llama", "causal-lm", {0: [0, 1], 1: [2, 3]}, "groups"),
    "llama-per-group": ("llama", "sequence-classification", {0: [0, 2], 1: [1, 3]}, "per_group"),
    # layouts of their own: the original GPT (heads via the output projection), DeBERTa-v2 with its
    # relative-position projections, GPT-NeoX's head-by-head fused query_key_value, ModernBERT's stacked Wqkv
    "openai-gpt": ("openai-gpt", "sequence-classification", {0: [1], 1: [0, 2]}, "groups"),
    "deberta-v2": ("deberta-v2", "base", {0: [1, 3]}, "groups"),
    "gpt-neox": ("gpt-neox", "causal-lm", {0: [0, 2], 1: [3]}, "groups"),
    "modernbert": ("modernbert", "base", {1: [0, 1, 2]}, "groups"),
}
INPUTS = [[2, 17, 45, 99, 7, 3], [2, 81, 5, 3, 0, 0]]
MASK = [[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]]

# Runs in a fresh interpreter: isolated mode (no cwd, no PYTHONPATH on sys.path) and `workbench`
# made unimportable, so only transformers' own code can load the checkpoints.
WITHOUT_WORKBENCH = """
import importlib.abc, json, sys

class NoWorkbench(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "workbench" or name.startswith("workbench."):
            raise ImportError("the workbench must not be needed")

sys.meta_path.insert(0, NoWorkbench())
import torch, transformers
cases = json.loads(sys.argv[1])
out = {}
for name, (folder, head_class) in cases.items():
    model = getattr(transformers, head_class).from_pretrained(folder)
    model.eval()
    with torch.no_grad():
        result = model(input_ids=torch.tensor(%(inputs)s), attention_mask=torch.tensor(%(mask)s))
    values = result.logits if getattr(result, "logits", None) is not None else result.last_hidden_state
    out[name] = {"logits": values.tolist(), "impl": model.config._attn_implementation}
print(json.dumps({"out": out, "workbench": sorted(m for m in sys.modules if m.split(".")[0] == "workbench")}))
""" % {"inputs": INPUTS, "mask": MASK}


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory):
    """{case: (dense folder, head class, logits of the compact pruned model [batch, (seq,) labels])}."""
    made = {}
    for name, (family, head, heads, policy) in CASES.items():
        root = tmp_path_factory.mktemp(name)
        loaded = load_model(str(tiny_model_dir(family, head)), head=head)
        prune_heads(loaded, heads, gqa_policy=policy)
        save_model(loaded, root / "pruned")
        compact = load_model(str(root / "pruned"), head=head)  # the compact form still loads
        assert compact.model.config.num_attention_heads == 4
        with torch.no_grad():
            output = compact.model(input_ids=torch.tensor(INPUTS), attention_mask=torch.tensor(MASK))
        logits = output.logits if getattr(output, "logits", None) is not None else output.last_hidden_state
        result = write_dense_model(root / "pruned", root / "dense")
        made[name] = (root / "dense", HEAD_CLASSES[head], logits, result)
    return made


def test_dense_checkpoints_load_without_the_workbench_and_match_the_pruned_models(exported, tmp_path):
    cases = {name: (str(folder), head_class) for name, (folder, head_class, _, _) in exported.items()}
    done = subprocess.run(
        [sys.executable, "-I", "-c", WITHOUT_WORKBENCH, json.dumps(cases)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["workbench"] == []
    for name, (_, _, expected, _) in exported.items():
        dense = torch.tensor(report["out"][name]["logits"])
        if dense.dim() == 3:  # per-token outputs (language models, a base model's states): the real tokens only
            keep = torch.tensor(MASK).bool()
            dense, expected = dense[keep], expected[keep]
        assert torch.allclose(dense, expected, atol=1e-5), (name, float((dense - expected).abs().max()))
        assert report["out"][name]["impl"] != "workbench"


def test_dense_weights_have_full_shapes_with_zeros_where_heads_were_pruned(exported):
    from safetensors.torch import load_file

    folder, _, _, result = exported["bert"]
    config = json.loads((folder / "config.json").read_text())
    assert "workbench" not in config and "workbench" not in json.dumps(config)
    assert result.pruned_heads == {0: [1], 1: [0, 1, 2, 3]} and result.max_abs_difference < 1e-5
    weights = load_file(str(folder / "model.safetensors"))
    query = weights["bert.encoder.layer.0.attention.self.query.weight"]  # [heads * head_dim, hidden], head_dim 8
    output = weights["bert.encoder.layer.0.attention.output.dense.weight"]  # [hidden, heads * head_dim]
    assert query.shape == (32, 32) and output.shape == (32, 32)
    assert query[8:16].abs().sum() == 0 and output[:, 8:16].abs().sum() == 0
    assert query[:8].abs().sum() > 0 and output[:, 16:].abs().sum() > 0
    assert weights["bert.encoder.layer.1.attention.self.value.weight"].abs().sum() == 0  # every head gone

    folder, _, _, _ = exported["gpt2"]
    fused = load_file(str(folder / "model.safetensors"))["transformer.h.0.attn.c_attn.weight"]  # [in, q|k|v]
    assert fused.shape == (32, 96)
    for block in range(3):  # heads 0 and 2 of each of the q, k, v blocks
        assert fused[:, block * 32 : block * 32 + 8].abs().sum() == 0 and fused[:, block * 32 + 16 : block * 32 + 24].abs().sum() == 0
        assert fused[:, block * 32 + 8 : block * 32 + 16].abs().sum() > 0

    folder, _, _, _ = exported["llama-groups"]
    weights = load_file(str(folder / "model.safetensors"))
    k_proj = weights["model.layers.1.self_attn.k_proj.weight"]  # 2 K/V groups; heads 2, 3 = group 1
    assert k_proj.shape == (16, 32) and k_proj[8:].abs().sum() == 0 and k_proj[:8].abs().sum() > 0


def test_architectures_the_pruner_refuses_are_refused(tmp_path):
    import transformers

    from tests.conftest import minilm_path

    config = transformers.BloomConfig(vocab_size=30522, hidden_size=32, n_layer=2, n_head=4)
    transformers.AutoModel.from_config(config).save_pretrained(tmp_path / "bloom")
    transformers.AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(tmp_path / "bloom")
    with pytest.raises(ModelError, match="cannot export BloomModel as a dense model") as raised:
        write_dense_model(tmp_path / "bloom", tmp_path / "out")
    assert "ALiBi" in str(raised.value)
    assert "supported: every layout structural pruning supports" in str(raised.value)
    assert not (tmp_path / "out").exists()
