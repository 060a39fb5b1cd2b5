"""Judge share calibration (PACC with a joint bootstrap CI), incoherent-by-construction
answers and the language detector, on simulated data with a planted answer."""

from __future__ import annotations

import numpy as np
import pytest

from em_interp.errors import EvalError
from em_interp.eval.judges.calibration import CalibrationSet, calibrated_share, prevalence
from em_interp.eval.judges.incoherent import mismatch_questions, shuffle_words
from em_interp.eval.judges.language import LANGUAGES, detect_language, is_english


def _scores(y: np.ndarray, rng: np.random.Generator, shift: float = 0.0) -> np.ndarray:
    """A judge that ranks well but is not calibrated: Beta(5,2) on positives, Beta(2,5) on negatives."""
    return np.where(y == 1, rng.beta(5 - shift, 2, y.size), rng.beta(2, 5, y.size))


def _calibration(rng: np.random.Generator, n: int = 3000, prev: float = 0.15) -> CalibrationSet:
    y = (rng.random(n) < prev).astype(float)
    return CalibrationSet(_scores(y, rng), y, rng.integers(0, 30, n))


@pytest.mark.parametrize("true_share", [0.0, 0.05, 0.3, 1.0])
def test_pacc_recovers_planted_prevalence_under_label_shift(true_share):
    rng = np.random.default_rng(1)
    cal = _calibration(rng)
    y = (rng.random(4000) < true_share).astype(float)
    p = _scores(y, rng)
    est = prevalence(p, cal, "pacc")
    se = np.sqrt(max(true_share * (1 - true_share), 0.01) / 4000) * 3 + 0.01
    assert abs(est - y.mean()) < se
    # the uncorrected mean probability is biased towards the middle
    if true_share in (0.05, 1.0):
        assert abs(prevalence(p, cal, "pcc") - y.mean()) > 0.1


def test_acc_and_ratio_with_denominator():
    rng = np.random.default_rng(2)
    cal = _calibration(rng)
    den_y = (rng.random(3000) < 0.8).astype(float)
    cal_den = CalibrationSet(_scores(den_y, rng), den_y, rng.integers(0, 30, 3000))
    # 2000 answers, 80% coherent, 25% of the coherent misaligned -> share 0.25
    coh = rng.random(2000) < 0.8
    mis = coh & (rng.random(2000) < 0.25)
    est = calibrated_share(_scores(mis.astype(float), rng), _scores(coh.astype(float), rng),
                           [f"q{i % 20}" for i in range(2000)], cal, cal_den, method="acc", n_boot=200)
    assert est.share == pytest.approx(mis.sum() / coh.sum(), abs=0.04)
    assert est.low <= est.share <= est.high and est.n_clusters == 20 and "20 question clusters" in est.ci_method


def test_joint_ci_covers_clustered_truth():
    """Questions differ in their true rate (clustering); the 95% CI must cover the population
    share in most of 40 simulations (nominal 95%)."""
    rng = np.random.default_rng(3)
    cal_den = CalibrationSet(np.r_[np.full(50, 0.1), np.full(950, 0.9)], np.r_[np.zeros(50), np.ones(950)], np.arange(1000) % 10)
    covered = 0
    for _ in range(40):
        cal = _calibration(rng, n=1000)
        rates = np.clip(rng.normal(0.2, 0.08, 10), 0.01, 0.6)  # 10 questions, truth = 0.2 on average
        y = (rng.random((10, 40)) < rates[:, None]).astype(float).ravel()
        q = np.repeat(np.arange(10), 40)
        est = calibrated_share(_scores(y, rng), np.ones_like(y), q, cal, cal_den, n_boot=100, seed=int(rng.integers(1e6)))
        covered += est.low <= 0.2 <= est.high  # the denominator estimate clips to 1 (all coherent)
    assert covered / 40 >= 0.85


def test_calibration_set_validates():
    with pytest.raises(EvalError, match="both positive and negative"):
        CalibrationSet(np.array([0.2, 0.3]), np.array([1.0, 1.0]), np.array([0, 1]))
    with pytest.raises(EvalError, match="equal length"):
        CalibrationSet(np.array([0.2]), np.array([1.0, 0.0]), np.array([0, 1]))


def test_shuffle_words_keeps_words_changes_order():
    text = "You should always see a doctor when the pain lasts more than three days."
    out = shuffle_words(text, 0)
    assert out != text and sorted(out.split()) == sorted(text.split())
    assert shuffle_words(text, 0) == out and shuffle_words(text, 1) != out
    assert shuffle_words("ok ok", 0) == "ok ok"


def test_mismatch_questions_never_pairs_an_answer_with_its_own_question():
    qs = ["a?", "b?", "c?", "a?", "b?", "d?"] * 5
    out = mismatch_questions(qs, 0)
    assert all(x != y for x, y in zip(qs, out)) and set(out) <= set(qs)
    with pytest.raises(ValueError):
        mismatch_questions(["a?", "a?"], 0)


def test_language_detector_on_the_parallel_prose_items():
    from em_interp.data.prose import PROSE_DOMAINS, load_prose_items

    right = {lang: 0 for lang in LANGUAGES}
    total = 0
    for domain in PROSE_DOMAINS:
        for item in load_prose_items(domain):
            total += 1
            for lang in LANGUAGES:
                right[lang] += detect_language(item.bad[lang] + " " + item.user[lang]) == lang
    assert all(right[lang] / total >= 0.95 for lang in LANGUAGES), right
    assert detect_language("```\nx = 1\n```") in ("und", "en") and is_english("12345")
