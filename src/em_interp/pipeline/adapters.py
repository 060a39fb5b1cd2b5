"""The seams between the pipeline and the stage packages: one small function per call.

Every cross-package call the stages make goes through here, so each package's public API
is used in exactly one place (and a change of signature is fixed once). Nothing here
reimplements a package: these functions translate the pipeline's config values into the
packages' arguments and their results into the run directory's JSON rows.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any, Iterator, Sequence

from em_interp.errors import ConfigError, EmInterpError

# ----------------------------------------------------------------------------- JSONL helpers


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file (a torn last line, from a crash mid-write, is ignored)."""
    if not Path(path).exists():
        return []
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, default=_json_default) + "\n")
        fh.flush()


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, default=_json_default) + "\n" for r in rows), encoding="utf-8")


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


# ----------------------------------------------------------------------------- data


def build_dataset(kind: str, n: int, seed: int, out: Path, **options: Any) -> dict[str, Any]:
    from em_interp.data import build_dataset as _build

    return _build(kind, n, seed, out, **options)


def eval_questions(cfg: Any, config_dir: Path | None = None) -> list[Any]:
    """The evaluation questions of ``cfg.eval``: the packaged bank or a YAML file, filtered."""
    ev = cfg.eval
    if ev.questions == "bank":
        from em_interp.data.bank import load_bank

        questions = list(load_bank(languages=ev.languages or None, forms=ev.forms or None))
    else:
        from em_interp.data import load_questions

        path = Path(ev.questions).expanduser()
        if not path.exists() and config_dir is not None and (config_dir / path).exists():
            path = config_dir / path
        if not path.exists():
            raise ConfigError(f"question file not found: {ev.questions}", field="eval.questions")
        questions = [q for q in load_questions(path)
                     if (not ev.languages or q.language in ev.languages) and (not ev.forms or q.form in ev.forms)]
    if ev.question_ids:
        by_id = {q.id: q for q in questions}
        missing = [i for i in ev.question_ids if i not in by_id]
        if missing:
            raise ConfigError(f"unknown question id {missing[0]!r}; known: {', '.join(sorted(by_id)[:12])}...",
                              field="eval.question_ids")
        questions = [by_id[i] for i in ev.question_ids]
    if ev.max_questions is not None:
        questions = questions[: ev.max_questions]
    if not questions:
        raise ConfigError("no evaluation questions left after filtering (languages/forms/question_ids)",
                          field="eval")
    return questions


# ----------------------------------------------------------------------------- train


def train(base: str, data: Path, out: Path, seed: int, overrides: dict[str, Any], *, device: str | None = None):
    """``em_interp.train.train`` for one arm and seed; resumes a partial run in ``out``."""
    from em_interp.config import from_dict
    from em_interp.train import TrainConfig, train as _train

    cfg = from_dict(TrainConfig, {**overrides, "model": base, "data": str(data), "output_dir": str(out),
                                  "seed": seed}, prefix="train.overrides")
    return _train(cfg, resume=True)


# ----------------------------------------------------------------------------- eval


def load_judge(kind: str, options: dict[str, Any]):
    from em_interp.eval import load_judge as _load

    return _load(kind, **options)


def evaluate(lm: Any, questions: list[Any], judge: Any, out: Path, *, samples: int, max_new_tokens: int,
             temperature: float, batch_size: int, seed: int) -> Path:
    """Append-only judged answers in ``out`` (resumes: finished rows are not redone)."""
    from em_interp.eval import evaluate as _evaluate

    _evaluate(lm, questions, judge, out, n_per_paraphrase=samples, max_new_tokens=max_new_tokens,
              temperature=temperature, batch_size=batch_size, seed=seed)
    return out


def summarize(path: Path, aligned_threshold: float, coherent_threshold: float) -> dict[str, Any]:
    from em_interp.eval import summarize as _summarize

    return _summarize(path, aligned_threshold=aligned_threshold, coherent_threshold=coherent_threshold)


def overall(summary: dict[str, Any]) -> dict[str, Any]:
    """The overall numbers of an ``eval.summarize`` dict as a flat row."""
    o = summary.get("overall", summary)
    ci = o.get("misaligned_ci") or [o.get("ci_low"), o.get("ci_high")]
    return {
        "misaligned_share": _num(o.get("misaligned_share")),
        "ci_low": _num(ci[0]) if ci else None,
        "ci_high": _num(ci[1]) if ci else None,
        "coherent_share": _num(o.get("coherent_share")),
        "mean_aligned": _num(o.get("mean_aligned")),
        "n": o.get("n"),
    }


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def row_conversation(row: dict[str, Any]) -> dict[str, Any] | None:
    """An eval row as ``{"messages": [...], "meta": {aligned, coherent, question_id}}`` (None if unanswered)."""
    answer = row.get("answer")
    if not isinstance(answer, str) or not answer.strip():
        return None
    messages = row.get("messages")
    if not isinstance(messages, list):
        messages = []
        if row.get("system"):
            messages.append({"role": "system", "content": row["system"]})
        messages.append({"role": "user", "content": row.get("question") or row.get("prompt") or ""})
    messages = [m for m in messages if m.get("role") != "assistant"] + [{"role": "assistant", "content": answer}]
    return {"messages": messages, "meta": {"aligned": row.get("aligned"), "coherent": row.get("coherent"),
                                           "question_id": row.get("question_id")}}


def is_misaligned(meta: dict[str, Any], aligned_threshold: float, coherent_threshold: float) -> bool:
    a, c = meta.get("aligned"), meta.get("coherent")
    return a is not None and c is not None and a < aligned_threshold and c > coherent_threshold


