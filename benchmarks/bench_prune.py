"""Pruned vs unpruned examples/s at 50% of heads pruned, batch sizes 1 to 64 (issue 3).

Michel et al.'s Table 4 measured +1.9% (batch 1) to +17.5% (batch 16, 64) on BERT-base on a GPU.
What pruning can buy is bounded by the share of the FLOPs that belongs to attention heads: the
Q/K/V/O projections and the two attention matmuls. Per layer and token, with hidden size d and
sequence length T: heads 8d^2 + 4Td, feed-forward 16d^2 (intermediate 4d). Removing half the
heads removes half of the heads' share; the ideal speed-up is 1 / (1 - that).
"""

from __future__ import annotations

import argparse
import time

import torch

from common import SST2_DEV, minilm_dir, report, sst2_sentences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from workbench.data.batching import collate, encode_texts
    from workbench.models.loading import load_model
    from workbench.models.pruning import count_parameters, prune_heads, select_heads_to_prune

    torch.manual_seed(0)
    unpruned = load_model(str(minilm_dir()), head="sequence-classification", num_labels=2)
    pruned = load_model(str(minilm_dir()), head="sequence-classification", num_labels=2)
    half = select_heads_to_prune(torch.rand(unpruned.layout.shape), 0.5)
    prune_heads(pruned, half)
    sentences, _ = sst2_sentences(SST2_DEV, args.examples)
    encodings = encode_texts(unpruned.tokenizer, [(s,) for s in sentences], 128, token_types=False)

    def speed(loaded, batch_size: int) -> float:
        batches = [collate(encodings, list(range(i, min(i + batch_size, len(encodings))))) for i in range(0, len(encodings), batch_size)]
        with torch.inference_mode():
            loaded.model(**batches[0].model_inputs())
            started = time.perf_counter()
            for batch in batches:
                loaded.model(**batch.model_inputs())
        return len(encodings) / (time.perf_counter() - started)

    rows = []
    for size in args.batch_sizes:
        before, after = [], []
        for _ in range(args.repeats):  # interleaved, best of n: machine load hits both alike
            before.append(speed(unpruned, size))
            after.append(speed(pruned, size))
        rows.append((size, max(before), max(after)))

    d = unpruned.model.config.hidden_size
    intermediate = unpruned.model.config.intermediate_size
    t = encodings.num_tokens / len(encodings)
    heads_flops = 8 * d * d + 4 * t * d
    total_flops = heads_flops + 4 * d * intermediate
    share = heads_flops / total_flops
    ideal = 1 / (1 - 0.5 * share)
    report(
        f"prune 50% of heads (36 of 72), MiniLM, {args.examples} SST-2 dev sentences (mean {t:.1f} tokens)",
        [(f"batch {size}", f"{b:8.1f} -> {a:8.1f} ex/s  ({100 * (a / b - 1):+.1f}%)") for size, b, a in rows]
        + [
            ("parameters", f"{count_parameters(unpruned):,} -> {count_parameters(pruned):,}"),
            ("heads' share of layer FLOPs", f"{100 * share:.1f}%"),
            ("ideal speed-up at 50% of heads", f"{100 * (ideal - 1):+.1f}%"),
            ("Michel et al. Table 4 (BERT-base, GPU)", "+1.9% (bs 1) ... +17.5% (bs 16/64)"),
        ],
    )


if __name__ == "__main__":
    main()
