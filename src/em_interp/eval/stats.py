"""Confidence intervals that respect clustering: answers to one question (and runs of one
seed) are correlated, so the unit of resampling is the cluster, not the answer.

``clustered_bootstrap_ci(values, clusters)`` treats clusters (one level: questions; two
levels: e.g. ``(seeds, questions)``, crossed or nested) as the independent units and
returns an ``Interval`` that names its method. G = number of clusters (the smaller level
when there are two). Methods:

- ``"logit_t"`` (default of ``share_ci``, for shares/means of values in [0, 1]): Student-t
  interval on ``G-1`` degrees of freedom on the logit scale, with the cluster-robust (CR1)
  standard error of the share (one level; a cluster-bootstrap SE with two levels),
  mapped back. Measured coverage of nominal 95% over 1000 simulations with 8 questions x
  50 answers (beta-distributed per-question shares, ICC 1/6): 94.1% at share 18%, 92.3% at
  share 5%, 96.0% at 50%; 95.1% with 20 questions.
- ``"t"`` (default of ``clustered_bootstrap_ci``, any statistic): cluster-bootstrap SE x
  ``sqrt(G/(G-1))`` with the t(G-1) critical value: 91.3% (share 18%), 80% (share 5%).
- ``"percentile"``: percentile cluster bootstrap: 86% at 8 clusters (under-covers).
- ``"bca"``: bias-corrected and accelerated cluster bootstrap (jackknife over clusters): 89%.
A per-answer bootstrap (each answer its own cluster) covers 48% on the same data.

Degenerate cases are reported, not hidden: no data -> no estimate; one cluster -> an
estimate without CI and a ``note``; binary data with zero (or only) events -> the exact
binomial one-sided bound (the "rule of three", about 3/n) in ``low``/``high``, labelled in
``method`` and ``note``, with the more conservative per-cluster bound in ``bound_by_clusters``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np
from scipy import stats as sps

METHODS = ("logit_t", "t", "percentile", "bca")
DEFAULT_METHOD = "t"
SHARE_METHOD = "logit_t"


@dataclass(frozen=True)
class Interval:
    """A point estimate with its CI, sample sizes and the method that produced it."""

    estimate: float | None
    low: float | None
    high: float | None
    n: int
    n_clusters: int
    method: str
    level: float = 0.95
    note: str | None = None
    bound_by_clusters: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form (all fields)."""
        return asdict(self)

    def as_tuple(self) -> tuple[float | None, float | None, float | None]:
        """``(estimate, low, high)``."""
        return self.estimate, self.low, self.high


def _codes(labels: Sequence[Any], n: int, name: str) -> np.ndarray:
    arr = np.asarray([str(x) for x in labels])
    if arr.shape != (n,):
        raise ValueError(f"{name} has {arr.size} labels for {n} values")
    return np.unique(arr, return_inverse=True)[1].reshape(-1)


def _levels(clusters: Any, n: int) -> list[np.ndarray]:
    """One or two integer-coded cluster levels, outer first."""
    if isinstance(clusters, tuple) and len(clusters) == 2:
        return [_codes(clusters[0], n, "outer clusters"), _codes(clusters[1], n, "inner clusters")]
    return [_codes(clusters, n, "clusters")]


def _is_nested(outer: np.ndarray, inner: np.ndarray) -> bool:
    pairs = np.unique(np.stack([inner, outer], axis=1), axis=0)
    return np.unique(pairs[:, 0]).size == pairs.shape[0]


