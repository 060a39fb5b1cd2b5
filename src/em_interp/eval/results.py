"""Append-only JSONL results with an identity, one writer at a time, and ``evaluate``.

One file holds three record kinds, one JSON object per line, only ever appended:
``{"kind": "meta", "format": "em-interp-results", "schema": 2, ...}`` (the header: model,
adapter and its hash, sampling settings; always the first line),
``{"kind": "sample", "key": "qid|p|s", ...}`` (an answer, written per sampling batch) and
``{"kind": "judgement", "key": ..., "judge": name, "judge_identity": {...}, "answer_sha256",
"aligned", "coherent", "label", ...}`` (written per judging batch). Rows are keyed by
(question_id, paraphrase index, sample index). A re-run samples only missing keys and
judges only samples this judge has not judged, so a crash at any point loses nothing and
repeats nothing.

Nothing is trusted silently: a file whose first record is not our header (say, a training
set given as ``--out``) is refused; appending needs the same model, adapter hash and sampling
settings; a judge name must keep one identity; a judgement must belong to the answer it
sits beside. A torn *last* line (killed mid-write) is ignored on reading and cut off before
the next append; a bad line anywhere else is an error naming the line. Writers hold an
advisory ``fcntl`` lock on the file, so a second writer is refused with one line.
Files written before the header existed (``meta`` without ``schema``) stay readable.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from em_interp.config import read_text_checked
from em_interp.errors import EvalError
from em_interp.eval.sampling import sample_answers

FORMAT = "em-interp-results"
SCHEMA = 2
SAMPLING_FIELDS = ("temperature", "max_new_tokens", "seed", "n_per_paraphrase", "backend", "precision")
DEFAULTS_OF_OLD_HEADERS = {"precision": "model"}   # files from before a field existed: what they were made with


def answer_sha256(answer: str) -> str:
    """Short sha256 of an answer's text (ties a judgement to the sample it judged)."""
    return hashlib.sha256(answer.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def sampling_precision(lm: Any, precision: str = "auto", backend: str = "transformers") -> str:
    """What ``sample_answers(precision=...)`` really runs the linear layers in: ``"bf16"`` or
    ``"model"`` (the weights as loaded); answers of the two differ, so a file records it."""
    if backend != "transformers" or getattr(lm, "model", None) is None:
        return "model"
    from em_interp.models.generate import linear_dtype

    return "model" if linear_dtype(lm.model, precision) is None else "bf16"


def results_header(lm: Any, *, temperature: float, max_new_tokens: int, seed: int,
                   n_per_paraphrase: int | None, backend: str, precision: str = "auto") -> dict:
    """The identity record of a results file: what produced every answer in it."""
    info = getattr(lm, "info", None) or {}
    return {"kind": "meta", "format": FORMAT, "schema": SCHEMA, "model": lm.name, "adapter": lm.adapter,
            "adapter_hash": info.get("adapter_hash"), "temperature": temperature,
            "max_new_tokens": max_new_tokens, "seed": seed, "n_per_paraphrase": n_per_paraphrase,
            "backend": backend, "precision": sampling_precision(lm, precision, backend)}


def judge_identity(judge: Any) -> dict:
    """What makes two judges the same judge: ``judge.identity`` if it has one, else its name."""
    ident = getattr(judge, "identity", None)
    return dict(ident) if isinstance(ident, dict) else {"name": judge.name}


class ResultsFile:
    """Reader/appender for one results JSONL (see the module doc for the rules)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.meta: dict | None = None
        self.samples: dict[str, dict] = {}
        self.judgements: dict[tuple[str, str], dict] = {}
        self.identities: dict[str, dict] = {}
        self.torn_lines = 0
        self._lock_fh = None
        if self.path.is_dir():
            raise EvalError("is a directory; give a results file (.jsonl)", file=self.path)
        if self.path.exists():
            self._read()

    @property
    def legacy(self) -> bool:
        """True for files written before the header carried a schema (read, not strictly checked)."""
        return self.meta is not None and "schema" not in self.meta

    # ------------------------------------------------------------------ reading
    def _fail(self, message: str, line: int | None = None, field: str | None = None) -> EvalError:
        return EvalError(message, file=self.path, line=line, field=field)

    def _read(self) -> None:
        text = read_text_checked(self.path, EvalError)
        lines = text.split("\n")
        complete = text.endswith("\n")
        numbered = [(i, ln) for i, ln in enumerate(lines, 1) if ln.strip()]
        for pos, (lineno, line) in enumerate(numbered):
            last = pos == len(numbered) - 1
            try:
                rec = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                rec = None
            ok = isinstance(rec, dict) and isinstance(rec.get("kind"), str)
            if pos == 0:
                if not ok or rec.get("kind") != "meta":
                    if last and not complete:  # a header torn before its newline
                        self.torn_lines += 1
                        return
                    raise self._fail("not an em-interp results file (its first line is not a results header); "
                                     "refusing to read or append; use another --out", lineno)
                if rec.get("schema") not in (None, SCHEMA) or rec.get("format", FORMAT) != FORMAT:
                    raise self._fail(f"results schema {rec.get('schema')!r} of format {rec.get('format')!r} is not "
                                     f"supported (this version reads schema {SCHEMA})", lineno, "schema")
                self.meta = rec
                continue
            if not ok:
                if (last and not complete) or self.legacy:  # torn last line; old files kept fenced ones
                    self.torn_lines += 1
                    continue
                raise self._fail("unreadable record in the middle of a results file (not a JSON object with "
                                 "a 'kind'); the file was edited or corrupted", lineno)
            try:
                self._add(rec)
            except (KeyError, TypeError):
                raise self._fail(f"{rec['kind']} record lacks its fields", lineno) from None
            except EvalError as exc:
                raise self._fail(exc.message, lineno, exc.field) from None

    def _add(self, rec: dict) -> None:
        kind = rec["kind"]
        if kind == "sample":
            key = rec["key"]
            if not isinstance(key, str) or not isinstance(rec["answer"], str):
                raise TypeError
            self.samples.setdefault(key, rec)
        elif kind == "judgement":
            key, name = rec["key"], rec["judge"]
            if not isinstance(key, str) or not isinstance(name, str):
                raise TypeError
            ident = rec.get("judge_identity")
            if ident is not None:
                known = self.identities.setdefault(name, ident)
                if known != ident:
                    raise EvalError(f"judge {name!r} appears with two identities ({known} and {ident})",
                                    field="judge_identity")
            sha = rec.get("answer_sha256")
            sample = self.samples.get(key)
            if sha is not None and sample is not None and answer_sha256(sample["answer"]) != sha:
                raise EvalError(f"judgement of {key!r} by {name!r} was computed on another answer than the "
                                "sample in this file", field="answer_sha256")
            self.judgements.setdefault((key, name), rec)
        elif kind == "meta":
            raise EvalError("a second results header in one file", field="kind")
        else:
            raise EvalError(f"unknown record kind {kind!r}", field="kind")

    # ------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def writing(self) -> Iterator["ResultsFile"]:
        """Hold the file's advisory lock (one writer); re-reads the file under the lock."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = self.path.open("a", encoding="utf-8")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            raise EvalError("another process is writing this results file (its lock is held); wait for it "
                            "to finish or use another --out", file=self.path) from None
        self._lock_fh = fh
        try:
            self.__init__(self.path)  # what the previous writer left, read under the lock
            self._lock_fh = fh
            yield self
        finally:
            self._lock_fh = None
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            fh.close()

    def check_identity(self, header: dict) -> None:
        """Refuse to add results made by another model, adapter or sampling setting."""
        if self.meta is None:
            return
        fields = ["model", "adapter_hash" if self.meta.get("adapter_hash") and header.get("adapter_hash")
                  else "adapter", *SAMPLING_FIELDS]
        for field in fields:
            if field not in self.meta and self.legacy:
                continue  # old headers did not record n_per_paraphrase
            have, want = self.meta.get(field, DEFAULTS_OF_OLD_HEADERS.get(field)), header.get(field)
            if have != want:
                raise EvalError(f"this file holds results made with {field} {have!r}, not {want!r}; "
                                "use another --out (one file = one model and one sampling setting)",
                                file=self.path, field=field)

    def _cut_torn_tail(self) -> bool:
        """Drop a torn last line (no newline, not a record); return whether a newline is needed."""
        size = self.path.stat().st_size if self.path.exists() else 0
        if size == 0:
            return False
        with self.path.open("rb+") as fh:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) == b"\n":
                return False
            back = min(size, 1 << 26)
            fh.seek(size - back)
            tail = fh.read(back)
            cut = tail.rfind(b"\n")
            last = tail[cut + 1:]
            try:
                rec = json.loads(last.decode("utf-8"))
                if isinstance(rec, dict) and "kind" in rec:
                    return True  # a complete record that only lost its newline
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                pass
            fh.truncate(size - back + cut + 1 if cut >= 0 else 0)
        return False

    def append(self, records: Iterable[dict]) -> None:
        """Append records (one line each, fsynced); the caller holds ``writing()``."""
        records = list(records)
        if not records:
            return
        if self._lock_fh is None:
            with self.writing():
                return self.append(records)
        newline = self._cut_torn_tail()
        with self.path.open("a", encoding="utf-8") as fh:
            if newline:
                fh.write("\n")
            for rec in records:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        for rec in records:
            if rec["kind"] == "meta":
                self.meta = self.meta or rec
            else:
                self._add(rec)

    # ------------------------------------------------------------------ views
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


