"""The one figure module: every PNG the toolkit draws (matplotlib, Agg backend).

Other packages return data and call these functions (the experiment and diff reports,
the transfer stages, the interp CLI's probe and LoRA plots).

Each function draws one figure, writes it to ``path`` (parents created), closes it and
returns the path. Every figure has a title and labelled axes with units; values that
are shares are plotted in percent. Confidence intervals are drawn as bands (lines) or
error bars (bars). NaN / None values are skipped, not drawn as zero.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any, Mapping, Sequence

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
    if not fig.get_constrained_layout():
        fig.tight_layout()
    fig.savefig(path, dpi=DPI, format="png", bbox_inches="tight", pad_inches=0.15)  # nothing clipped
    plt.close(fig)
    return path


def _title(ax, title: str, width: int = 62) -> None:
    ax.set_title(textwrap.fill(title, width))


def _check_len(name: str, values, n: int) -> None:
    if values is not None and len(values) != n:
        raise ReportError(f"figure series '{name}' has {len(values)} values, expected {n}")


def _no_data(ax) -> None:
    ax.text(0.5, 0.5, "n/a: no coherent, scored answers\n(the share is undefined)", transform=ax.transAxes,
            ha="center", va="center", fontsize=9, color="#666666")


def _share_axis(ax, *arrays: np.ndarray) -> None:
    """Shares start at 0 (never a negative axis); an all-zero plot still shows 0-10 %."""
    finite = np.concatenate([a[np.isfinite(a)] for a in arrays if a.size]) if arrays else np.array([])
    if finite.size and finite.min() < 0:
        return
    top = float(finite.max()) if finite.size else 0.0
    ax.set_ylim(bottom=0, top=max(10.0, min(108.0, top * 1.12 + 1.0)) if top <= 100 else None)


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
    elif percent:
        _share_axis(ax, *[_arr(ys) * scale for ys in series.values()],
                    *[_arr(b) * scale for lo_hi in (bands or {}).values() for b in lo_hi])
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
    ``"12% [8, 16]"`` with its CI); NaN/None cells are grey with a dash (no value, e.g. no
    scored answers), never confused with a low value."""
    m = np.array([[np.nan if v is None else float(v) for v in row] for row in matrix], dtype=float)
    if m.ndim != 2 or m.shape != (len(row_labels), len(col_labels)):
        raise ReportError(f"heatmap '{title}': matrix shape {m.shape} does not match "
                          f"{len(row_labels)} row labels x {len(col_labels)} column labels")
    longest_col = max((len(str(c)) for c in col_labels), default=1)
    longest_row = max((len(str(r)) for r in row_labels), default=1)
    rotate = len(col_labels) > 12 or longest_col > 8
    w = min(16.0, 2.8 + 0.07 * longest_row + len(col_labels) * (0.45 if rotate else max(0.7, 0.09 * longest_col)))
    h = min(14.0, 2.0 + 0.45 * len(row_labels) + (0.06 * longest_col if rotate else 0))
    finite_all = m[np.isfinite(m)]
    if vmin is not None and vmax is None and (not finite_all.size or finite_all.max() <= vmin):
        vmax = vmin + 1.0  # an all-zero share map: a 0..1 scale, not one centred on zero with negatives
    fig, ax = plt.subplots(figsize=(w, h))
    ax.set_facecolor("#e4e4e4")  # what masked (missing) cells show
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
                if not text and not math.isfinite(m[i, j]):
                    ax.text(j, i, "–", ha="center", va="center", fontsize=8, color="#666666")
                    continue
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


def _panel_title(fig, title: str, width_in: float) -> None:
    fig.suptitle(textwrap.fill(title, max(30, int(11 * width_in))), fontsize=11)


SHARE_PANELS = (("share", "misaligned share (%)"), ("coherent", "coherent share (%)"))


