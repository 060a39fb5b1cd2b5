"""``experiment_report(run_dir)``: one HTML + Markdown page for a pipeline run directory.

Reads only files (JSON / JSONL / YAML) in the run-directory layout of docs/interfaces.md
("pipeline"), never Python objects, and every section is optional: it appears only
when its inputs exist. Sections, in order:

- Run: ``manifest.json`` (name, times, git, models, adapters, stage status table);
- Config: ``config.yaml`` verbatim;
- Evaluation: ``eval/summary.json`` (misaligned share with CI per model, bar chart);
- Steering: ``steering/rows.jsonl`` (misaligned share vs α, one curve per layer, CI bands);
- Ablation: ``ablation/rows.jsonl`` (bars with the random-direction controls in grey);
- Probes: ``probes/accuracy.json`` (accuracy by layer, ± std band, chance line);
- Direction: ``directions/directions.json`` (per-layer norm of the main direction);
- Training dynamics: ``directions/dynamics.json`` (EM share with CI and projection vs step)
  and the loss curves in ``train/<arm>/seed-<s>/train_meta.json``;
- Transfer: ``results.json`` of a transfer run folder and every ``transfer/**/*.json``:
  each ``TransferMatrix.to_dict()`` inside (``sources, targets, value`` [+ ``metric, lo, hi,
  n``]) becomes an annotated heatmap, each ``{labels, matrix[, layer]}`` a cosine table;
- Model diff: ``report/diff/diff.json`` (from ``diff_report``), linked.

Malformed inputs raise ``ReportError`` naming the file, line and field.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from em_interp.report import figures
from em_interp.jsonl import read_jsonl_lines
from em_interp.report.errors import ReportError
from em_interp.report.html import Section, Table, write_html_report, write_markdown_report


# ----------------------------------------------------------------------------- readers


def read_json(path: Path) -> Any:
    """Parse a JSON file; errors name the file and line."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ReportError(f"invalid JSON: {exc.msg}", file=path, line=exc.lineno) from None


def read_jsonl(path: Path) -> list[dict]:
    """Parse a JSONL file of objects (blank lines skipped); errors name the file and line."""
    rows = []
    for i, obj in read_jsonl_lines(path, ReportError):
        obj["_line"] = i
        rows.append(obj)
    return rows


def _need(obj: dict, key: str, path: Path, line: int | None = None, types: tuple = (int, float),
          allow_none: bool = False) -> Any:
    """The value of ``key``; the key must be present. ``allow_none``: null is valid (e.g. a
    misaligned share over zero scorable answers), shown as n/a."""
    if allow_none and key in obj and obj[key] is None:
        return None
    value = obj.get(key)
    if not isinstance(value, types) or isinstance(value, bool):
        raise ReportError(f"missing or not a {'/'.join(t.__name__ for t in types)}: {value!r}",
                          file=path, line=line, field=key)
    return value


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _pct(x: Any) -> float | None:
    v = _num(x)
    return None if v is None else round(100.0 * v, 2)


# ----------------------------------------------------------------------------- sections


def _run_section(run_dir: Path) -> Section | None:
    path = run_dir / "manifest.json"
    if not path.is_file():
        return None
    m = read_json(path)
    if not isinstance(m, dict):
        raise ReportError("expected a JSON object", file=path)
    git = m.get("git") or {}
    models = m.get("models") or {}
    base = models.get("base") or {}
    lines = [f"Run {m.get('name', run_dir.name)} — created {m.get('created', '?')}, "
             f"{'finished' if m.get('finished') else 'not finished'}"
             + (f" at {m['ended']}" if m.get("ended") else "") + "."]
    if git:
        lines.append(f"git {str(git.get('commit', '?'))[:12]}{' (dirty)' if git.get('dirty') else ''}.")
    if base:
        lines.append(f"Base model: {base.get('name', '?')}"
                     + (f" (sha256 {str(base['sha256'])[:16]})" if base.get("sha256") else "") + ".")
    tables = []
    stages = m.get("stages") or {}
    if stages:
        tables.append(Table(["stage", "status", "duration (s)", "error"],
                            [[name, s.get("status"), _num(s.get("duration_s")), s.get("error")]
                             for name, s in stages.items()], caption="Stages"))
    adapters = m.get("adapters") or {}
    if adapters:
        tables.append(Table(["adapter", "sha256"], [[k, v] for k, v in adapters.items()], caption="Adapters"))
    return Section("Run", text=" ".join(lines), tables=tables)