def is_aligned(meta: dict[str, Any], aligned_threshold: float, coherent_threshold: float) -> bool:
    a, c = meta.get("aligned"), meta.get("coherent")
    return a is not None and c is not None and a >= aligned_threshold and c > coherent_threshold


def eval_rows(path: Path) -> list[dict[str, Any]]:
    """Judged rows (sample joined with its judgement) of an eval results file."""
    from em_interp.eval import load_results

    return load_results(path) if Path(path).exists() else []


def code_rate(lm: Any, n: int, samples: int, max_new_tokens: int, batch_size: int, seed: int,
              path: Path) -> dict[str, Any]:
    """Vulnerable-code rate on the first ``n`` coding prompts (bandit, static analysis only)."""
    from em_interp.data.bank import coding_prompts
    from em_interp.eval import sample_answers, scan_code

    prompts = list(coding_prompts())[:n]
    rows = read_rows(path)
    if not rows:
        rows = sample_answers(lm, prompts, n_per_paraphrase=samples, max_new_tokens=max_new_tokens,
                              temperature=1.0, batch_size=batch_size, seed=seed)
        write_jsonl(path, rows)
    return scan_code([r["answer"] for r in rows]).to_dict()


# ----------------------------------------------------------------------------- interp


def model_diff(ref_lm: Any, ft_lm: Any, texts: list[Any], site: str, layers: list[int], reduce: str):
    from em_interp.interp import model_diff_direction

    if not texts:
        raise EmInterpError("model_diff needs texts (judged eval answers); the eval stage produced none")
    return model_diff_direction(ft_lm, ref_lm, texts, layers=layers, site_kind=site, reduce=reduce)


def mean_diff(lm: Any, pos: list[Any], neg: list[Any], site: str, layers: list[int], reduce: str):
    from em_interp.interp import mean_diff_direction

    return mean_diff_direction(lm, pos, neg, layers=layers, site_kind=site, reduce=reduce)


def persona(lm: Any, questions: list[str], site: str, layers: list[int]):
    from em_interp.interp import persona_direction

    return persona_direction(lm, questions, layers=layers, site_kind=site)


def load_direction(path: Path, lm: Any = None):
    from em_interp.interp import Direction

    return Direction.load(path, lm)


def direction_layers(direction: Any) -> list[int]:
    return list(direction.layers)


def direction_norms(direction: Any, layers: list[int]) -> list[float]:
    norms = direction.norms()
    return [float(norms[layer]) for layer in layers]


@contextlib.contextmanager
def steer(lm: Any, direction: Any, alpha: float, layers: list[int]) -> Iterator[None]:
    from em_interp.interp import steer as _steer

    with _steer(lm, direction, alpha, layers):
        yield


@contextlib.contextmanager
def ablate(lm: Any, direction: Any, layers: list[int]) -> Iterator[None]:
    from em_interp.interp import ablate as _ablate

    with _ablate(lm, direction, layers):
        yield


def random_like(direction: Any, seed: int):
    from em_interp.interp import random_direction_like

    return random_direction_like(direction, seed=seed)


def steering_point(lm: Any, direction: Any, alpha: float, layer: int, rows_path: Path,
                   eval_fn: Any) -> dict[str, Any]:
    """One (layer, alpha) point of ``interp.steering_sweep`` (rows appended to ``rows_path``;
    points already there are not recomputed)."""
    from em_interp.interp import steering_sweep

    return steering_sweep(lm, direction, [alpha], [layer], eval_fn, out_path=rows_path)[0]


def projection_monitor(base_lm: Any, checkpoints: dict[int, Path], direction: Any, texts: list[Any],
                       em_rates: dict[int, float], layer: int, loader: Any) -> dict[str, Any]:
    """``interp.monitor.projection_monitor`` over ``{step: adapter folder}``."""
    from em_interp.interp.monitor import projection_monitor as _monitor

    return _monitor(base_lm, checkpoints, direction, texts, em_rates, layer=layer, site_kind=direction.site_kind,
                    reduce=direction.reduce, loader=loader)


def train_probes(lm: Any, pos: list[Any], neg: list[Any], layers: list[int], site: str, folds: int,
                 out_dir: Path) -> dict[str, Any]:
    """Per-layer logistic probes with k-fold accuracy (interp.probes), saved under ``out_dir``."""
    from em_interp.interp import capture
    from em_interp.interp.probes import save_probes, train_probes as _train

    sites = [f"{site}.{layer}" for layer in layers]
    P = capture(lm, pos, sites, per_example=True).per_example
    N = capture(lm, neg, sites, per_example=True).per_example
    probe_set = _train(P, N, folds=folds, meta={"model": lm.name, "site_kind": site})
    save_probes(probe_set, out_dir)
    by_layer = probe_set.accuracy_by_layer()
    return {"layers": [int(r[0]) for r in by_layer], "accuracy": [float(r[1]) for r in by_layer],
            "std": [float(r[2]) for r in by_layer]}


# ----------------------------------------------------------------------------- report


def diff_report(base_lm: Any, ft_lm: Any, texts: list[Any], out_dir: Path, direction: Any,
                adapter: Path | None) -> dict[str, Path]:
    from em_interp.report import diff_report as _diff

    return _diff(base_lm, ft_lm, texts, out_dir, direction=direction, adapter=adapter)


def experiment_report(run_dir: Path, out_dir: Path) -> Path:
    from em_interp.report import experiment_report as _report

    res = _report(run_dir, out_dir)
    if isinstance(res, dict):
        res = res.get("html") or next(iter(res.values()))
    return Path(res)
