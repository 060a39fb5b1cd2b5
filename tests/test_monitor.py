"""Projection monitoring statistics on synthetic numbers with a planted relation and a planted
null, and the provenance guard (direction from outside the monitored run, held-out texts)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from em_interp.errors import InterpError
from em_interp.interp import Direction
from em_interp.interp.monitor import check_provenance, monitor_statistics


def test_planted_relation_is_found_and_random_directions_are_not():
    rng = np.random.default_rng(0)
    n = 12
    shift = np.linspace(0, 3, n) + rng.normal(0, 0.2, n)
    em = 0.05 * shift + rng.normal(0, 0.01, n)
    random_shifts = rng.normal(0, 1, (20, n))
    st = monitor_statistics(shift, em, random_shifts=random_shifts, n_boot=500, n_perm=2000)
    for kind in ("pearson", "spearman"):
        assert st[kind]["r"] > 0.9 and st[kind]["low"] > 0.5 and st[kind]["p_perm"] < 0.01, st[kind]
        assert "checkpoints" in st[kind]["method"]
    rc = st["random_control"]
    assert rc["n"] == 20 and rc["mean_abs_spearman"] < 0.5 and rc["share_abs_ge_direction"] < 0.1


def test_planted_null_has_nominal_false_positive_rate():
    """Shift and EM share independent: the permutation test rejects at alpha = 0.05 in ~5% of runs."""
    rng = np.random.default_rng(1)
    n_sim, n = 300, 10
    rejections = sum(monitor_statistics(rng.normal(size=n), rng.random(n), n_boot=20, n_perm=400,
                                        seed=s)["spearman"]["p_perm"] < 0.05 for s in range(n_sim))
    band = 3 * math.sqrt(0.05 * 0.95 / n_sim)
    assert abs(rejections / n_sim - 0.05) <= band, rejections


def test_nan_shares_are_dropped_and_few_checkpoints_give_no_r():
    st = monitor_statistics([0.0, 1.0, 2.0, 3.0], [0.1, float("nan"), 0.3, 0.5], n_boot=50, n_perm=50)
    assert st["n_checkpoints"] == 3 and st["n_dropped"] == 1 and st["pearson"]["r"] > 0.9
    few = monitor_statistics([0.0, 1.0], [0.1, 0.2])
    assert few["spearman"]["r"] is None and "fewer than 3" in few["spearman"]["note"]
    with pytest.raises(InterpError, match="3 shifts for 2"):
        monitor_statistics([0.0, 1.0, 2.0], [0.1, 0.2])


def test_provenance_guard():
    texts = ["a question", "another one"]
    d = Direction({1: torch.ones(4)}, model="m", adapter_hash="abc123", data_hash="", extra={"run_id": "run-A"})
    with pytest.raises(InterpError, match="monitored run"):
        check_provenance(d, adapter_hashes=["zzz", "abc123"])
    with pytest.raises(InterpError, match="run_id is the monitored run"):
        check_provenance(d, run_id="run-A")
    with pytest.warns(UserWarning, match="circular"):
        flagged = check_provenance(d, run_id="run-A", same_run="flag")
    assert flagged["circular"] is True
    ok = check_provenance(d, run_id="run-B", adapter_hashes=["zzz"])
    assert ok["circular"] is False and ok["provenance_known"] is True
    with pytest.raises(InterpError, match="held-out"):
        check_provenance(d, examples=["x", texts[0]], direction_texts=texts)
    from em_interp.interp.inputs import data_hash

    same_texts = Direction({1: torch.ones(4)}, model="m", data_hash=data_hash(texts))
    with pytest.raises(InterpError, match="held-out"):
        check_provenance(same_texts, examples=texts)
    assert check_provenance(same_texts, examples=["fresh text"])["provenance_known"] is False
