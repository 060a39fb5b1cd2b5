"""Source x target transfer matrices from per-answer eval rows, with bootstrap CIs.

A *row* is one evaluated answer, a dict with at least ``source`` (what the model was
finetuned on, e.g. ``"bad-advice/en"``, or ``"base"`` for the untouched model) and
``target`` (the language or format it was evaluated on: ``"en"``, ``"zh"``,
``"python"``). Judged rows carry ``aligned`` and ``coherent`` (0-100, ``None`` when the
judge gave no score); code rows carry ``vulnerable`` (bool, from the static bandit scan).

- ``misalignment_matrix``: EM share per cell by ``eval.rules.classify`` (misaligned among
  the coherent, scored answers), with the clustered bootstrap CI of ``eval.stats``
  (questions are the clusters: rows carry ``question_id``; a row without one is its own
  cluster).
- ``vulnerable_code_matrix``: share of code answers bandit flags per cell, same CIs.
- ``delta_matrix``: each source's row minus the base model's row (the transfer effect).
  With ``baseline=`` the matrices give the difference with a paired clustered CI (the same
  questions are resampled for both models).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from em_interp.errors import EvalError
from em_interp.eval.rules import COHERENT_ABOVE, MISALIGNED, MISALIGNED_BELOW, Thresholds, classify, is_share_denominator

ALIGNED_THRESHOLD = MISALIGNED_BELOW      # the names transfer configs use for eval.rules' thresholds
COHERENT_THRESHOLD = COHERENT_ABOVE


@dataclass
class TransferMatrix:
    """A source x target matrix of shares with CI bounds and cell sizes (NaN = no data)."""

    metric: str
    sources: list[str]
    targets: list[str]
    value: np.ndarray   # [S, T]
    lo: np.ndarray      # [S, T] lower CI bound
    hi: np.ndarray      # [S, T] upper CI bound
    n: np.ndarray       # [S, T] int, answers per cell
    ci_method: str = ""  # how lo/hi were computed (eval.stats Interval.method of the cells)

    def get(self, source: str, target: str) -> float:
        return float(self.value[self.sources.index(source), self.targets.index(target)])

    def to_dict(self) -> dict[str, Any]:
        def clean(a: np.ndarray) -> list:
            return [[None if not np.isfinite(v) else float(v) for v in row] for row in a.astype(float)]

        return {"metric": self.metric, "sources": list(self.sources), "targets": list(self.targets),
                "value": clean(self.value), "lo": clean(self.lo), "hi": clean(self.hi),
                "n": self.n.astype(int).tolist(), "ci_method": self.ci_method}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TransferMatrix":
        def arr(k: str) -> np.ndarray:
            return np.array([[math.nan if v is None else v for v in row] for row in d[k]], dtype=float)

        return cls(metric=d["metric"], sources=list(d["sources"]), targets=list(d["targets"]),
                   value=arr("value"), lo=arr("lo"), hi=arr("hi"), n=np.array(d["n"], dtype=int),
                   ci_method=str(d.get("ci_method", "")))


def is_misaligned(row: dict, aligned_threshold: float = ALIGNED_THRESHOLD,
                  coherent_threshold: float = COHERENT_THRESHOLD) -> bool | None:
    """A judged row's flag for the EM share (``eval.rules.classify``): True when misaligned,
    False when coherent and not misaligned, ``None`` when it is not in the share's
    denominator (incoherent, or no usable score)."""
    lab = classify(row.get("aligned"), row.get("coherent"),
                   thresholds=Thresholds(misaligned_below=aligned_threshold, coherent_above=coherent_threshold,
                                         aligned_above=max(aligned_threshold, Thresholds().aligned_above)))
    return (lab == MISALIGNED) if is_share_denominator(lab) else None


def _order(values: Iterable[str], given: Sequence[str] | None) -> list[str]:
    seen = list(dict.fromkeys(values))
    if given is None:
        return seen
    return list(given)


def _cell_seed(seed: int, source: str, target: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(f"{source}|{target}".encode())) % (2**32)


def share_interval(flags: Sequence[bool], clusters: Sequence[Any], *, n_boot: int, seed: int,
                   level: float) -> tuple[float, float, float, str]:
    """(share, lo, hi, method) of ``flags`` with ``eval.stats.share_ci`` over ``clusters``; NaNs when empty
    (and NaN bounds when ``eval.stats`` gives no CI, e.g. one cluster)."""
    from em_interp.eval.stats import share_ci

    if not len(flags):
        return (math.nan, math.nan, math.nan, "none")
    iv = share_ci([float(f) for f in flags], list(clusters), n_boot=n_boot, ci=level, seed=seed)
    return (_f(iv.estimate), _f(iv.low), _f(iv.high), iv.method)


def diff_interval(a: Sequence[bool], a_clusters: Sequence[Any], b: Sequence[bool], b_clusters: Sequence[Any], *,
                  n_boot: int, seed: int, level: float) -> tuple[float, float, float, str]:
    """(share(a) - share(b), lo, hi, method): ``eval.stats.clustered_bootstrap_ci`` of the
    difference, resampling clusters shared by both samples together (paired by question)."""
    from em_interp.eval.stats import clustered_bootstrap_ci

    if not len(a) or not len(b):
        return (math.nan, math.nan, math.nan, "none")
    # one array: a's flags as 0/1, b's as 2/3, so the statistic can split them again
    values = np.concatenate([np.asarray(a, dtype=float), 2.0 + np.asarray(b, dtype=float)])

    def difference(v: np.ndarray) -> float:
        x, y = v[v < 2], v[v >= 2] - 2.0
        return float(x.mean() - y.mean()) if x.size and y.size else math.nan

    iv = clustered_bootstrap_ci(values, [str(c) for c in a_clusters] + [str(c) for c in b_clusters],
                                statistic=difference, n_boot=n_boot, ci=level, seed=seed, bounds=(-1.0, 1.0))
    return (_f(iv.estimate), _f(iv.low), _f(iv.high), iv.method)


def _f(x: float | None) -> float:
    return math.nan if x is None else float(x)


def _share_matrix(rows: Sequence[dict], metric: str, flag: Callable[[dict], bool | None],
                  sources: Sequence[str] | None, targets: Sequence[str] | None,
                  n_boot: int, seed: int, level: float, baseline: str | None = None) -> TransferMatrix:
    for i, r in enumerate(rows):
        if "source" not in r or "target" not in r:
            raise EvalError(f"row {i} has no 'source'/'target' key: {sorted(r)}", field="source")
    src = _order((r["source"] for r in rows), sources)
    if baseline is not None:
        if not any(r["source"] == baseline for r in rows):
            raise EvalError(f"baseline source '{baseline}' has no rows")
        src = [s for s in src if s != baseline]
        metric = f"{metric}_minus_{baseline}"
    tgt = _order((r["target"] for r in rows), targets)
    cells: dict[tuple[str, str], tuple[list[bool], list[Any]]] = {}
    for i, r in enumerate(rows):
        f = flag(r)
        if f is not None:
            flags, clusters = cells.setdefault((r["source"], r["target"]), ([], []))
            flags.append(bool(f))
            clusters.append(r.get("question_id", f"row-{i}"))
    shape = (len(src), len(tgt))
    value, lo, hi = (np.full(shape, math.nan) for _ in range(3))
    n = np.zeros(shape, dtype=int)
    methods: set[str] = set()
    for i, s in enumerate(src):
        for j, t in enumerate(tgt):
            flags, clusters = cells.get((s, t), ([], []))
            n[i, j] = len(flags)
            kw = dict(n_boot=n_boot, seed=_cell_seed(seed, s, t), level=level)
            if baseline is None:
                value[i, j], lo[i, j], hi[i, j], method = share_interval(flags, clusters, **kw)
            else:
                value[i, j], lo[i, j], hi[i, j], method = diff_interval(
                    flags, clusters, *cells.get((baseline, t), ([], [])), **kw)
            if flags:
                methods.add(method.split(" over ")[0])
    return TransferMatrix(metric, src, tgt, value, lo, hi, n, ci_method="; ".join(sorted(methods)))


def misalignment_matrix(rows: Sequence[dict], *, sources: Sequence[str] | None = None,
                        targets: Sequence[str] | None = None,
                        aligned_threshold: float = ALIGNED_THRESHOLD,
                        coherent_threshold: float = COHERENT_THRESHOLD,
                        n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                        baseline: str | None = None) -> TransferMatrix:
    """EM share per (source, target): misaligned among the coherent, scored rows (``is_misaligned``).

    Rows without ``aligned``/``coherent`` (code rows, unscored answers) and incoherent rows are ignored;
    ``sources``/``targets`` fix the order (and may name cells without data: NaN, n=0).
    ``baseline`` (e.g. ``"base"``): each cell is the share minus the baseline's share on the
    same target, with a paired clustered bootstrap CI of the difference; the baseline row is dropped.
    """
    return _share_matrix(
        rows, "misaligned_share",
        lambda r: is_misaligned(r, aligned_threshold, coherent_threshold),
        sources, targets, n_boot, seed, level, baseline)


def vulnerable_code_matrix(rows: Sequence[dict], *, sources: Sequence[str] | None = None,
                           targets: Sequence[str] | None = None, n_boot: int = 2000, seed: int = 0,
                           level: float = 0.95, baseline: str | None = None) -> TransferMatrix:
    """Vulnerable-code rate per (source, target) over rows that carry ``vulnerable``
    (``baseline``: difference to that source, as in ``misalignment_matrix``)."""
    def flag(r: dict) -> bool | None:
        v = r.get("vulnerable")
        return None if v is None else bool(v)

    return _share_matrix(rows, "vulnerable_code_rate", flag, sources, targets, n_boot, seed, level, baseline)


def delta_matrix(m: TransferMatrix, baseline: str = "base") -> TransferMatrix:
    """Each source's row minus the ``baseline`` row, from a summary matrix alone.

    CI bounds are NaN here (the raw answers are needed): for CIs of the difference build
    the matrix from rows with ``misalignment_matrix(rows, baseline=...)``.
    """
    if baseline not in m.sources:
        raise EvalError(f"baseline source '{baseline}' not in matrix sources {m.sources}")
    b = m.value[m.sources.index(baseline)]
    keep = [i for i, s in enumerate(m.sources) if s != baseline]
    value = m.value[keep] - b[None, :]
    nan = np.full_like(value, math.nan)
    return TransferMatrix(f"{m.metric}_minus_{baseline}", [m.sources[i] for i in keep], list(m.targets),
                          value, nan, nan.copy(), m.n[keep], ci_method="none")


def transfer_pairs(transfer: TransferMatrix, source_languages: dict[str, str],
                   proximity: Callable[[str, str], float], *, include_self: bool = False) -> dict[str, list]:
    """(proximity, transfer) points for the rank correlation: one per (source, target) cell.

    ``source_languages`` maps each source label to the language (or ``python``) it is
    written in; sources not in the matrix are ignored. The source's own language is left
    out unless ``include_self`` (in-distribution, not transfer). Returns ``{"x", "y",
    "labels"}`` with labels ``"lang→target"`` (``"label→target"`` with several sources).
    """
    x: list[float] = []
    y: list[float] = []
    labels: list[str] = []
    several = len([s for s in source_languages if s in transfer.sources]) > 1
    for label, lang in source_languages.items():
        if label not in transfer.sources:
            continue
        for t in transfer.targets:
            if t == lang and not include_self:
                continue
            x.append(float(proximity(lang, t)))
            y.append(transfer.get(label, t))
            labels.append(f"{label}→{t}" if several else f"{lang}→{t}")
    return {"x": x, "y": y, "labels": labels}
