"""Attention over the words of pre-split examples (treebank sentences, code leaves).

Both `syntax_heads` and `cat_probe` run the model on batches of words (`encode_words`) and read
every layer's attention of each example at the ORIGINAL head ids, one example at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from workbench.context import StepContext
    from workbench.data.alignment import AlignedBatch


class AttentionCollector:
    """Observer keeping the attention of every layer for ONE forward pass, at the ORIGINAL head ids.

    A structurally pruned layer hands over only the heads it still has ([batch, heads_present, q, k])
    with their original ids; `take` puts each map at its id, so slot h is always original head h, and
    leaves the maps of pruned heads zero.
    """

    def __init__(self, num_layers: int, num_heads: int):
        self.num_heads = num_heads
        self.layers: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * num_layers

    def observe(self, layer: int, head_ids: "torch.Tensor", probs: "torch.Tensor") -> None:
        self.layers[layer] = (head_ids, probs)

    def take(self) -> "torch.Tensor":
        """[batch, layers, num_heads, seq, seq] of the last forward pass (float32); the collector is emptied."""
        import torch

        if any(layer is None for layer in self.layers):
            raise RuntimeError("attention was not observed at every layer")
        observed: list[tuple[torch.Tensor, torch.Tensor]] = self.layers  # type: ignore[assignment]
        batch, _, q_len, k_len = observed[0][1].shape
        device = observed[0][1].device
        attention = torch.zeros(batch, len(observed), self.num_heads, q_len, k_len, dtype=torch.float32, device=device)
        for layer, (head_ids, probs) in enumerate(observed):
            attention[:, layer, head_ids.to(device=device, dtype=torch.long)] = probs.float()
        self.layers = [None] * len(self.layers)
        return attention


def word_attention(
    ctx: "StepContext", loaded: Any, words: list[list[str]], batch_size: int, max_length: int, description: str
) -> Iterator[tuple["AlignedBatch", int, int, "torch.Tensor"]]:
    """(aligned batch, row in it, example index, attention [layers, heads, seq, seq]) for every example
    (every example of this rank, in a data-parallel run).

    `seq` is the example's own number of sub-tokens (padding cut off); pruned heads' maps are zero.
    """
    import torch

    from workbench.data.alignment import encode_words
    from workbench.models.attention import head_hooks
    from workbench.data.words import word_batches

    collector = AttentionCollector(*loaded.layout.shape)
    # A data-parallel run: this rank's share of the batches; callers add up their totals over ranks.
    batches = ctx.world.shard(word_batches(words, list(range(len(words))), batch_size))
    with torch.inference_mode(), head_hooks(observers=[collector.observe]):
        for indices in ctx.track(batches, len(batches), description):
            aligned = encode_words(loaded.tokenizer, [words[i] for i in indices], max_length)
            loaded.model(**{name: value.to(loaded.device) for name, value in aligned.model_inputs().items()})
            attention = collector.take()  # [batch, layers, heads, seq, seq]
            lengths = aligned.attention_mask.sum(1).tolist()
            for row, index in enumerate(indices):
                yield aligned, row, index, attention[row, :, :, : lengths[row], : lengths[row]]
