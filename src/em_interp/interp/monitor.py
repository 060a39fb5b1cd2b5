"""Projection monitoring across training checkpoints (the persona-vectors finding), without
circularity.

For each checkpoint, the shift of the mean activation along a direction relative to the
base model (``(mean_ckpt - mean_base) . v_hat`` at one layer), next to that checkpoint's EM
share (given). Guards and controls:

- the direction must come from *outside* the monitored run (another seed, another
  organism, or a base-model persona vector): a direction whose ``adapter_hash`` is one of
  the monitored checkpoints' adapter hashes, or whose ``extra["run_id"]`` is the monitored
  ``run_id``, is circular: ``check_provenance`` refuses it by default,
  ``projection_monitor`` flags it loudly by default (warning + ``provenance.circular``) and
  refuses it with ``same_run="refuse"``;
- the monitored texts must be held out: texts whose ``data_hash`` equals the direction's,
  or that appear in ``direction_texts``, are circular in the same way;
- a same-norm random-direction control: ``n_random`` seeded random directions projected on
  the same mean shifts, with their correlations as a null distribution;
- Pearson and Spearman correlations with a bootstrap CI over checkpoints and a permutation
  p-value (``monitor_statistics``, a pure function of the numbers).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from em_interp.errors import InterpError
from em_interp.eval.stats import clustered_bootstrap_ci
from em_interp.interp.capture import capture
from em_interp.interp.direction import Direction
from em_interp.interp.inputs import data_hash, messages_of

SAME_RUN = ("refuse", "flag")


def projection_shift(lm: Any, base_means: Mapping[str, Any], direction: Direction, examples: Sequence[Any],
                     layer: int, *, site_kind: str = "resid_post", reduce: str = "response_mean",
                     batch_size: int = 8) -> float:
    """``(mean activation of lm - base mean) . unit(direction[layer])`` on ``examples``."""
    site = f"{site_kind}.{layer}"
    mean = capture(lm, examples, [site], reduce=reduce, batch_size=batch_size)[site]
    v = direction.vector(layer).float()
    return float((mean - base_means[site]) @ (v / v.norm().clamp_min(1e-12)))


def _corr(x: np.ndarray, y: np.ndarray, kind: str) -> float:
    from scipy.stats import rankdata

    if kind == "spearman":
        x, y = rankdata(x), rankdata(y)
    if np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def _perm_p(x: np.ndarray, y: np.ndarray, kind: str, n_perm: int, rng: np.random.Generator) -> float:
    """Two-sided permutation p-value of the correlation ((count + 1) / (n_perm + 1))."""
    from scipy.stats import rankdata

    if kind == "spearman":
        x, y = rankdata(x), rankdata(y)
    xs = (x - x.mean()) / x.std()
    ys = rng.permuted(np.tile(y, (n_perm, 1)), axis=1)
    ys = (ys - ys.mean(axis=1, keepdims=True)) / ys.std(axis=1, keepdims=True)
    r0 = float(np.mean(xs * (y - y.mean()) / y.std()))
    null = (ys * xs).mean(axis=1)
    return float((np.sum(np.abs(null) >= abs(r0) - 1e-12) + 1) / (n_perm + 1))


def monitor_statistics(shifts: Sequence[float], em_rates: Sequence[float], *,
                       random_shifts: Sequence[Sequence[float]] | None = None, n_boot: int = 2000,
                       n_perm: int = 5000, ci: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Pearson / Spearman r between projection shift and EM share over checkpoints, with a
    percentile bootstrap CI over checkpoints, a permutation p-value and the random-direction null."""
    x, y = np.asarray(shifts, dtype=float), np.asarray(em_rates, dtype=float)
    if x.shape != y.shape:
        raise InterpError(f"{x.size} shifts for {y.size} EM shares", field="em_rates")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    out: dict[str, Any] = {"n_checkpoints": int(x.size), "n_dropped": int((~keep).sum())}
    rng = np.random.default_rng(seed)
    for kind in ("pearson", "spearman"):
        if x.size < 3 or np.std(x) == 0 or np.std(y) == 0:
            out[kind] = {"r": None, "low": None, "high": None, "p_perm": None,
                         "note": "fewer than 3 checkpoints with a share, or no variation"}
            continue
        iv = clustered_bootstrap_ci(np.arange(x.size, dtype=float), np.arange(x.size), n_boot=n_boot, ci=ci,
                                    seed=seed, method="percentile", bounds=(-1.0, 1.0),
                                    statistic=lambda idx, k=kind: _corr(x[idx.astype(int)], y[idx.astype(int)], k))
        out[kind] = {"r": iv.estimate, "low": iv.low, "high": iv.high,
                     "p_perm": _perm_p(x, y, kind, n_perm, rng),
                     "method": f"{iv.method.replace('clusters', 'checkpoints')}; permutation p ({n_perm} permutations)"}
    if random_shifts is not None:
        R = np.asarray(random_shifts, dtype=float)[:, keep]
        rs = [_corr(r, y, "spearman") for r in R] if x.size >= 3 else []
        r_dir = out["spearman"]["r"]
        out["random_control"] = {
            "n": int(R.shape[0]), "spearman": rs,
            "mean_abs_spearman": float(np.nanmean(np.abs(rs))) if rs else None,
            "share_abs_ge_direction": (float(np.mean([abs(r) >= abs(r_dir) for r in rs if r == r]))
                                       if rs and r_dir is not None else None),
            "note": "same-norm random directions projected on the same mean shifts"}
    return out


