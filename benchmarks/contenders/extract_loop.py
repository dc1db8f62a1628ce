"""Plain transformers extraction: every hidden state of every example, mean-pooled, saved as safetensors.

--order dataset: batches in dataset order, each tokenised with padding=True (the obvious loop).
--order length:  everything tokenised once, batches of similar length (longest first, ties in
                 dataset order): the same batches, padding and pooling as the workbench's extract,
                 so its features should be bit-identical.
Features are written in dataset order as layer_<l> [examples, dim] float32 to --out.
"""

from __future__ import annotations

import _plain  # first: starts the import clock

import argparse

import torch
import transformers
from safetensors.torch import save_file


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--examples", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--order", choices=("dataset", "length"), default="length")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    clock = _plain.Clock()

    sentences, _ = _plain.read_rows(args.data, args.examples)
    tokenizer = transformers.AutoTokenizer.from_pretrained(args.model)
    model = transformers.AutoModel.from_pretrained(args.model).eval()
    clock.lap("load")
    layers = model.config.num_hidden_layers + 1
    pooled = torch.empty(layers, len(sentences), model.config.hidden_size)
    with torch.inference_mode():
        if args.order == "length":
            ids = tokenizer(sentences, truncation=True, max_length=args.max_length)["input_ids"]
            batches = _plain.length_batches([len(row) for row in ids], args.batch_size)
            clock.lap("tokenise")
        else:
            batches = [list(range(start, min(start + args.batch_size, len(sentences)))) for start in range(0, len(sentences), args.batch_size)]
        for rows in batches:
            if args.order == "length":
                input_ids, mask = _plain.pad(ids, rows, tokenizer.pad_token_id)
            else:
                encoded = tokenizer([sentences[i] for i in rows], padding=True, truncation=True, max_length=args.max_length, return_tensors="pt")
                input_ids, mask = encoded["input_ids"], encoded["attention_mask"]
            hidden = model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True).hidden_states
            weights = mask.to(hidden[0].dtype).unsqueeze(-1)
            for layer, states in enumerate(hidden):
                pooled[layer, rows] = (states * weights).sum(1) / weights.sum(1).clamp(min=1)
    clock.lap("compute")
    save_file({f"layer_{layer}": pooled[layer].contiguous() for layer in range(layers)}, args.out)
    clock.lap("save")
    clock.report(examples=len(sentences))


if __name__ == "__main__":
    main()