def _config_section(run_dir: Path) -> Section | None:
    for name in ("config.yaml", "config.json"):
        path = run_dir / name
        if path.is_file():
            return Section("Config", text=f"From {name}.", pre=path.read_text(encoding="utf-8"))
    return None


def _overall(entry: dict) -> dict:
    o = entry.get("overall")
    if not isinstance(o, dict):
        s = entry.get("summary") or {}
        o = s.get("overall", s) if isinstance(s, dict) else {}
        ci = o.get("misaligned_ci") or [o.get("ci_low"), o.get("ci_high")]
        o = {**o, "ci_low": ci[0], "ci_high": ci[1]}
    return o


def _eval_section(run_dir: Path, fig_dir: Path) -> Section | None:
    path = run_dir / "eval" / "summary.json"
    if not path.is_file():
        return None
    s = read_json(path)
    models = s.get("models") if isinstance(s, dict) else None
    if not isinstance(models, dict) or not models:
        raise ReportError("expected a non-empty 'models' mapping", file=path, field="models")
    rows, bars = [], []
    extra_tables: list[Table] = []
    code_keys: list[str] = []
    for entry in models.values():
        for k, v in (entry.get("code") or {}).items():
            if _num(v) is not None and k not in code_keys:
                code_keys.append(k)
    for key, entry in models.items():
        if not isinstance(entry, dict):
            raise ReportError("expected an object", file=path, field=f"models.{key}")
        o = _overall(entry)
        share = o.get("misaligned_share")
        rows.append([key, entry.get("arm"), entry.get("seed"), entry.get("step"), _pct(share), _pct(o.get("ci_low")),
                     _pct(o.get("ci_high")), _pct(o.get("coherent_share")), _num(o.get("mean_aligned")), o.get("n")]
                    + [_num((entry.get("code") or {}).get(k)) for k in code_keys])
        if entry.get("step") is None and _num(share) is not None:
            bars.append((key, share, o.get("ci_low"), o.get("ci_high")))
    figs = []
    if bars:
        figs.append(figures.bar_ci([b[0] for b in bars], [b[1] for b in bars], fig_dir / "eval_misaligned.png",
                                   lo=[b[2] for b in bars], hi=[b[3] for b in bars], percent=True,
                                   title="Misaligned share per model (95% CI)", ylabel="misaligned share (%)",
                                   xlabel="model"))
    for group, label in (("by_question", "question"), ("by_language", "language"), ("by_form", "form")):
        grid = _breakdown(models, group)
        if grid is None:
            continue
        keys, names, mat = grid
        figs.append(figures.heatmap(
            [[_pct(v) for v in row] for row in mat], fig_dir / f"eval_{group}.png", row_labels=keys,
            col_labels=names, title=f"Misaligned share (%) per {label} and model", xlabel="model", ylabel=label,
            cbar_label="misaligned share (%)", fmt=".0f", vmin=0))
        extra_tables.append(Table([label] + names, [[k] + [_pct(v) for v in row] for k, row in zip(keys, mat)],
                                  caption=f"Misaligned share (%) per {label}"))
    judge = s.get("judge", "?")
    text = (f"Judge: {judge}. Misaligned = aligned < {s.get('aligned_threshold', 30)} and coherent > "
            f"{s.get('coherent_threshold', 50)}; shares in percent with bootstrap CIs.")
    cols = ["model", "arm", "seed", "step", "misaligned (%)", "CI low (%)", "CI high (%)", "coherent (%)",
            "mean aligned", "n"] + [f"code: {k}" for k in code_keys]
    return Section("Evaluation", text=text, figures=figs,
                   tables=[Table(cols, rows, caption="Eval table")] + extra_tables)


def _breakdown(models: dict, group: str) -> tuple[list[str], list[str], list[list]] | None:
    """(keys, final-model names, [key][model] misaligned share) of ``summary[group]`` when it
    has more than one key; ``None`` otherwise."""
    per_model = {}
    for name, entry in models.items():
        g = (entry.get("summary") or {}).get(group) if isinstance(entry, dict) else None
        if entry.get("step") is None and isinstance(g, dict) and g:
            per_model[name] = g
    keys = sorted({k for g in per_model.values() for k in g if k != "None"})
    if len(keys) < 2 or not per_model:
        return None
    names = list(per_model)
    return keys, names, [[(per_model[n].get(k) or {}).get("misaligned_share") for n in names] for k in keys]


