"""Matplotlib figures for every report, saved as PNG (Agg backend, no display needed).

Each function draws one figure, writes it to ``path`` (parents created), closes it and
returns the path. Every figure has a title and labelled axes with units; values that
are shares are plotted in percent. Confidence intervals are drawn as bands (lines) or
error bars (bars). NaN / None values are skipped, not drawn as zero.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from em_interp.report.errors import ReportError  # noqa: E402

DPI = 110


def _arr(values: Sequence[float | None] | None) -> np.ndarray:
    if values is None:
        return np.array([], dtype=float)
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, format="png")
    plt.close(fig)
    return path


def _title(ax, title: str, width: int = 62) -> None:
    ax.set_title(textwrap.fill(title, width))


def _check_len(name: str, values, n: int) -> None:
    if values is not None and len(values) != n:
        raise ReportError(f"figure series '{name}' has {len(values)} values, expected {n}")


def line_plot(
    x: Sequence[float],
    series: Mapping[str, Sequence[float | None]],
    path: str | Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    bands: Mapping[str, tuple[Sequence[float | None], Sequence[float | None]]] | None = None,
    hline: float | None = None,
    hline_label: str | None = None,
    logy: bool = False,
    percent: bool = False,
) -> Path:
    """Lines ``series[name]`` over ``x``; optional CI ``bands[name] = (lo, hi)`` and a reference line.

    ``percent=True`` multiplies values (shares in [0, 1]) by 100 for display.
    """
    scale = 100.0 if percent else 1.0
    xs = _arr(x)
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, ys in series.items():
        _check_len(name, ys, len(xs))
        y = _arr(ys) * scale
        (line,) = ax.plot(xs, y, marker="o", markersize=3.5, label=name)
        if bands and name in bands:
            lo, hi = bands[name]
            _check_len(f"{name} (lo)", lo, len(xs))
            _check_len(f"{name} (hi)", hi, len(xs))
            ax.fill_between(xs, _arr(lo) * scale, _arr(hi) * scale, color=line.get_color(), alpha=0.2, linewidth=0)
    if hline is not None:
        ax.axhline(hline * scale, color="grey", linestyle="--", linewidth=1, label=hline_label)
    if logy:
        ax.set_yscale("log")
    if xs.size and np.all(np.isfinite(xs)) and np.all(xs == np.round(xs)):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _title(ax, title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if len(series) > 1 or hline_label:
        ax.legend(fontsize=8)
    return _save(fig, path)


def layer_plot(
    values: Mapping[str, Sequence[float | None]],
    path: str | Path,
    *,
    title: str,
    ylabel: str,
    layers: Sequence[int] | None = None,
    logy: bool = False,
) -> Path:
    """One or more per-layer curves (x axis: layer index)."""
    n = len(next(iter(values.values()))) if values else 0
    layers = list(layers) if layers is not None else list(range(n))
    return line_plot(layers, values, path, title=title, xlabel="layer", ylabel=ylabel, logy=logy)


def heatmap(
    matrix: Sequence[Sequence[float | None]],
    path: str | Path,
    *,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    title: str,
    xlabel: str,
    ylabel: str,
    cbar_label: str = "",
    fmt: str = ".2f",
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    annotate: bool = True,
    cell_text: Sequence[Sequence[str | None]] | None = None,
) -> Path:
    """A matrix with every cell annotated (cosine tables, transfer matrices, LoRA norms).

    Cells show ``format(value, fmt)`` unless ``cell_text`` gives the text per cell (e.g.
    ``"12% [8, 16]"`` with its CI); NaN/None cells are left blank."""
    m = np.array([[np.nan if v is None else float(v) for v in row] for row in matrix], dtype=float)
    if m.ndim != 2 or m.shape != (len(row_labels), len(col_labels)):
        raise ReportError(f"heatmap '{title}': matrix shape {m.shape} does not match "
                          f"{len(row_labels)} row labels x {len(col_labels)} column labels")
    longest_col = max((len(str(c)) for c in col_labels), default=1)
    longest_row = max((len(str(r)) for r in row_labels), default=1)
    rotate = len(col_labels) > 12 or longest_col > 8
    w = min(16.0, 2.8 + 0.07 * longest_row + len(col_labels) * (0.45 if rotate else max(0.7, 0.09 * longest_col)))
    h = min(14.0, 2.0 + 0.45 * len(row_labels) + (0.06 * longest_col if rotate else 0))
    fig, ax = plt.subplots(figsize=(w, h))
    im = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    cbar = fig.colorbar(im, ax=ax)
    if cbar_label:
        cbar.set_label(cbar_label)
    ax.set_xticks(range(len(col_labels)), labels=list(col_labels), rotation=45 if rotate else 0,
                  ha="right" if rotate else "center")
    ax.set_yticks(range(len(row_labels)), labels=list(row_labels))
    if annotate and m.size <= 600:
        finite = m[np.isfinite(m)]
        lo = vmin if vmin is not None else (finite.min() if finite.size else 0.0)
        hi = vmax if vmax is not None else (finite.max() if finite.size else 1.0)
        mid = (lo + hi) / 2
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                text = cell_text[i][j] if cell_text is not None else (
                    format(m[i, j], fmt) if math.isfinite(m[i, j]) else None)
                if text:
                    val = m[i, j] if math.isfinite(m[i, j]) else lo
                    color = "black" if (cmap in ("viridis", "magma", "inferno") and val > mid) else "white"
                    if cmap.startswith(("RdBu", "coolwarm", "bwr")):
                        color = "black"
                    ax.text(j, i, text, ha="center", va="center", fontsize=7, color=color)
    _title(ax, title, max(30, int(8 * w)))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return _save(fig, path)


def steering_curves(
    curves: Mapping[str, Mapping[str, Sequence[float | None]]],
    path: str | Path,
    *,
    title: str = "Steering: misaligned share vs α",
    ylabel: str = "misaligned share (%)",
) -> Path:
    """Misaligned share (0-1, plotted in %) vs steering coefficient α, one curve per layer.

    ``curves[label] = {"alpha": [...], "share": [...], "lo": [...], "hi": [...]}``
    (``lo``/``hi``: CI bounds, optional).
    """
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, c in curves.items():
        if "alpha" not in c or "share" not in c:
            raise ReportError(f"steering curve '{label}' needs 'alpha' and 'share'")
        a = _arr(c["alpha"])
        _check_len(f"{label} share", c["share"], len(a))
        order = np.argsort(a)
        (line,) = ax.plot(a[order], _arr(c["share"])[order] * 100, marker="o", markersize=3.5, label=str(label))
        if c.get("lo") is not None and c.get("hi") is not None:
            _check_len(f"{label} lo", c["lo"], len(a))
            _check_len(f"{label} hi", c["hi"], len(a))
            ax.fill_between(a[order], _arr(c["lo"])[order] * 100, _arr(c["hi"])[order] * 100,
                            color=line.get_color(), alpha=0.18, linewidth=0)
    _title(ax, title)
    ax.set_ylim(bottom=0)  # shares: keep zero in view so small changes are not exaggerated
    ax.set_xlabel("steering coefficient α (adds α × direction vector)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="layer" if all(str(k).lstrip("-").isdigit() for k in curves) else None)
    return _save(fig, path)


def bar_ci(
    labels: Sequence[str],
    values: Sequence[float | None],
    path: str | Path,
    *,
    title: str,
    ylabel: str,
    lo: Sequence[float | None] | None = None,
    hi: Sequence[float | None] | None = None,
    percent: bool = False,
    colors: Sequence[str] | None = None,
    xlabel: str = "",
    hline: float | None = None,
    hline_label: str | None = None,
) -> Path:
    """Bars with asymmetric CI error bars (``lo``/``hi`` are the interval bounds, not widths)."""
    n = len(labels)
    _check_len("values", values, n)
    _check_len("lo", lo, n)
    _check_len("hi", hi, n)
    scale = 100.0 if percent else 1.0
    v = _arr(values) * scale
    rotate = n > 8
    fig, ax = plt.subplots(figsize=(min(14.0, max(5.5, 1.2 * n + 2)), 4.4))
    yerr = None
    if lo is not None and hi is not None:
        l, h = _arr(lo) * scale, _arr(hi) * scale
        yerr = np.vstack([np.clip(v - l, 0, None), np.clip(h - v, 0, None)])
        yerr = np.nan_to_num(yerr)
    ax.bar(range(n), np.nan_to_num(v), yerr=yerr, capsize=4, color=list(colors) if colors else None)
    if hline is not None:
        ax.axhline(hline * scale, color="grey", linestyle="--", linewidth=1, label=hline_label)
        if hline_label:
            ax.legend(fontsize=8)
    ticks = [str(x) if rotate else textwrap.fill(str(x), 14) for x in labels]
    ax.set_xticks(range(n), labels=ticks, rotation=30 if rotate else 0,
                  ha="right" if rotate else "center")
    _title(ax, title)
    ax.set_ylabel(ylabel)
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def ablation_bars(
    labels: Sequence[str],
    values: Sequence[float | None],
    path: str | Path,
    *,
    lo: Sequence[float | None] | None = None,
    hi: Sequence[float | None] | None = None,
    random_label: str = "random direction",
    title: str = "Directional ablation: misaligned share",
    ylabel: str = "misaligned share (%)",
) -> Path:
    """Misaligned share (0-1, plotted in %) per condition; bars whose label contains
    ``random_label`` (the random-direction control) are drawn grey, the others blue."""
    colors = ["#999999" if random_label in str(lab) else "#1f77b4" for lab in labels]
    return bar_ci(labels, values, path, title=title, ylabel=ylabel, lo=lo, hi=hi, percent=True,
                  colors=colors, xlabel="condition")


def probe_accuracy(
    layers: Sequence[int],
    accuracy: Mapping[str, Sequence[float | None]],
    path: str | Path,
    *,
    chance: float | None = 0.5,
    title: str = "Probe accuracy by layer",
) -> Path:
    """Held-out probe accuracy (0-1, plotted in %) per layer, with the chance level."""
    return line_plot(layers, accuracy, path, title=title, xlabel="layer", ylabel="held-out accuracy (%)",
                     hline=chance, hline_label="chance" if chance is not None else None, percent=True)


def training_dynamics(
    steps: Sequence[int],
    path: str | Path,
    *,
    em_rate: Sequence[float | None] | None = None,
    em_lo: Sequence[float | None] | None = None,
    em_hi: Sequence[float | None] | None = None,
    projection: Sequence[float | None] | None = None,
    loss_steps: Sequence[int] | None = None,
    loss: Sequence[float | None] | None = None,
    title: str = "Training dynamics",
) -> Path:
    """Up to three stacked panels sharing the step axis: misaligned share (%) with CI,
    mean projection on the EM direction, and training loss (its own step grid)."""
    panels = [p for p, present in (("em", em_rate is not None), ("proj", projection is not None),
                                   ("loss", loss is not None)) if present]
    if not panels:
        raise ReportError(f"figure '{title}': nothing to plot (no EM rate, projection or loss)")
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.6 * len(panels) + 0.6), sharex=True, squeeze=False)
    xs = _arr(steps)
    for ax, panel in zip(axes[:, 0], panels):
        if panel == "em":
            _check_len("em_rate", em_rate, len(xs))
            ax.plot(xs, _arr(em_rate) * 100, marker="o", markersize=3.5, color="#d62728")
            if em_lo is not None and em_hi is not None:
                ax.fill_between(xs, _arr(em_lo) * 100, _arr(em_hi) * 100, color="#d62728", alpha=0.2, linewidth=0)
            ax.set_ylabel("misaligned share (%)")
            ax.set_ylim(bottom=0)
        elif panel == "proj":
            _check_len("projection", projection, len(xs))
            ax.plot(xs, _arr(projection), marker="o", markersize=3.5, color="#1f77b4")
            ax.set_ylabel("projection on\nEM direction")
        else:
            ls = _arr(loss_steps) if loss_steps is not None else xs
            _check_len("loss", loss, len(ls))
            ax.plot(ls, _arr(loss), color="#2ca02c")
            ax.set_ylabel("training loss (nats/token)")
        ax.grid(alpha=0.3)
    _title(axes[0, 0], title)
    axes[-1, 0].set_xlabel("training step")
    return _save(fig, path)
