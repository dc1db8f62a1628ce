"""Pruned vs unpruned examples/s at 50% of heads pruned, batch sizes 1 to 64 (issue 3).

Michel et al.'s Table 4 measured +1.9% (batch 1) to +17.5% (batch 16, 64) on BERT-base on a GPU.
What pruning can buy is bounded by the share of the FLOPs that belongs to attention heads: the
Q/K/V/O projections and the two attention matmuls. Per layer and token, with hidden size d and
sequence length T: heads 8d^2 + 4Td, feed-forward 16d^2 (intermediate 4d). Removing half the
heads removes half of the heads' share; the ideal speed-up is 1 / (1 - that).
"""

from __future__ import annotations

import argparse

import torch

from common import SST2_DEV, minilm_dir, report, sst2_sentences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds per batch size")
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

    from workbench.analysis.tasks import inference_round
    from workbench.analysis.timing import interleaved_rates, ratio

    rows = []
    for size in args.batch_sizes:
        batches = [collate(encodings, list(range(i, min(i + size, len(encodings))))) for i in range(0, len(encodings), size)]
        # interleaved rounds after a warm-up, as the prune step times: median and IQR, not best-of-n
        rates = interleaved_rates({"before": inference_round(unpruned, batches), "after": inference_round(pruned, batches)}, args.repeats)
        rows.append((size, rates["before"], rates["after"], ratio(rates["after"], rates["before"])))

    d = unpruned.model.config.hidden_size
    intermediate = unpruned.model.config.intermediate_size
    t = encodings.num_tokens / len(encodings)
    heads_flops = 8 * d * d + 4 * t * d
    total_flops = heads_flops + 4 * d * intermediate
    share = heads_flops / total_flops
    ideal = 1 / (1 - 0.5 * share)
    report(
        f"prune 50% of heads (36 of 72), MiniLM, {args.examples} SST-2 dev sentences (mean {t:.1f} tokens)",
        [
            (
                f"batch {size}",
                f"{b.median:8.1f} -> {a.median:8.1f} ex/s (median of {args.repeats}), speed-up {r.median:.3f}x "
                f"IQR {r.quartiles[0]:.3f}-{r.quartiles[1]:.3f}",
            )
            for size, b, a, r in rows
        ]
        + [
            ("parameters", f"{count_parameters(unpruned):,} -> {count_parameters(pruned):,}"),
            ("heads' share of layer FLOPs", f"{100 * share:.1f}%"),
            ("ideal speed-up at 50% of heads", f"{100 * (ideal - 1):+.1f}%"),
            ("Michel et al. Table 4 (BERT-base, GPU)", "+1.9% (bs 1) ... +17.5% (bs 16/64)"),
        ],
    )


if __name__ == "__main__":
    main()
