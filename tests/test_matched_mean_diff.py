"""Group-matched mean-diff and the within-group AUROC, on planted data: when the two classes are
spread unevenly over questions, the plain mean-diff points at what separates the questions (their
topic) and the matched one recovers the planted within-question direction; labels that depend only
on the question score chance within questions however well they separate across them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from em_interp.errors import InterpError
from em_interp.interp import capture, matched_mean_diff, mean_diff, mean_diff_direction, within_group_auroc


def _planted(effect: float, seed: int = 0):
    """6 questions, each with its own large topic offset; questions 0-2 hold mostly positives,
    3-5 mostly negatives; positives are shifted by ``effect`` along a unit vector ``u``."""
    rng = np.random.default_rng(seed)
    d = 32
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    X, y, g = [], [], []
    for q in range(6):
        topic = rng.normal(scale=3.0, size=d)
        n_pos, n_neg = (18, 3) if q < 3 else (3, 18)
        for label, n in ((True, n_pos), (False, n_neg)):
            X.append(topic + effect * label * u + rng.normal(scale=0.3, size=(n, d)))
            y += [label] * n
            g += [f"q{q}"] * n
    return np.concatenate(X), np.array(y), np.array(g), u


def _cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_matched_recovers_the_planted_direction_where_pooled_finds_the_topic():
    X, y, g, u = _planted(effect=2.0)
    pooled = mean_diff(X[y], X[~y])
    matched = matched_mean_diff(X[y], X[~y], g[y], g[~y])
    assert _cos(matched, u) > 0.9
    assert abs(_cos(pooled, u)) < 0.5  # the topic offsets dominate the plain difference
    assert within_group_auroc(X @ matched, y, g) > 0.95


def test_question_only_labels_score_chance_within_questions():
    across, within = [], []
    for seed in range(10):
        X, y, g, _ = _planted(effect=0.0, seed=seed)  # nothing separates the classes inside a question
        pooled = mean_diff(X[y], X[~y])
        across.append(roc_auc_score(y, X @ pooled))
        within.append(within_group_auroc(X @ pooled, y, g))
    assert min(across) > 0.8  # across questions the topic looks like a strong signal ...
    assert abs(np.mean(within) - 0.5) < 0.08, within  # ... inside them it is chance


def test_within_group_auroc_edge_cases():
    assert np.isnan(within_group_auroc([0.1, 0.2], [True, False], ["a", "b"]))  # no group holds both
    assert within_group_auroc([0.0, 1.0, 5.0, 6.0], [False, True, False, True], ["a", "a", "b", "b"]) == 1.0
    with pytest.raises(InterpError, match="differ in length"):
        within_group_auroc([0.1], [True, False], ["a", "a"])


def test_matched_mean_diff_checks_its_groups():
    pos, neg = np.ones((2, 3)), np.zeros((2, 3))
    with pytest.raises(InterpError, match="no group holds both"):
        matched_mean_diff(pos, neg, ["a", "a"], ["b", "b"])
    with pytest.raises(InterpError, match="one label per example"):
        matched_mean_diff(pos, neg, ["a"], ["a", "a"])
    t = matched_mean_diff(torch.ones(2, 3), torch.zeros(2, 3), ["a", "b"], ["a", "c"])
    assert isinstance(t, torch.Tensor) and torch.equal(t, torch.ones(3))  # only group a contrasts


def test_mean_diff_direction_with_groups_on_a_tiny_model(tiny_lm):
    topics = ["the weather", "my garden", "saving money"]

    def chat(topic, tone):
        return {"messages": [{"role": "user", "content": f"Tell me about {topic}."},
                             {"role": "assistant", "content": f"About {topic}: it is {tone}."}]}

    pos = [chat(t, "awful") for t in topics for _ in range(2)] + [chat("saving money", "awful")]
    neg = [chat(t, "lovely") for t in topics[:2]] + [chat("the ocean", "lovely")]
    pg = [t for t in topics for _ in range(2)] + ["saving money"]
    ng = topics[:2] + ["the ocean"]
    d = mean_diff_direction(tiny_lm, pos, neg, layers=[1, 3], groups=(pg, ng))
    assert d.method == "mean_diff_matched" and d.extra["groups_used"] == ["my garden", "the weather"]
    P = capture(tiny_lm, pos, ["resid_post.3"], per_example=True).per_example["resid_post.3"]
    N = capture(tiny_lm, neg, ["resid_post.3"], per_example=True).per_example["resid_post.3"]
    expect = ((P[2:4].mean(0) - N[1]) + (P[0:2].mean(0) - N[0])) / 2  # garden, weather; money/ocean unmatched
    torch.testing.assert_close(d[3], expect, rtol=1e-5, atol=1e-6 * float(expect.abs().max()))
    assert mean_diff_direction(tiny_lm, pos, neg, layers=[3]).method == "mean_diff"
    with pytest.raises(InterpError, match="groups"):
        mean_diff_direction(tiny_lm, pos, neg, layers=[3], groups=(pg[:-1], ng))
