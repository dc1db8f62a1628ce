"""nnsight extraction: the embeddings' and every layer's output saved inside a trace, mean-pooled.

The same length-sorted batches as extract_loop.py --order length (and the workbench); features are
written in dataset order as layer_<l> [examples, dim] float32 to --out. Needs nnsight
(an optional benchmark dependency): without it the script exits with status 3.
"""

from __future__ import annotations

import _plain  # first: starts the import clock

import argparse
import sys

import torch
import transformers
from safetensors.torch import save_file

try:
    import nnsight
    from nnsight import NNsight
except ImportError:
    print("nnsight not installed", file=sys.stderr)
    raise SystemExit(3) from None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--examples", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    clock = _plain.Clock()

    sentences, _ = _plain.read_rows(args.data, args.examples)
    tokenizer = transformers.AutoTokenizer.from_pretrained(args.model)
    torch_model = transformers.AutoModel.from_pretrained(args.model).eval()
    model = NNsight(torch_model)
    clock.lap("load")
    config = torch_model.config
    layers = config.num_hidden_layers + 1
    pooled = torch.empty(layers, len(sentences), config.hidden_size)
    ids = tokenizer(sentences, truncation=True, max_length=args.max_length)["input_ids"]
    batches = _plain.length_batches([len(row) for row in ids], args.batch_size)
    clock.lap("tokenise")
    with torch.inference_mode():
        for rows in batches:
            input_ids, mask = _plain.pad(ids, rows, tokenizer.pad_token_id)
            with model.trace(input_ids=input_ids, attention_mask=mask):
                states = nnsight.save([model.embeddings.output] + [layer.output for layer in model.encoder.layer])
            weights = mask.to(states[0].dtype).unsqueeze(-1)
            for layer, hidden in enumerate(states):
                pooled[layer, rows] = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
    clock.lap("compute")
    save_file({f"layer_{layer}": pooled[layer].contiguous() for layer in range(layers)}, args.out)
    clock.lap("save")
    clock.report(examples=len(sentences), nnsight=nnsight.__version__)


if __name__ == "__main__":
    main()