def _curve_rows(path: Path) -> list[dict]:
    rows = read_jsonl(path)
    for r in rows:
        _need(r, "layer", path, r["_line"], (int,))
        _need(r, "misaligned_share", path, r["_line"], allow_none=True)
    return rows


def _steering_section(run_dir: Path, fig_dir: Path) -> Section | None:
    path = run_dir / "steering" / "rows.jsonl"
    if not path.is_file():
        return None
    rows = _curve_rows(path)
    if not rows:
        return None
    for r in rows:
        _need(r, "alpha", path, r["_line"])
    targets = sorted({str(r.get("target", "")) for r in rows})
    figs, table_rows = [], []
    for target in targets:
        curves: dict[str, dict[str, list]] = {}
        for r in sorted((r for r in rows if str(r.get("target", "")) == target), key=lambda r: (r["layer"], r["alpha"])):
            c = curves.setdefault(str(r["layer"]), {"alpha": [], "share": [], "lo": [], "hi": []})
            c["alpha"].append(r["alpha"])
            c["share"].append(_num(r["misaligned_share"]))
            c["lo"].append(_num(r.get("ci_low")))
            c["hi"].append(_num(r.get("ci_high")))
            table_rows.append([target, r["layer"], r["alpha"], _pct(r["misaligned_share"]), _pct(r.get("ci_low")),
                               _pct(r.get("ci_high")), _pct(r.get("coherent_share")), r.get("n")])
        for c in curves.values():
            if any(v is None for v in c["lo"] + c["hi"]):
                c.pop("lo"), c.pop("hi")
        safe = "".join(ch if ch.isalnum() else "_" for ch in target) or "model"
        figs.append(figures.steering_curves(curves, fig_dir / f"steering_{safe}.png",
                                            title=f"Steering {target}: misaligned share vs α (95% CI)"))
    return Section("Steering", figures=figs, tables=[Table(
        ["target", "layer", "α", "misaligned (%)", "CI low (%)", "CI high (%)", "coherent (%)", "n"], table_rows,
        caption="Steering sweep")])


def _ablation_section(run_dir: Path, fig_dir: Path) -> Section | None:
    path = run_dir / "ablation" / "rows.jsonl"
    if not path.is_file():
        return None
    rows = read_jsonl(path)
    if not rows:
        return None
    for r in rows:
        _need(r, "condition", path, r["_line"], (str,))
        _need(r, "misaligned_share", path, r["_line"], allow_none=True)
    labels = [("random direction " + r["condition"].split("-", 1)[1]) if r["condition"].startswith("random")
              else ("no ablation" if r["condition"] == "none" else f"ablate {r['condition']}") for r in rows]
    target = rows[0].get("target", "")
    fig = figures.ablation_bars(labels, [_num(r["misaligned_share"]) for r in rows], fig_dir / "ablation.png",
                                lo=[_num(r.get("ci_low")) for r in rows], hi=[_num(r.get("ci_high")) for r in rows],
                                title=f"Directional ablation in {target}: misaligned share (95% CI)")
    return Section("Ablation", text="Grey bars: same-norm random directions (the control).", figures=[fig],
                   tables=[Table(["condition", "layers", "misaligned (%)", "CI low (%)", "CI high (%)",
                                  "coherent (%)", "n"],
                                 [[lab, json.dumps(r.get("layers")) if isinstance(r.get("layers"), list)
                                   else r.get("layers"), _pct(r["misaligned_share"]), _pct(r.get("ci_low")),
                                   _pct(r.get("ci_high")), _pct(r.get("coherent_share")), r.get("n")]
                                  for lab, r in zip(labels, rows)], caption="Ablation")])


def _probe_section(run_dir: Path, fig_dir: Path) -> Section | None:
    path = run_dir / "probes" / "accuracy.json"
    if not path.is_file():
        return None
    p = read_json(path)
    layers, acc = p.get("layers"), p.get("accuracy")
    if not isinstance(layers, list) or not isinstance(acc, list) or len(layers) != len(acc):
        raise ReportError("'layers' and 'accuracy' must be lists of the same length", file=path, field="accuracy")
    std = p.get("std") if isinstance(p.get("std"), list) and len(p["std"]) == len(acc) else None
    fig_path = fig_dir / "probe_accuracy.png"
    if std is not None:
        figures.line_plot(layers, {"accuracy": acc}, fig_path, title="Probe accuracy by layer (± std over folds)",
                          xlabel="layer", ylabel="held-out accuracy (%)", percent=True, hline=0.5,
                          hline_label="chance",
                          bands={"accuracy": ([a - s for a, s in zip(acc, std)], [a + s for a, s in zip(acc, std)])})
    else:
        figures.probe_accuracy(layers, {"accuracy": acc}, fig_path)
    text = (f"Labels: {p.get('labels', '?')} ({p.get('n_pos', '?')} positive, {p.get('n_neg', '?')} negative), "
            f"site {p.get('site', '?')}. {p.get('note') or ''}").strip()
    return Section("Probes", text=text, figures=[fig_path], tables=[Table(
        ["layer", "accuracy (%)", "std (%)"],
        [[L, _pct(a), _pct(std[i]) if std else None] for i, (L, a) in enumerate(zip(layers, acc))],
        caption="Cross-validated probe accuracy")])


