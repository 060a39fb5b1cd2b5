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


def load_judge(kind: str, **options) -> Judge:
    """Build a judge. Options are passed to the judge's constructor (see each class)."""
    if kind == "api":
        from em_interp.eval.judges.api import ApiJudge

        return ApiJudge(**options)
    if kind == "local":
        from em_interp.eval.judges.local import LocalJudge

        return LocalJudge(**options)
    if kind == "distilled":
        from em_interp.eval.judges.distilled import DistilledJudge

        return DistilledJudge(**options)
    raise EvalError(f"unknown judge kind '{kind}'; use one of {list(KINDS)}", field="judge")


__all__ = ["KINDS", "PAPER_PROMPTS", "Judge", "Judgement", "aggregate_0_100", "load_judge", "render"]
