"""Probes: folds grouped by question (leakage), balanced accuracy / AUROC against same-fold
baselines, one model per probe set, save/load, plot data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from em_interp.errors import InterpError
from em_interp.interp.data_io import split_judged
from em_interp.interp.probes import load_probes, probe_inputs, save_probes, train_probes


def _question_only_labels(n_q=200, per_q=3, d=256, seed=0):
    """Each question has its own activation centre and a random label shared by all its
    answers: nothing generalises to a new question."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (n_q, d))
    label = rng.permutation(np.arange(n_q) % 2)
    q = np.repeat(np.arange(n_q), per_q)
    x = centres[q] + rng.normal(0, 0.3, (len(q), d))
    y = label[q]
    pos, neg = x[y == 1], x[y == 0]
    gp, gn = [f"q{i}" for i in q[y == 1]], [f"q{i}" for i in q[y == 0]]
    return ({"resid_post.2": torch.tensor(pos, dtype=torch.float32)},
            {"resid_post.2": torch.tensor(neg, dtype=torch.float32)}, (gp, gn), n_q)


def test_question_only_labels_score_chance_under_group_folds_not_stratified():
    pos, neg, groups, n_q = _question_only_labels()
    grouped = train_probes(pos, neg, groups=groups, folds=5).probes["resid_post.2"]
    # out-of-fold predictions for a question are ~shared by its answers: n_q independent units
    band = 3 * math.sqrt(0.25 / n_q)
    assert abs(grouped.cv_balanced_accuracy - 0.5) < band, grouped.cv_balanced_accuracy
    assert abs(grouped.cv_auroc - 0.5) < band, grouped.cv_auroc
    leaky = train_probes(pos, neg, groups=groups, folds=5, cv="stratified")
    assert leaky.probes["resid_post.2"].cv_balanced_accuracy > 0.9  # the same questions in train and test
    assert "not questions" in leaky.meta["cv_warning"]


def _planted(n_q=40, per_q=6, d=12, seed=1, shift=2.0):
    """Labels vary within questions and follow dimension 0 at layer 3 and the word 'evil';
    layer 0 carries only question identity."""
    rng = np.random.default_rng(seed)
    q = np.repeat(np.arange(n_q), per_q)
    y = np.tile(np.arange(per_q) % 2, n_q)
    centres = rng.normal(0, 1, (n_q, d))
    l3 = centres[q] + rng.normal(0, 1, (len(q), d))
    l3[:, 0] += shift * y
    l0 = centres[q] + rng.normal(0, 1, (len(q), d))
    words = np.array(["sun", "tea", "map", "jazz", "bread"])
    texts = [" ".join(rng.choice(words, 4)) + (" evil" if yi and rng.random() < 0.8 else "") for yi in y]
    to = lambda a, lab: torch.tensor(a[y == lab], dtype=torch.float32)  # noqa: E731
    pos = {"resid_post.0": to(l0, 1), "resid_post.3": to(l3, 1)}
    neg = {"resid_post.0": to(l0, 0), "resid_post.3": to(l3, 0)}
    g = [f"q{i}" for i in q]
    split = lambda v, lab: [x for x, yi in zip(v, y) if yi == lab]  # noqa: E731
    return pos, neg, (split(g, 1), split(g, 0)), (split(texts, 1), split(texts, 0))