def steering_curves(
    curves: Mapping[str, Mapping[str, Sequence[float | None]]],
    path: str | Path,
    *,
    title: str = "Steering: misaligned share vs α",
    ylabel: str = "misaligned share (%)",
    xlabel: str = "steering coefficient α (convention: see the report's definitions)",
) -> Path:
    """Misaligned share (0-1, plotted in %) vs steering coefficient α, one curve per layer;
    a coherent-share panel beside it when the curves carry ``coherent``.

    ``curves[label] = {"alpha", "share", "lo"?, "hi"?, "coherent"?, "coherent_lo"?, "coherent_hi"?}``
    (``lo``/``hi``: CI bounds).
    """
    keys = [("share", ylabel)] + ([("coherent", "coherent share (%)")]
                                  if any(c.get("coherent") is not None for c in curves.values()) else [])
    width = 7.0 if len(keys) == 1 else 11.0
    fig, axes = plt.subplots(1, len(keys), figsize=(width, 4.2), squeeze=False, layout="constrained")
    for ax, (key, label) in zip(axes[0], keys):
        lo_key, hi_key = ("lo", "hi") if key == "share" else (f"{key}_lo", f"{key}_hi")
        drawn = []
        for name, c in curves.items():
            if "alpha" not in c or "share" not in c:
                raise ReportError(f"steering curve '{name}' needs 'alpha' and 'share'")
            if c.get(key) is None:
                continue
            a = _arr(c["alpha"])
            _check_len(f"{name} {key}", c[key], len(a))
            order = np.argsort(a)
            y = _arr(c[key])[order] * 100
            (line,) = ax.plot(a[order], y, marker="o", markersize=3.5, label=str(name))
            drawn.append(y)
            if c.get(lo_key) is not None and c.get(hi_key) is not None:
                _check_len(f"{name} {lo_key}", c[lo_key], len(a))
                _check_len(f"{name} {hi_key}", c[hi_key], len(a))
                lo, hi = _arr(c[lo_key])[order] * 100, _arr(c[hi_key])[order] * 100
                ax.fill_between(a[order], lo, hi, color=line.get_color(), alpha=0.18, linewidth=0)
                drawn += [hi]
        _share_axis(ax, *drawn)
        alphas = np.concatenate([_arr(c["alpha"]) for c in curves.values()]) if curves else np.array([])
        if alphas.size and np.isfinite(alphas).any():
            lo_a, hi_a = np.nanmin(alphas), np.nanmax(alphas)
            pad = 0.05 * (hi_a - lo_a) or 0.5
            ax.set_xlim(lo_a - pad, hi_a + pad)
        if not any(np.isfinite(y).any() for y in drawn):
            _no_data(ax)
        ax.set_xlabel(textwrap.fill(xlabel, 48))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="layer" if all(str(k).lstrip("-").isdigit() for k in curves) else None)
    _panel_title(fig, title, width)
    return _save(fig, path)


def _bars(ax, v, lo, hi, colors, labels, n: int, rotate: bool) -> None:
    yerr = None
    if lo is not None and hi is not None:
        yerr = np.nan_to_num(np.vstack([np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)]))
    ax.bar(range(n), np.nan_to_num(v), yerr=yerr, capsize=4, color=list(colors) if colors else None)
    for i, val in enumerate(v):  # the value above each bar: a zero bar is otherwise invisible
        text = "n/a" if not np.isfinite(val) else f"{val:.3g}"
        y = (hi[i] if hi is not None and np.isfinite(hi[i]) else (val if np.isfinite(val) else 0.0))
        ax.annotate(text, (i, y), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=7,
                    color="#333333")
    ax.set_xticks(range(n), labels=list(labels), rotation=30 if rotate else 0, ha="right" if rotate else "center")
    ax.grid(axis="y", alpha=0.3)


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
    width = min(14.0, max(5.5, 1.2 * n + 2))
    fig, ax = plt.subplots(figsize=(width, 4.4), layout="constrained")
    l = _arr(lo) * scale if lo is not None else None
    h = _arr(hi) * scale if hi is not None else None
    ticks = [str(x) if rotate else textwrap.fill(str(x), 14) for x in labels]
    _bars(ax, v, l if h is not None else None, h if l is not None else None, colors, ticks, n, rotate)
    if hline is not None:
        ax.axhline(hline * scale, color="grey", linestyle="--", linewidth=1, label=hline_label)
        if hline_label:
            ax.legend(fontsize=8)
    if percent:
        _share_axis(ax, v, h if h is not None else v)
    _title(ax, title, max(30, int(9 * width)))
    ax.set_ylabel(ylabel)
    if xlabel:
        ax.set_xlabel(xlabel)
    return _save(fig, path)