def check_provenance(direction: Direction, *, run_id: str | None = None, adapter_hashes: Sequence[str] = (),
                     examples: Sequence[Any] = (), direction_texts: Sequence[Any] | None = None,
                     same_run: str = "refuse") -> dict[str, Any]:
    """Refuse (or flag) a direction built from the monitored run or on the monitored texts."""
    if same_run not in SAME_RUN:
        raise InterpError(f"same_run must be one of {SAME_RUN}, got {same_run!r}", field="same_run")
    reasons = []
    if direction.adapter_hash and direction.adapter_hash in set(adapter_hashes):
        reasons.append(f"its adapter hash {direction.adapter_hash} is a monitored checkpoint's")
    if run_id is not None and str(direction.extra.get("run_id", "")) == str(run_id):
        reasons.append(f"its run_id is the monitored run {run_id!r}")
    if reasons and same_run == "refuse":
        raise InterpError("the direction comes from the monitored run (" + "; ".join(reasons) + "): use a direction "
                          "from another seed, another organism or a base-model persona vector, or pass "
                          "same_run='flag'", field="direction")
    text_reasons = []
    if examples and direction.data_hash and data_hash(examples) == direction.data_hash:
        text_reasons.append("the monitored texts are the texts the direction was built from")
    if direction_texts is not None:
        key = lambda ex: repr(messages_of(ex) if messages_of(ex) is not None else ex)  # noqa: E731
        seen = {key(t) for t in direction_texts}
        overlap = sum(key(e) in seen for e in examples)
        if overlap:
            text_reasons.append(f"{overlap} monitored text(s) were used to build the direction")
    if text_reasons and same_run == "refuse":
        raise InterpError("; ".join(text_reasons) + ": monitor held-out texts (or pass same_run='flag')",
                          field="examples")
    reasons += text_reasons
    if reasons:
        warnings.warn("projection monitoring is circular: " + "; ".join(reasons), stacklevel=3)
    known = bool(direction.adapter_hash or direction.extra.get("run_id") or direction.method == "persona")
    return {"circular": bool(reasons), "reasons": reasons, "direction_adapter_hash": direction.adapter_hash,
            "direction_run_id": direction.extra.get("run_id"), "direction_method": direction.method,
            "monitored_run_id": run_id, "provenance_known": known}


