"""Share calibration on planted truth (issue 14): the estimators are unbiased under the
judge's errors, the leave-one-source-out method choice picks the right one, and the CI
carries the judge's own (calibration-set) uncertainty."""

from __future__ import annotations

import numpy as np
import pytest

from em_interp.eval.judges.calibration import CalibrationSet, calibrated_share, prevalence
from em_interp.eval.judges.train_distilled import choose_share_method, within_target


def _judge(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An uncalibrated judge that ranks well (AUROC ~0.9): Beta(4,2) on positives, Beta(1.5,5) on negatives."""
    return np.where(y == 1, rng.beta(4, 2, y.size), rng.beta(1.5, 5, y.size))


def _sources(rng: np.random.Generator, rates, n: int = 300):
    """Rows of several source models with planted misaligned rates (denominator: 90% coherent)."""
    p_em, y_em, p_den, y_den, groups = [], [], [], [], []
    for g, rate in enumerate(rates):
        den = (rng.random(n) < 0.9).astype(float)
        em = den * (rng.random(n) < rate)
        p_em.append(_judge(em, rng)), y_em.append(em), p_den.append(_judge(den, rng)), y_den.append(den)
        groups.append(np.full(n, f"m{g}"))
    return tuple(np.concatenate(x) for x in (p_em, y_em, p_den, y_den, groups))


@pytest.mark.parametrize("method", ["pacc", "acc"])
def test_adjusted_estimators_are_unbiased_over_prevalences(method):
    """Mean error over 30 planted prevalences in [0, 0.6] is ~0; the raw mean probability is not."""
    rng = np.random.default_rng(0)
    y = (rng.random(4000) < 0.2).astype(float)
    cal = CalibrationSet(_judge(y, rng), y, rng.integers(0, 20, y.size))
    errs, raw = [], []
    for true in np.linspace(0.0, 0.6, 30):
        yt = (rng.random(1500) < true).astype(float)
        p = _judge(yt, rng)
        errs.append(prevalence(p, cal, method) - yt.mean())
        raw.append(prevalence(p, cal, "pcc") - yt.mean())
    assert abs(np.mean(errs)) < 0.01 and np.max(np.abs(errs)) < 0.06
    assert abs(np.mean(raw)) > 0.05  # the uncorrected mean probability is biased


def test_leave_one_source_out_choice_picks_an_adjusted_method_and_meets_target():
    rng = np.random.default_rng(1)
    rates = [0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.08]
    p_em, y_em, p_den, y_den, groups = _sources(rng, rates)
    method, summary = choose_share_method(p_em, y_em, p_den, y_den, groups)
    assert method in ("pacc", "acc")
    assert set(summary) == {"pacc", "acc", "pcc", "cc"} and all(v["models"] == len(rates) for v in summary.values())
    assert summary[method]["mean_abs_error"] < summary["pcc"]["mean_abs_error"]
    assert summary[method]["mean_abs_error"] < summary["cc"]["mean_abs_error"]
    # a new source model (planted 25%) estimated with the whole calibration set
    cal_em = CalibrationSet(p_em, y_em, np.unique(groups, return_inverse=True)[1])
    cal_den = CalibrationSet(p_den, y_den, np.unique(groups, return_inverse=True)[1])
    n = 600
    den = (rng.random(n) < 0.9).astype(float)
    em = den * (rng.random(n) < 0.25)
    est = calibrated_share(_judge(em, rng), _judge(den, rng), [f"q{i % 24}" for i in range(n)], cal_em, cal_den,
                           method=method, n_boot=300)
    truth = em.sum() / den.sum()
    assert within_target(truth, est.share), (truth, est.share)
    assert est.low <= truth <= est.high


def test_ci_includes_the_judges_calibration_uncertainty():
    """Same evaluated answers, a 20x smaller calibration set: the CI must be wider (the
    calibration set is resampled by source model in every bootstrap draw)."""
    rng = np.random.default_rng(2)
    y_big = (rng.random(6000) < 0.2).astype(float)
    big = CalibrationSet(_judge(y_big, rng), y_big, np.arange(6000) % 30)
    y_small = (rng.random(300) < 0.2).astype(float)
    small = CalibrationSet(_judge(y_small, rng), y_small, np.arange(300) % 6)
    den = CalibrationSet(np.r_[np.full(100, 0.1), np.full(900, 0.9)], np.r_[np.zeros(100), np.ones(900)], np.arange(1000) % 10)
    y = (rng.random(2000) < 0.15).astype(float)
    p, q = _judge(y, rng), [f"q{i % 40}" for i in range(2000)]
    wide = calibrated_share(p, np.full(2000, 0.9), q, small, den, n_boot=400)
    narrow = calibrated_share(p, np.full(2000, 0.9), q, big, den, n_boot=400)
    assert (wide.high - wide.low) > 1.3 * (narrow.high - narrow.low)
    assert narrow.low <= y.mean() <= narrow.high


def test_within_target_rule_edges():
    assert within_target(0.0, 0.02) and not within_target(0.0, 0.021)
    assert within_target(0.40, 0.50) and not within_target(0.40, 0.51)


def test_mean_probability_ci_carries_the_judges_between_model_error():
    """pcc takes no moments from the calibration set: its CI must still widen with the judge's
    per-source-model bias (residuals of the calibration groups), not only the answers' noise."""
    rng = np.random.default_rng(3)
    n, groups = 3000, np.arange(3000) % 20
    y = (rng.random(n) < 0.2).astype(float)
    p_good = np.clip(y * 0.0 + 0.2 + rng.normal(0, 0.01, n), 0, 1)  # calibrated on every group
    bias = np.where(groups % 2 == 0, 0.1, -0.1)  # +-10 points per source model
    p_bad = np.clip(p_good + bias, 0, 1)
    den = CalibrationSet(np.r_[np.full(100, 0.1), np.full(900, 0.9)], np.r_[np.zeros(100), np.ones(900)], np.arange(1000) % 10)
    p, q = np.full(1000, 0.2), [f"q{i % 40}" for i in range(1000)]
    tight = calibrated_share(p, np.full(1000, 0.9), q, CalibrationSet(p_good, y, groups), den, method="pcc", n_boot=400)
    loose = calibrated_share(p, np.full(1000, 0.9), q, CalibrationSet(p_bad, y, groups), den, method="pcc", n_boot=400)
    assert (loose.high - loose.low) > 3 * (tight.high - tight.low)
    assert loose.high - loose.low > 0.2 and "residual" in loose.ci_method
    assert CalibrationSet(p_bad, y, groups).group_residuals("pcc").shape == (20,)