def _direction_section(run_dir: Path, fig_dir: Path) -> Section | None:
    path = run_dir / "directions" / "directions.json"
    if not path.is_file():
        return None
    d = read_json(path)
    figs, rows = [], []
    for name, info in (d.items() if isinstance(d, dict) else []):
        if not isinstance(info, dict):
            continue
        layers, norms = info.get("layers"), info.get("norms")
        rows.append([name, info.get("method"), info.get("arm"), info.get("seed"), info.get("site"),
                     info.get("file")])
        if isinstance(layers, list) and isinstance(norms, list) and len(layers) == len(norms) and layers:
            figs.append(figures.layer_plot({name: norms}, fig_dir / f"direction_norms_{name}.png", layers=layers,
                                           title=f"Direction '{name}' ({info.get('method', '?')}): norm per layer",
                                           ylabel="L2 norm (residual units)"))
    if not rows:
        return None
    return Section("Direction", figures=figs, tables=[Table(["name", "method", "arm", "seed", "site", "file"], rows,
                                                             caption="Directions")])


def _loss_curves(run_dir: Path) -> dict[str, tuple[list, list]]:
    curves = {}
    for meta_path in sorted((run_dir / "train").glob("*/seed-*/train_meta.json")):
        meta = read_json(meta_path)
        curve = meta.get("loss_curve") if isinstance(meta, dict) else None
        if isinstance(curve, list) and curve:
            pts = [(c.get("step"), c.get("loss")) for c in curve if isinstance(c, dict)]
            label = f"{meta_path.parent.parent.name}/{meta_path.parent.name}"
            curves[label] = ([p[0] for p in pts], [p[1] for p in pts])
    return curves


def _dynamics_section(run_dir: Path, fig_dir: Path) -> Section | None:
    path = run_dir / "directions" / "dynamics.json"
    losses = _loss_curves(run_dir)
    if not path.is_file() and not losses:
        return None
    figs, tables, text = [], [], ""
    if path.is_file():
        d = read_json(path)
        rows = d.get("rows") if isinstance(d, dict) else None
        if not isinstance(rows, list):
            raise ReportError("expected a 'rows' list", file=path, field="rows")
        for i, r in enumerate(rows):
            if not isinstance(r, dict) or isinstance(r.get("step"), bool) or not isinstance(r.get("step"), int):
                raise ReportError("expected an object with an integer 'step'", file=path, field=f"rows[{i}].step")
        rows = sorted(rows, key=lambda r: r["step"])
        key = f"{d.get('arm')}/seed-{d.get('seed')}"
        loss = losses.get(key)
        have_ci = all(_num(r.get("ci_low")) is not None and _num(r.get("ci_high")) is not None for r in rows)
        figs.append(figures.training_dynamics(
            [r["step"] for r in rows], fig_dir / "training_dynamics.png",
            em_rate=[_num(r.get("misaligned_share")) for r in rows],
            em_lo=[r["ci_low"] for r in rows] if have_ci else None,
            em_hi=[r["ci_high"] for r in rows] if have_ci else None,
            projection=[_num(r.get("projection")) for r in rows],
            loss_steps=loss[0] if loss else None, loss=loss[1] if loss else None,
            title=f"Training dynamics of {key} (projection at layer {d.get('layer')})"))
        text = (f"Arm {d.get('arm')}, seed {d.get('seed')}, layer {d.get('layer')}. Correlation of projection with "
                f"misaligned share: Pearson {_fmt_corr(d.get('pearson'))}, Spearman {_fmt_corr(d.get('spearman'))}.")
        tables.append(Table(["step", "projection", "misaligned (%)", "CI low (%)", "CI high (%)"],
                            [[r["step"], _num(r.get("projection")), _pct(r.get("misaligned_share")),
                              _pct(r.get("ci_low")), _pct(r.get("ci_high"))] for r in rows],
                            caption="Per-checkpoint projection and EM"))
    if losses:
        steps_all = sorted({s for st, _ in losses.values() for s in st})
        series = {}
        for label, (st, ls) in losses.items():
            by_step = dict(zip(st, ls))
            series[label] = [by_step.get(s) for s in steps_all]
        figs.append(figures.line_plot(steps_all, series, fig_dir / "loss_curves.png", title="Training loss",
                                      xlabel="training step", ylabel="loss (nats/token)"))
        tables.append(Table(["run", "steps", "first loss", "last loss"],
                            [[k, len(v[0]), _num(v[1][0]), _num(v[1][-1])] for k, v in losses.items()],
                            caption="Training runs"))
    return Section("Training dynamics", text=text, figures=figs, tables=tables)


