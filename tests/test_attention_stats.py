"""HeadStatistics on hand-made attention maps: what each statistic means, and how it averages."""

from __future__ import annotations

import math

import torch

from workbench.analysis.attention_stats import HeadStatistics


def _identity_and_previous(lengths: list[int], seq: int) -> torch.Tensor:
    """Head 0 attends to itself; head 1 to the previous token (the first token to itself)."""
    probs = torch.zeros(len(lengths), 2, seq, seq)
    for row, length in enumerate(lengths):
        for i in range(length):
            probs[row, 0, i, i] = 1.0
            probs[row, 1, i, max(i - 1, 0)] = 1.0
    return probs


def test_statistics_of_known_heads_and_per_example_averaging():
    lengths, seq = [4, 2], 4
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    separators = torch.tensor([[0, 0, 0, 1], [0, 1, 0, 0]])
    punctuation = torch.tensor([[0, 0, 1, 0], [0, 0, 0, 0]])
    statistics = HeadStatistics(1, 2)
    statistics.set_batch(mask, separators, punctuation)
    statistics.observe(0, torch.tensor([0, 1]), _identity_and_previous(lengths, seq))
    result = statistics.result()

    assert result["self"][0].tolist() == [1.0, (0.25 + 0.5) / 2]  # head 1: only token 0 attends to itself
    assert result["prev"][0].tolist() == [0.0, 1.0]
    assert result["next"][0].tolist() == [0.0, 0.0]
    # attention to the first token: head 1, example 1: queries 0,1 of 4 -> 0.5; example 2: both -> 1.0
    assert math.isclose(result["first"][0, 1].item(), (0.5 + 1.0) / 2)
    # [SEP] is token 3 in example 1 (head 0: 1/4 of its queries) and token 1 in example 2 (1/2)
    assert math.isclose(result["sep"][0, 0].item(), (0.25 + 0.5) / 2)
    # punctuation only in example 1: head 0 attends to it from 1 of 4 queries; example 2 adds 0
    assert math.isclose(result["punct"][0, 0].item(), (0.25 + 0.0) / 2)
    # one-hot rows, smoothed over n real tokens: -(a log a + (n-1) b log b), a = 0.9999 + b, b = 1e-4 / n
    def one_hot_entropy(n: int) -> float:
        b = 1e-4 / n
        a = 0.9999 + b
        return -(a * math.log(a) + (n - 1) * b * math.log(b))

    expected = (one_hot_entropy(4) + one_hot_entropy(2)) / 2
    assert math.isclose(result["entropy_smoothed"][0, 0].item(), expected, rel_tol=1e-4)  # float32 maps


def test_heads_never_seen_are_nan():
    statistics = HeadStatistics(2, 2)
    statistics.set_batch(torch.ones(1, 3), torch.zeros(1, 3), torch.zeros(1, 3))
    statistics.observe(0, torch.tensor([1]), torch.full((1, 1, 3, 3), 1 / 3))  # head 0 pruned
    result = statistics.result()
    assert math.isnan(result["self"][0, 0]) and math.isclose(result["self"][0, 1].item(), 1 / 3, rel_tol=1e-6)
    assert torch.isnan(result["entropy_smoothed"][1]).all()