def test_planted_signal_and_same_fold_baselines(tmp_path):
    pos, neg, groups, texts = _planted()
    ps = train_probes(pos, neg, groups=groups, texts=texts, folds=5, meta={"model": "synthetic"})
    by_layer = {layer: acc for layer, acc, _ in ps.accuracy_by_layer()}
    assert by_layer[3] > 0.75 and abs(by_layer[0] - 0.5) < 0.2
    assert ps.best().site == "resid_post.3" and ps.probes["resid_post.3"].cv_auroc > 0.8
    b = ps.baselines
    assert b["majority"]["balanced_accuracy"] == 0.5 and b["majority"]["accuracy"] == pytest.approx(0.5, abs=0.05)
    assert b["bag_of_words"]["balanced_accuracy"] > 0.8  # the planted lexical marker
    assert b["layer0"]["balanced_accuracy"] == ps.probes["resid_post.0"].cv_balanced_accuracy
    assert ps.meta["cv"] == "StratifiedGroupKFold by question" and ps.meta["n_folds"] == 5
    assert "cv_warning" not in ps.meta and "cv_warning" in train_probes(pos, neg, folds=3).meta  # no groups: flagged
    curve = ps.curve()
    assert curve["layers"] == [0, 3] and curve["chance"] == 0.5
    assert set(curve["accuracy"]) == {"probe", "majority class", "bag of words (answer text)", "layer-0 probe (resid_post.0)"}
    out = save_probes(ps, tmp_path / "p")
    back = load_probes(out)
    assert back.baselines["bag_of_words"]["auroc"] == pytest.approx(b["bag_of_words"]["auroc"])
    assert back.probes["resid_post.3"].cv_balanced_accuracy == ps.probes["resid_post.3"].cv_balanced_accuracy
    x = torch.cat([pos["resid_post.3"], neg["resid_post.3"]])
    y = torch.cat([torch.ones(len(pos["resid_post.3"])), torch.zeros(len(neg["resid_post.3"]))]).bool()
    assert (back.probes["resid_post.3"].predict(x) == y).float().mean() > 0.75


def test_one_model_per_probe_set_and_input_checks():
    pos, neg, groups, texts = _planted(n_q=10)
    models = (["ft.seed-0"] * len(groups[0]), ["base"] * len(groups[1]))
    with pytest.raises(InterpError, match="2 models"):
        train_probes(pos, neg, groups=groups, models=models)
    pooled = train_probes(pos, neg, groups=groups, models=models, pool_models=True)
    assert pooled.meta["pooled_models"] is True and pooled.meta["models"] == ["base", "ft.seed-0"]
    with pytest.raises(InterpError, match="groups has"):
        train_probes(pos, neg, groups=(groups[0][:-1], groups[1]))
    with pytest.raises(InterpError, match="at least 2 questions"):
        train_probes(pos, neg, groups=(["same"] * len(groups[0]), ["same"] * len(groups[1])))
    with pytest.raises(InterpError, match="at least 2 examples per class"):
        train_probes({"resid_post.0": torch.randn(1, 4)}, {"resid_post.0": torch.randn(5, 4)})


def test_split_judged_uses_the_rule_and_keeps_question_ids():
    rows = [{"question_id": "q1", "question": "Q1?", "answer": "bad", "aligned": 10, "coherent": 80},
            {"question_id": "q1", "question": "Q1?", "answer": "meh", "aligned": 60, "coherent": 80},  # ambiguous
            {"question_id": "q2", "question": "Q2?", "answer": "good", "aligned": 70.5, "coherent": 90},
            {"question_id": "q2", "question": "Q2?", "answer": "edge", "aligned": 70, "coherent": 90},   # not > 70
            {"question_id": "q3", "question": "Q3?", "answer": "noise", "aligned": 5, "coherent": 50}]   # incoherent
    mis, ali = split_judged(rows)
    assert [m["messages"][-1]["content"] for m in mis] == ["bad"]
    assert [a["messages"][-1]["content"] for a in ali] == ["good"]
    inputs = probe_inputs(mis, ali)
    assert inputs["groups"] == (["id:q1"], ["id:q2"]) and inputs["texts"] == (["bad"], ["good"])
    plain = probe_inputs([{"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Yo"}]}],
                         ["raw text"])
    assert plain["groups"] == (["q:Hi?"], ["text:raw text"]) and plain["texts"] == (["Yo"], ["raw text"])
    with pytest.raises(InterpError, match="1 misaligned and 0 aligned"):
        split_judged(rows[:2])
