"""CAT-probing scores on a four-leaf tree small enough to check every mask by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from workbench.analysis.cat import (
    CatAccumulator,
    cat_score,
    cat_scores,
    layer_cat_scores,
    token_pair_attention,
)
from workbench.errors import StepError


def test_token_pair_attention_is_the_mean_over_sub_token_pairs():
    # [CLS] x y1 y2 [SEP]: leaf 0 = "x", leaf 1 = "y" split into two sub-tokens.
    attn = torch.tensor(
        [
            [0.2, 0.2, 0.2, 0.2, 0.2],
            [0.1, 0.2, 0.3, 0.1, 0.3],
            [0.0, 0.5, 0.1, 0.2, 0.2],
            [0.2, 0.1, 0.3, 0.3, 0.1],
            [0.2, 0.2, 0.2, 0.2, 0.2],
        ]
    )
    leaves = token_pair_attention(attn, [-1, 0, 1, 1, -1], num_leaves=2)
    expected = torch.tensor(
        [
            [0.2, (0.3 + 0.1) / 2],
            [(0.5 + 0.1) / 2, (0.1 + 0.2 + 0.3 + 0.3) / 4],
        ]
    )
    torch.testing.assert_close(leaves, expected)
    with pytest.raises(StepError):
        token_pair_attention(attn, [-1, 0, 0, 0, -1], num_leaves=2)


# Leaves a, b under one node, c, d under another, both under the root: siblings are 2 apart, cousins 4.
D = np.array(
    [
        [0, 2, 4, 4],
        [2, 0, 4, 4],
        [4, 4, 0, 2],
        [4, 4, 2, 0],
    ]
)
# The values 1..16 once each, placed so the masks are easy to read.
A = np.array(
    [
        [13, 15, 4, 5],
        [12, 14, 6, 7],
        [8, 9, 1, 16],
        [10, 11, 3, 2],
    ]
) / 16
FAR = np.array(  # attention only between cousins
    [
        [0, 0, 1, 1],
        [0, 0, 1, 1],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
    ],
    dtype=float,
)


def test_cat_score_with_the_diagonal():
    # 16 entries: quantile(A, 0.75) sits at sorted position 11.25 -> 12.25/16, so M_A holds 13..16:
    # (0,0), (1,1), (0,1), (2,3). Distances sorted: four 0s, four 2s, eight 4s; quantile(D, 0.25) at
    # position 3.75 -> 1.5, so M_D is the diagonal. Intersection (0,0), (1,1): 2; union 4 + 4 - 2 = 6.
    assert cat_score(A, D) == pytest.approx(1 / 3)


def test_cat_score_without_the_diagonal():
    # 12 off-diagonal entries. A sorted: 3..12, 15, 16; the 0.75 quantile at position 8.25 is 11.25/16,
    # so M_A = {12, 15, 16} = (1,0), (0,1), (2,3). D sorted: four 2s, eight 4s; the 0.5 quantile at
    # position 5.5 is 4, so M_D = the four sibling pairs. Intersection 3, union 3 + 4 - 3 = 4.
    assert cat_score(A, D, distance_quantile=0.5, exclude_diagonal=True) == pytest.approx(3 / 4)


def test_far_attention_scores_zero_and_ties_everywhere_have_no_score():
    assert cat_score(FAR, D) == 0.0  # M_A = the 4 cousin ones (threshold 0.25), M_D = diagonal
    assert math.isnan(cat_score(np.ones((4, 4)), np.ones((4, 4))))  # both masks empty: undefined


def test_cat_scores_are_batched_and_scale_free():
    scores = cat_scores(np.stack([A, 2 * A, FAR]), D)
    np.testing.assert_allclose(scores, [1 / 3, 1 / 3, 0.0])


def test_layer_score_averages_attention_over_heads_before_scoring():
    self_head = 3 * np.eye(4)  # alone: M_A = the diagonal = M_D, so 1
    cousin_head = 2 * np.eye(4) + 4 * FAR  # alone: threshold 2.5, M_A = the cousin pairs, so 0
    attn = np.stack([np.stack([self_head, cousin_head])])  # [layers=1, heads=2, n, n]
    np.testing.assert_allclose(cat_scores(attn, D), [[1.0, 0.0]])
    # The head mean 2.5 I + 2 FAR is led by the diagonal again: the layer scores 1, not the mean score 0.5.
    np.testing.assert_allclose(layer_cat_scores(attn, D), [1.0])


def test_accumulator_averages_examples_per_layer_and_per_head():
    close_then_far = np.stack([np.stack([2 * A, np.zeros((4, 4))]), np.stack([FAR, FAR])])  # [2, 2, 4, 4]
    far_then_close = close_then_far[::-1]
    tied = np.ones((2, 2, 4, 4))

    accumulator = CatAccumulator(2, 2, per_head=True)
    accumulator.add(close_then_far, D)
    accumulator.add(torch.from_numpy(far_then_close.copy()), torch.from_numpy(D))
    accumulator.add(tied, np.ones((4, 4)))  # no score at any layer: left out of the mean
    result = accumulator.result()

    np.testing.assert_allclose(result.per_layer, [1 / 6, 1 / 6])
    np.testing.assert_allclose(result.per_head, [[1 / 6, 0.0], [1 / 6, 0.0]])
    assert result.num_examples == 3
    np.testing.assert_array_equal(result.num_scored, [2, 2])
    assert CatAccumulator(2, 2).result().per_head is None
