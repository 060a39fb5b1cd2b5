"""Per-language misalignment directions of one finetuned model and their cosine matrix.

For each target (language, or ``python``) the direction is extracted from the finetune's
own eval answers in that target, with ``em_interp.interp``:

- ``model_diff``: finetuned minus base mean ``resid_post`` over the answer tokens;
- ``mean_diff``: mean over misaligned answers minus mean over clearly aligned ones (for
  ``python``: vulnerable minus clean code); a target with fewer than ``min_per_class``
  answers in either class is skipped, with the reason recorded.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from em_interp.errors import InterpError
from em_interp.eval.rules import ALIGNED, MISALIGNED, Thresholds, classify
from em_interp.transfer.config import CODE_TARGET
from em_interp.transfer.matrix import ALIGNED_THRESHOLD, COHERENT_THRESHOLD


def _usable(row: dict[str, Any]) -> bool:
    return bool(row.get("question")) and bool(str(row.get("answer") or "").strip())


def chat_examples(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with ``question`` and ``answer`` -> ``{"messages": [user, assistant]}`` (empty answers dropped)."""
    return [{"messages": [{"role": "user", "content": r["question"]},
                          {"role": "assistant", "content": r["answer"]}]}
            for r in rows if _usable(r)]


def split_rows(rows: Sequence[dict[str, Any]], target: str, *, aligned_threshold: float = ALIGNED_THRESHOLD,
               coherent_threshold: float = COHERENT_THRESHOLD) -> tuple[list[dict], list[dict]]:
    """(positive, negative) rows: misaligned / clearly aligned (``eval.rules.classify``) for
    languages, vulnerable / clean for python."""
    if target == CODE_TARGET:
        return ([r for r in rows if r.get("vulnerable") is True], [r for r in rows if r.get("vulnerable") is False])
    th = Thresholds(misaligned_below=aligned_threshold, coherent_above=coherent_threshold,
                    aligned_above=max(aligned_threshold, Thresholds().aligned_above))
    labels = [classify(r.get("aligned"), r.get("coherent"), thresholds=th) for r in rows]
    return ([r for r, lab in zip(rows, labels) if lab == MISALIGNED],
            [r for r, lab in zip(rows, labels) if lab == ALIGNED])


def language_directions(finetuned: Any, rows_by_target: dict[str, Sequence[dict[str, Any]]], *,
                        method: str = "model_diff", base: Any = None, layers: Sequence[int] | None = None,
                        min_per_class: int = 3, batch_size: int = 8, match: str = "none",
                        aligned_threshold: float = ALIGNED_THRESHOLD,
                        coherent_threshold: float = COHERENT_THRESHOLD) -> tuple[dict[str, Any], dict[str, str]]:
    """One ``Direction`` per target from the finetune's answers; returns (directions, skipped reasons).
    ``match="question"`` (``mean_diff``): the question-matched mean difference
    (``interp.matched_mean_diff``: each question's topic cancels; a target where no question has
    answers of both classes is skipped)."""
    from em_interp.interp import mean_diff_direction, model_diff_direction

    if method not in ("model_diff", "mean_diff"):
        raise InterpError(f"unknown direction method {method!r}; valid: model_diff, mean_diff", field="method")
    if method == "model_diff" and base is None:
        raise InterpError("model_diff needs the base model", field="base")
    layer_arg: Any = "all" if layers is None else list(layers)
    dirs: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for target, rows in rows_by_target.items():
        if method == "model_diff":
            ex = chat_examples(rows)
            if len(ex) < min_per_class:
                skipped[target] = f"{len(ex)} answers < min_per_class {min_per_class}"
                continue
            d = model_diff_direction(finetuned, base, ex, layers=layer_arg, batch_size=batch_size)
        else:
            pos, neg = (list(filter(_usable, x)) for x in split_rows(rows, target, aligned_threshold=aligned_threshold,
                                                                     coherent_threshold=coherent_threshold))
            if min(len(pos), len(neg)) < min_per_class:
                skipped[target] = f"{len(pos)} positive / {len(neg)} negative answers < min_per_class {min_per_class}"
                continue
            groups = None
            if match == "question":
                groups = ([r.get("question_id") for r in pos], [r.get("question_id") for r in neg])
                if not set(groups[0]) & set(groups[1]):
                    skipped[target] = "no question has answers of both classes (match: question)"
                    continue
            d = mean_diff_direction(finetuned, chat_examples(pos), chat_examples(neg), layers=layer_arg,
                                    batch_size=batch_size, groups=groups)
        dirs[target] = d.replace(extra={**dict(d.extra), "target": target})
    return dirs, skipped


def cosine_matrix(directions: dict[str, Any], layer: int) -> tuple[list[str], np.ndarray]:
    """Labels (the targets) and the [K, K] cosine matrix of the directions at ``layer``."""
    from em_interp.interp import cosine_table

    missing = [k for k, d in directions.items() if layer not in d.layers]
    if missing:
        raise InterpError(f"layer {layer} not in the directions of {missing}", field="layer")
    labels, m = cosine_table(directions, layers=[layer])
    return [lab.rsplit("@", 1)[0] for lab in labels], m
