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
- Finetuning directions compared: ``directions/compare.json`` (cosines between finetunes' model diffs);
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

from em_interp.eval import rules
from em_interp.jsonl import read_jsonl_lines
from em_interp.report import figures
from em_interp.report.answers import answer_stats, answers_details, load_judged
from em_interp.report.definitions import definitions_section, thresholds_of
from em_interp.report.errors import ReportError
from em_interp.report.html import Details, Section, Table, write_html_report, write_markdown_report


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
    lines = [f"Run {m.get('name', run_dir.name)} — created {m.get('created', '?')}, {_run_state(m)}"
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
                            [[name, _stage_status(name, s), _num(s.get("duration_s")), s.get("error")]
                             for name, s in stages.items()], caption="Stages"))
    adapters = m.get("adapters") or {}
    if adapters:
        tables.append(Table(["adapter", "sha256"], [[k, v] for k, v in adapters.items()], caption="Adapters"))
    return Section("Run", text=" ".join(lines), tables=tables)


def _organisms_section(run_dir: Path) -> Section | None:
    """Arms that are shipped organisms used as they are (``data.arms[].adapter``): what their cards
    say was measured, and how, beside this run's own numbers (a reference, not re-measured here)."""
    from em_interp.models.shipped import find_organism

    done = read_json(run_dir / "train" / ".done.json") if (run_dir / "train" / ".done.json").is_file() else None
    models = ((done or {}).get("summary") or {}).get("models") or []
    rows, notes = [], []
    for m in models:
        name = m.get("organism") if isinstance(m, dict) else None
        org = find_organism(name) if name else None
        if org is None:
            continue
        meas = org.card.get("measured") or {}
        ci = meas.get("ci") or [None, None]
        rows.append([m.get("arm"), name, meas.get("status"), _pct(meas.get("em_share")), _pct(ci[0]), _pct(ci[1]),
                     meas.get("n"), meas.get("judge"), meas.get("questions")])
        if meas.get("notes"):
            notes.append(f"{name}: {meas['notes']}")
    if not rows:
        return None
    return Section("Shipped organisms (measured on their cards)",
                   text=("These arms are shipped organisms used as they are (not trained in this run). Their cards "
                         "record how their EM share was measured when they were shipped; this run's own "
                         "measurement, with this run's judge, is in the Evaluation section."),
                   tables=[Table(["arm", "organism", "status", "EM share (%)", "CI low (%)", "CI high (%)", "n",
                                  "measured with", "questions"], rows, caption="Organism cards")],
                   details=[Details("what the cards say about controls, base and generalisation",
                                    text="\n\n".join(notes))] if notes else [])


def _run_state(m: dict) -> str:
    """"finished", or -- while the report stage writes this page with every other stage done --
    "all stages done (this page is the last)", else "not finished"."""
    if m.get("finished"):
        return "finished"
    stages = m.get("stages") or {}
    others = [s.get("status") for name, s in stages.items() if name != "report"]
    if "report" in stages and others and all(st == "done" for st in others):
        return "all stages done (this page is the last)"
    return "not finished"


def _stage_status(name: str, stage: dict) -> Any:
    """The report stage is still running while it writes this page: say so, not "running"."""
    if name == "report" and stage.get("status") in ("running", "pending"):
        return "this page"
    return stage.get("status")


def _config_section(run_dir: Path) -> Section | None:
    for name in ("config.yaml", "config.json"):
        path = run_dir / name
        if path.is_file():
            return Section("Config", text=f"From {name}.", pre=path.read_text(encoding="utf-8"))
    return None


def _overall(entry: dict) -> dict:
    """Per-model numbers: the pipeline's ``overall`` merged with ``summary.overall`` (coherent CI,
    scored n) when present."""
    s = entry.get("summary") if isinstance(entry.get("summary"), dict) else {}
    full = s.get("overall", s) if isinstance(s, dict) else {}
    o = {**full, **(entry.get("overall") if isinstance(entry.get("overall"), dict) else {})}
    ci = o.get("misaligned_ci") or [o.get("ci_low"), o.get("ci_high")]
    coh = o.get("coherent_ci") or [o.get("coherent_ci_low"), o.get("coherent_ci_high")]
    return {**o, "ci_low": o.get("ci_low", ci[0]), "ci_high": o.get("ci_high", ci[1]),
            "coherent_lo": coh[0], "coherent_hi": coh[1], "n_den": _share_n(o)}