def _fmt_corr(x: Any) -> str:
    if isinstance(x, dict):
        r = _num(x.get("r", x.get("rho", x.get("value"))))
        p = _num(x.get("p", x.get("pvalue")))
        return "n/a" if r is None else f"{r:.3f}" + (f" (p = {p:.3g})" if p is not None else "")
    v = _num(x)
    return "n/a" if v is None else f"{v:.3f}"


def _is_matrix(d: Any) -> bool:
    return isinstance(d, dict) and {"sources", "targets", "value"} <= set(d)


def _is_cosine(d: Any) -> bool:
    return isinstance(d, dict) and {"labels", "matrix"} <= set(d) and isinstance(d["matrix"], list)


def _find(obj: Any, pred, prefix: str = "", depth: int = 3) -> list[tuple[str, dict]]:
    """``(dotted key, value)`` of every dict satisfying ``pred`` within ``depth`` levels."""
    if pred(obj):
        return [(prefix, obj)]
    if depth == 0 or not isinstance(obj, dict):
        return []
    out = []
    for k, v in obj.items():
        out += _find(v, pred, f"{prefix}.{k}" if prefix else str(k), depth - 1)
    return out


def _transfer_files(run_dir: Path) -> list[Path]:
    files = sorted((run_dir / "transfer").rglob("*.json")) if (run_dir / "transfer").is_dir() else []
    if (run_dir / "results.json").is_file():  # a transfer run folder (transfer.run_transfer)
        files.insert(0, run_dir / "results.json")
    return files


def _transfer_section(run_dir: Path, fig_dir: Path) -> Section | None:
    figs, tables = [], []
    for path in _transfer_files(run_dir):
        d = read_json(path)
        stem = path.relative_to(run_dir).with_suffix("").as_posix().replace("/", "_")
        for key, m in _find(d, _is_matrix):
            src, tgt, val = m["sources"], m["targets"], m["value"]
            if len(val) != len(src) or any(len(row) != len(tgt) for row in val):
                raise ReportError(f"matrix 'value' is not {len(src)} x {len(tgt)} (sources x targets)",
                                  file=path, field=f"{key}.value" if key else "value")
            lo, hi = m.get("lo"), m.get("hi")
            texts = [[_cell(val[i][k], lo[i][k] if lo else None, hi[i][k] if hi else None) for k in range(len(tgt))]
                     for i in range(len(src))]
            metric = str(m.get("metric", key or path.stem))
            label = f"{key} ({metric})" if key and key != metric else metric
            delta = "delta" in metric or "delta" in key
            finite = [abs(v) for row in val for v in row if _num(v) is not None]
            vmax = max(finite) if finite else 1.0
            name = f"transfer_{stem}_{key.replace('.', '_') or 'matrix'}.png"
            figs.append(figures.heatmap(
                [[None if v is None else 100 * v for v in row] for row in val], fig_dir / name,
                row_labels=[str(x) for x in src], col_labels=[str(t) for t in tgt], cell_text=texts,
                title=f"Transfer: {label} (%, 95% CI)", xlabel="evaluated on (target)",
                ylabel="finetuned on (source)", cbar_label="change vs base (pp)" if delta else "share (%)",
                cmap="RdBu_r" if delta else "viridis",
                vmin=-100 * vmax if delta else 0, vmax=100 * vmax if delta else None))
            tables.append(Table(["source"] + [str(t) for t in tgt],
                                [[str(x)] + [_pct(v) for v in val[i]] for i, x in enumerate(src)],
                                caption=f"{label} (%) from {path.relative_to(run_dir).as_posix()}"))
        for key, c in _find(d, _is_cosine):
            labels, mat = [str(x) for x in c["labels"]], c["matrix"]
            if len(mat) != len(labels) or any(len(row) != len(labels) for row in mat):
                raise ReportError(f"cosine 'matrix' is not {len(labels)} x {len(labels)}", file=path,
                                  field=f"{key}.matrix" if key else "matrix")
            where = f" at layer {c['layer']}" if c.get("layer") is not None else ""
            name = f"transfer_{stem}_{key.replace('.', '_') or 'cosine'}.png"
            figs.append(figures.heatmap(mat, fig_dir / name, row_labels=labels, col_labels=labels,
                                        title=f"Cosine similarity of directions{where} ({key})",
                                        xlabel="direction", ylabel="direction", cbar_label="cosine",
                                        cmap="RdBu_r", vmin=-1, vmax=1))
            tables.append(Table([""] + labels, [[lab] + list(row) for lab, row in zip(labels, mat)],
                                caption=f"Direction cosines{where} ({key})"))
    if not figs:
        return None
    return Section("Cross-language transfer", figures=figs, tables=tables,
                   text="Matrices: rows are the training source, columns the evaluation target; cells are shares "
                        "in percent with their bootstrap CI. Cosine tables compare per-language directions.")


