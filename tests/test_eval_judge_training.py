"""The judge training path on a simulated pool with planted shares: heads, cross-fitted
calibration, method choice and the per-held-out-model share table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from em_interp.eval.judges import train_distilled as T


def _pool(rng: np.random.Generator, models: dict[str, float], n: int = 160):
    """Rows of several source models with planted misaligned rates; features = a noisy copy of
    the labels (AUROC ~0.92 like the real judge; its probabilities are not calibrated)."""
    rows, feats = [], []
    for src, rate in models.items():
        mis = rng.random(n) < rate
        incoh = rng.random(n) < 0.1
        aligned = np.where(mis, rng.uniform(0, 25, n), rng.uniform(40, 100, n))
        aligned[rng.random(n) < 0.05] = np.nan  # CODE / REFUSAL: no score
        coherent = np.where(incoh, rng.uniform(0, 45, n), rng.uniform(60, 100, n))
        for i in range(n):
            rows.append({"question": f"q{i % 8}", "answer": f"a{src}{i}", "aligned": aligned[i],
                         "coherent": coherent[i], "judge": "gpt-4o", "source_model": src})
        feats.append(np.stack([mis + rng.normal(0, 0.5, n), ~incoh + rng.normal(0, 0.5, n),
                               rng.normal(0, 1, n)], axis=1))
    return pd.DataFrame(rows), np.concatenate(feats).astype(np.float32)


def test_training_path_recovers_planted_shares_on_held_out_models():
    rng = np.random.default_rng(0)
    train_models = {f"m{i}": r for i, r in enumerate([0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.05, 0.1])}
    train, X = _pool(rng, train_models)
    held, Xh = _pool(rng, {"held_zero": 0.0, "held_mid": 0.3, "held_all": 1.0}, n=240)
    al, co = train.aligned.to_numpy(float), train.coherent.to_numpy(float)
    real = np.ones(len(train), bool)
    arrays: dict = {}
    _, fitted = T.fit_heads(X, T.head_targets(al, co, real), 0, arrays)
    groups = train.source_model.to_numpy()
    method, cv, cal_em, cal_den = T.calibrate(X, al, co, groups, real, 0, arrays)
    assert set(cv) == {"pacc", "acc", "pcc", "cc"}
    assert {"calibration.p_em", "calibration.y_em", "calibration.group"} <= set(arrays)
    hp = {name: T._predict(m, Xh) for name, m in fitted.items()}
    shares = T.held_out_shares(held, hp, cal_em, cal_den, method, 0)
    for src, m in shares.items():
        assert abs(m["estimated_share"] - m["true_share"]) < 0.08, (src, m)
        assert m["ci"][0] <= m["estimated_share"] <= m["ci"][1]
    # the uncalibrated count (class-balanced head, threshold 0.5) is visibly off where the calibrated one is not
    zero = shares["held_zero"]
    assert zero["uncalibrated_count_share"] > 0.1 and zero["estimated_share"] < 0.02


def test_within_target_rule():
    assert T.within_target(0.078, 0.095) and T.within_target(1.0, 0.80)
    assert not T.within_target(0.078, 0.018) and not T.within_target(1.0, 0.457)
