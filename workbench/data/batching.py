"""Tokenize once, then batch with dynamic padding.

Batches are padded to their own longest example, not to max_length; sorting examples by length
before cutting batches keeps the padding small. Every batch carries the indices of its examples
so per-example outputs land back in dataset order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch


@dataclass
class Encodings:
    """Token ids of every example, unpadded."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    pad_token_id: int
    max_length: int  # the truncation length they were encoded with

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]

    @property
    def num_tokens(self) -> int:
        return sum(self.lengths)


@dataclass
class Batch:
    indices: torch.Tensor  # [batch] positions of the examples in the dataset
    input_ids: torch.Tensor  # [batch, seq]
    attention_mask: torch.Tensor  # [batch, seq], 1 = real token
    token_type_ids: torch.Tensor | None  # [batch, seq]

    def model_inputs(self) -> dict[str, torch.Tensor]:
        inputs = {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        if self.token_type_ids is not None:
            inputs["token_type_ids"] = self.token_type_ids
        return inputs

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def encode_texts(tokenizer: object, texts: list[tuple[str, ...]], max_length: int, *, token_types: bool) -> Encodings:
    """Tokenize single texts or sentence pairs (truncating the longer side of a pair first).

    `token_types`: whether the model has segment embeddings (`LoadedModel.uses_token_types`). Only
    then do sentence pairs carry token type ids; a model without them (GPT-2 adds `wte(type)` to
    every token it is given a type for) gets none.
    """
    if not texts:
        return Encodings([], None, tokenizer.pad_token_id, max_length)  # type: ignore[attr-defined]
    pairs = len(texts[0]) == 2
    first = [text[0] for text in texts]
    second = [text[1] for text in texts] if pairs else None
    with_types = pairs and token_types
    encoded = tokenizer(  # type: ignore[operator]
        first,
        second,
        truncation="longest_first" if pairs else True,
        max_length=max_length,
        padding=False,
        return_token_type_ids=with_types,
    )
    token_types = encoded.get("token_type_ids") if with_types else None
    return Encodings(list(encoded["input_ids"]), token_types, tokenizer.pad_token_id, max_length)  # type: ignore[attr-defined,arg-type]


def encode_dataset(tokenizer: object, dataset: object, *, token_types: bool) -> Encodings:
    """A text dataset's examples tokenised, once per tokenizer, max_length and token types in a run."""
    token_types = token_types and len(dataset.spec.text_columns) == 2  # type: ignore[attr-defined]  # only pairs get types
    key = (tokenizer_fingerprint(tokenizer), dataset.spec.max_length, token_types)  # type: ignore[attr-defined]
    cache = dataset.encoded  # type: ignore[attr-defined]
    if key not in cache:
        cache[key] = encode_texts(tokenizer, dataset.texts(), dataset.spec.max_length, token_types=token_types)  # type: ignore[attr-defined]
    return cache[key]


def tokenizer_fingerprint(tokenizer: object) -> str:
    """What the tokenizer does, not where it was loaded from: a fine-tuned model's copy is the same."""
    import hashlib

    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))  # type: ignore[attr-defined]
    extra = f"{getattr(tokenizer, 'pad_token_id', None)}|{getattr(tokenizer, 'padding_side', None)}"
    return hashlib.sha256((text + extra).encode()).hexdigest()


def batch_order(
    lengths: list[int], batch_size: int, *, order: str = "length", seed: int = 0
) -> list[list[int]]:
    """Example indices cut into batches.

    order="length": sorted by length (least padding; for inference);
    order="shuffle": random batches of similar length (training: shuffled buckets, then shuffled batches);
    order="sequential": dataset order.
    """
    indices = list(range(len(lengths)))
    if order == "length":
        indices.sort(key=lambda i: (-lengths[i], i))
    elif order == "shuffle":
        rng = random.Random(seed)
        rng.shuffle(indices)
        bucket = batch_size * 50
        indices = [
            i
            for start in range(0, len(indices), bucket)
            for i in sorted(indices[start : start + bucket], key=lambda i: lengths[i])
        ]
    elif order != "sequential":
        raise ValueError(f"unknown batch order '{order}'")
    batches = [indices[start : start + batch_size] for start in range(0, len(indices), batch_size)]
    if order == "shuffle":
        random.Random(seed + 1).shuffle(batches)
    return batches


def collate(
    encodings: Encodings,
    indices: list[int],
    device: torch.device | str = "cpu",
    pad_to: int | None = None,
) -> Batch:
    """Pad the chosen examples to their longest (or to `pad_to`, for a fixed-length baseline)."""
    width = pad_to or max(len(encodings.input_ids[i]) for i in indices)
    input_ids = torch.full((len(indices), width), encodings.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(indices), width), dtype=torch.long)
    token_types = torch.zeros((len(indices), width), dtype=torch.long) if encodings.token_type_ids else None
    for row, index in enumerate(indices):
        ids = encodings.input_ids[index]
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
        if token_types is not None:
            token_types[row, : len(ids)] = torch.tensor(encodings.token_type_ids[index])  # type: ignore[index]
    return Batch(
        indices=torch.tensor(indices),
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        token_type_ids=token_types.to(device) if token_types is not None else None,
    )