def _calibrated(entry: Any) -> dict | None:
    """The judge-calibrated share the eval stage recorded (``summary.calibrated``), if the judge has
    one, under the keys of the steering / ablation rows (``calibrated_share``, ``_low``, ``_high``)."""
    s = entry.get("summary") if isinstance(entry, dict) else None
    c = s.get("calibrated") if isinstance(s, dict) else None
    if not (isinstance(c, dict) and c.get("calibrated")):
        return None
    return {"calibrated_share": c.get("share"), "calibrated_low": c.get("low"), "calibrated_high": c.get("high"),
            "method": c.get("method")}


CALIBRATED_COLUMNS = ["calibrated (%)", "cal. CI low (%)", "cal. CI high (%)"]


def _calibrated_cells(r: dict, show: bool) -> list:
    """A row's judge-calibrated share and CI (steering / ablation: ``pipeline.common.overall``; eval: ``_calibrated``), if shown."""
    return [_pct(r.get("calibrated_share")), _pct(r.get("calibrated_low")), _pct(r.get("calibrated_high"))] if show else []


def _share_n(o: dict) -> Any:
    """The misaligned share's denominator (coherent scored answers), not the number sampled."""
    for key in ("n_coherent", "n_scored", "n"):
        if isinstance(o.get(key), int) and not isinstance(o.get(key), bool):
            return o[key]
    return None


def zero_event_warning(entries: list[tuple[str, Any, Any]], what: str = "misaligned") -> str | None:
    """A warning for shares with zero events: their bootstrap CI is [0, 0] and says nothing;
    the rule of three gives the one-sided 95% upper bound 3/n."""
    zero = [(name, n) for name, share, n in entries if _num(share) == 0.0 and isinstance(n, int) and n > 0]
    if not zero:
        return None
    listed = "; ".join(f"{name} (n = {n}: below {100 * min(1.0, 3 / n):.0f}%)" for name, n in zero)
    return (f"zero {what} answers in {len(zero)} of {len(entries)} conditions. A bootstrap CI of a zero share "
            f"is [0, 0] and does not mean the rate is zero; the 95% upper bound by the rule of three (3/n) is: "
            f"{listed}.")