def _random_units(d: int, n: int, seed: int) -> Any:
    import torch

    g = torch.Generator().manual_seed(seed)
    r = torch.randn(n, d, generator=g)
    return r / r.norm(dim=1, keepdim=True)


def projection_monitor(base: Any, checkpoints: Mapping[Any, Any], direction: Direction, examples: Sequence[Any],
                       em_rates: Mapping[Any, float], *, layer: int, site_kind: str = "resid_post",
                       reduce: str = "response_mean", batch_size: int = 8,
                       loader: Callable[[Any], Any] | None = None, run_id: str | None = None,
                       direction_texts: Sequence[Any] | None = None, same_run: str = "flag",
                       n_random: int = 20, n_boot: int = 2000, n_perm: int = 5000, seed: int = 0) -> dict[str, Any]:
    """Rows ``{checkpoint, shift, em_rate, random_shifts}``, ``correlation`` (r, CI, permutation p),
    ``random_control``, ``provenance``; ``pearson`` / ``spearman`` as ``(r, p_perm)``.

    ``checkpoints``: ``{label (e.g. step): LoadedModel or adapter folder}``; folders are
    loaded with ``loader(folder)`` (default: ``load_model(base.path, adapter=folder)``),
    one at a time. ``em_rates``: ``{label: misaligned share}`` (NaN: left out of the
    correlation). ``examples`` must be held out from the direction's texts. ``same_run``:
    ``"flag"`` (default, so existing runs keep working: warns, ``provenance.circular``) or
    ``"refuse"`` (an ``InterpError`` for a direction from the monitored run or non-held-out texts).
    """
    direction.check(base)
    missing = [k for k in checkpoints if k not in em_rates]
    if missing:
        raise InterpError(f"no EM rate given for checkpoint(s) {missing}", field="em_rates")
    check_provenance(direction, run_id=run_id, examples=examples, direction_texts=direction_texts,
                     same_run=same_run)
    site = f"{site_kind}.{layer}"
    base_means = capture(base, examples, [site], reduce=reduce, batch_size=batch_size)
    v = direction.vector(layer).float()
    v = v / v.norm().clamp_min(1e-12)
    rand = _random_units(v.shape[0], n_random, seed)

    def default_loader(folder):
        from em_interp.models import load_model

        if not base.path:
            raise InterpError("base model has no path to attach adapters to; pass loader=", field="loader")
        return load_model(base.path, adapter=folder, device=str(base.device))

    rows, hashes = [], []
    for label, ckpt in checkpoints.items():
        lm = (loader or default_loader)(ckpt) if isinstance(ckpt, (str, Path)) else ckpt
        h = (getattr(lm, "info", None) or {}).get("adapter_hash")
        if h:
            hashes.append(h)
            check_provenance(direction, adapter_hashes=[h], same_run=same_run)  # refuse before capturing
        diff = capture(lm, examples, [site], reduce=reduce, batch_size=batch_size)[site].float() - base_means[site]
        rows.append({"checkpoint": label, "shift": float(diff @ v), "em_rate": float(em_rates[label]),
                     "random_shifts": [float(s) for s in rand @ diff]})
    provenance = check_provenance(direction, run_id=run_id, adapter_hashes=hashes, examples=examples,
                                  direction_texts=direction_texts, same_run=same_run)
    st = monitor_statistics([r["shift"] for r in rows], [r["em_rate"] for r in rows],
                            random_shifts=np.array([r["random_shifts"] for r in rows]).T.reshape(n_random, len(rows)),
                            n_boot=n_boot, n_perm=n_perm, seed=seed)
    result: dict[str, Any] = {"rows": rows, "layer": layer, "site": site, "provenance": provenance,
                              "n_held_out_texts": len(examples),
                              "correlation": {k: st[k] for k in ("pearson", "spearman")},
                              "random_control": st.get("random_control"), "n_checkpoints": st["n_checkpoints"]}
    for k in ("pearson", "spearman"):
        result[k] = None if st[k]["r"] is None else (st[k]["r"], st[k]["p_perm"])
    return result
