"""Plain transformers head importance (Michel et al. 2019): per-example gates, gate-only backward.

What the workbench's `importance` step computes with its defaults (granularity example, entropy,
the reference normalisation), written by hand: a forward pre-hook on each layer's attention output
projection multiplies every head's slice by its gate xi [batch, layers, heads] (the only tensor
that requires grad: parameters are frozen), one backward per length-sorted batch of the summed
per-example cross-entropy losses gives every example's |dL/dxi|; eager attention with
output_attentions gives the attention entropy of the same pass. Seeded as the workbench seeds
(seed 1 before the model is loaded), so the new classification head has the same weights.
Writes importance, importance_raw and entropy_per_token [layers, heads] to --out.

--naive: the straightforward port of the reference script (issue 3's baseline): parameters keep
requiring grad (backward computes every weight gradient), every batch padded to max_length.
"""

from __future__ import annotations

import _plain  # first: starts the import clock

import argparse
import random

import numpy as np
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
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--naive", action="store_true", help="parameters require grad, pad to max_length")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    clock = _plain.Clock()

    sentences, labels = _plain.read_rows(args.data, args.examples)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    tokenizer = transformers.AutoTokenizer.from_pretrained(args.model)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2, attn_implementation="eager").eval()
    model.requires_grad_(args.naive)
    clock.lap("load")
    config = model.config
    layers, heads = config.num_hidden_layers, config.num_attention_heads
    head_dim = config.hidden_size // heads
    gates: list[torch.Tensor] = []  # this batch's [batch, layers, heads], read by the hooks

    def gate_hook(layer: int):  # type: ignore[no-untyped-def]
        def hook(module, inputs):  # type: ignore[no-untyped-def]
            (context,) = inputs  # [batch, seq, heads * head_dim]
            b, s, _ = context.shape
            gated = context.view(b, s, heads, head_dim) * gates[0][:, layer][:, None, :, None]
            return (gated.view(b, s, heads * head_dim),)

        return hook

    for layer, block in enumerate(model.base_model.encoder.layer):
        block.attention.output.dense.register_forward_pre_hook(gate_hook(layer))
    ids = tokenizer(sentences, truncation=True, max_length=args.max_length)["input_ids"]
    tokens = sum(len(row) for row in ids)
    targets = torch.tensor(labels)
    batches = _plain.length_batches([len(row) for row in ids], args.batch_size)
    clock.lap("tokenise")
    gradient_sum = torch.zeros(layers, heads, dtype=torch.float64)
    entropy_sum = torch.zeros(layers, heads, dtype=torch.float64)
    for rows in batches:
        input_ids, mask = _plain.pad(ids, rows, tokenizer.pad_token_id, args.max_length if args.naive else None)
        gate = torch.ones(len(rows), layers, heads, requires_grad=True)
        gates[:] = [gate]
        outputs = model(input_ids=input_ids, attention_mask=mask, output_attentions=True)
        loss = torch.nn.functional.cross_entropy(outputs.logits, targets[rows], reduction="none").sum()
        if args.naive:
            loss.backward()
            gradient = gate.grad
            model.zero_grad(set_to_none=True)
        else:
            (gradient,) = torch.autograd.grad(loss, gate)
        gradient_sum += gradient.abs().sum(0).double()
        with torch.no_grad():
            query_mask = mask.to(torch.float32)[:, None, :]
            for layer, probs in enumerate(outputs.attentions):
                plogp = torch.where(probs > 0, probs * torch.log(probs), torch.zeros_like(probs))
                entropy_sum[layer] += ((-plogp.sum(-1)) * query_mask).sum((0, 2)).double()
    raw = (gradient_sum / tokens).float()
    normalised = raw / (raw.pow(2).sum(-1, keepdim=True).sqrt() + 1e-20)  # per layer, then min-max
    normalised = (normalised - normalised.min()) / (normalised.max() - normalised.min())
    clock.lap("compute")
    save_file({"importance": normalised, "importance_raw": raw, "entropy_per_token": (entropy_sum / tokens).float()}, args.out)
    clock.lap("save")
    clock.report(examples=len(sentences))


if __name__ == "__main__":
    main()
