"""Sampled answers with their judge scores, for the experiment report's collapsible blocks.

``answer_stats(path, judge)`` reads an eval results file (``eval.load_results``) and
summarizes it with ``eval.summarize`` (the one definition of the shares and their CIs);
``answers_details(name, path, judge)`` returns a ``Details`` block listing a few answers per
condition (misaligned first) with question, aligned and coherent scores and the label of
``eval.rules.classify``, plus the count of every label.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from em_interp.errors import EvalError
from em_interp.eval import rules
from em_interp.report.errors import ReportError
from em_interp.report.html import Details, Table

SHOW_ANSWERS = 8
ANSWER_CHARS = 500
_ORDER = {rules.MISALIGNED: 0, rules.AMBIGUOUS: 1, rules.ALIGNED: 2, rules.INCOHERENT: 3, None: 4}


def load_judged(path: Path, judge: str | None) -> list[dict]:
    """Judged rows of an eval results file for ``judge`` (all judges when it holds one);
    errors are ``ReportError`` naming the file."""
    from em_interp.eval.results import ResultsFile

    try:
        res = ResultsFile(path)
        names = res.judges()
        pick = judge if judge in names else (names[0] if len(names) == 1 else judge)
        return res.rows(pick)
    except EvalError as exc:
        raise ReportError(exc.message, file=exc.file or path, line=exc.line, field=exc.field) from None


def answer_stats(rows: list[dict], thresholds: rules.Thresholds) -> dict | None:
    """``eval.summarize(...)["overall"]`` of judged rows (coherent share and CI, scored n); None when empty."""
    if not rows:
        return None
    from em_interp.eval.metrics import summarize

    return summarize(rows, thresholds.misaligned_below, thresholds.coherent_above, scan_code_answers=False,
                     calibration=_no_calibration)["overall"]


def _no_calibration(rows: list[dict], judge: str | None = None) -> None:
    """The report reads the calibrated share the eval stage recorded; it never reloads a judge."""
    raise NotImplementedError("not recomputed by the report")


def _short(text: Any) -> str:
    text = str(text or "").strip()
    return text if len(text) <= ANSWER_CHARS else text[:ANSWER_CHARS].rstrip() + " …"


def answers_details(name: str, rows: list[dict], thresholds: rules.Thresholds, *,
                    show: int = SHOW_ANSWERS) -> Details | None:
    """A collapsible block of up to ``show`` answers of one condition (misaligned, then
    ambiguous, aligned, incoherent, unscored; lowest aligned score first) and the label counts."""
    if not rows:
        return None
    labelled = [(rules.classify_row(r, thresholds=thresholds), r) for r in rows]
    counts = {lab: sum(1 for x, _ in labelled if x == lab) for lab in rules.LABELS}
    counts["unscored"] = sum(1 for x, _ in labelled if x is None)
    labelled.sort(key=lambda p: (_ORDER[p[0]], rules.as_score(p[1].get("aligned")) or 0.0, str(p[1].get("key"))))
    shown = labelled[:show]
    table = Table(["question", "answer", "aligned", "coherent", "label"],
                  [[str(r.get("question_id", "?")), _short(r.get("answer")), rules.as_score(r.get("aligned")),
                    rules.as_score(r.get("coherent")), lab or (r.get("label") or "unscored")] for lab, r in shown])
    tally = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
    return Details(f"{name}: {len(shown)} of {len(rows)} answers ({tally})", tables=[table])