def _eval_section(run_dir: Path, fig_dir: Path, summary: dict | None) -> Section | None:
    path = run_dir / "eval" / "summary.json"
    if summary is None:
        return None
    s = summary
    models = s.get("models") if isinstance(s, dict) else None
    if not isinstance(models, dict) or not models:
        raise ReportError("expected a non-empty 'models' mapping", file=path, field="models")
    th = thresholds_of(s)
    rows, bars, details = [], [], []
    extra_tables: list[Table] = []
    code_keys: list[str] = []
    for entry in models.values():
        for k, v in ((entry.get("code") if isinstance(entry, dict) else None) or {}).items():
            if _num(v) is not None and k not in code_keys:
                code_keys.append(k)
    zero = []
    cal = {key: _calibrated(entry) for key, entry in models.items()}
    show_cal = any(c is not None for c in cal.values())
    for key, entry in models.items():
        if not isinstance(entry, dict):
            raise ReportError("expected an object", file=path, field=f"models.{key}")
        o = _overall(entry)
        share = o.get("misaligned_share")
        answers = run_dir / "eval" / f"{key}.jsonl"
        judged = load_judged(answers, s.get("judge")) if answers.is_file() and (
            entry.get("step") is None or "n_coherent" not in o) else []
        if "n_coherent" not in o and judged:  # older summaries: the denominator from the answers
            o["n_den"] = (answer_stats(judged, th) or {}).get("n_coherent", o["n_den"])
        rows.append([key, entry.get("arm"), entry.get("seed"), entry.get("step"), _pct(share), _pct(o.get("ci_low")),
                     _pct(o.get("ci_high"))] + _calibrated_cells(cal[key] or {}, show_cal)
                    + [_pct(o.get("coherent_share")), _pct(o.get("coherent_lo")),
                       _pct(o.get("coherent_hi")), _num(o.get("mean_aligned")), o["n_den"], o.get("n")]
                    + [_num((entry.get("code") or {}).get(k)) for k in code_keys])
        if entry.get("step") is None:
            zero.append((key, share, o["n_den"]))
            bars.append((f"{key}\n(n = {o['n_den']})" if o["n_den"] is not None else key, o, cal[key] or {}))
            d = answers_details(key, judged, th)
            if d is not None:
                details.append(d)
    figs = []
    if bars:
        panels = {"misaligned share (%)" + (", judge's labels counted" if show_cal else ""): {
                      "value": [_num(b[1].get("misaligned_share")) for b in bars],
                      "lo": [_num(b[1].get("ci_low")) for b in bars], "hi": [_num(b[1].get("ci_high")) for b in bars]}}
        if show_cal:
            panels["misaligned share (%), calibrated"] = {"value": [_num(b[2].get("calibrated_share")) for b in bars],
                                                          "lo": [_num(b[2].get("calibrated_low")) for b in bars],
                                                          "hi": [_num(b[2].get("calibrated_high")) for b in bars]}
        panels["coherent share (%)"] = {"value": [_num(b[1].get("coherent_share")) for b in bars],
                                        "lo": [_num(b[1].get("coherent_lo")) for b in bars],
                                        "hi": [_num(b[1].get("coherent_hi")) for b in bars]}
        figs.append(figures.share_bars([b[0] for b in bars], panels, fig_dir / "eval_misaligned.png",
                                       title="Misaligned and coherent share per model (95% CI)", xlabel="model"))
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
    text = (f"Judge: {s.get('judge', '?')}. Labels and CIs as defined above. n = answers in the misaligned "
            "share's denominator (coherent and scored); sampled = all answers drawn.")
    if show_cal:
        method = next((c.get("method") for c in cal.values() if c), None)
        text += (f" Calibrated = the judge's share estimate corrected for its own held-out errors ({method}; CI: "
                 "a joint bootstrap over questions and the judge's calibration set), the number to quote; "
                 "'misaligned' counts the judge's hard labels and inherits its errors.")
    cols = (["model", "arm", "seed", "step", "misaligned (%)", "CI low (%)", "CI high (%)"]
            + (CALIBRATED_COLUMNS if show_cal else [])
            + ["coherent (%)", "coh. CI low (%)", "coh. CI high (%)", "mean aligned", "n", "sampled"]
            + [f"code: {k}" for k in code_keys])
    warn = zero_event_warning(zero)
    if details:  # the first model's answers open: the page shows real answers with their scores at once
        details[0].open = True
    return Section("Evaluation", text=text, figures=figs, warnings=[warn] if warn else [],
                   tables=[Table(cols, rows, caption="Eval table")] + extra_tables, details=details)


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


def _condition_stats(rows: list[dict], answers_of, judge: str | None, th: rules.Thresholds,
                     title_of) -> tuple[list[dict], list[Details]]:
    """Each row's numbers completed from its answers file (coherent CI and scored n through
    ``eval.summarize``), plus one collapsible block of answers per row."""
    out, details = [], []
    for r in rows:
        path = answers_of(r)
        judged = load_judged(path, judge) if path is not None and path.is_file() else []
        st = answer_stats(judged, th) or {}
        coh = r.get("coherent_ci") or st.get("coherent_ci") or [None, None]
        n_den = r["n_coherent"] if isinstance(r.get("n_coherent"), int) else (
            st["n_coherent"] if isinstance(st.get("n_coherent"), int) else _share_n(r))
        out.append({**r, "coherent_share": r.get("coherent_share", st.get("coherent_share")),
                    "coherent_lo": coh[0], "coherent_hi": coh[1], "n_den": n_den})
        d = answers_details(title_of(r), judged, th)
        if d is not None:
            details.append(d)
    return out, details


def _alpha_convention(run_dir: Path, rows: list[dict]) -> str | None:
    """How α scales the direction, as the steering outputs (or the direction's metadata) record it."""
    from em_interp.interp.steering import ALPHA_CONVENTION, ALPHA_DEFINITION

    for r in rows:
        if isinstance(r.get("alpha_convention"), str):
            conv = r["alpha_convention"]
            return f"{ALPHA_DEFINITION} (recorded: {conv})" if conv == ALPHA_CONVENTION else f"recorded: {conv}"
    done = run_dir / "steering" / ".done.json"
    if done.is_file():
        conv = (read_json(done).get("summary") or {}).get("alpha_convention")
        if isinstance(conv, str):
            return conv
    meta = run_dir / "directions" / "direction.json"
    if meta.is_file():
        d = read_json(meta)
        norm, method = d.get("normalization"), d.get("method", "?")
        if norm in (None, "none"):
            return (f"α multiplies the raw {method} direction (not normalised; recorded normalization: {norm}): "
                    "α = 1 adds the direction's full per-layer vector to resid_post"
                    + (", i.e. the finetune's mean shift at that layer" if method == "model_diff" else "") + ".")
        return f"α multiplies the direction as saved (normalization: {norm}): α = 1 adds its vector once."
    return None


