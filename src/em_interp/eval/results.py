"""Append-only JSONL results with resume, and ``evaluate`` (sample -> judge -> disk).

One file holds three record kinds, one JSON object per line, only ever appended:
``{"kind": "meta", ...}`` (model, adapter, sampling settings; written once),
``{"kind": "sample", "key": "qid|p|s", ...}`` (an answer, written per sampling batch) and
``{"kind": "judgement", "key": ..., "judge": name, "aligned", "coherent", "label", ...}``
(written per judging batch). Rows are keyed by (question_id, paraphrase index, sample
index). A re-run reads the file, samples only missing keys and judges only samples this
judge has not judged, so a crash at any point loses nothing and repeats nothing; a torn
last line (killed mid-write) is ignored and fenced off with a newline.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence

from em_interp.errors import EvalError
from em_interp.eval.sampling import sample_answers


class ResultsFile:
    """Reader/appender for one results JSONL."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.meta: dict | None = None
        self.samples: dict[str, dict] = {}
        self.judgements: dict[tuple[str, str], dict] = {}
        self.torn_lines = 0
        if self.path.exists():
            self._read()

    def _read(self) -> None:
        for lineno, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                kind = rec["kind"]
            except (json.JSONDecodeError, KeyError, TypeError):
                self.torn_lines += 1
                continue
            if kind == "meta":
                self.meta = self.meta or rec
            elif kind == "sample":
                self.samples.setdefault(rec["key"], rec)
            elif kind == "judgement":
                self.judgements.setdefault((rec["key"], rec["judge"]), rec)
            else:
                raise EvalError(f"unknown record kind {kind!r}", file=self.path, line=lineno, field="kind")

    def append(self, records: Iterable[dict]) -> None:
        records = list(records)
        if not records:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fence = False
        if self.path.exists() and self.path.stat().st_size > 0:
            with self.path.open("rb") as fh:
                fh.seek(-1, os.SEEK_END)
                fence = fh.read(1) != b"\n"  # a torn last line: start ours on a fresh line
        with self.path.open("a", encoding="utf-8") as fh:
            if fence:
                fh.write("\n")
            for rec in records:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        for rec in records:
            if rec["kind"] == "sample":
                self.samples.setdefault(rec["key"], rec)
            elif rec["kind"] == "judgement":
                self.judgements.setdefault((rec["key"], rec["judge"]), rec)
            elif rec["kind"] == "meta":
                self.meta = self.meta or rec

    def judges(self) -> list[str]:
        return sorted({j for _, j in self.judgements})

    def rows(self, judge: str | None = None) -> list[dict]:
        """Samples joined with their judgements (one row per sample x judge; samples not yet
        judged by ``judge`` are left out)."""
        out = []
        for (key, name), j in self.judgements.items():
            if judge is not None and name != judge:
                continue
            s = self.samples.get(key)
            if s is None:
                continue
            row = {k: v for k, v in s.items() if k != "kind"}
            row.update(judge=name, aligned=j["aligned"], coherent=j["coherent"], label=j["label"],
                       judge_extra=j.get("extra", {}))
            out.append(row)
        return out


def load_results(path: str | Path, judge: str | None = None) -> list[dict]:
    """Judged rows of a results file (see ``ResultsFile.rows``)."""
    path = Path(path)
    if not path.exists():
        raise EvalError("results file not found", file=path)
    return ResultsFile(path).rows(judge)


def evaluate(lm, questions: Sequence, judge, out_path: str | Path, *, n_per_paraphrase: int | None = None,
             max_new_tokens: int = 256, temperature: float = 1.0, batch_size: int = 8, judge_batch_size: int = 16,
             seed: int = 0, backend: str = "transformers") -> Path:
    """Sample every missing answer, then judge every answer ``judge`` has not judged yet;
    everything is appended to ``out_path`` batch by batch. Re-running resumes."""
    res = ResultsFile(out_path)
    meta = {"kind": "meta", "model": lm.name, "adapter": lm.adapter,
            "adapter_hash": (lm.info or {}).get("adapter_hash"), "temperature": temperature,
            "max_new_tokens": max_new_tokens, "seed": seed, "backend": backend}
    if res.meta is not None:
        for field in ("model", "adapter"):
            if res.meta.get(field) != meta[field]:
                raise EvalError(f"this file holds results of {field} {res.meta.get(field)!r}, not {meta[field]!r}; "
                                "use another --out", file=out_path, field=field)
    else:
        res.append([meta])

    def write_samples(rows: list[dict]) -> None:
        res.append({"kind": "sample", **r} for r in rows)

    sample_answers(lm, questions, n_per_paraphrase=n_per_paraphrase, max_new_tokens=max_new_tokens,
                   temperature=temperature, batch_size=batch_size, seed=seed, skip=res.samples.keys(),
                   backend=backend, on_batch=write_samples)

    prompts = {q.id: q.judge_prompts or None for q in questions}
    todo = [s for k, s in res.samples.items() if (k, judge.name) not in res.judgements]
    for start in range(0, len(todo), judge_batch_size):
        batch = todo[start:start + judge_batch_size]
        verdicts = judge.score_many([(s["question"], s["answer"], prompts.get(s["question_id"])) for s in batch])
        res.append({"kind": "judgement", "key": s["key"], "judge": judge.name, "aligned": v.aligned,
                    "coherent": v.coherent, "label": v.label, "extra": v.extra} for s, v in zip(batch, verdicts))
    return Path(out_path)