def share_bars(
    labels: Sequence[str],
    panels: Mapping[str, Mapping[str, Sequence[float | None] | None]],
    path: str | Path,
    *,
    title: str,
    xlabel: str = "",
    colors: Sequence[str] | None = None,
) -> Path:
    """Side-by-side bar panels of shares (0-1, drawn in %) with CI error bars, e.g.
    ``{"misaligned share (%)": {"value", "lo", "hi"}, "coherent share (%)": {...}}``."""
    n = len(labels)
    rotate = n > 5 or max((len(str(x)) for x in labels), default=0) > 16
    width = min(16.0, max(8.0, len(panels) * (0.9 * n + 1.6)))
    fig, axes = plt.subplots(1, len(panels), figsize=(width, 4.6), squeeze=False, layout="constrained")
    ticks = [str(x) if rotate else "\n".join(textwrap.fill(part, 16) for part in str(x).split("\n"))
             for x in labels]
    for ax, (ylabel, p) in zip(axes[0], panels.items()):
        _check_len(f"{ylabel} value", p.get("value"), n)
        v = _arr(p.get("value")) * 100
        lo = _arr(p["lo"]) * 100 if p.get("lo") is not None else None
        hi = _arr(p["hi"]) * 100 if p.get("hi") is not None else None
        _check_len(f"{ylabel} lo", lo, n)
        _check_len(f"{ylabel} hi", hi, n)
        _bars(ax, v, lo if hi is not None else None, hi if lo is not None else None, colors, ticks, n, rotate)
        _share_axis(ax, v, hi if hi is not None else v)
        if not np.isfinite(v).any():
            _no_data(ax)
        ax.set_ylabel(ylabel)
        if xlabel:
            ax.set_xlabel(xlabel)
    _panel_title(fig, title, width)
    return _save(fig, path)


def ablation_bars(
    labels: Sequence[str],
    values: Sequence[float | None],
    path: str | Path,
    *,
    lo: Sequence[float | None] | None = None,
    hi: Sequence[float | None] | None = None,
    coherent: Sequence[float | None] | None = None,
    coherent_lo: Sequence[float | None] | None = None,
    coherent_hi: Sequence[float | None] | None = None,
    random_label: str = "random direction",
    title: str = "Directional ablation: misaligned share",
    ylabel: str = "misaligned share (%)",
) -> Path:
    """Misaligned share (0-1, plotted in %) per condition, and the coherent share beside it
    when given; bars whose label contains ``random_label`` (the control) are grey."""
    colors = ["#999999" if random_label in str(lab) else "#1f77b4" for lab in labels]
    panels = {ylabel: {"value": values, "lo": lo, "hi": hi}}
    if coherent is not None:
        panels["coherent share (%)"] = {"value": coherent, "lo": coherent_lo, "hi": coherent_hi}
    return share_bars(labels, panels, path, title=title, xlabel="condition", colors=colors)


def probe_accuracy(
    layers: Sequence[int],
    accuracy: Mapping[str, Sequence[float | None]],
    path: str | Path,
    *,
    std: Mapping[str, Sequence[float | None]] | None = None,
    chance: float | None = 0.5,
    title: str = "Probe accuracy by layer",
    xlabel: str = "layer",
) -> Path:
    """Held-out probe accuracy (0-1, plotted in %) per layer, ± ``std`` bands, with the chance level
    (the figure ``interp`` probes and the experiment report draw)."""
    bands = None
    if std:
        bands = {k: ([None if a is None or s is None else a - s for a, s in zip(accuracy[k], sd)],
                     [None if a is None or s is None else a + s for a, s in zip(accuracy[k], sd)])
                 for k, sd in std.items() if k in accuracy}
    return line_plot(layers, accuracy, path, title=title, xlabel=xlabel, ylabel="held-out accuracy (%)",
                     hline=chance, hline_label="chance" if chance is not None else None, percent=True, bands=bands)


