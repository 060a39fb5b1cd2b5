"""Rank correlation between language proximity and transfer, with a seeded permutation p-value.

Spearman's rho comes from ``scipy.stats.spearmanr``; its p-value from
``scipy.stats.permutation_test`` (pairings shuffled, exact when n! is small enough,
otherwise ``n_permutations`` seeded Monte-Carlo draws). Pairs where either value is
NaN (e.g. the external proximity of ``python``, which is unknown by design) are dropped
and counted, never imputed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from em_interp.errors import EmInterpError


@dataclass(frozen=True)
class CorrelationResult:
    """Spearman rho between two paired samples and its permutation p-value."""

    rho: float
    p_value: float
    n: int                  # pairs used (finite in both)
    n_dropped: int          # pairs dropped because a value was NaN
    n_permutations: int     # resamples drawn (or n! when the test was exact)
    exact: bool
    alternative: str
    seed: int

    def to_dict(self) -> dict:
        return asdict(self)


def _rho(x: np.ndarray, y: np.ndarray) -> float:
    from scipy import stats

    return float(stats.spearmanr(x, y).statistic)


def spearman_permutation(
    x: Sequence[float],
    y: Sequence[float],
    *,
    n_permutations: int = 10_000,
    seed: int = 0,
    alternative: str = "two-sided",
) -> CorrelationResult:
    """Spearman rho of ``x`` vs ``y`` and a permutation p-value (pairings shuffled, seeded).

    ``alternative`` is ``"two-sided"``, ``"greater"`` (rho > 0: closer languages transfer
    more) or ``"less"``. Needs at least 3 finite pairs and some variation in both.
    """
    from scipy import stats

    if alternative not in ("two-sided", "greater", "less"):
        raise EmInterpError(f"alternative must be two-sided, greater or less, got {alternative!r}",
                            field="alternative")
    xa = np.asarray(x, dtype=float).ravel()
    ya = np.asarray(y, dtype=float).ravel()
    if xa.shape != ya.shape:
        raise EmInterpError(f"x and y must have the same length, got {xa.size} and {ya.size}")
    keep = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[keep], ya[keep]
    n, dropped = int(xa.size), int((~keep).sum())
    if n < 3:
        raise EmInterpError(f"need at least 3 finite pairs for a rank correlation, got {n}"
                            f" ({dropped} dropped as NaN)")
    if np.ptp(xa) == 0 or np.ptp(ya) == 0:
        raise EmInterpError("a rank correlation needs variation in both variables; one is constant")
    rho = _rho(xa, ya)
    ry = stats.rankdata(ya)
    ry = (ry - ry.mean()) / np.linalg.norm(ry - ry.mean())

    def statistic(xs: np.ndarray, axis: int = -1) -> np.ndarray:
        # Spearman = Pearson of ranks; y is fixed, only the pairing of x is permuted.
        rx = stats.rankdata(xs, axis=axis)
        rx = rx - rx.mean(axis=axis, keepdims=True)
        return (rx * ry).sum(axis=axis) / np.linalg.norm(rx, axis=axis)

    # One sample with permutation_type="pairings": scipy permutes x against the fixed y,
    # so the exact test enumerates n! orderings (passing both samples would take (n!)^2).
    res = stats.permutation_test(
        (xa,), statistic, permutation_type="pairings", vectorized=True,
        n_resamples=n_permutations, alternative=alternative, rng=np.random.default_rng(seed),
    )
    exact = math.factorial(n) <= n_permutations
    return CorrelationResult(
        rho=rho, p_value=float(res.pvalue), n=n, n_dropped=dropped,
        n_permutations=math.factorial(n) if exact else n_permutations, exact=exact,
        alternative=alternative, seed=seed,
    )


def bootstrap_share_ci(flags: Sequence[bool], *, n_boot: int = 2000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float, float]:
    """(share, lo, hi): share of True in ``flags`` with the seeded percentile-bootstrap CI of
    ``em_interp.eval.bootstrap_ci`` (the same CI eval's ``summarize`` reports). NaN triple
    for an empty sample; all-0 / all-1 samples give the degenerate interval [share, share]."""
    from em_interp.eval import bootstrap_ci

    a = np.asarray(list(flags), dtype=float)
    if a.size == 0:
        return (math.nan, math.nan, math.nan)
    lo, hi = bootstrap_ci(a, n_boot=n_boot, ci=level, seed=seed)
    return (float(a.mean()), float(lo), float(hi))


def bootstrap_diff_ci(a: Sequence[bool], b: Sequence[bool], *, n_boot: int = 2000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float, float]:
    """(share(a) - share(b), lo, hi): percentile-bootstrap CI of a difference of two shares
    from independent samples (each resampled on its own, seeded). NaN triple if either is empty."""
    x = np.asarray(list(a), dtype=float)
    y = np.asarray(list(b), dtype=float)
    if x.size == 0 or y.size == 0:
        return (math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    diffs = (x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
             - y[rng.integers(0, y.size, size=(n_boot, y.size))].mean(axis=1))
    lo, hi = np.quantile(diffs, [(1 - level) / 2, 1 - (1 - level) / 2])
    return (float(x.mean() - y.mean()), float(lo), float(hi))
