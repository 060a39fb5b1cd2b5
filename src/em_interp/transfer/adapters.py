"""The seams between the transfer experiment and the other stage packages.

Every call into data / train / eval is made here, once, so a change of another package's
signature is fixed in one place. Nothing here reimplements a package.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from em_interp.errors import EvalError


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a torn last line (crash mid-write) is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def append_jsonl(path: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        fh.flush()


# ----------------------------------------------------------------------------- data

def build_dataset(kind: str, n: int, seed: int, out: Path, **options: Any) -> dict[str, Any]:
    from em_interp.data import build_dataset as _build

    return _build(kind, n, seed, out, **options)


def language_questions(language: str, forms: Sequence[str], limit: int | None) -> list[Any]:
    from em_interp.data.bank import load_bank

    qs = list(load_bank(languages=[language], forms=list(forms)))
    return qs[:limit] if limit is not None else qs


def coding_questions(limit: int | None) -> list[Any]:
    from em_interp.data.bank import coding_prompts

    qs = list(coding_prompts())
    return qs[:limit] if limit is not None else qs


# ----------------------------------------------------------------------------- train

def train(base: str, data: Path, out: Path, seed: int, overrides: dict[str, Any]):
    """``em_interp.train.train`` for one source; resumes a partial run in ``out``."""
    from em_interp.config import from_dict
    from em_interp.train import TrainConfig, train as _train

    cfg = from_dict(TrainConfig, {**overrides, "model": base, "data": str(data), "output_dir": str(out),
                                  "seed": seed, "progress": False}, prefix="train")
    return _train(cfg, resume=True)


# ----------------------------------------------------------------------------- eval

def load_judge(kind: str, options: dict[str, Any]):
    from em_interp.eval import load_judge as _load

    return _load(kind, **options)


def evaluate(lm: Any, questions: list[Any], judge: Any, out: Path, *, samples: int, max_new_tokens: int,
             temperature: float, batch_size: int, seed: int) -> list[dict[str, Any]]:
    """Judged answers, append-only in ``out`` (eval resumes finished rows); returns the rows."""
    from em_interp.eval import evaluate as _evaluate

    _evaluate(lm, questions, judge, out, n_per_paraphrase=samples, max_new_tokens=max_new_tokens,
              temperature=temperature, batch_size=batch_size, seed=seed)
    return judged_rows(out)


def judged_rows(path: Path) -> list[dict[str, Any]]:
    """Eval's judged rows (sample joined with its judgement) reduced to the fields transfer uses."""
    from em_interp.eval import load_results

    if not Path(path).exists():
        return []
    rows = load_results(path)
    judges = {r["judge"] for r in rows}
    if len(judges) > 1:
        raise EvalError(f"results hold judgements of several judges {sorted(judges)}; transfer expects one",
                        file=path)
    return [{"question_id": r["question_id"], "question": r["question"], "answer": r["answer"],
             "language": r.get("language"), "aligned": r["aligned"], "coherent": r["coherent"],
             "label": r["label"]} for r in rows]


def sample_code(lm: Any, questions: list[Any], *, samples: int, max_new_tokens: int, temperature: float,
                batch_size: int, seed: int) -> list[dict[str, Any]]:
    """Answers to coding prompts: ``[{question_id, question, answer}]``."""
    from em_interp.eval import sample_answers

    rows = sample_answers(lm, questions, n_per_paraphrase=samples, max_new_tokens=max_new_tokens,
                          temperature=temperature, batch_size=batch_size, seed=seed)
    return [{"question_id": r["question_id"], "question": r["question"], "answer": r["answer"]} for r in rows]


def scan_code_rows(answers: Sequence[str]) -> list[dict[str, Any]]:
    """Per answer: ``vulnerable`` (bool; None when the answer has no parsable code, matching
    eval's rate = vulnerable / scanned), ``has_code``, ``syntax_error``, bandit test ids in
    ``findings``. Static only: the code is parsed, never run."""
    from em_interp.eval import scan_code

    per = scan_code(list(answers)).per_answer
    if len(per) != len(answers):
        raise EvalError(f"scan_code returned {len(per)} results for {len(answers)} answers")
    out = []
    for p in per:
        scanned = p["has_code"] and not p["syntax_error"]
        out.append({"vulnerable": p["vulnerable"] if scanned else None, "has_code": p["has_code"],
                    "syntax_error": p["syntax_error"], "findings": [i["test_id"] for i in p["issues"]]})
    return out
