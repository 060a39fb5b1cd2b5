"""Reading interp inputs from disk: chat JSONL, judged answers (eval results JSONL, or
JSONL/CSV with question/answer/aligned/coherent columns) and plain text lists.

``split_judged`` turns judged rows into the two example sets of a mean-diff direction
or a probe with the one label rule ``em_interp.eval.rules.classify``: misaligned
(aligned < 30 and coherent > 50) versus clearly aligned (aligned > 70 and coherent > 50).
Each example keeps ``meta`` (question_id, aligned, coherent) so probes can group folds by
question.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from em_interp.errors import InterpError
from em_interp.eval.rules import ALIGNED, DEFAULT_THRESHOLDS, MISALIGNED, Thresholds, classify_row
from em_interp.jsonl import read_jsonl_lines


def _row_to_chat(row: dict, path: Path, line: int) -> dict:
    question = row.get("question", row.get("prompt"))
    answer = row.get("answer", row.get("response"))
    if not isinstance(question, str) or not isinstance(answer, str):
        raise InterpError("row needs string 'question' and 'answer' fields", file=path, line=line, field="answer")
    msgs = []
    if row.get("system"):
        msgs.append({"role": "system", "content": str(row["system"])})
    msgs += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return {"messages": msgs}


def _judged_example(row: dict, path: Path, line: int) -> dict:
    ex = _row_to_chat(row, path, line)
    qid = row.get("question_id", row.get("question", row.get("prompt")))
    ex["meta"] = {"question_id": str(qid), "aligned": row.get("aligned"), "coherent": row.get("coherent")}
    return ex


def _read_rows(path: Path) -> list[tuple[int, dict]]:
    if not path.is_file():
        raise InterpError("file not found", file=path)
    if path.suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as fh:
            return [(i + 2, dict(r)) for i, r in enumerate(csv.DictReader(fh))]
    return read_jsonl_lines(path, InterpError, objects_only="each line must be a JSON object")


def load_examples(path: str | Path) -> list[Any]:
    """Chat examples from a JSONL (``{"messages": ...}`` or ``{"question", "answer"}`` rows),
    a CSV with question/answer columns, or a ``.txt`` file (one raw text per line)."""
    path = Path(path)
    if path.suffix == ".txt":
        if not path.is_file():
            raise InterpError("file not found", file=path)
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    out = []
    for line, row in _read_rows(path):
        if "messages" in row:
            if not isinstance(row["messages"], list):
                raise InterpError("'messages' must be a list", file=path, line=line, field="messages")
            out.append({"messages": row["messages"]})
        elif row.get("kind") in ("meta", "judgement"):
            continue
        else:
            out.append(_row_to_chat(row, path, line))
    if not out:
        raise InterpError("no examples in file", file=path)
    return out


def load_judged(path: str | Path) -> list[dict]:
    """Judged rows ``{question, answer, system?, aligned, coherent}``; an eval results file
    (``kind`` sample/judgement records) is joined through ``em_interp.eval.load_results``."""
    path = Path(path)
    rows = _read_rows(path)
    if any(r.get("kind") in ("sample", "judgement") for _, r in rows):
        from em_interp.eval import load_results

        return load_results(path)
    out = []
    for line, r in rows:
        for key in ("aligned", "coherent"):
            v = r.get(key)
            if v in (None, ""):
                r[key] = None
                continue
            try:
                r[key] = float(v)
            except (TypeError, ValueError):
                raise InterpError(f"expected a number, got {v!r}", file=path, line=line, field=key) from None
        r["_line"] = line
        out.append(r)
    return out


def split_judged(rows: list[dict], *, thresholds: Thresholds = DEFAULT_THRESHOLDS,
                 path: str | Path | None = None) -> tuple[list[dict], list[dict]]:
    """``(misaligned, clearly aligned)`` chat examples from judged rows, labelled by ``classify``."""
    mis, ali = [], []
    where = Path(path or "<rows>")
    for r in rows:
        label = classify_row(r, thresholds=thresholds)
        if label == MISALIGNED:
            mis.append(_judged_example(r, where, r.get("_line", 0)))
        elif label == ALIGNED:
            ali.append(_judged_example(r, where, r.get("_line", 0)))
    if not mis or not ali:
        raise InterpError(f"judged rows give {len(mis)} misaligned and {len(ali)} aligned answers; need both",
                          file=path)
    return mis, ali