def _arm(r: dict) -> str:
    """Which direction a steering row steers with: ``direction`` or ``random-<seed>`` (the control)."""
    arm = str(r.get("direction") or "direction")
    return f"{arm}-{r['random_seed']}" if arm == "random" and r.get("random_seed") is not None else arm


def _steering_answers(run_dir: Path, r: dict) -> Path:
    """``steering/answers/<arm>/L<layer>_a<alpha>.jsonl`` (the older flat layout as a fallback)."""
    name = f"L{r['layer']}_a{r['alpha']:g}.jsonl"
    nested = run_dir / "steering" / "answers" / _arm(r) / name
    if not nested.is_file() and r.get("alpha") == 0:  # α = 0 is one unsteered run shared by every arm
        nested = run_dir / "steering" / "answers" / "direction" / name
    return nested if nested.is_file() or r.get("direction") else run_dir / "steering" / "answers" / name


def _steering_section(run_dir: Path, fig_dir: Path, judge: str | None, th: rules.Thresholds) -> Section | None:
    path = run_dir / "steering" / "rows.jsonl"
    if not path.is_file():
        return None
    rows = _curve_rows(path)
    if not rows:
        return None
    for r in rows:
        _need(r, "alpha", path, r["_line"])
    rows, details = _condition_stats(
        sorted(rows, key=lambda r: (str(r.get("target", "")), _arm(r) != "direction", _arm(r), r["layer"],
                                    r["alpha"])),
        lambda r: _steering_answers(run_dir, r), judge, th,
        lambda r: f"{r.get('target', '')} {_arm(r)} layer {r['layer']}, α = {r['alpha']:g}")
    targets = sorted({str(r.get("target", "")) for r in rows})
    cal_cols = any("calibrated_share" in r for r in rows)
    figs, table_rows = [], []
    for target in targets:
        curves: dict[str, dict[str, list]] = {}
        for r in (r for r in rows if str(r.get("target", "")) == target):
            label = f"layer {r['layer']}" if _arm(r) == "direction" else f"layer {r['layer']} ({_arm(r)})"
            c = curves.setdefault(label, {k: [] for k in ("alpha", "share", "lo", "hi", "coherent",
                                                                    "coherent_lo", "coherent_hi")})
            for k, v in (("alpha", r["alpha"]), ("share", r["misaligned_share"]), ("lo", r.get("ci_low")),
                         ("hi", r.get("ci_high")), ("coherent", r.get("coherent_share")),
                         ("coherent_lo", r["coherent_lo"]), ("coherent_hi", r["coherent_hi"])):
                c[k].append(v if k == "alpha" else _num(v))
            table_rows.append([target, _arm(r), r["layer"], r["alpha"], _pct(r["misaligned_share"]), _pct(r.get("ci_low")),
                               _pct(r.get("ci_high"))] + _calibrated_cells(r, cal_cols)
                              + [_pct(r.get("coherent_share")), _pct(r["coherent_lo"]),
                                 _pct(r["coherent_hi"]), r["n_den"], _num(r.get("alpha_over_norm"))])
        for c in curves.values():
            for key, lo, hi in (("share", "lo", "hi"), ("coherent", "coherent_lo", "coherent_hi")):
                if any(v is None for v in c[lo] + c[hi]):
                    c.pop(lo), c.pop(hi)
            if all(v is None for v in c["coherent"]):
                c.pop("coherent")
        safe = "".join(ch if ch.isalnum() else "_" for ch in target) or "model"
        figs.append(figures.steering_curves(curves, fig_dir / f"steering_{safe}.png",
                                            title=f"Steering {target}: misaligned and coherent share vs α (95% CI)"))
    warn = zero_event_warning([(f"{_arm(r)} layer {r['layer']} α={r['alpha']:g}", r["misaligned_share"], r["n_den"])
                               for r in rows])
    return Section("Steering", figures=figs, warnings=[warn] if warn else [], details=details, tables=[Table(
        ["target", "direction", "layer", "α", "misaligned (%)", "CI low (%)", "CI high (%)"]
        + (CALIBRATED_COLUMNS if cal_cols else []) + ["coherent (%)", "coh. CI low (%)",
         "coh. CI high (%)", "n", "α / mean ‖resid‖"], table_rows, caption="Steering sweep")])


