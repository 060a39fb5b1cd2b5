"""Projection monitoring across training checkpoints (the persona-vectors finding).

For each checkpoint, the shift of the mean activation along a direction relative to the
base model (``(mean_ckpt - mean_base) . v_hat`` at one layer), next to that
checkpoint's EM rate (given), with Pearson and Spearman correlations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from em_interp.errors import InterpError
from em_interp.interp.capture import capture
from em_interp.interp.direction import Direction


def projection_shift(lm: Any, base_means: Mapping[str, Any], direction: Direction, examples: Sequence[Any],
                     layer: int, *, site_kind: str = "resid_post", reduce: str = "response_mean",
                     batch_size: int = 8) -> float:
    """``(mean activation of lm - base mean) . unit(direction[layer])`` on ``examples``."""
    site = f"{site_kind}.{layer}"
    mean = capture(lm, examples, [site], reduce=reduce, batch_size=batch_size)[site]
    v = direction.vector(layer).float()
    return float((mean - base_means[site]) @ (v / v.norm().clamp_min(1e-12)))


def projection_monitor(base: Any, checkpoints: Mapping[Any, Any], direction: Direction, examples: Sequence[Any],
                       em_rates: Mapping[Any, float], *, layer: int, site_kind: str = "resid_post",
                       reduce: str = "response_mean", batch_size: int = 8,
                       loader: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """Rows ``{checkpoint, shift, em_rate}`` plus ``pearson`` / ``spearman`` (r, p) over checkpoints.

    ``checkpoints``: ``{label (e.g. step): LoadedModel or adapter folder}``; folders are
    loaded with ``loader(folder)`` (default: ``load_model(base.path, adapter=folder)``),
    one at a time. ``em_rates``: ``{label: misaligned share}`` for the same labels.
    """
    from scipy import stats

    direction.check(base)
    missing = [k for k in checkpoints if k not in em_rates]
    if missing:
        raise InterpError(f"no EM rate given for checkpoint(s) {missing}", field="em_rates")
    site = f"{site_kind}.{layer}"
    base_means = capture(base, examples, [site], reduce=reduce, batch_size=batch_size)

    def default_loader(folder):
        from em_interp.models import load_model

        if not base.path:
            raise InterpError("base model has no path to attach adapters to; pass loader=", field="loader")
        return load_model(base.path, adapter=folder, device=str(base.device))

    rows = []
    for label, ckpt in checkpoints.items():
        lm = (loader or default_loader)(ckpt) if isinstance(ckpt, (str, Path)) else ckpt
        shift = projection_shift(lm, base_means, direction, examples, layer, site_kind=site_kind, reduce=reduce,
                                 batch_size=batch_size)
        rows.append({"checkpoint": label, "shift": shift, "em_rate": float(em_rates[label])})
    result: dict[str, Any] = {"rows": rows, "layer": layer, "site": site, "pearson": None, "spearman": None}
    if len(rows) >= 3:
        x = [r["shift"] for r in rows]
        y = [r["em_rate"] for r in rows]
        if len(set(x)) > 1 and len(set(y)) > 1:
            pr, sr = stats.pearsonr(x, y), stats.spearmanr(x, y)
            result["pearson"] = (float(pr.statistic), float(pr.pvalue))
            result["spearman"] = (float(sr.statistic), float(sr.pvalue))
    return result
