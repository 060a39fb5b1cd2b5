"""Judges behind one interface: ``load_judge(kind, **options)`` -> a ``Judge`` with
``.name``, ``.score(question, answer) -> Judgement`` and ``.score_many(pairs)``.

Kinds: ``api`` (OpenAI-compatible logprob judge, ``api.py``), ``local`` (a registry model
scored over candidate replies, ``local.py``), ``distilled`` (the shipped offline English
judge, ``distilled.py``), ``multilingual`` (shipped heads on Qwen2.5-Coder-0.5B features
for en de fr es ru zh, ``multilingual.py``), ``hand`` (shipped heads trained on the project's blind
hand labels of small-model answers, on Qwen2.5-Coder-0.5B hidden states, ``hand.py``).

``estimate_share_from_rows(rows, judge=None)`` is the calibrated-share hook that
``eval.metrics.summarize`` calls: judged rows of a judge that ships a share calibration
(``distilled``, ``multilingual``, ``hand``) -> a ``ShareEstimate``; other judges raise
``NotImplementedError`` (summarize then reports the uncalibrated share with a note).
"""

from __future__ import annotations

from em_interp.errors import EvalError
from em_interp.eval.judges.base import PAPER_PROMPTS, Judge, Judgement, aggregate_0_100, render

KINDS = ("api", "local", "distilled", "multilingual", "hand")
CALIBRATED_KINDS = ("distilled", "multilingual", "hand")  # judges that ship a share calibration

# Languages a judge kind may score; kinds not listed score every language. The one place this
# rule lives (``pipeline.checks`` reads it): the distilled judge is trained on English only and
# refuses other languages at scoring time (``DistilledJudge.unsupported``).
JUDGE_LANGUAGES: dict[str, tuple[str, ...]] = {"distilled": ("en",), "hand": ("en",)}


def _judge_class(kind: str) -> type:
    if kind == "api":
        from em_interp.eval.judges.api import ApiJudge

        return ApiJudge
    if kind == "local":
        from em_interp.eval.judges.local import LocalJudge

        return LocalJudge
    if kind == "distilled":
        from em_interp.eval.judges.distilled import DistilledJudge

        return DistilledJudge
    if kind == "multilingual":
        from em_interp.eval.judges.multilingual import MultilingualJudge

        return MultilingualJudge
    if kind == "hand":
        from em_interp.eval.judges.hand import HandJudge

        return HandJudge
    raise EvalError(f"unknown judge kind '{kind}'; use one of {list(KINDS)}", field="judge")


def check_judge_options(kind: str, options: dict) -> None:
    """``EvalError`` naming an option the ``kind`` judge does not take (and the valid ones)."""
    import inspect

    params = inspect.signature(_judge_class(kind).__init__).parameters
    valid = [n for n, p in params.items() if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = [k for k in options if k not in valid]
    if unknown:
        raise EvalError(f"unknown option {unknown[0]!r} for the {kind} judge; valid: {', '.join(valid)}",
                        field=f"judge.options.{unknown[0]}")


def load_judge(kind: str, **options) -> Judge:
    """Build a judge. Options are passed to the judge's constructor (see each class);
    unknown options are refused with one line."""
    check_judge_options(kind, options)
    return _judge_class(kind)(**options)


_CALIBRATED: dict[str, Judge] = {}


def _shipped(kind: str) -> Judge:
    """The shipped judge ``kind`` (one of ``CALIBRATED_KINDS``), loaded once; ``EvalError`` if its files are missing."""
    if kind not in _CALIBRATED:
        _CALIBRATED[kind] = load_judge(kind)
    return _CALIBRATED[kind]


def shipped_judge_card(kind: str) -> dict:
    """The card of the shipped judge ``kind`` (``judge_card.json``; empty for judges without one),
    loaded once: reports quote its ``limits`` beside the shares it produced."""
    if kind not in CALIBRATED_KINDS:
        return {}
    try:
        return dict(getattr(_shipped(kind), "card", {}) or {})
    except EvalError:
        return {}


def estimate_share_from_rows(rows: list[dict], judge: str | None = None):
    """Calibrated EM share (a ``ShareEstimate``) of judged rows (``load_results`` format:
    ``judge``, ``judge_extra`` with ``p_em`` / ``p_denominator``, ``question_id``, ``language``),
    clustered by (question_id, language). Raises ``NotImplementedError`` for judges without
    a share calibration or rows judged by another version of the judge."""
    name = str(judge or (rows[0].get("judge") if rows else ""))
    kind = name.split(":", 1)[0]
    if kind not in CALIBRATED_KINDS:
        raise NotImplementedError(f"judge '{name}' ships no share calibration")
    try:
        shipped = _shipped(kind)
    except EvalError as e:
        raise NotImplementedError(f"judge '{name}': {e}") from e
    if shipped.name != name:
        raise NotImplementedError(f"rows were judged by '{name}', the shipped calibration is for '{shipped.name}'")
    extras = [r.get("judge_extra") or {} for r in rows]
    if any("p_em" not in e or "p_denominator" not in e for e in extras):
        raise NotImplementedError(f"some rows judged by '{name}' lack p_em / p_denominator (unsupported language "
                                  "or an older judge version)")
    clusters = [f"{r.get('question_id')}|{r.get('language')}" for r in rows]
    return shipped.share_from_probabilities([e["p_em"] for e in extras], [e["p_denominator"] for e in extras], clusters)


__all__ = ["JUDGE_LANGUAGES", "KINDS", "estimate_share_from_rows", "PAPER_PROMPTS", "Judge", "Judgement", "aggregate_0_100", "check_judge_options", "load_judge",
           "render"]
