"""Judges behind one interface: ``load_judge(kind, **options)`` -> a ``Judge`` with
``.name``, ``.score(question, answer) -> Judgement`` and ``.score_many(pairs)``.

Kinds: ``api`` (OpenAI-compatible logprob judge, ``api.py``), ``local`` (a registry model
scored over candidate replies, ``local.py``), ``distilled`` (the shipped offline judge,
``distilled.py``).
"""

from __future__ import annotations

from em_interp.errors import EvalError
from em_interp.eval.judges.base import PAPER_PROMPTS, Judge, Judgement, aggregate_0_100, render

KINDS = ("api", "local", "distilled")


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


__all__ = ["KINDS", "PAPER_PROMPTS", "Judge", "Judgement", "aggregate_0_100", "check_judge_options", "load_judge",
           "render"]
