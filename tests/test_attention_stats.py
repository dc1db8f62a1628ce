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


def test_clark_denominators_and_the_sep_statistics():
    """[CLS] a [SEP] b [SEP]: head 0 attends to the next token (the last to itself), head 1 to the [SEP]s."""
    n = 5
    probs = torch.zeros(1, 2, n, n)
    for i in range(n):
        probs[0, 0, i, min(i + 1, n - 1)] = 1.0
        probs[0, 1, i, 2] = probs[0, 1, i, 4] = 0.5
    separators = torch.tensor([[0, 0, 1, 0, 1]])
    exact, clark = HeadStatistics(1, 2), HeadStatistics(1, 2, denominators="clark")
    for statistics in (exact, clark):
        statistics.set_batch(torch.ones(1, n), separators, torch.zeros(1, n))
        statistics.observe(0, torch.tensor([0, 1]), probs)
    exact, clark = exact.result(), clark.result()
    assert exact["next"][0, 0].item() == 1.0  # 4 of the 4 queries that have a next token
    assert math.isclose(clark["next"][0, 0].item(), 4 / 5, rel_tol=1e-6)  # Clark's notebook divides by n
    # head 1: every query gives all its attention to the two [SEP]s
    assert exact["sep_to_sep"][0, 1].item() == 1.0 and exact["other_to_sep"][0, 1].item() == 1.0
    assert clark["sep_to_sep"][0, 1].item() == 1.0  # (1 + 1) / 2 [SEP] queries
    assert math.isclose(clark["other_to_sep"][0, 1].item(), 3 / 3, rel_tol=1e-6)  # 3 other queries, / (n - 2)
    # head 0: the [SEP] at 2 attends to 3 (no [SEP]), the one at 4 to itself; of the other queries
    # 0 -> 1 misses, 1 -> 2 and 3 -> 4 hit a [SEP]
    assert exact["sep_to_sep"][0, 0].item() == 0.5
    assert math.isclose(exact["other_to_sep"][0, 0].item(), 2 / 3, rel_tol=1e-6)


def test_uniform_entropy_is_log_n_averaged_over_examples():
    from workbench.analysis.attention_stats import uniform_entropy

    assert math.isclose(uniform_entropy(torch.tensor([4, 2])), (math.log(4) + math.log(2)) / 2)