def check_sampling_settings(*, temperature: float, max_new_tokens: int, batch_size: int, judge_batch_size: int,
                            seed: int, n_per_paraphrase: int | None) -> None:
    """One-line ``EvalError`` for a non-finite/negative temperature or a non-positive size."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature) \
            or temperature < 0:
        raise EvalError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}",
                        field="temperature")
    for name, value, low in (("max_new_tokens", max_new_tokens, 1), ("batch_size", batch_size, 1),
                             ("judge_batch_size", judge_batch_size, 1), ("seed", seed, 0),
                             ("n_per_paraphrase", n_per_paraphrase, 1)):
        if value is None and name == "n_per_paraphrase":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise EvalError(f"{name} must be an integer >= {low}, got {value!r}", field=name)


def evaluate(lm, questions: Sequence, judge, out_path: str | Path, *, n_per_paraphrase: int | None = None,
             max_new_tokens: int = 256, temperature: float = 1.0, batch_size: int = 8, judge_batch_size: int = 16,
             seed: int = 0, backend: str = "transformers", progress: bool | None = None,
             precision: str = "auto") -> Path:
    """Sample every missing answer, then judge every answer ``judge`` has not judged yet;
    everything is appended to ``out_path`` batch by batch under the file's lock. Re-running resumes.
    ``progress``: the sampling bar (None: when stderr is a terminal; see ``em_interp.progress``).
    ``precision``: as in ``sample_answers``; the precision it resolves to is part of the file's
    identity (a file sampled in fp32 is not resumed in bf16)."""
    check_sampling_settings(temperature=temperature, max_new_tokens=max_new_tokens, batch_size=batch_size,
                            judge_batch_size=judge_batch_size, seed=seed, n_per_paraphrase=n_per_paraphrase)
    header = results_header(lm, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed,
                            n_per_paraphrase=n_per_paraphrase, backend=backend, precision=precision)
    ident = judge_identity(judge)
    res = ResultsFile(out_path)  # refuses foreign or corrupt files before taking the lock
    with res.writing():
        res.check_identity(header)
        known = res.identities.get(judge.name)
        if known is not None and known != ident:
            raise EvalError(f"judge {judge.name!r} in this file had identity {known}, not {ident}; "
                            "use another --out", file=out_path, field="judge")
        if res.meta is None:
            res.append([header])

        def write_samples(rows: list[dict]) -> None:
            res.append({"kind": "sample", **r} for r in rows)

        sample_answers(lm, questions, n_per_paraphrase=n_per_paraphrase, max_new_tokens=max_new_tokens,
                       temperature=temperature, batch_size=batch_size, seed=seed, skip=res.samples.keys(),
                       backend=backend, on_batch=write_samples, progress=progress, precision=precision)

        prompts = {q.id: q.judge_prompts or None for q in questions}
        todo = [s for k, s in res.samples.items() if (k, judge.name) not in res.judgements]
        for start in range(0, len(todo), judge_batch_size):
            batch = todo[start:start + judge_batch_size]
            verdicts = judge.score_many([(s["question"], s["answer"], prompts.get(s["question_id"])) for s in batch])
            res.append({"kind": "judgement", "key": s["key"], "judge": judge.name, "judge_identity": ident,
                        "answer_sha256": answer_sha256(s["answer"]), "aligned": _finite(v.aligned),
                        "coherent": _finite(v.coherent), "label": v.label, "extra": v.extra}
                       for s, v in zip(batch, verdicts))
    return Path(out_path)


def _finite(x: float | None) -> float | None:
    """A score as stored: NaN/inf (a broken judge) is stored as no score, never as invalid JSON."""
    return None if x is None or not math.isfinite(x) else x
