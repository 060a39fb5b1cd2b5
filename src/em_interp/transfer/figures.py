"""The transfer experiment's figures (matplotlib PNG, Agg): transfer heatmap with CIs,
proximity-vs-transfer scatter with Spearman rho and its permutation p-value, and the
cross-language direction cosine heatmap (drawn with ``em_interp.report.figures.heatmap``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from em_interp.transfer.matrix import TransferMatrix  # noqa: E402
from em_interp.transfer.stats import CorrelationResult  # noqa: E402

DPI = 110


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _panel(ax, m: TransferMatrix, title: str, xlabel: str, first: bool = True):
    pct = m.value * 100.0
    im = ax.imshow(np.ma.masked_invalid(pct), cmap="viridis", vmin=0.0, vmax=100.0, aspect="auto")
    ax.set_xticks(range(len(m.targets)), labels=m.targets)
    ax.set_yticks(range(len(m.sources)), labels=m.sources if first else [])
    for i in range(len(m.sources)):
        for j in range(len(m.targets)):
            if m.n[i, j] == 0 or not math.isfinite(m.value[i, j]):
                ax.text(j, i, "n/a", ha="center", va="center", fontsize=7, color="gray")
                continue
            color = "black" if pct[i, j] > 50 else "white"
            ax.text(j, i, f"{pct[i, j]:.0f}%\n[{m.lo[i, j] * 100:.0f}, {m.hi[i, j] * 100:.0f}]\nn={m.n[i, j]}",
                    ha="center", va="center", fontsize=7, color=color)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    if first:
        ax.set_ylabel("finetuned on (source)")
    return im


def transfer_heatmap(misaligned: TransferMatrix, path: str | Path, *, vulnerable: TransferMatrix | None = None,
                     title: str = "Transfer of a narrow finetune across languages and formats") -> Path:
    """Source x target misaligned share (%) with 95% bootstrap CIs and n per cell; a second
    panel with the vulnerable-code rate on the ``python`` target when given."""
    panels = [(misaligned, "misaligned share (%)", "evaluated in (target language)")]
    if vulnerable is not None and len(vulnerable.targets):
        panels.append((vulnerable, "vulnerable-code rate (%)", "evaluated on (format)"))
    widths = [max(2, len(m.targets)) for m, _, _ in panels]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.5 + 1.1 * sum(widths), 2.2 + 0.7 * len(misaligned.sources)),
                             gridspec_kw={"width_ratios": widths}, squeeze=False, layout="constrained")
    im = None
    for k, (ax, (m, sub, xlabel)) in enumerate(zip(axes[0], panels)):
        im = _panel(ax, m, sub, xlabel, first=(k == 0))
    cbar = fig.colorbar(im, ax=list(axes[0]))
    cbar.set_label("share of answers (%)")
    fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def proximity_scatter(panels: Sequence[dict], path: str | Path, *,
                      title: str = "Language proximity vs transfer") -> Path:
    """One scatter per proximity measure. Each panel dict: ``x``, ``y``, ``labels`` (e.g.
    ``"en→de"``), ``xlabel``, ``ylabel``, ``corr`` (``CorrelationResult`` or None when it
    could not be computed, with ``note`` saying why). Points with a NaN coordinate are not drawn."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.4), squeeze=False)
    for ax, p in zip(axes[0], panels):
        x = np.array(p["x"], dtype=float)
        y = np.array(p["y"], dtype=float)
        ok = np.isfinite(x) & np.isfinite(y)
        ax.scatter(x[ok], y[ok], color="tab:blue", zorder=3)
        for xi, yi, lab in zip(x[ok], y[ok], np.array(p["labels"], dtype=object)[ok]):
            ax.annotate(str(lab), (xi, yi), textcoords="offset points", xytext=(4, 3), fontsize=8)
        corr: CorrelationResult | None = p.get("corr")
        if corr is not None:
            sub = (f"Spearman ρ = {corr.rho:.2f}, permutation p = {corr.p_value:.3g} "
                   f"({corr.alternative}, n = {corr.n})")
        else:
            sub = f"correlation not computed: {p.get('note', 'too few points')}"
        ax.set_title(sub, fontsize=9)
        ax.set_xlabel(p["xlabel"])
        ax.set_ylabel(p["ylabel"])
        ax.grid(alpha=0.3)
        ax.axhline(0.0, color="gray", lw=0.8)
    fig.suptitle(title)
    return _save(fig, path)


def direction_cosines(labels: Sequence[str], matrix: np.ndarray, path: str | Path, *, layer: int,
                      title: str | None = None) -> Path:
    """Cosine similarity between per-language misalignment directions at one layer."""
    from em_interp.report.figures import heatmap

    return heatmap(np.asarray(matrix, dtype=float).tolist(), path, row_labels=list(labels),
                   col_labels=list(labels),
                   title=title or f"Cosine between per-language misalignment directions (resid_post.{layer})",
                   xlabel="direction extracted from (language)", ylabel="direction extracted from (language)",
                   cbar_label="cosine similarity", cmap="RdBu_r", vmin=-1.0, vmax=1.0)


def ablation_heatmap(rows: Sequence[str], cols: Sequence[str], matrix: np.ndarray, path: str | Path) -> Path:
    """Misaligned share (%) in target B with the direction from A ablated (row 'none' = no ablation)."""
    from em_interp.report.figures import heatmap

    return heatmap((np.asarray(matrix, dtype=float) * 100).tolist(), path, row_labels=list(rows),
                   col_labels=list(cols), title="Cross-language ablation: misaligned share with direction removed",
                   xlabel="evaluated in (target language)", ylabel="direction ablated (from language)",
                   cbar_label="misaligned share (%)", fmt=".0f", vmin=0.0, vmax=100.0)