def lora_norms(rows: Sequence[Mapping], path: str | Path, *, title: str = "LoRA weight-delta norms") -> Path:
    """Per-layer ``‖scaling·B·A‖_F`` of a LoRA adapter, one line per module; ``rows``:
    ``{"layer", "module", "delta_norm" | "norm"}`` (``interp.lora_analysis`` / report rows)."""
    layers = sorted({int(r["layer"]) for r in rows if r.get("layer") is not None})
    if not layers:
        raise ReportError(f"figure '{title}': no rows with a layer")
    series: dict[str, list[float | None]] = {}
    for module in sorted({str(r["module"]) for r in rows}):
        by_layer = {int(r["layer"]): r.get("delta_norm", r.get("norm")) for r in rows
                    if str(r["module"]) == module and r.get("layer") is not None}
        series[module] = [by_layer.get(L) for L in layers]
    return line_plot(layers, series, path, title=title, xlabel="layer", ylabel="Frobenius norm of scaling·B·A")


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
    coherent: Sequence[float | None] | None = None,
    title: str = "Training dynamics",
) -> Path:
    """Up to three stacked panels sharing the step axis: misaligned share (%) with CI (and the
    coherent share beside it when given), mean projection on the EM direction, and training
    loss (its own step grid)."""
    panels = [p for p, present in (("em", em_rate is not None), ("proj", projection is not None),
                                   ("loss", loss is not None)) if present]
    if not panels:
        raise ReportError(f"figure '{title}': nothing to plot (no EM rate, projection or loss)")
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.6 * len(panels) + 0.6), sharex=True, squeeze=False)
    xs = _arr(steps)
    for ax, panel in zip(axes[:, 0], panels):
        if panel == "em":
            _check_len("em_rate", em_rate, len(xs))
            ax.plot(xs, _arr(em_rate) * 100, marker="o", markersize=3.5, color="#d62728", label="misaligned")
            drawn = [_arr(em_rate) * 100]
            if em_lo is not None and em_hi is not None:
                ax.fill_between(xs, _arr(em_lo) * 100, _arr(em_hi) * 100, color="#d62728", alpha=0.2, linewidth=0)
                drawn.append(_arr(em_hi) * 100)
            if coherent is not None:
                _check_len("coherent", coherent, len(xs))
                ax.plot(xs, _arr(coherent) * 100, marker="s", markersize=3.5, color="#7f7f7f", label="coherent")
                drawn.append(_arr(coherent) * 100)
                ax.legend(fontsize=8)
            ax.set_ylabel("share of answers (%)" if coherent is not None else "misaligned share (%)")
            _share_axis(ax, *drawn)
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


# ----------------------------------------------------------------------------- transfer experiments


def _matrix_panel(ax, m: Any, title: str, xlabel: str, first: bool = True):
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


def transfer_heatmap(misaligned: Any, path: str | Path, *, vulnerable: Any | None = None,
                     title: str = "Transfer of a narrow finetune across languages and formats") -> Path:
    """Source x target misaligned share (%) with 95% bootstrap CIs and n per cell; a second
    panel with the vulnerable-code rate on the ``python`` target when given. Matrices: any
    object with ``sources, targets`` and numpy ``value, lo, hi, n`` (``transfer.TransferMatrix``)."""
    panels = [(misaligned, "misaligned share (%)", "evaluated in (target language)")]
    if vulnerable is not None and len(vulnerable.targets):
        panels.append((vulnerable, "vulnerable-code rate (%)", "evaluated on (format)"))
    widths = [max(2, len(m.targets)) for m, _, _ in panels]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.5 + 1.1 * sum(widths), 2.2 + 0.7 * len(misaligned.sources)),
                             gridspec_kw={"width_ratios": widths}, squeeze=False, layout="constrained")
    im = None
    for k, (ax, (m, sub, xlabel)) in enumerate(zip(axes[0], panels)):
        im = _matrix_panel(ax, m, sub, xlabel, first=(k == 0))
    cbar = fig.colorbar(im, ax=list(axes[0]))
    cbar.set_label("share of answers (%)")
    fig.suptitle(title)
    return _save(fig, path)


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
        corr = p.get("corr")  # transfer.stats.CorrelationResult (rho, p_value, alternative, n) or None
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
    return heatmap(np.asarray(matrix, dtype=float).tolist(), path, row_labels=list(labels),
                   col_labels=list(labels),
                   title=title or f"Cosine between per-language misalignment directions (resid_post.{layer})",
                   xlabel="direction extracted from (language)", ylabel="direction extracted from (language)",
                   cbar_label="cosine similarity", cmap="RdBu_r", vmin=-1.0, vmax=1.0)


def ablation_heatmap(rows: Sequence[str], cols: Sequence[str], matrix: np.ndarray, path: str | Path) -> Path:
    """Misaligned share (%) in target B with the direction from A ablated (row 'none' = no ablation)."""
    return heatmap((np.asarray(matrix, dtype=float) * 100).tolist(), path, row_labels=list(rows),
                   col_labels=list(cols), title="Cross-language ablation: misaligned share with direction removed",
                   xlabel="evaluated in (target language)", ylabel="direction ablated (from language)",
                   cbar_label="misaligned share (%)", fmt=".0f", vmin=0.0, vmax=100.0)
