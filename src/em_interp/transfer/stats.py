"""Rank correlation between language proximity and transfer, with a seeded permutation p-value,
one test per source (``source_tests``: targets permuted within a source, never pooled).

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


@dataclass(frozen=True)
class SourceTest:
    """One source's rank test: proximity of its language to each target vs the transfer there.

    The permutation is over that source's targets only (each target counted once); sources
    are never pooled as independent pairs, because they share the base row and the targets'
    judge errors. ``role`` is ``"treatment"`` or ``"control"`` (reported apart)."""

    source: str
    role: str
    language: str
    measure: str
    pairs: dict
    result: CorrelationResult | None
    note: str | None

    def to_dict(self) -> dict:
        return {"source": self.source, "role": self.role, "language": self.language, "measure": self.measure,
                "pairs": self.pairs, "result": self.result.to_dict() if self.result else None, "note": self.note}


def source_tests(transfer, sources: dict[str, tuple[str, str]], proximity, *, measure: str,
                 targets: Sequence[str] | None = None, include_self: bool = False, n_permutations: int = 10_000,
                 seed: int = 0, alternative: str = "greater") -> list[SourceTest]:
    """A ``spearman_permutation`` test per source of ``transfer`` (a ``TransferMatrix``).

    ``sources``: ``{label: (language, role)}`` (language the source is written in, or
    ``python``; role ``treatment`` / ``control``); ``targets``: the natural-language targets
    to test over (default: every target of the matrix but ``python``, whose vulnerable-code
    rate is another metric and is never mixed in). Sources not in the matrix are skipped;
    a test that cannot be computed (< 3 finite pairs, a constant variable) has ``result``
    None and the reason in ``note``."""
    from em_interp.transfer.matrix import TransferMatrix, transfer_pairs

    cols = [t for t in (targets if targets is not None else transfer.targets) if t != "python"]
    idx = [transfer.targets.index(t) for t in cols]
    sub = TransferMatrix(transfer.metric, transfer.sources, cols, transfer.value[:, idx], transfer.lo[:, idx],
                         transfer.hi[:, idx], transfer.n[:, idx], transfer.ci_method)
    out = []
    for label, (language, role) in sources.items():
        if label not in sub.sources:
            continue
        pairs = transfer_pairs(sub, {label: language}, proximity, include_self=include_self)
        try:
            res, note = spearman_permutation(pairs["x"], pairs["y"], n_permutations=n_permutations, seed=seed,
                                             alternative=alternative), None
        except EmInterpError as exc:
            res, note = None, exc.message
        out.append(SourceTest(label, role, language, measure, pairs, res, note))
    return out
