"""Plain transformers attention statistics: eager attention, output_attentions, length-sorted batches.

What the workbench's `attention` step computes without a task head (no gradients): per head, the
Clark et al. statistics of workbench/analysis/attention_stats.py, folded batch by batch. That
module is plain torch; it is loaded here from its file (not through the workbench package, whose
imports a plain script would not pay) so both sides fold the same maps the same way. Writes the
[layers, heads] statistics to --out (safetensors).
"""

from __future__ import annotations

import _plain  # first: starts the import clock

import argparse
import importlib.util
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file

def load_statistics_module():  # type: ignore[no-untyped-def]
    """workbench/analysis/attention_stats.py of the workbench that `import workbench` would find, run alone."""
    found = importlib.util.find_spec("workbench")  # locates the package without running its __init__
    folder = Path(list(found.submodule_search_locations)[0]) if found else Path(__file__).resolve().parents[2] / "workbench"
    spec = importlib.util.spec_from_file_location("plain_attention_stats", folder / "analysis" / "attention_stats.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--examples", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    stats = load_statistics_module()
    clock = _plain.Clock()

    sentences, _ = _plain.read_rows(args.data, args.examples)
    tokenizer = transformers.AutoTokenizer.from_pretrained(args.model)
    model = transformers.AutoModel.from_pretrained(args.model, attn_implementation="eager").eval()
    clock.lap("load")
    config = model.config
    separators = torch.tensor(sorted({tokenizer.sep_token_id, tokenizer.eos_token_id} - {None}))
    vocabulary = tokenizer.get_vocab()
    punctuation = torch.tensor(sorted({vocabulary[s] for mark in stats.PUNCTUATION for s in (mark, "Ġ" + mark, "▁" + mark) if s in vocabulary}))
    ids = tokenizer(sentences, truncation=True, max_length=args.max_length)["input_ids"]
    batches = _plain.length_batches([len(row) for row in ids], args.batch_size)
    clock.lap("tokenise")
    statistics = stats.HeadStatistics(config.num_hidden_layers, config.num_attention_heads)
    heads = torch.arange(config.num_attention_heads)
    with torch.inference_mode():
        for rows in batches:
            input_ids, mask = _plain.pad(ids, rows, tokenizer.pad_token_id)
            statistics.set_batch(mask, torch.isin(input_ids, separators), torch.isin(input_ids, punctuation))
            attentions = model(input_ids=input_ids, attention_mask=mask, output_attentions=True).attentions
            for layer, probs in enumerate(attentions):
                statistics.observe(layer, heads, probs)
    result = statistics.result()
    clock.lap("compute")
    save_file({name: value.contiguous() for name, value in result.items()}, args.out)
    clock.lap("save")
    clock.report(examples=len(sentences))


if __name__ == "__main__":
    main()