ABLATION_LABELS = {"none": "no ablation", "direction": "ablate direction"}


def condition_label(condition: str) -> str:
    """Display name of an ablation condition (``none``, ``direction``, ``random-<k>``)."""
    if condition.startswith("random-"):
        return "random direction " + condition.split("-", 1)[1]
    return ABLATION_LABELS.get(condition, f"ablate {condition}")


def _ablation_sections(run_dir: Path, fig_dir: Path, judge: str | None, th: rules.Thresholds) -> list[Section | None]:
    """The ablation in the direction's arm, then one section per arm of ``interp.ablation.also``
    (``ablation/also/<arm>/``: the same direction ablated in another organism)."""
    out = [_ablation_section(run_dir, fig_dir, judge, th)]
    also = run_dir / "ablation" / "also"
    if also.is_dir():
        for folder in sorted(p for p in also.iterdir() if p.is_dir()):
            out.append(_ablation_section(run_dir, fig_dir, judge, th, folder=folder,
                                         heading=f"Ablation in {folder.name} (another arm's direction)"))
    return out


def _ablation_section(run_dir: Path, fig_dir: Path, judge: str | None, th: rules.Thresholds,
                      folder: Path | None = None, heading: str = "Ablation") -> Section | None:
    fig_name = "ablation.png" if folder is None else f"ablation_{folder.name}.png"
    folder = folder or run_dir / "ablation"
    path = folder / "rows.jsonl"
    if not path.is_file():
        return None
    rows = read_jsonl(path)
    if not rows:
        return None
    for r in rows:
        _need(r, "condition", path, r["_line"], (str,))
        _need(r, "misaligned_share", path, r["_line"], allow_none=True)
    rows, details = _condition_stats(rows, lambda r: folder / "answers" / f"{r['condition']}.jsonl",
                                     judge, th, lambda r: condition_label(r["condition"]))
    labels = [condition_label(r["condition"]) for r in rows]
    cal_cols = any("calibrated_share" in r for r in rows)
    target = rows[0].get("target", "")
    mode = rows[0].get("mode")
    source = f" (direction of {rows[0]['direction_arm']})" if rows[0].get("direction_arm") else ""
    fig = figures.ablation_bars(
        [f"{lab}\n(n = {r['n_den']})" if r["n_den"] is not None else lab for lab, r in zip(labels, rows)],
        [_num(r["misaligned_share"]) for r in rows], fig_dir / fig_name,
        lo=[_num(r.get("ci_low")) for r in rows], hi=[_num(r.get("ci_high")) for r in rows],
        coherent=[_num(r.get("coherent_share")) for r in rows], coherent_lo=[_num(r["coherent_lo"]) for r in rows],
        coherent_hi=[_num(r["coherent_hi"]) for r in rows],
        title=f"Directional ablation{f' ({mode})' if mode else ''} in {target}{source}: misaligned and coherent share "
              "(95% CI)")
    warn = zero_event_warning([(lab, r["misaligned_share"], r["n_den"]) for lab, r in zip(labels, rows)])
    return Section(heading, text="Grey bars: same-norm random directions (the control).", figures=[fig],
                   warnings=[warn] if warn else [], details=details,
                   tables=[Table(["condition", "layers", "misaligned (%)", "CI low (%)", "CI high (%)"]
                                 + (CALIBRATED_COLUMNS if cal_cols else [])
                                 + ["coherent (%)", "coh. CI low (%)", "coh. CI high (%)", "n"],
                                 [[lab, json.dumps(r.get("layers")) if isinstance(r.get("layers"), list)
                                   else r.get("layers"), _pct(r["misaligned_share"]), _pct(r.get("ci_low")),
                                   _pct(r.get("ci_high"))] + _calibrated_cells(r, cal_cols)
                                  + [_pct(r.get("coherent_share")), _pct(r["coherent_lo"]), _pct(r["coherent_hi"]),
                                     r["n_den"]]
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
    chance = _num(p.get("chance")) if _num(p.get("chance")) is not None else 0.5
    baselines = {str(k): _num(v) for k, v in (p.get("baselines") or {}).items() if _num(v) is not None}
    series = {"accuracy": acc, **{k: [v] * len(layers) for k, v in baselines.items()}}
    fig_path = figures.probe_accuracy(layers, series, fig_dir / "probe_accuracy.png",
                                      std={"accuracy": std} if std else None, chance=chance,
                                      title="Probe accuracy by layer" + (" (± std over folds)" if std else ""))
    below = [L for L, a in zip(layers, acc) if _num(a) is not None and a < chance]
    warnings = []
    if below:
        warnings.append(f"probe accuracy is below chance ({100 * chance:.0f}%) at layer(s) "
                        f"{', '.join(map(str, below))}: the probe does not separate the classes there (too few "
                        "examples, or labels the activations do not carry); do not read these layers as evidence.")
    text = (f"Labels: {p.get('labels', '?')} ({p.get('n_pos', '?')} positive, {p.get('n_neg', '?')} negative), "
            f"site {p.get('site', '?')}. {p.get('note') or ''}").strip()
    if p.get("metric") or p.get("cv"):
        text += f" Score: {p.get('metric', 'accuracy')}; folds: {p.get('cv', '?')}."
    if baselines:
        text += (" Baselines on the same folds: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in baselines.items())
                 + " (a probe that does not beat the bag-of-words baseline reads the words, not the model).")
    if p.get("cv_warning"):
        warnings.append(str(p["cv_warning"]))
    return Section("Probes", text=text, figures=[fig_path], warnings=warnings, tables=[Table(
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


def _compare_section(run_dir: Path, fig_dir: Path) -> Section | None:
    """``directions/compare.json`` (``interp.directions.compare``): cosines between finetunes' model
    diffs with question-bootstrap CIs at the middle compared layer, and the direction's arm against
    every other diff per layer."""
    path = run_dir / "directions" / "compare.json"
    if not path.is_file():
        return None
    d = read_json(path)
    layers = d.get("layers") if isinstance(d, dict) else None
    if not isinstance(layers, dict) or not layers:
        raise ReportError("expected 'layers' to be a non-empty object", file=path, field="layers")
    keys = sorted(layers, key=int)
    mid = keys[len(keys) // 2]
    row = layers[mid]
    _need(row, "cos", path, types=(dict,))
    names = list(d.get("names") or [])
    first = names[0] if names else None

    def cell(v: Any) -> Any:
        ci = v.get("ci") or [None, None]
        return [_num(v.get("cos")), _num(ci[0]), _num(ci[1])]

    sh = row.get("split_half") or {}
    rows = [[pair.replace("|", " vs "), *cell(v), _num(sh.get(pair.split("|")[0])), _num(sh.get(pair.split("|")[1]))]
            for pair, v in row["cos"].items()]
    out_rows = [[pair.replace("|", " vs "), *cell(v)] for pair, v in (row.get("outside") or {}).items()]
    series, bands = {}, {}
    contrasts = set((d.get("contrasts") or {}))
    first_c = f"{first}-{d.get('control')}" if d.get("control") else None

    def plotted(pair: str) -> bool:   # the direction's arm against the other arms; its contrast against theirs
        x, y = pair.split("|", 1)
        return (x == first and y not in contrasts) or (first_c is not None and x == first_c and y in contrasts)

    for pair in (p for p in row["cos"] if first and plotted(p)):
        vals = [layers[k]["cos"].get(pair, {}) for k in keys]
        series[pair.replace("|", " vs ")] = [_num(v.get("cos")) for v in vals]
        bands[pair.replace("|", " vs ")] = ([_num((v.get("ci") or [None, None])[0]) for v in vals],
                                            [_num((v.get("ci") or [None, None])[1]) for v in vals])
    figs = []
    if series:
        figs.append(figures.line_plot([int(k) for k in keys], series, fig_dir / "compare_cosines.png",
                                      bands=bands, hline=_num(d.get("random_abs_cos")),
                                      hline_label="E|cos| of random unit vectors",
                                      title=f"Cosine of {first}'s model diff with the other finetunes'"
                                            + (" (and with the control subtracted)" if first_c else "") + " (95% CI)",
                                      xlabel="layer", ylabel="cosine"))
    ci = d.get("ci") or {}
    text = (f"Each finetune's direction is its model diff ({d.get('method', 'finetuned - base')}) on the same texts: "
            f"{d.get('texts', '?')}. CI: {ci.get('method', '?')} ({ci.get('n_boot', '?')} draws, "
            f"{d.get('n_groups', '?')} groups). Split-half: each diff on two disjoint halves of every question's "
            f"texts, a ceiling on how clean a cosine can be. Random unit vectors: E|cos| = "
            f"{_num(d.get('random_abs_cos')) or float('nan'):.3f}.")
    if d.get("control"):
        text += (f" '<arm>-{d['control']}' is an arm's diff minus the matched control's on the same texts: what the "
                 "arm taught beyond the control. Without it a high cosine may be only the shared finetuning direction.")
    tables = [Table(["pair", "cosine", "CI low", "CI high", "split-half (first)", "split-half (second)"], rows,
                    caption=f"Cosines between finetunes' model diffs, {d.get('site', 'resid_post')}.{mid}")]
    if out_rows:
        tables.append(Table(["pair", "cosine", "CI low", "CI high"], out_rows,
                            caption=f"Against the run's direction, layer {mid}"))
    warn = []
    if isinstance(d.get("n_groups"), int) and d["n_groups"] < 5:
        warn.append(f"The texts answer only {d['n_groups']} questions: a bootstrap over so few clusters cannot "
                    "estimate the spread; read the intervals as not computed.")
    return Section("Finetuning directions compared", text=text, figures=figs, tables=tables, warnings=warn)


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
            coherent=[_num(r.get("coherent_share")) for r in rows]
            if any(_num(r.get("coherent_share")) is not None for r in rows) else None,
            title=f"Training dynamics of {key} (projection at layer {d.get('layer')})"))
        corr = d.get("correlation") or {}
        text = (f"Arm {d.get('arm')}, seed {d.get('seed')}, layer {d.get('layer')}. Correlation of projection with "
                f"misaligned share: Pearson {_fmt_corr(corr.get('pearson', d.get('pearson')))}, "
                f"Spearman {_fmt_corr(corr.get('spearman', d.get('spearman')))}."
                + _fmt_random_control(d.get("random_control")))
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


def _fmt_random_control(rc: Any) -> str:
    if not isinstance(rc, dict) or _num(rc.get("mean_abs_spearman")) is None:
        return ""
    share = _num(rc.get("share_abs_ge_direction"))
    return (f" Same-norm random directions ({rc.get('n')}): mean |Spearman| {_num(rc['mean_abs_spearman']):.2f}"
            + (f", {share:.0%} as strong as the direction." if share is not None else "."))


def _fmt_corr(x: Any) -> str:
    """``r [low, high] (permutation p)`` from a ``monitor_statistics`` entry; older runs' ``{r, p}`` too."""
    if isinstance(x, dict):
        r = _num(x.get("r", x.get("rho", x.get("value"))))
        p = _num(x.get("p_perm", x.get("p", x.get("pvalue"))))
        lo, hi = _num(x.get("low")), _num(x.get("high"))
        ci = f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else ""
        return "n/a" if r is None else f"{r:.3f}{ci}" + (f" (permutation p = {p:.3g})" if p is not None else "")
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
    notes: dict = {}                       # matrices.json's judge record and ablation_skipped
    for path in _transfer_files(run_dir):
        d = read_json(path)
        if path == run_dir / "transfer" / "matrices.json" and isinstance(d, dict):
            notes = d
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
            ns = m.get("n")
            tables.append(Table(["source"] + [str(t) for t in tgt],
                                [[str(x)] + [_matrix_cell(val[i][k], lo[i][k] if lo else None, hi[i][k] if hi else None,
                                                          ns[i][k] if ns else None) for k in range(len(tgt))]
                                 for i, x in enumerate(src)],
                                caption=f"{label} (%, 95% CI, n) from {path.relative_to(run_dir).as_posix()}"))
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
    stats = run_dir / "transfer" / "stats.json"
    if stats.is_file():
        f, t = _transfer_tests(read_json(stats), stats, fig_dir)
        figs += f
        tables += t
    if not figs and not tables:
        return None
    skipped, judge = notes.get("ablation_skipped"), notes.get("judge") or {}
    if judge.get("limits"):
        ok = judge.get("small_model_coherence_validated")
        rows = [[x] for x in judge["limits"]]
        if ok is not None:
            rows.insert(0, [f"coherence validated on small-model text in: {', '.join(ok) or 'no language'}"])
        tables.append(Table(["limit"], rows, caption=f"The judge's card ({', '.join(judge['names'])}): "
                                                       "what its shares above can and cannot be read as"))
    return Section("Cross-language transfer", figures=figs, tables=tables,
                   text="Matrices: rows are the training source, columns the evaluation target; cells are shares "
                        "in percent with their bootstrap CI. Cosine tables compare per-language directions."
                        + (f" Ablation not run: {skipped}." if skipped else ""))


def _transfer_tests(d: Any, path: Path, fig_dir: Path) -> tuple[list[Path], list[Table]]:
    """``transfer/stats.json``: one row per source test (proximity vs transfer, Spearman ρ with its
    permutation p) and a scatter of each test's pairs."""
    from types import SimpleNamespace

    if not isinstance(d, dict):
        raise ReportError("expected a JSON object", file=path)
    rows, panels = [], []
    for role in ("treatment", "control"):
        tests = d.get(role) or []
        if not isinstance(tests, list):
            raise ReportError("expected a list of source tests", file=path, field=role)
        for i, t in enumerate(tests):
            if not isinstance(t, dict):
                raise ReportError("expected an object", file=path, field=f"{role}[{i}]")
            res = t.get("result") if isinstance(t.get("result"), dict) else None
            rows.append([t.get("source"), role, t.get("language"), t.get("measure"),
                         _num(res.get("rho")) if res else None, _num(res.get("p_value")) if res else None,
                         res.get("n") if res else None, t.get("note")])
            pairs = t.get("pairs") if isinstance(t.get("pairs"), dict) else None
            if pairs and pairs.get("x"):
                panels.append({"x": [_num(v) if _num(v) is not None else math.nan for v in pairs["x"]],
                               "y": [_num(v) if _num(v) is not None else math.nan for v in pairs["y"]],
                               "labels": pairs.get("labels") or [""] * len(pairs["x"]),
                               "xlabel": f"{t.get('measure', 'proximity')} proximity to {t.get('language')}",
                               "ylabel": f"transfer ({d.get('metric', 'share')})",
                               "corr": SimpleNamespace(rho=res["rho"], p_value=res["p_value"],
                                                       alternative=res.get("alternative", "?"), n=res.get("n"))
                               if res and _num(res.get("rho")) is not None and _num(res.get("p_value")) is not None
                               else None, "note": t.get("note") or "not computed"})
    figs = []
    if panels:
        figs.append(figures.proximity_scatter(panels[:4], fig_dir / "transfer_proximity_tests.png",
                                              title=f"Language proximity vs transfer, one test per source "
                                                    f"({d.get('alternative', '?')}, permutation p)"))
    tables = [Table(["source", "role", "language", "measure", "Spearman ρ", "permutation p", "n", "note"], rows,
                    caption=f"Proximity tests ({path.name}): one permutation test per source")] if rows else []
    return figs, tables


def _matrix_cell(v: Any, lo: Any, hi: Any, n: Any) -> str | None:
    """A matrix cell for a table: percent, its CI when there is one, and its n."""
    if _num(v) is None:
        return None
    text = f"{_pct(v):g}"
    if _num(lo) is not None and _num(hi) is not None:
        text += f" [{_pct(lo):g}, {_pct(hi):g}]"
    return text + (f" (n {int(n)})" if _num(n) is not None else "")


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
    from em_interp.report.diff import diff_title

    return Section("Model diff", text=(f"{diff_title(meta)} on {meta.get('n_tokens', '?')} "
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
    summary_path = run_dir / "eval" / "summary.json"
    summary = read_json(summary_path) if summary_path.is_file() else None
    if summary is not None and not isinstance(summary, dict):
        raise ReportError("expected a JSON object", file=summary_path)
    judge = (summary or {}).get("judge")
    th = thresholds_of(summary)
    steering_path = run_dir / "steering" / "rows.jsonl"
    content = [s for s in (
        _eval_section(run_dir, fig_dir, summary), _steering_section(run_dir, fig_dir, judge, th),
        *_ablation_sections(run_dir, fig_dir, judge, th), _probe_section(run_dir, fig_dir),
        _direction_section(run_dir, fig_dir), _compare_section(run_dir, fig_dir), _dynamics_section(run_dir, fig_dir),
        _transfer_section(run_dir, fig_dir), _diff_section(run_dir, out_dir, fig_dir),
    ) if s is not None]
    head = [s for s in (_run_section(run_dir), _config_section(run_dir), _organisms_section(run_dir)) if s is not None]
    if summary is not None or content:
        questions_path = run_dir / "data" / "questions.json"
        questions = read_json(questions_path) if questions_path.is_file() else None
        head.insert(1 if head else 0, definitions_section(
            summary, questions=questions if isinstance(questions, list) else None,
            alpha_convention=_alpha_convention(run_dir, read_jsonl(steering_path)) if steering_path.is_file()
            else None))
    sections = head + content
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
