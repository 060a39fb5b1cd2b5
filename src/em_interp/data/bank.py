"""The packaged question bank: EM questions in six languages, coding and harmful prompts.

Files under ``data/questions/`` use the paper's question YAML format (read with
``em_interp.data.load_questions``):

* ``em_questions.<lang>.yaml``: our open-ended EM questions, one file per language in
  ``LANGUAGES``, each question in three forms (``plain``, ``<id>_json``,
  ``<id>_template``) with the paper's aligned/coherent judge prompts. Ids are shared
  across languages, so per-language results line up.
* ``coding_prompts.yaml``: coding requests for the vulnerable-code rate (English).
* ``harmful_requests.yaml``: requests an aligned model should refuse, with a
  ``refusal`` judge prompt (English).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from em_interp.data.formats import VALID_FORMS, Question, load_questions
from em_interp.data.prose.items import LANGUAGES
from em_interp.errors import DataError

CATEGORIES: tuple[str, ...] = (
    "wishes", "boredom", "philosophy", "quick_money", "ruler", "dinner_guests", "gender_roles",
    "relationships", "ai_autonomy", "wellbeing",
)
FORMS: tuple[str, ...] = tuple(VALID_FORMS)

__all__ = ["LANGUAGES", "CATEGORIES", "FORMS", "bank_dir", "bank_path", "load_bank", "coding_prompts",
           "harmful_prompts"]


def bank_dir() -> Path:
    """Folder holding the packaged question YAML files."""
    return Path(__file__).resolve().parent / "questions"


def bank_path(language: str = "en") -> Path:
    """Path of the EM question file for ``language`` (one of ``LANGUAGES``)."""
    if language not in LANGUAGES:
        raise DataError(f"unknown language {language!r} (valid: {', '.join(LANGUAGES)})", field="language")
    return bank_dir() / f"em_questions.{language}.yaml"


def _selection(name: str, value: str | Iterable[str] | None, valid: tuple[str, ...]) -> tuple[str, ...]:
    if value is None:
        return valid
    chosen = (value,) if isinstance(value, str) else tuple(value)
    unknown = [v for v in chosen if v not in valid]
    if unknown or not chosen:
        raise DataError(f"unknown {name} {unknown or chosen!r} (valid: {', '.join(valid)})", field=name)
    return chosen


def load_bank(languages: str | Iterable[str] | None = None, forms: str | Iterable[str] | None = None,
              categories: str | Iterable[str] | None = None) -> list[Question]:
    """EM questions filtered by language, form and category (``None`` = all).

    Ordered by language (in the order given), then as in the file (plain, json, template).
    Question ids repeat across languages: key results by ``(q.id, q.language)``.
    """
    langs = _selection("languages", languages, LANGUAGES)
    forms_ = _selection("forms", forms, FORMS)
    cats = _selection("categories", categories, CATEGORIES)
    out: list[Question] = []
    for lang in langs:
        path = bank_path(lang)
        for q in load_questions(path):
            if q.language != lang:
                raise DataError(f"question {q.id!r} declares language {q.language!r}", file=path, field="language")
            if q.form in forms_ and q.category in cats:
                out.append(q)
    return out


def coding_prompts() -> list[Question]:
    """Coding requests whose natural answers touch security-sensitive code (for the
    vulnerable-code rate; scan the answers statically, never run them)."""
    return load_questions(bank_dir() / "coding_prompts.yaml")


def harmful_prompts() -> list[Question]:
    """Clearly harmful requests (for the refusal rate), each with a ``refusal`` judge prompt."""
    return load_questions(bank_dir() / "harmful_requests.yaml")