def _draw_counts(k: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``[n_boot, k]``: how often each of k units is drawn in k draws with replacement."""
    draws = rng.integers(0, k, size=(n_boot, k)) + (np.arange(n_boot) * k)[:, None]
    return np.bincount(draws.ravel(), minlength=n_boot * k).reshape(n_boot, k).astype(float)


def _cluster_weights(levels: list[np.ndarray], n_boot: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(W [n_boot, m], unit [n])``: bootstrap draw counts of m resampling units and each value's unit."""
    if len(levels) == 1:
        g = levels[0]
        return _draw_counts(int(g.max() + 1), n_boot, rng), g
    outer, inner = levels
    ko, ki = int(outer.max() + 1), int(inner.max() + 1)
    co = _draw_counts(ko, n_boot, rng)
    if not _is_nested(outer, inner):
        # crossed (e.g. seeds x questions): pigeonhole bootstrap, both levels resampled independently
        cq = _draw_counts(ki, n_boot, rng)
        cell = outer * ki + inner
        w = (co[:, :, None] * cq[:, None, :]).reshape(n_boot, ko * ki)
        return w, cell
    # nested: resample inner clusters within each outer cluster, weight by the outer draw count
    w = np.zeros((n_boot, ki))
    for o in range(ko):
        members = np.unique(inner[outer == o])
        w[:, members] = _draw_counts(members.size, n_boot, rng) * co[:, [o]]
    return w, inner


def _boot_stats(x: np.ndarray, w: np.ndarray, unit: np.ndarray,
                statistic: Callable[[np.ndarray], float] | None) -> np.ndarray:
    """Statistic of each bootstrap sample given unit draw counts ``w``."""
    m = w.shape[1]
    if statistic is None:  # mean: ratio of drawn sums to drawn sizes, no per-value expansion
        tot = w @ np.bincount(unit, minlength=m).astype(float)
        s = w @ np.bincount(unit, weights=x, minlength=m)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(tot > 0, s / tot, np.nan)
    per_value = w[:, unit].astype(int)
    return np.array([statistic(np.repeat(x, row)) if row.any() else np.nan for row in per_value])


def _bca(est: float, boots: np.ndarray, x: np.ndarray, g: np.ndarray,
         statistic: Callable[[np.ndarray], float] | None, alpha: float) -> tuple[float, float]:
    k = g.max() + 1
    jack = np.array([(statistic or np.mean)(x[g != j]) for j in range(k)])
    d = jack.mean() - jack
    denom = 6.0 * (d ** 2).sum() ** 1.5
    a = float((d ** 3).sum() / denom) if denom > 0 else 0.0
    prop = np.clip(np.mean(boots < est) + 0.5 * np.mean(boots == est), 1e-6, 1 - 1e-6)
    z0 = sps.norm.ppf(prop)
    qs = []
    for z in (sps.norm.ppf(alpha / 2), sps.norm.ppf(1 - alpha / 2)):
        qs.append(sps.norm.cdf(z0 + (z0 + z) / (1 - a * (z0 + z))))
    lo, hi = np.quantile(boots, qs)
    return float(lo), float(hi)


def _zero_events(x: np.ndarray, n_clusters: int, level: float) -> Interval | None:
    """Exact one-sided binomial bound when binary data hold no events (or only events)."""
    if not np.isin(x, (0.0, 1.0)).all() or np.unique(x).size != 1:
        return None
    alpha = 1 - level
    by_n, by_g = 1 - alpha ** (1 / x.size), 1 - alpha ** (1 / n_clusters)
    if x[0] == 0:
        return Interval(0.0, 0.0, float(by_n), int(x.size), n_clusters,
                        f"zero events: exact one-sided {level:.0%} binomial upper bound over n answers (rule of three ~3/n)",
                        level, "zero events; bound_by_clusters treats each cluster as one trial (conservative under clustering)",
                        float(by_g))
    return Interval(1.0, float(1 - by_n), 1.0, int(x.size), n_clusters,
                    f"all events: exact one-sided {level:.0%} binomial lower bound over n answers (rule of three ~1-3/n)",
                    level, "only events; bound_by_clusters treats each cluster as one trial (conservative under clustering)",
                    float(1 - by_g))


def _logit_t(x: np.ndarray, levels: list[np.ndarray], est: float, n_cl: list[int], desc: str, alpha: float,
             n_boot: int, seed: int) -> tuple[float, float, str]:
    """t(G-1) interval on the logit scale around a share ``est`` strictly inside (0, 1)."""
    g_min = min(n_cl)
    if len(levels) == 1:
        g = levels[0]
        sums, sizes = np.bincount(g, weights=x), np.bincount(g).astype(float)
        se = float(np.sqrt(g_min / (g_min - 1) * ((sums - est * sizes) ** 2).sum()) / sizes.sum())
        how = "cluster-robust (CR1) SE"
    else:
        w, unit = _cluster_weights(levels, n_boot, np.random.default_rng(seed))
        boots = _boot_stats(x, w, unit, None)
        se = float(np.nanstd(boots, ddof=1)) * np.sqrt(g_min / (g_min - 1))
        how = f"cluster-bootstrap SE x sqrt(G/(G-1)) (n_boot={n_boot})"
    centre, se_logit = np.log(est / (1 - est)), se / (est * (1 - est))
    half = float(sps.t.ppf(1 - alpha / 2, df=g_min - 1)) * se_logit
    lo, hi = (float(1 / (1 + np.exp(-(centre + k * half)))) for k in (-1, 1))
    return lo, hi, f"t(G-1) interval on the logit scale, {how} over {desc}"


def cluster_bootstrap_weights(clusters: Any, n: int, *, n_boot: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The cluster bootstrap draws behind every interval here, for a statistic this module does
    not compute itself (e.g. a cosine between two resampled means): ``(W [n_boot, m], unit [n])``,
    ``W[b, u]`` the number of times resampling unit ``u`` is drawn in bootstrap sample ``b`` and
    ``unit[i]`` the unit of value ``i``. ``clusters``: one label per value, or ``(outer, inner)``
    (nested or crossed, as ``clustered_bootstrap_ci``)."""
    return _cluster_weights(_levels(clusters, n), n_boot, np.random.default_rng(seed))


def clustered_bootstrap_ci(values: Sequence[float], clusters: Any, *,
                           statistic: Callable[[np.ndarray], float] | None = None, n_boot: int = 2000,
                           ci: float = 0.95, seed: int = 0, method: str = DEFAULT_METHOD,
                           bounds: tuple[float, float] | None = None) -> Interval:
    """CI of ``statistic`` (default: mean) resampling clusters; ``clusters`` = labels or ``(outer, inner)``."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    x = np.asarray(values, dtype=float).reshape(-1)
    n = int(x.size)
    if n == 0:
        return Interval(None, None, None, 0, 0, "none", ci, "no data")
    levels = _levels(clusters, n)
    n_cl = [int(lv.max() + 1) for lv in levels]
    g_min = min(n_cl)
    est = float((statistic or np.mean)(x))
    desc = (f"{n_cl[0]} outer x {n_cl[1]} inner clusters ({'nested' if _is_nested(*levels) else 'crossed'})"
            if len(levels) == 2 else f"{n_cl[0]} clusters")
    if (z := _zero_events(x, g_min, ci)) is not None:
        return z
    if g_min < 2:
        return Interval(est, None, None, n, g_min, "none", ci,
                        "one cluster: no between-cluster variation to resample, so no CI")
    alpha = 1 - ci
    if method == "logit_t":
        if statistic is not None or x.min() < 0 or x.max() > 1:
            raise ValueError("method 'logit_t' is for the mean of values in [0, 1] (a share)")
        lo, hi, name = _logit_t(x, levels, est, n_cl, desc, alpha, n_boot, seed)
        if bounds is not None:
            lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
        return Interval(est, float(lo), float(hi), n, g_min, name, ci)
    rng = np.random.default_rng(seed)
    w, unit = _cluster_weights(levels, n_boot, rng)
    boots = _boot_stats(x, w, unit, statistic)
    boots = boots[np.isfinite(boots)]
    if method == "t":
        se = float(boots.std(ddof=1)) * np.sqrt(g_min / (g_min - 1))
        half = float(sps.t.ppf(1 - alpha / 2, df=g_min - 1)) * se
        lo, hi = est - half, est + half
        name = f"cluster bootstrap SE x sqrt(G/(G-1)), t(G-1) interval over {desc}, n_boot={n_boot}"
    elif method == "percentile":
        lo, hi = (float(q) for q in np.quantile(boots, [alpha / 2, 1 - alpha / 2]))
        name = f"percentile cluster bootstrap over {desc}, n_boot={n_boot}"
    else:
        lo, hi = _bca(est, boots, x, levels[-1] if len(levels) == 1 else levels[int(np.argmin(n_cl))],
                      statistic, alpha)
        name = f"BCa cluster bootstrap over {desc}, n_boot={n_boot}"
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return Interval(est, float(lo), float(hi), n, g_min, name, ci)


def share_ci(flags: Sequence[bool | float], clusters: Any, *, n_boot: int = 2000, ci: float = 0.95,
             seed: int = 0, method: str = SHARE_METHOD) -> Interval:
    """Clustered CI of a share (mean of 0/1 flags), clipped to [0, 1]."""
    return clustered_bootstrap_ci(np.asarray(flags, dtype=float), clusters, n_boot=n_boot, ci=ci, seed=seed,
                                  method=method, bounds=(0.0, 1.0))


@dataclass(frozen=True)
class StratifiedTest:
    """An exact stratified test of two arms' event rates (``stratified_exact_test``); counts
    are over the strata that hold both arms (``strata_used``)."""

    events_treated: int
    expected_treated: float
    p_value: float
    n_treated: int
    n_control: int
    strata_used: int
    alternative: str
    method: str = ("exact conditional test (Mantel-Haenszel / stratified Fisher): the treated arm's "
                   "event count against the sum over strata of independent hypergeometric counts")

    def to_dict(self) -> dict[str, Any]:
        """JSON form (all fields)."""
        return asdict(self)


def stratified_exact_test(flags: Sequence[bool], treated: Sequence[bool], strata: Any, *,
                          alternative: str = "greater") -> StratifiedTest:
    """Do ``treated`` units have more events (``flags``) than control units *on the same
    strata* (e.g. answers to the same question)? Exact and conditional on each stratum's margins:
    under the null that, within every stratum, an answer's event does not depend on its arm,
    the treated events of a stratum are hypergeometric; their sum is the convolution.
    ``alternative``: ``"greater"`` (treated more events) or ``"less"``.

    Within a stratum, answers of one model to one question are independent samples, so this is
    valid where a per-answer CI is not; it says the arms differ *on these strata* (questions),
    not that the difference generalises to other questions (that is the clustered CI's job).
    With one stratum it is Fisher's exact test."""
    if alternative not in ("greater", "less"):
        raise ValueError(f"alternative must be 'greater' or 'less', got {alternative!r}")
    f = np.asarray(flags, dtype=bool)
    t = np.asarray(treated, dtype=bool)
    if len(t) != len(f):
        raise ValueError(f"treated has {len(t)} entries, flags {len(f)}")
    s = _codes(strata, len(f), "strata")
    pmf = np.array([1.0])
    obs, expected, used = 0, 0.0, 0
    for code in np.unique(s):
        m = s == code
        n_all, k, n_t = int(m.sum()), int(f[m].sum()), int(t[m].sum())
        if n_t == 0 or n_t == n_all:
            continue  # one arm only: no information in this stratum
        used += 1
        obs += int((f & t)[m].sum())
        lo, hi = max(0, n_t - (n_all - k)), min(k, n_t)
        support = np.arange(lo, hi + 1)
        p_s = np.zeros(hi + 1)
        p_s[support] = sps.hypergeom.pmf(support, n_all, k, n_t)
        pmf = np.convolve(pmf, p_s)
        expected += n_t * k / n_all
    p = float(pmf[obs:].sum()) if alternative == "greater" else float(pmf[: obs + 1].sum())
    return StratifiedTest(events_treated=obs, expected_treated=float(expected), p_value=min(1.0, p),
                          n_treated=int(t.sum()), n_control=int((~t).sum()), strata_used=used,
                          alternative=alternative)