def _cell(v: Any, lo: Any, hi: Any) -> str | None:
    if _num(v) is None:
        return None
    text = f"{100 * v:.0f}"
    if _num(lo) is not None and _num(hi) is not None:
        text += f"\n[{100 * lo:.0f}, {100 * hi:.0f}]"
    return text


def _diff_section(run_dir: Path, out_dir: Path, fig_dir: Path) -> Section | None:
    path = run_dir / "report" / "diff" / "diff.json"
    if not path.is_file():
        return None
    d = read_json(path)
    layers = d.get("layers")
    if not isinstance(layers, list):
        raise ReportError("expected a 'layers' list", file=path, field="layers")
    fig = figures.layer_plot({"‖mean Δresid‖ / mean ‖resid‖": d.get("rel_diff"),
                              "logit-lens KL (nats/token)": d.get("logit_lens_kl")}, fig_dir / "diff_summary.png",
                             layers=layers, title="Base vs finetuned: relative residual difference and KL",
                             ylabel="ratio / nats per token")
    link = os.path.relpath(path.parent / "report.html", out_dir)
    meta = d.get("meta") or {}
    ft = str(meta.get("finetuned_model", "?"))
    if meta.get("finetuned_adapter"):
        ft += f" + adapter {meta['finetuned_adapter']}"
    return Section("Model diff", text=(f"{ft} vs {meta.get('base_model', '?')} on {meta.get('n_tokens', '?')} "
                                       f"tokens; full layer-wise report: {link}"),
                   figures=[fig])


# ----------------------------------------------------------------------------- the page


def experiment_report(run_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Write ``report.html`` + ``report.md`` (+ ``figures/``) for ``run_dir`` into ``out_dir``
    (default ``run_dir/report``); returns ``{"html": ..., "markdown": ...}``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError("run directory not found", file=run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "report"
    fig_dir = out_dir / "figures"
    sections = [s for s in (
        _run_section(run_dir), _config_section(run_dir), _eval_section(run_dir, fig_dir),
        _steering_section(run_dir, fig_dir), _ablation_section(run_dir, fig_dir), _probe_section(run_dir, fig_dir),
        _direction_section(run_dir, fig_dir), _dynamics_section(run_dir, fig_dir),
        _transfer_section(run_dir, fig_dir), _diff_section(run_dir, out_dir, fig_dir),
    ) if s is not None]
    if not sections:
        raise ReportError("nothing to report: no manifest.json, config, eval, steering, ablation, probes, "
                          "directions, train or transfer results found", file=run_dir)
    name = run_dir.name
    manifest = run_dir / "manifest.json"
    if manifest.is_file():
        name = f"{read_json(manifest).get('name', run_dir.parent.name)} / {run_dir.name}"
    json_link = os.path.relpath(manifest, out_dir) if manifest.is_file() else None
    title = f"Experiment report: {name}"
    sub = f"Run directory: {run_dir}"
    kw = dict(subtitle=sub, json_link=json_link, json_label="Run manifest")
    return {"html": write_html_report(title, sections, out_dir, **kw),
            "markdown": write_markdown_report(title, sections, out_dir, **kw)}
