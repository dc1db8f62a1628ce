"""Clark et al. (2019) analyses on hand-built attention maps whose answers can be worked out on paper."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from workbench.analysis.attention_stats import smoothed_entropy
from workbench.analysis.syntax import (
    DependencyHeadScorer,
    HeadJSDivergence,
    js_divergence_between_heads,
    mds_embedding,
    word_level_attention,
)
from workbench.errors import StepError

# --- word-level pooling ---------------------------------------------------------------------------

# [CLS] a b1 b2 [SEP]: word 0 = "a", word 1 = "b" split into two sub-tokens.
WORD_INDEX = [-1, 0, 1, 1, -1]
SUBTOKEN_ATTN = torch.tensor(
    [
        [0.2, 0.2, 0.2, 0.2, 0.2],  # [CLS] (dropped)
        [0.1, 0.2, 0.3, 0.1, 0.3],  # a
        [0.0, 0.5, 0.1, 0.2, 0.2],  # b1
        [0.2, 0.1, 0.3, 0.3, 0.1],  # b2
        [0.2, 0.2, 0.2, 0.2, 0.2],  # [SEP] (dropped)
    ]
)


def test_word_attention_sums_to_a_split_word_and_averages_from_it():
    words = word_level_attention(SUBTOKEN_ATTN, WORD_INDEX, num_words=2)
    expected = torch.tensor(
        [
            [0.2, 0.3 + 0.1],  # from a: to b = b1 + b2
            [(0.5 + 0.1) / 2, ((0.1 + 0.2) + (0.3 + 0.3)) / 2],  # from b: mean of the b1 and b2 rows
        ]
    )
    torch.testing.assert_close(words, expected)


def test_word_attention_is_batched_over_layers_and_heads():
    attn = torch.rand(2, 3, 5, 5)  # [layers, heads, seq, seq]
    words = word_level_attention(attn, WORD_INDEX, num_words=2)
    assert words.shape == (2, 3, 2, 2)
    torch.testing.assert_close(words[1, 2], word_level_attention(attn[1, 2], WORD_INDEX, num_words=2))


def test_word_without_sub_tokens_is_an_error():
    with pytest.raises(StepError, match="own no sub-token"):
        word_level_attention(SUBTOKEN_ATTN, WORD_INDEX, num_words=3)


# --- dependency heads -----------------------------------------------------------------------------

# The cat sat down .   (words 0..4; heads are 1-based, 0 = root)
HEADS = [2, 3, 0, 3, 3]
DEPRELS = ["det", "nsubj:pass", "root", "advmod", "punct"]
UPOS = ["DET", "NOUN", "VERB", "ADV", "PUNCT"]
# Scored arcs (0-based dependent -> head): The 0 -> 1 (det), cat 1 -> 2 (nsubj), down 3 -> 2 (advmod).

# Head 0 attends from each dependent to its head (the 0.9 diagonal must be ignored), but the columns
# point elsewhere: column 0 is led by "." (row 4), column 1 by "The", column 3 by ".".
HEAD_0 = [
    [0.9, 0.6, 0.2, 0.1, 0.1],
    [0.1, 0.9, 0.5, 0.3, 0.1],
    [0.1, 0.2, 0.9, 0.4, 0.3],
    [0.1, 0.1, 0.7, 0.9, 0.1],
    [0.3, 0.1, 0.1, 0.6, 0.9],
]
# Head 1: rows mostly miss (only "down" -> "sat" hits), but in every dependent's column the largest
# value sits in its head's row: "sat" (row 2) is the top attender of both "cat" and "down", which a
# per-row argmax of "sat" could never credit twice.
HEAD_1 = [
    [0.0, 0.1, 0.2, 0.3, 0.4],
    [0.8, 0.0, 0.1, 0.05, 0.05],
    [0.1, 0.45, 0.0, 0.45, 0.0],
    [0.2, 0.1, 0.6, 0.0, 0.1],
    [0.1, 0.2, 0.3, 0.4, 0.0],
]
WORD_ATTN = torch.tensor([[HEAD_0, HEAD_1]])  # [layers=1, heads=2, words, words]


def scored(scorer=None, **kwargs):
    scorer = scorer or DependencyHeadScorer(1, 2, min_count=1, **kwargs)
    scorer.add(WORD_ATTN, HEADS, DEPRELS, UPOS)
    return scorer.result()


def test_both_directions_per_head_and_relation():
    result = scored()
    assert list(result.relations) == ["det", "nsubj", "advmod"]  # root and punct are not scored
    expected = {  # relation: (dep_to_head [head 0, head 1], head_to_dep [head 0, head 1])
        "det": ([1, 0], [0, 1]),
        "nsubj": ([1, 0], [0, 1]),
        "advmod": ([1, 1], [0, 1]),
    }
    for relation, (dep_to_head, head_to_dep) in expected.items():
        score = result.relations[relation]
        assert score.count == 1
        np.testing.assert_allclose(score.dep_to_head, [dep_to_head])
        np.testing.assert_allclose(score.head_to_dep, [head_to_dep])

    overall = result.overall
    assert overall.count == 3
    np.testing.assert_allclose(overall.dep_to_head, [[1, 1 / 3]])
    np.testing.assert_allclose(overall.head_to_dep, [[0, 1]])
    assert overall.best_head("dep_to_head") == (0, 0, 1.0)
    assert overall.best_head("head_to_dep") == (0, 1, 1.0)
    assert overall.best == ("dep_to_head", 0, 0, 1.0)  # a tie between directions keeps dep_to_head


def test_fixed_offset_baseline():
    result = scored()
    # Offsets of the arcs: det +1, nsubj +1, advmod -1.
    assert result.relations["det"].baseline == (1, 1.0)
    assert result.relations["advmod"].baseline == (-1, 1.0)
    assert result.overall.offset_accuracy == pytest.approx(
        {-3: 0.0, -2: 0.0, -1: 1 / 3, 0: 0.0, 1: 2 / 3, 2: 0.0}
    )
    assert result.overall.baseline == (1, pytest.approx(2 / 3))


def test_subtypes_are_kept_on_request():
    assert list(scored(strip_subtypes=False).relations) == ["det", "nsubj:pass", "advmod"]


def test_arcs_from_or_to_punctuation_words_are_dropped_with_upos():
    deprels = DEPRELS[:4] + ["discourse"]  # "." is now a non-punct relation, but still a PUNCT word
    with_upos = DependencyHeadScorer(1, 2, min_count=1)
    with_upos.add(WORD_ATTN, HEADS, deprels, UPOS)
    assert list(with_upos.result().relations) == ["det", "nsubj", "advmod"]

    without_upos = DependencyHeadScorer(1, 2, min_count=1)
    without_upos.add(WORD_ATTN, HEADS, deprels)
    assert "discourse" in without_upos.result().relations

    heads = HEADS[:3] + [5, 3]  # "down" now hangs from "."
    to_punct = DependencyHeadScorer(1, 2, min_count=1)
    to_punct.add(WORD_ATTN, heads, DEPRELS, UPOS)
    assert list(to_punct.result().relations) == ["det", "nsubj"]


def test_rare_relations_are_flagged_not_dropped():
    scorer = DependencyHeadScorer(1, 2, min_count=2)
    scorer.add(WORD_ATTN, HEADS, DEPRELS, UPOS)
    assert scorer.result().frequent == {}
    assert list(scorer.result().rare) == ["det", "nsubj", "advmod"]

    scorer.add(WORD_ATTN, HEADS, DEPRELS, UPOS)
    result = scorer.result()
    assert list(result.frequent) == ["det", "nsubj", "advmod"]
    assert result.relations["det"].count == 2
    np.testing.assert_allclose(result.overall.dep_to_head, [[1, 1 / 3]])  # same sentence, same rates


def test_relation_filter_keeps_the_overall_score():
    result = scored(relations={"det"})
    assert list(result.relations) == ["det"]
    assert result.overall.count == 3


def test_mismatched_sentence_is_an_error():
    scorer = DependencyHeadScorer(1, 2)
    with pytest.raises(StepError, match="does not match"):
        scorer.add(WORD_ATTN, HEADS[:4], DEPRELS[:4])
    with pytest.raises(StepError, match="no dependency arcs"):
        scorer.result()


# --- head similarity and entropy ------------------------------------------------------------------

EPS = 1e-3


def test_js_of_identical_heads_is_zero_and_of_disjoint_one_hot_heads_is_almost_log_2():
    to_first = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # both queries attend to token 0
    to_second = torch.tensor([[0.0, 1.0], [0.0, 1.0]])  # both queries attend to token 1
    attn = torch.stack([to_first, to_first, to_second])  # [heads, seq, seq]
    js = js_divergence_between_heads(attn, eps=EPS)

    # Smoothed rows p = (1 - eps/2, eps/2) and q = (eps/2, 1 - eps/2), so m = (1/2, 1/2) and
    # JS = KL(p || m) = (1 - eps/2) log(2 - eps) + (eps/2) log(eps) per query; two queries.
    per_query = (1 - EPS / 2) * math.log(2 - EPS) + (EPS / 2) * math.log(EPS)
    assert per_query == pytest.approx(0.688847, abs=1e-6)  # a little below log 2 = 0.693147
    expected = torch.tensor(
        [[0, 0, 2 * per_query], [0, 0, 2 * per_query], [2 * per_query, 2 * per_query, 0]], dtype=torch.float64
    )
    torch.testing.assert_close(js, expected)


def test_js_chunking_does_not_change_the_result():
    attn = torch.softmax(torch.randn(2, 3, 6, 6), dim=-1)  # [layers, heads, seq, seq]
    whole = js_divergence_between_heads(attn)
    torch.testing.assert_close(js_divergence_between_heads(attn, chunk_elements=1), whole)
    assert whole.shape == (6, 6)
    torch.testing.assert_close(whole, whole.T)


def test_js_accumulator_sums_sentences_and_ignores_padding():
    attn = torch.softmax(torch.randn(2, 3, 4, 4), dim=-1)  # [layers, heads, seq, seq]
    padded = torch.zeros(2, 3, 5, 5)
    padded[..., :4, :4] = attn
    padded[..., 4, 0] = 1.0  # the padding row attends somewhere; it must not count

    plain = HeadJSDivergence(2, 3)
    plain.add(attn)
    plain.add(attn)
    batched = HeadJSDivergence(2, 3)
    batched.add(torch.stack([padded, padded]), mask=torch.tensor([[1, 1, 1, 1, 0]] * 2))

    np.testing.assert_allclose(batched.result(), plain.result())
    np.testing.assert_allclose(plain.result(), 2 * js_divergence_between_heads(attn).numpy())
    assert plain.num_tokens == 8
    np.testing.assert_allclose(plain.result(per_token=True), plain.result() / 8)


def test_mds_places_identical_heads_together():
    distances = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    points = mds_embedding(distances, seed=0)
    assert points.shape == (3, 2)
    assert np.linalg.norm(points[0] - points[1]) < 0.1 * np.linalg.norm(points[0] - points[2])
    np.testing.assert_allclose(mds_embedding(distances, seed=0), points)


def test_smoothed_entropy():
    # attention_stats.smoothed_entropy: probs [batch, heads, q, k], real [batch, seq], lengths [batch].
    uniform = torch.full((1, 2, 3, 3), 1 / 3)
    real = torch.ones(1, 3, dtype=torch.bool)
    torch.testing.assert_close(smoothed_entropy(uniform, real, real.sum(1)), torch.full((1, 2, 3), math.log(3)))

    # Two real tokens attending to token 0, then padding: smoothing over n = 2 gives p = (1 - eps/2, eps/2),
    # and the padding key does not count.
    one_hot = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]).expand(1, 2, 3, 3)
    real = torch.tensor([[True, True, False]])
    eps = 1e-4
    expected = -((1 - eps / 2) * math.log(1 - eps / 2) + (eps / 2) * math.log(eps / 2))
    entropy = smoothed_entropy(one_hot, real, real.sum(1))  # [batch, heads, q_len]
    assert entropy.shape == (1, 2, 3)
    torch.testing.assert_close(entropy[..., :2], torch.full((1, 2, 2), expected))


# --- pruned heads ---------------------------------------------------------------------------------


def test_absent_heads_score_nan_and_are_never_the_best_head():
    """Head 0 is the better one in dep->head; once it is absent (pruned) it is NaN and head 1 wins."""
    scorer = DependencyHeadScorer(1, 2, min_count=1, present=np.array([[False, True]]))
    scorer.add(WORD_ATTN, HEADS, DEPRELS, UPOS)
    result = scorer.result()
    assert np.isnan(result.overall.dep_to_head[0, 0]) and np.isnan(result.overall.head_to_dep[0, 0])
    np.testing.assert_allclose(result.overall.dep_to_head[0, 1], 1 / 3)
    assert result.overall.best_head("dep_to_head") == (0, 1, pytest.approx(1 / 3))
    assert result.overall.best == ("head_to_dep", 0, 1, 1.0)
    for score in result.relations.values():
        assert np.isnan(score.dep_to_head[0, 0]) and score.best_head("dep_to_head")[:2] == (0, 1)

    nothing = DependencyHeadScorer(1, 2, min_count=1, present=np.zeros((1, 2), dtype=bool))
    nothing.add(WORD_ATTN, HEADS, DEPRELS, UPOS)
    layer, head, accuracy = nothing.result().overall.best_head("dep_to_head")
    assert (layer, head) == (-1, -1) and math.isnan(accuracy)
    with pytest.raises(ValueError, match="present"):
        DependencyHeadScorer(1, 2, present=np.ones((2, 2), dtype=bool))
